"""Checkpoints and training states on a real full disk (a 1 MiB tmpfs), and unreadable or
hostile checkpoint files: a failed write is an ``InfrastructureError`` naming the file and the
fix, leaves the previous file whole and nothing partial (no temporary file, no folder it made);
a bad file is one line naming it, never PyTorch's advice to load with ``weights_only=False``,
and code pickled into a file never runs."""

from __future__ import annotations

import logging
import os
import pickle
import zipfile

import pytest
import torch

from data_prep import prepare
from model import TrainConfig, train
from model.checkpoint import (
    load_checkpoint,
    load_training_state,
)
from model.contract import ArtifactName
from model.errors import DataError, InfrastructureError, WorkerInterrupted

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SETTINGS = dict(epochs=2, lr=1e-3, seed=5, device="cpu", num_threads=1, subset=120)


@pytest.fixture(scope="module")
def tiny_data(levels_dataset):
    return prepare(levels_dataset, sigma=0.5, n_points=300, subset=120)


def _fill(disk, keep: int) -> None:
    st = os.statvfs(disk)
    with open(disk / "filler", "wb") as f:
        f.write(b"\0" * max(0, st.f_bavail * st.f_frsize - keep))


def _files(folder) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def test_a_full_disk_under_the_training_state_is_an_infrastructure_error(
        tiny_data, tmp_path, tiny_disk):
    state = tiny_disk / "state" / "0" / "state.pt"
    with pytest.raises(InfrastructureError) as err:
        train(TrainConfig(**SETTINGS), tiny_data, state_path=state)
    line = str(err.value)
    assert "\n" not in line and str(state) in line and "No space left" in line, line
    assert "free disk space" in line, line
    assert _files(tiny_disk) == set()  # neither a temporary file nor the folders it made


def test_a_failed_state_write_keeps_the_previous_state(tiny_data, tmp_path, mount_tmpfs):
    disk = mount_tmpfs(tmp_path / "disk", "size=8m")
    state = disk / "state.pt"

    def stop(report) -> None:
        raise WorkerInterrupted("stopped")  # the state of epoch 1 is saved

    with pytest.raises(WorkerInterrupted):
        train(TrainConfig(**SETTINGS), tiny_data, on_epoch=stop, state_path=state)
    before = state.read_bytes()
    _fill(disk, keep=4096)
    with pytest.raises(InfrastructureError, match="state.pt"):  # epoch 2 cannot be saved
        train(TrainConfig(**SETTINGS), tiny_data, state_path=state)
    assert state.read_bytes() == before
    assert _files(disk) == {"state.pt", "filler"}
    (disk / "filler").unlink()
    assert load_training_state(state).epoch == 1


def test_a_full_disk_under_the_checkpoint_is_an_infrastructure_error(tiny_data, tiny_disk):
    folder = tiny_disk / "run"
    _fill(tiny_disk, keep=200_000)  # room for the folder, not for the 0.9 MB checkpoint
    with pytest.raises(InfrastructureError) as err:
        train(TrainConfig(**SETTINGS, checkpoint_dir=folder), tiny_data)
    assert str(folder / ArtifactName.CHECKPOINT) in str(err.value)
    assert _files(tiny_disk) == {"filler"}


class _RunsCode:
    def __init__(self, marker) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _bad_files(folder, good) -> dict[str, object]:
    """name -> a path that is no readable checkpoint."""
    data = good.read_bytes()
    marker = folder / "code-ran"
    files = {"truncated.pt": data[: len(data) // 2], "empty.pt": b"",
             "text.pt": b"hello world\n",
             "code.pt": pickle.dumps({"format": "specopt-checkpoint-1",
                                      "x": _RunsCode(marker)})}
    for name, content in files.items():
        (folder / name).write_bytes(content)
    with zipfile.ZipFile(folder / "other.zip.pt", "w") as z:
        z.writestr("hello.txt", "not a checkpoint")
    torch.save({"format": "specopt-checkpoint-1", "x": _RunsCode(marker)},
               folder / "code_zip.pt")
    (folder / "folder.pt").mkdir()
    return {p.name: p for p in folder.iterdir() if p.name.endswith(".pt")}


@pytest.fixture(scope="module")
def good_checkpoint(tiny_data, tmp_path_factory):
    folder = tmp_path_factory.mktemp("good")
    train(TrainConfig(**{**SETTINGS, "epochs": 1}, checkpoint_dir=folder), tiny_data)
    return folder / ArtifactName.CHECKPOINT


def test_unreadable_checkpoints_are_one_line_without_unsafe_advice(
        good_checkpoint, tmp_path, caplog):
    bad = _bad_files(tmp_path, good_checkpoint)
    for name, path in bad.items():
        with pytest.raises(DataError) as err:
            load_checkpoint(path)
        line = str(err.value)
        assert name in line and "\n" not in line, line
        assert "weights_only" not in line and "False" not in line, line
    with caplog.at_level(logging.WARNING, logger="specopt.model"):
        for path in bad.values():
            if path.is_file():
                assert load_training_state(path) is None
                assert not path.exists()  # removed: the run starts again
    for record in caplog.records:
        assert "weights_only" not in record.getMessage(), record.getMessage()
        assert "\n" not in record.getMessage(), record.getMessage()
    assert not (tmp_path / "code-ran").exists()  # the pickled command never ran
