"""bench/train_speed.py's arithmetic: the FLOPs behind its fraction of peak, and the "before"
network its --anatomy times against the shipped one."""

import pytest
import torch

from bench import train_speed
from data_prep import prepare
from model import SpectraCNN, TrainConfig
from model.trainer import Trainer

pytestmark = pytest.mark.usefixtures("one_torch_thread")

def test_training_flops_per_sample_are_the_hand_count(levels_dataset):
    """Forward: 2 x H x W x Cin x Cout x 9 per convolution plus the output layer; backward:
    twice that (input and weight gradients), less the first convolution's input gradient."""
    data = prepare(levels_dataset, sigma=0.5, n_points=300, subset=200)
    trainer = Trainer(TrainConfig(device="cpu", amp="off", num_threads=1, seed=0), data)
    convs = [(1, 22, 29), (22, 22, 29), (22, 22, 29), (22, 47, 14), (47, 47, 14),
             (47, 47, 14), (47, 42, 7), (42, 42, 7), (42, 42, 7)]
    conv = [2 * side * side * c_in * c_out * 9 for c_in, c_out, side in convs]
    linear = 2 * 378 * 300
    forward = sum(conv) + linear
    backward = 2 * sum(conv) - conv[0] + 2 * linear
    assert train_speed.flops_per_sample(trainer) == pytest.approx(forward + backward, rel=1e-9)
    assert forward + backward == 117_569_484


def test_report_order_puts_every_relu_back_before_its_pooling():
    torch.manual_seed(0)
    shipped = SpectraCNN(300)
    before = SpectraCNN(300)
    before.load_state_dict(shipped.state_dict())
    train_speed.report_order(before)
    kinds = [type(m).__name__ for m in before.features]
    assert kinds == (["Conv2d", "ReLU"] * 3 + ["MaxPool2d"]) * 3
    x = torch.randn(8, 1, 29, 29) * 10
    assert torch.equal(before(x), shipped(x))


def test_peak_is_cores_times_clock_times_flops_per_cycle(monkeypatch):
    monkeypatch.setattr(train_speed, "CLOCK_GHZ", 2.0)
    monkeypatch.setattr(train_speed, "cpu_has_amx", lambda: True)
    cpu = torch.device("cpu")
    assert train_speed.peak_gflops(cpu, True, 2)[0] == 2 * 2.0 * 1024
    assert train_speed.peak_gflops(cpu, False, 3)[0] == 3 * 2.0 * 64
    monkeypatch.setattr(train_speed, "cpu_has_amx", lambda: False)
    assert train_speed.peak_gflops(cpu, True, 1)[0] == 2.0 * 128
