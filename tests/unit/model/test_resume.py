"""Resuming a run from its saved training state: the same result, bit for bit, on the CPU.

In process (the run stops by raising from ``on_epoch``) and for real (a process SIGKILLed at
the end of an epoch, right after its state was saved, continued by a new process)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from data_prep import prepare
from model import TrainConfig, train
from model.checkpoint import load_checkpoint, load_training_state, save_training_state
from model.contract import ArtifactName
from model.errors import WorkerInterrupted

pytestmark = pytest.mark.usefixtures("one_torch_thread")

#: Every RNG and the schedule matter: dropout (global RNG), Coulomb noise and shuffling (the
#: trainer's generator), a cosine schedule with warm-up (the epoch), early stopping (best epoch).
SETTINGS = dict(epochs=6, lr=1e-3, seed=5, device="cpu", num_threads=1, subset=120,
                dropout=0.2, lr_schedule="cosine", warmup_epochs=2, patience=50)


@pytest.fixture(scope="module")
def tiny_data(levels_dataset):
    return prepare(levels_dataset, sigma=0.5, n_points=300, subset=120)


@pytest.fixture(scope="module")
def reference(tiny_data, tmp_path_factory):
    """The uninterrupted run."""
    ckpt = tmp_path_factory.mktemp("ref")
    result = train(TrainConfig(**SETTINGS, checkpoint_dir=ckpt), tiny_data)
    return result, ckpt / ArtifactName.CHECKPOINT


def _without_seconds(history):
    return [{k: v for k, v in h.items() if k != "seconds"} for h in history]


def _assert_same(result, ckpt, reference):
    ref, ref_ckpt = reference
    assert _without_seconds(result.history) == _without_seconds(ref.history)
    assert result.best_epoch == ref.best_epoch and result.best_test_loss == ref.best_test_loss
    assert result.metrics == ref.metrics
    assert np.array_equal(result.val_predictions, ref.val_predictions)
    a, b = load_checkpoint(ckpt)[0].state_dict(), load_checkpoint(ref_ckpt)[0].state_dict()
    assert all(torch.equal(a[k], b[k]) for k in b)


class Stop(Exception):
    pass


@pytest.mark.parametrize("stop_after", [1, 4])
@pytest.mark.slow
def test_resumed_run_equals_the_uninterrupted_one(tiny_data, reference, tmp_path, stop_after):
    state = tmp_path / "state.pt"

    def stop(report):
        if report.epoch == stop_after:
            raise Stop

    with pytest.raises(Stop):
        train(TrainConfig(**SETTINGS, checkpoint_dir=tmp_path / "a"), tiny_data, stop,
              state_path=state)
    saved = load_training_state(state)
    assert saved is not None and saved.epoch == stop_after and len(saved.history) == stop_after

    seen, trained = [], []
    result = train(TrainConfig(**SETTINGS, checkpoint_dir=tmp_path / "b"), tiny_data,
                   lambda r: trained.append(r.epoch), state_path=state,
                   on_resume=lambda s: seen.append(s.epoch))
    assert seen == [stop_after] and trained == list(range(stop_after + 1, 7))
    assert result.resumed_from == stop_after and result.epochs_trained == 6 - stop_after
    # the best checkpoint exists in the new run's folder even if the best epoch was before
    _assert_same(result, tmp_path / "b" / ArtifactName.CHECKPOINT, reference)


def test_save_interval_and_interrupt(tiny_data, tmp_path):
    """A long interval saves nothing, but a signal's WorkerInterrupted always saves."""
    state = tmp_path / "state.pt"

    def interrupt(report):
        assert not state.exists()  # the interval (an hour) has not passed
        if report.epoch == 2:
            raise WorkerInterrupted("stopped by a signal")

    with pytest.raises(WorkerInterrupted):
        train(TrainConfig(**SETTINGS), tiny_data, interrupt, state_path=state,
              save_interval=3600)
    saved = load_training_state(state)
    assert saved is not None and saved.epoch == 2


