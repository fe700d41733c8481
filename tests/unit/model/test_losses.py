"""Every loss against a direct numpy formula on random data."""

import numpy as np
import pytest
import torch

from model.contract import SCALE_FREE_LOSSES
from model.losses import LOSSES, get_loss

pytestmark = pytest.mark.usefixtures("one_torch_thread")


RNG = np.random.default_rng(7)
P = RNG.normal(0.5, 1.5, (6, 40))
T = np.abs(RNG.normal(0.5, 1.0, (6, 40)))


def _numpy_losses(p, t, delta=0.7, de=0.1, threshold=1e-8):
    d = p - t
    a = np.abs(d)

    def cos(x, y):
        return (x * y).sum(1) / np.sqrt((x * x).sum(1) * (y * y).sum(1))

    pc, tc = p - p.mean(1, keepdims=True), t - t.mean(1, keepdims=True)
    ps, ts = np.maximum(p, threshold), np.maximum(t, threshold)
    ps, ts = ps / ps.sum(1, keepdims=True), ts / ts.sum(1, keepdims=True)
    return {
        "rmse": (d**2).mean(),
        "smoothl1": np.where(a < 1, 0.5 * d**2, a - 0.5).mean(),
        "logcosh": np.log(np.cosh(d)).sum(1).mean(),
        "cosine": (1 - cos(p, t)).mean(),
        "pearson": (1 - cos(pc, tc)).mean(),
        "mae": a.mean(),
        "huber": np.where(a <= delta, 0.5 * d**2, delta * (a - 0.5 * delta)).mean(),
        "sid": (ps * np.log(ps / ts) + ts * np.log(ts / ps)).sum(1).mean(),
        "wasserstein": np.abs(np.cumsum(d, 1)).sum(1).mean() * de * de,
    }


@pytest.mark.parametrize("name", LOSSES)
def test_loss_matches_numpy(name):
    expected = _numpy_losses(P, T)[name]
    fn = get_loss(name, huber_delta=0.7, de=0.1)
    got = fn(torch.from_numpy(P), torch.from_numpy(T))
    assert got.dim() == 0
    assert float(got) == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("name", LOSSES)
def test_loss_is_zero_at_the_target_and_has_gradients(name):
    t = torch.from_numpy(T)
    assert float(get_loss(name)(t.clone(), t)) == pytest.approx(0.0, abs=1e-9)
    p = torch.from_numpy(P).requires_grad_()
    get_loss(name)(p, t).backward()
    assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0


def test_logcosh_does_not_overflow():
    p = torch.tensor([[1000.0, -1000.0]])
    assert float(get_loss("logcosh")(p, torch.zeros_like(p))) == pytest.approx(
        2 * (1000 - np.log(2)))


def test_cosine_and_pearson_are_per_spectrum():
    # Flattening the batch (the seed's bug) would give a different value here.
    p = torch.tensor([[1.0, 0.0], [0.0, 10.0]])
    t = torch.tensor([[1.0, 0.0], [10.0, 0.0]])
    assert float(get_loss("cosine")(p, t)) == pytest.approx(0.5)


def test_scale_free_losses_ignore_scale():
    p, t = torch.from_numpy(P), torch.from_numpy(T)
    for name in ("cosine", "pearson", "sid"):
        assert float(get_loss(name)(3 * t, t)) == pytest.approx(0.0, abs=1e-9)
    assert float(get_loss("pearson")(p + 5, t)) == pytest.approx(float(get_loss("pearson")(p, t)))


def test_wasserstein_of_a_shift():
    grid = np.linspace(-30, 0, 301)
    de = grid[1] - grid[0]

    def peak(c):
        return np.exp(-0.5 * ((grid - c) / 0.5) ** 2) / (0.5 * np.sqrt(2 * np.pi))

    p = torch.from_numpy(peak(-14.0)[None])
    t = torch.from_numpy(peak(-15.0)[None])
    # Unit area moved by 1 eV costs 1 (area x distance).
    assert float(get_loss("wasserstein", de=de)(p, t)) == pytest.approx(1.0, rel=1e-6)


def test_unknown_loss_and_bad_options():
    with pytest.raises(ValueError, match="unknown loss 'rmsee'.*rmse, smoothl1"):
        get_loss("rmsee")
    with pytest.raises(ValueError, match="huber_delta"):
        get_loss("huber", huber_delta=0.0)


def test_scale_free_losses_are_exactly_those_blind_to_the_prediction_scale():
    """A loss that cannot see the scale of a prediction never learns it, so its runs must be
    judged on predictions scaled to the target (SCALE_FREE_LOSSES); the others must not be."""
    p, t = torch.from_numpy(P).abs() + 0.01, torch.from_numpy(T).abs() + 0.01
    blind = {name for name in LOSSES
             if float(get_loss(name, de=0.1)(3 * p, t)) == pytest.approx(
                 float(get_loss(name, de=0.1)(p, t)), rel=1e-6, abs=1e-9)}
    assert blind == set(SCALE_FREE_LOSSES)
