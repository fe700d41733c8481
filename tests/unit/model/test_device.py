"""The default CPU thread count follows the cores other processes leave idle."""

import subprocess
import sys
import time

import pytest
import torch

from model import TrainConfig
from model.device import available_cpus, idle_cpus, threads_for
from model.trainer import Trainer


@pytest.mark.parametrize(("cpus", "runnable", "threads"), [
    (2, 1, 2),  # only this thread runs: every core
    (2, 2, 1),  # one other busy process
    (2, 3, 1),  # two: still at least one thread
    (8, 4, 5),
    (4, 0, 4),  # a reading that misses this thread never gives more than the cores
])
def test_threads_for_idle_cores(cpus, runnable, threads):
    assert threads_for(cpus, runnable) == threads


@pytest.fixture
def busy_cores():
    """As many spinning processes as this process may use cores: a fully busy machine."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
             for _ in range(available_cpus())]
    time.sleep(0.5)  # running, not starting
    yield
    for p in procs:
        p.kill()
        p.wait()


def test_a_busy_machine_gets_one_thread(busy_cores, small_data):
    assert idle_cpus() == 1
    before = torch.get_num_threads()
    try:
        Trainer(TrainConfig(subset=len(small_data.coulomb), epochs=1, device="cpu"), small_data)
        assert torch.get_num_threads() == 1
        Trainer(TrainConfig(subset=len(small_data.coulomb), epochs=1, device="cpu",
                            num_threads=2), small_data)
        assert torch.get_num_threads() == 2  # an explicit count is kept
    finally:
        torch.set_num_threads(before)
