"""Training losses, selectable by name: ``get_loss(name, **options)(pred, target)``.

Every loss takes (batch, Np) prediction and target and returns a scalar tensor. Losses that
compare whole spectra (cosine, pearson, sid, wasserstein) are computed per spectrum and then
averaged over the batch (the report's code flattened the batch for cosine and Pearson: a bug).

- ``rmse``: trained as the mean squared error, as in the report (same minimiser, smoother).
- ``smoothl1``: ``F.smooth_l1_loss`` (beta 1), the report's "Smooth".
- ``logcosh``: sum over grid points of log cosh(P - T), averaged over spectra.
- ``cosine``: 1 - cosine similarity (the report's "Cosloss"); scale-free.
- ``pearson``: 1 - Pearson correlation; scale- and offset-free.
- ``mae``: mean absolute error.
- ``huber``: ``F.huber_loss`` with ``delta`` (option ``huber_delta``).
- ``sid``: spectral information divergence (Chemprop-IR, McGill et al. 2021): both spectra
  floored at ``threshold`` and normalised to unit sum, then sum (p - t)(log p - log t); so
  scale-free, and judged like cosine and Pearson (``SCALE_FREE_LOSSES``). Below the
  floor a prediction gets no gradient, so SID suits ``output_head="softplus"`` best.
- ``wasserstein``: earth mover's distance from cumulative sums, sum_i |cumsum(P - T)_i| de^2,
  averaged over spectra. Mass is not renormalised, so a wrong total intensity is penalised too
  (the cumulative difference does not return to zero); for equal areas it is the area times
  the Wasserstein-1 distance in eV. ``de`` (grid spacing, eV) is passed by the training loop.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch.nn import functional as F

from model.contract import LOSSES

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]



def _mse(pred, target):
    return F.mse_loss(pred, target)


def _smoothl1(pred, target):
    return F.smooth_l1_loss(pred, target)


def _logcosh(pred, target):
    x = (pred - target).abs()
    # log cosh x = x + log(1 + exp(-2x)) - log 2, which does not overflow for large x.
    return (x + F.softplus(-2.0 * x) - math.log(2.0)).sum(dim=-1).mean()


def _cosine(pred, target):
    return (1.0 - F.cosine_similarity(pred, target, dim=-1)).mean()


def _pearson(pred, target):
    p = pred - pred.mean(dim=-1, keepdim=True)
    t = target - target.mean(dim=-1, keepdim=True)
    return (1.0 - F.cosine_similarity(p, t, dim=-1)).mean()


def _mae(pred, target):
    return F.l1_loss(pred, target)


def _huber(delta: float) -> Loss:
    if not delta > 0:
        raise ValueError(f"huber_delta must be positive, got {delta!r}")
    return lambda pred, target: F.huber_loss(pred, target, delta=delta)


def _sid(threshold: float) -> Loss:
    if not threshold > 0:
        raise ValueError(f"sid threshold must be positive, got {threshold!r}")

    def sid(pred, target):
        p = pred.clamp_min(threshold)
        t = target.clamp_min(threshold)
        p = p / p.sum(dim=-1, keepdim=True)
        t = t / t.sum(dim=-1, keepdim=True)
        return ((p - t) * (p.log() - t.log())).sum(dim=-1).mean()

    return sid


def _wasserstein(de: float) -> Loss:
    if not de > 0:
        raise ValueError(f"grid spacing de must be positive, got {de!r}")

    def wasserstein(pred, target):
        return torch.cumsum(pred - target, dim=-1).abs().sum(dim=-1).mean() * (de * de)

    return wasserstein


def get_loss(name: str, *, huber_delta: float = 1.0, threshold: float = 1e-8,
             de: float = 1.0) -> Loss:
    """The loss called ``name`` (one of ``LOSSES``). Options a loss does not use are ignored, so
    a caller can pass the same options whatever the name."""
    simple = {"rmse": _mse, "smoothl1": _smoothl1, "logcosh": _logcosh, "cosine": _cosine,
              "pearson": _pearson, "mae": _mae}
    if name in simple:
        return simple[name]
    if name == "huber":
        return _huber(huber_delta)
    if name == "sid":
        return _sid(threshold)
    if name == "wasserstein":
        return _wasserstein(de)
    raise ValueError(f"unknown loss {name!r}; choose one of: {', '.join(LOSSES)}")
