"""``specopt worker STUDY --pack K``: trials trained together in one worker process (real tiny
studies through the CLI, in subprocesses as ``launch`` starts workers)."""

from __future__ import annotations

from collections import Counter

import optuna
import pytest
from optuna.trial import TrialState

import hpo
from hpo.execution.launch import warm_cache, worker_command
from hpo.report.data import history_of
from hpo.study.create import open_study
from model.contract import ArtifactName, Status, TrialAttr
from tests.support import run_worker_to_end, study_trials, write_study

pytestmark = [pytest.mark.slow,
              pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")]


def _epochs(trial, name: str, url: str) -> list[int]:
    return [h["epoch"] for h in history_of(trial, open_study(name, url).study)]


def _study(tmp_path, name, space, **extra):
    path = write_study(tmp_path / f"{name}.toml", name, storage=f"sqlite:///{tmp_path}/s.db",
                       artifacts=tmp_path / "art", space={"subset": 200, "n_points": 300,
                                                          "lr": 1e-3, **space}, **extra)
    warm_cache(hpo.load_study_config(path))
    return path, f"sqlite:///{tmp_path}/s.db"


def test_a_packed_worker_runs_a_study(tmp_path):
    """Three grid trials (2, 3 and 4 epochs) with --pack 2: the first two train
    together, the slot of the shorter one is refilled while the other goes on; every trial
    completes with its parameters, values, attributes and history artifact, epochs 1..epochs."""
    path, url = _study(tmp_path, "packed", {"epochs": [2, 3, 4], "channels": [[8, 12]]})
    log = tmp_path / "w.log"
    code = run_worker_to_end(path, "--pack", "2", log=log, timeout=300)
    text = log.read_text()
    assert code == 0, text
    assert "packing up to 2 trials" in text
    trials = study_trials("packed", url)
    assert Counter(t.state for t in trials) == {TrialState.COMPLETE: 3}, text
    assert sorted(t.params["epochs"] for t in trials) == [2, 3, 4]
    for t in trials:
        assert t.values is not None and len(t.intermediate_values) == t.params["epochs"]
        assert t.user_attrs[TrialAttr.PARAMS]["epochs"] == t.params["epochs"]
        assert set(t.user_attrs[TrialAttr.ARTIFACTS]) >= {ArtifactName.HISTORY,
                                                          ArtifactName.CHECKPOINT}
        assert _epochs(t, "packed", url) == list(range(1, t.params["epochs"] + 1))
    # packed: trials ran at the same time, and a freed slot was refilled before the others ended
    by_start = sorted(trials, key=lambda t: t.datetime_start)
    assert by_start[1].datetime_start < by_start[0].datetime_complete
    third = by_start[2]
    assert any(t.datetime_start < third.datetime_start < t.datetime_complete
               for t in by_start[:2])


def test_a_packed_trial_killed_mid_way_resumes_in_the_next_pack(tmp_path):
    """SIGKILL after the first member's epoch 2 (SPECOPT_FAULT=epoch_end_2, states saved every
    epoch): a second packed worker fails the stale trials, re-runs both, and each continues its
    own saved state (one from epoch 2, the other from the epoch it had saved) to epoch 4."""
    path, url = _study(tmp_path, "resumed", {"loss": ["rmse", "cosine"], "epochs": 4,
                                             "channels": [[8, 12]]}, heartbeat=(1, 3))
    path.write_text(path.read_text() + "[resume]\nsave_interval = 0\n")
    first = run_worker_to_end(path, "--pack", "2", log=tmp_path / "w0.log",
                              env={"SPECOPT_FAULT": "epoch_end_2"}, timeout=300)
    assert first == -9, (tmp_path / "w0.log").read_text()
    second = run_worker_to_end(path, "--pack", "2", log=tmp_path / "w1.log", timeout=300)
    text = (tmp_path / "w1.log").read_text()
    assert second == 0, text
    trials = study_trials("resumed", url)
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(done) == 2 and Counter(t.state for t in trials)[TrialState.FAIL] == 2, text
    resumed = sorted(t.user_attrs[TrialAttr.RESUMED_FROM]["epoch"] for t in done)
    assert resumed[1] == 2 and resumed[0] in (1, 2), resumed
    for t in done:
        assert t.user_attrs[TrialAttr.EPOCHS_TRAINED] == 4 - t.user_attrs[
            TrialAttr.RESUMED_FROM]["epoch"]
        assert _epochs(t, "resumed", url) == [1, 2, 3, 4]
    assert "continues trial" in text


def test_launch_passes_pack_on():
    cmd = worker_command("s.json", index=0, threads=2, device="cpu", storage="sqlite:///x.db",
                         pack="auto")
    assert cmd[-2:] == ["--pack", "auto"]
    assert "--pack" not in worker_command("s.json", index=0, threads=2, device="cpu",
                                          storage="sqlite:///x.db")


class _PruneTrialZero(optuna.pruners.BasePruner):
    """Prunes trial 0 at its first report, nothing else."""

    def prune(self, study, trial) -> bool:
        return trial.number == 0


def test_a_pruned_member_leaves_and_the_next_trial_takes_its_slot(tmp_path):
    """Trial 0 is pruned after epoch 1 inside a pack of 2: it leaves at once (one epoch
    reported), trial 2 starts in its slot while trial 1 still trains, and all end."""
    from hpo.execution.packed import PackedWorker
    from tests.support import small_study_config

    cfg = small_study_config(tmp_path, "pruned", {"seed": [0, 1, 2], "epochs": 3,
                                                  "channels": [[8, 12]]}, n_trials=3,
                             sampler={"name": "grid", "seed": 0})
    worker = PackedWorker(cfg, pack=2, handle_signals=False, worker_index=0)
    worker.study.pruner = _PruneTrialZero()
    summary = worker.run()
    assert (summary.completed, summary.pruned, summary.failed) == (2, 1, 0)
    trials = {t.number: t for t in study_trials("pruned", cfg.storage)}
    assert trials[0].state == TrialState.PRUNED and list(trials[0].intermediate_values) == [1]
    assert trials[1].state == trials[2].state == TrialState.COMPLETE
    assert trials[1].datetime_start < trials[0].datetime_complete  # packed together
    assert trials[0].datetime_complete <= trials[2].datetime_start < trials[1].datetime_complete


def test_sigterm_stops_every_member_after_its_epoch(tmp_path):
    """SIGTERM during a pack of 2: both trials stop after their epoch with their states saved,
    are marked FAIL (interrupted) and re-queued; the worker exits with 130. The next worker
    continues both from their saved epochs."""
    path, url = _study(tmp_path, "term", {"loss": ["rmse", "cosine"], "epochs": 4,
                                          "channels": [[8, 12]]})
    path.write_text(path.read_text() + "[resume]\nsave_interval = 0\n")
    code = run_worker_to_end(path, "--pack", "2", log=tmp_path / "w0.log",
                             env={"SPECOPT_FAULT": "epoch_end_1:SIGTERM"}, timeout=300)
    text = (tmp_path / "w0.log").read_text()
    assert code == 130, text
    trials = study_trials("term", url)
    states = Counter(t.state for t in trials)
    assert states == {TrialState.FAIL: 2, TrialState.WAITING: 2}, text
    assert all(t.user_attrs[TrialAttr.STATUS] == Status.INTERRUPTED
               for t in trials if t.state == TrialState.FAIL)
    assert run_worker_to_end(path, "--pack", "2", log=tmp_path / "w1.log", timeout=300) == 0
    done = study_trials("term", url, states=(TrialState.COMPLETE,))
    assert len(done) == 2
    assert all(t.user_attrs[TrialAttr.RESUMED_FROM]["epoch"] >= 1 for t in done)