@pytest.mark.slow
def test_unusable_states_start_again(tiny_data, tmp_path, caplog):
    state = tmp_path / "state.pt"
    state.write_bytes(b"\x00garbage")
    result = train(TrainConfig(**{**SETTINGS, "epochs": 3}), tiny_data, state_path=state)
    assert result.resumed_from == 0 and "unreadable" in caplog.text
    # a state of another configuration is not continued
    with pytest.raises(Stop):
        train(TrainConfig(**SETTINGS), tiny_data, lambda r: (_ for _ in ()).throw(Stop()),
              state_path=state)
    result = train(TrainConfig(**{**SETTINGS, "lr": 2e-3, "epochs": 3}), tiny_data,
                   state_path=state)
    assert result.resumed_from == 0 and "another configuration" in caplog.text


def test_resumed_early_stop_stays_stopped(tiny_data, tmp_path):
    """A state saved at the epoch where patience ran out ends the run there."""
    state = tmp_path / "state.pt"
    with pytest.raises(Stop):
        train(TrainConfig(**{**SETTINGS, "patience": 1}), tiny_data,
              lambda r: (_ for _ in ()).throw(Stop()), state_path=state)
    saved = load_training_state(state)
    assert saved is not None
    saved.best_epoch = 0  # as if epoch 1 had been no improvement on a patience of 1
    save_training_state(state, saved)
    result = train(TrainConfig(**{**SETTINGS, "patience": 1}), tiny_data, state_path=state)
    assert result.status == "early_stopped" and result.epochs_trained == 0


SCRIPT = textwrap.dedent("""
    import json, os, signal, sys
    import numpy as np
    from data_prep import load_levels, prepare
    from model import TrainConfig, train
    settings, state, out, kill_at, ckpt = json.loads(sys.argv[1])
    data = prepare(load_levels(os.environ.get("SPECOPT_TEST_DATASET") or None), sigma=0.5,
                   n_points=300, subset=120)
    def on_epoch(report):
        if report.epoch == kill_at:  # right after this epoch's state was saved
            os.kill(os.getpid(), signal.SIGKILL)
    r = train(TrainConfig(**settings, checkpoint_dir=ckpt), data, on_epoch, state_path=state)
    np.save(out + ".npy", r.val_predictions)
    json.dump({"history": r.history, "metrics": r.metrics, "best_epoch": r.best_epoch,
               "best_test_loss": r.best_test_loss, "resumed_from": r.resumed_from},
              open(out + ".json", "w"))
""")


@pytest.mark.slow
def test_sigkilled_process_resumed_by_another(reference, tmp_path):
    state, out, ckpt = tmp_path / "state.pt", tmp_path / "out", tmp_path / "ckpt"
    root = Path(__file__).resolve().parents[3]
    env = {**os.environ, "PYTHONPATH": str(root)}

    def run(kill_at):
        args = json.dumps([SETTINGS, str(state), str(out), kill_at, str(ckpt)])
        return subprocess.run([sys.executable, "-c", SCRIPT, args], env=env, cwd=root,
                              capture_output=True, text=True, timeout=300)

    killed = run(3)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert load_training_state(state).epoch == 3
    resumed = run(None)
    assert resumed.returncode == 0, resumed.stderr
    got = json.loads((tmp_path / "out.json").read_text())
    ref, ref_ckpt = reference
    assert got["resumed_from"] == 3
    assert _without_seconds(got["history"]) == _without_seconds(ref.history)
    assert got["metrics"] == ref.metrics and got["best_epoch"] == ref.best_epoch
    assert got["best_test_loss"] == ref.best_test_loss
    assert np.array_equal(np.load(tmp_path / "out.npy"), ref.val_predictions)
    a = load_checkpoint(ckpt / ArtifactName.CHECKPOINT)[0].state_dict()
    b = load_checkpoint(ref_ckpt)[0].state_dict()
    assert all(torch.equal(a[k], b[k]) for k in b)


@pytest.mark.slow
def test_state_of_another_device_kind_continues(tiny_data, tmp_path):
    """A state saved on CUDA (its generator state has another format) continues on the CPU."""
    state = tmp_path / "state.pt"
    with pytest.raises(Stop):
        train(TrainConfig(**SETTINGS), tiny_data, lambda r: (_ for _ in ()).throw(Stop()),
              state_path=state)
    saved = load_training_state(state)
    assert saved is not None
    saved.trainer["device_type"] = "cuda"
    saved.trainer["generator"] = torch.zeros(16, dtype=torch.uint8)
    save_training_state(state, saved)
    result = train(TrainConfig(**SETTINGS), tiny_data, state_path=state)
    assert result.resumed_from == 1 and result.epochs_trained == 5
