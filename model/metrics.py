"""Metrics of predicted spectra: computed per spectrum, then averaged over the set.

``evaluate(pred, target, levels, grid, sigma, reference_sigma)`` returns a dict of floats:

- ``accuracy``: 1 - sqrt(sum dE (T - P)^2) / sum dE T, with the report's dE = (e_max - e_min) / Np
  (the report's Eq. 2 prints P in the denominator; its code, and this, divide by the target T).
  ``accuracy_min`` / ``accuracy_max``: the worst and best single spectrum.
- ``rmse``, ``mae``: over grid points; ``r2``: 1 - SS_res / SS_tot of the target.
- ``negative_share``: share of predicted points below zero; ``negative_magnitude``: mean |P| of
  those points after L2-normalising each prediction (pooled over all negative points; 0 when
  there are none), as the report's Table 5.
- ``*_normalised``: each prediction scaled to its target's scale by the ratio of L2 norms, which
  is how scale-free losses (cosine, Pearson, SID) are judged. RMSE and MAE are then expressed in
  units of the target's norm (both spectra L2-normalised), as in the report's Table 2 (RMSE_n about
  0.010 where RMSE is 0.209). Accuracy and R^2 do not depend on that common factor.
- ``evaluate(..., scale_free=True)`` (the training loop passes it for runs of a scale-free loss):
  every metric is computed on predictions scaled to their targets' L2 norms, as the report
  judged those runs, so that a study comparing losses does not rank them by a scale they never
  learn.
- ``fair_accuracy``: accuracy after re-broadening prediction and target to ``reference_sigma`` by
  convolving both with a Gaussian of width sqrt(reference_sigma^2 - sigma^2) (Gaussians
  compose), so that runs at different sigma compare on one scale.
- ``wasserstein_eV``: Wasserstein-1 (earth mover's) distance between prediction and target, each
  taken as a distribution over energy (negative predicted intensities clipped to zero, then unit
  area): the integral of |F_P - F_T| over the grid. A peak shifted by d scores |d| whatever sigma.
  A prediction with no positive intensity counts as all its mass beyond e_max.
- ``level_error_eV``: mean |error| of the 16 levels recovered from each predicted spectrum
  (``extract_levels``: quantile start, then a Levenberg-Marquardt fit of 16 unit-area Gaussians
  of the known sigma), against the true levels; ``level_error_target_eV``: the same extraction
  applied to the target spectra, the floor that the extraction itself sets.
- ``skill``: the share of the baseline's error that the model removes, with error = 1 -
  fair_accuracy: 1 - (1 - fair_accuracy) / (1 - baseline fair_accuracy). 0: no better than the
  baseline, 1: perfect, negative: worse. The baseline (``mean_spectrum``: the mean of the
  training split's target spectra, predicted for every molecule) is what the bundled data's
  compressed levels give for free (about 87 % accuracy at sigma 0.5), so every score is read
  against it (``baseline_metrics``). ``evaluate(..., baseline=...)`` computes it: with
  ``metrics=None`` skill is included only when a baseline is given; asked for explicitly without
  one it is a ValueError.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import torch
from torch.nn import functional as F

from model.contract import BASELINE_METRICS, METRICS, N_LEVELS

_TINY = 1e-12


def _tensor(x, device=None) -> torch.Tensor:
    t = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x))
    return t.detach().to(device=device, dtype=torch.float64)


def _grid_info(grid, n_points: int) -> tuple[float, float]:
    """(report's dE = window / Np, spacing between grid points)."""
    g = np.asarray(grid.detach().cpu() if isinstance(grid, torch.Tensor) else grid, np.float64)
    if g.ndim != 1 or len(g) != n_points or len(g) < 2:
        raise ValueError(f"grid has {g.shape} points, spectra have {n_points}")
    step = float(g[1] - g[0])
    if not step > 0:
        raise ValueError("grid must be increasing")
    return float(g[-1] - g[0]) / len(g), step


def _accuracy(p: torch.Tensor, t: torch.Tensor, de: float) -> torch.Tensor:
    err = torch.sqrt(de * ((t - p) ** 2).sum(-1))
    return 1.0 - err / (de * t.sum(-1)).clamp_min(_TINY)


def _r2(p: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    ss_res = ((t - p) ** 2).sum(-1)
    ss_tot = ((t - t.mean(-1, keepdim=True)) ** 2).sum(-1).clamp_min(_TINY)
    return 1.0 - ss_res / ss_tot


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / torch.linalg.vector_norm(x, dim=-1, keepdim=True).clamp_min(_TINY)


def scaled_to_target(pred, target):
    """Each prediction scaled to its target's L2 norm: how runs trained with a scale-free loss
    (``SCALE_FREE_LOSSES``) are judged (numpy in, numpy out; torch in, torch out)."""
    p, t = _tensor(pred), _tensor(target)
    out = _unit(p) * torch.linalg.vector_norm(t, dim=-1, keepdim=True)
    return out if isinstance(pred, torch.Tensor) else out.numpy()


def accuracy_per_spectrum(pred, target, de: float, scale_free: bool = False):
    """The report's accuracy of every spectrum (numpy in, numpy out; torch in, torch out);
    ``scale_free``: judge ``scaled_to_target`` predictions, as ``evaluate`` does."""
    p = _tensor(scaled_to_target(pred, target) if scale_free else pred)
    acc = _accuracy(p, _tensor(target), de)
    return acc if isinstance(pred, torch.Tensor) else acc.numpy()


def rebroaden(spectra, sigma: float, reference_sigma: float, step: float) -> torch.Tensor:
    """Spectra of width ``sigma`` re-broadened to ``reference_sigma`` by convolution with a
    Gaussian of width sqrt(reference^2 - sigma^2), sampled on the grid (``step`` eV apart) and
    normalised to unit sum, so areas are kept. Beyond the window the spectra count as zero."""
    if reference_sigma < sigma - 1e-9:
        raise ValueError(f"reference_sigma {reference_sigma} must be >= sigma {sigma}: "
                         "a spectrum cannot be sharpened")
    x = _tensor(spectra) if not isinstance(spectra, torch.Tensor) else spectra
    width = math.sqrt(max(reference_sigma**2 - sigma**2, 0.0))
    if width < 1e-6:
        return x
    half = max(1, math.ceil(5.0 * width / step))
    offsets = torch.arange(-half, half + 1, device=x.device, dtype=x.dtype) * step
    kernel = torch.exp(-0.5 * (offsets / width) ** 2)
    kernel = (kernel / kernel.sum()).view(1, 1, -1)
    shape = x.shape
    out = F.conv1d(x.reshape(-1, 1, shape[-1]), kernel, padding=half)
    return out.reshape(shape)


def wasserstein_per_spectrum(pred, target, step: float) -> torch.Tensor:
    """Wasserstein-1 distance in eV of every (prediction, target) pair, each clipped at zero
    and normalised to unit area; ``step`` is the spacing of the grid in eV."""
    p = _tensor(pred).clamp_min(0.0)
    t = _tensor(target).clamp_min(0.0)
    cdf_p = torch.cumsum(p, -1) / p.sum(-1, keepdim=True).clamp_min(_TINY)
    cdf_t = torch.cumsum(t, -1) / t.sum(-1, keepdim=True).clamp_min(_TINY)
    return (cdf_p - cdf_t).abs().sum(-1) * step


def _quantile_levels(s: torch.Tensor, grid: torch.Tensor, n_levels: int) -> torch.Tensor:
    """Start values: the energies that split each spectrum's area into n equal parts, taken at
    their middles (exact for well separated peaks)."""
    step = grid[1] - grid[0]
    cdf = torch.cumsum(s, -1)
    cdf = cdf / cdf[:, -1:].clamp_min(_TINY)
    q = (torch.arange(n_levels, device=s.device, dtype=s.dtype) + 0.5) / n_levels
    q = q.expand(len(s), n_levels).contiguous()
    i = torch.searchsorted(cdf, q).clamp(max=s.shape[-1] - 1)
    hi = cdf.gather(1, i)
    lo = torch.where(i > 0, cdf.gather(1, (i - 1).clamp_min(0)), torch.zeros_like(hi))
    frac = ((q - lo) / (hi - lo).clamp_min(_TINY)).clamp(0.0, 1.0)
    # Bin i holds the mass of [grid_i - step/2, grid_i + step/2].
    return grid[i] - 0.5 * step + frac * step


def extract_levels(spectra, grid, sigma: float, n_levels: int = N_LEVELS, iterations: int = 10,
                   chunk: int = 2048) -> torch.Tensor:
    """Recover ``n_levels`` level energies (eV, ascending) from each spectrum, taken as a sum of
    unit-area Gaussians of width ``sigma``: negative intensities are clipped, each spectrum is
    scaled to area ``n_levels``, the levels start at the area quantiles and are then fitted by
    least squares (Levenberg-Marquardt with a damping factor per spectrum). Ten iterations take
    the error on exact spectra to about 0.007 / 0.0004 / 0.00002 eV at sigma 0.5 / 0.3 / 0.1
    (nearly coincident levels at wide sigma are the hard case). Runs in float32."""
    s_all = _tensor(spectra).float().clamp_min(0.0)
    g = _tensor(grid, s_all.device).float()
    step = float(g[1] - g[0])
    norm = 1.0 / (sigma * math.sqrt(2.0 * math.pi))
    out = torch.empty(len(s_all), n_levels, dtype=torch.float64, device=s_all.device)
    for a in range(0, len(s_all), chunk):
        s = s_all[a : a + chunk]
        s = s * (n_levels / (s.sum(-1, keepdim=True) * step).clamp_min(_TINY))
        c = _quantile_levels(s, g, n_levels)

        def residual(c, s=s):
            x = (g[None, None, :] - c[:, :, None]) / sigma  # (B, n, Np)
            gauss = norm * torch.exp(-0.5 * x * x)
            r = gauss.sum(1) - s
            jac = gauss * (x / sigma)  # d(model)/d(c_k), (B, n, Np)
            return r, jac, (r * r).sum(-1)

        r, jac, cost = residual(c)
        damping = torch.full((len(s),), 1e-3, device=s.device)
        for _ in range(iterations):
            # The 16 x 16 systems in float64: coincident levels make J^T J singular.
            jtj = (jac @ jac.transpose(1, 2)).double()
            jtr = (jac @ r.unsqueeze(-1)).squeeze(-1).double()
            diag = torch.diagonal(jtj, dim1=1, dim2=2)
            floor = 1e-9 * diag.amax(-1, keepdim=True) + 1e-30
            lhs = jtj + torch.diag_embed(damping[:, None].double() * diag + floor)
            delta, info = torch.linalg.solve_ex(lhs, -jtr)
            delta = torch.where((info == 0)[:, None], delta, 0.0).float().clamp(-sigma, sigma)
            c_new = c + delta
            r_new, jac_new, cost_new = residual(c_new)
            better = cost_new < cost
            c = torch.where(better[:, None], c_new, c)
            r = torch.where(better[:, None], r_new, r)
            jac = torch.where(better[:, None, None], jac_new, jac)
            cost = torch.where(better, cost_new, cost)
            damping = torch.where(better, damping * 0.3, damping * 10.0).clamp(1e-9, 1e9)
        out[a : a + chunk] = torch.sort(c, -1).values
    return out


def level_error_per_spectrum(spectra, levels, grid, sigma: float) -> torch.Tensor:
    """Mean |extracted - true| level energy in eV of every spectrum (missing levels skipped);
    one spectrum (1, Np) is compared with every row of ``levels``."""
    true = torch.sort(_tensor(levels), -1).values
    found = extract_levels(spectra, grid, sigma, n_levels=true.shape[-1]).to(true.device)
    err = (found - true).abs()
    ok = torch.isfinite(err)
    return torch.where(ok, err, 0.0).sum(-1) / ok.sum(-1).clamp_min(1)


def mean_spectrum(train_target):
    """The baseline's prediction: the mean of the training split's (N, Np) target spectra, an
    (Np,) spectrum (numpy in, numpy out; torch in, torch out, on its device; the input's dtype,
    summed in float64 without a float64 copy of the whole split)."""
    t = train_target if isinstance(train_target, torch.Tensor) else np.asarray(train_target)
    if t.ndim != 2 or t.shape[0] == 0:
        raise ValueError(f"training targets {tuple(t.shape)} must be (N, Np) with N >= 1")
    if isinstance(t, torch.Tensor):
        return t.detach().mean(0, dtype=torch.float64).to(t.dtype)
    return t.mean(0, dtype=np.float64).astype(t.dtype, copy=False)


def skill_score(fair_accuracy: float, baseline_fair_accuracy: float) -> float:
    """1 - (1 - fair_accuracy) / (1 - baseline_fair_accuracy): the share of the baseline's
    error removed. NaN when the baseline is already perfect (nothing left to remove)."""
    baseline_error = 1.0 - float(baseline_fair_accuracy)
    if not baseline_error > _TINY:
        return math.nan
    return 1.0 - (1.0 - float(fair_accuracy)) / baseline_error


def baseline_metrics(train_target, target, grid, sigma: float,
                     reference_sigma: float | None = None, levels=None, *,
                     scale_free: bool = False) -> dict[str, float]:
    """``BASELINE_METRICS`` (and ``level_error_eV`` when ``levels`` are given) of predicting
    ``mean_spectrum(train_target)`` for every row of ``target``, through :func:`evaluate`.
    ``scale_free``: judged as a scale-free run's predictions are (scaled to each target's L2
    norm), so that the baseline beside such a run is judged by the same rule as the run."""
    mean = _tensor(mean_spectrum(train_target))
    t = _tensor(target, mean.device)
    if t.dim() != 2 or t.shape[-1] != mean.shape[-1]:
        raise ValueError(f"targets {tuple(t.shape)} do not match the training spectra's "
                         f"{mean.shape[-1]} points")
    out = evaluate(mean.expand_as(t), t, None, grid, sigma, reference_sigma,
                   metrics=BASELINE_METRICS, scale_free=scale_free)
    if levels is not None:
        # Every row predicts the same spectrum, and the extraction ignores its scale: its levels
        # are fitted once (broadcast against every row's true levels), not N times.
        true = _tensor(levels, mean.device)
        if true.dim() != 2 or len(true) != len(t):
            raise ValueError(f"levels {tuple(true.shape)} must be one row per target "
                             f"({len(t)})")
        out["level_error_eV"] = float(level_error_per_spectrum(mean[None], true, grid,
                                                               sigma).mean())
    return out


def _baseline_fair_accuracy(baseline, target, grid, sigma: float, reference_sigma: float,
                            scale_free: bool) -> float:
    """The baseline's fair accuracy: from its metrics (a dict), or by scoring a baseline
    spectrum (Np,) against these targets."""
    if isinstance(baseline, dict):
        if baseline.get("fair_accuracy") is None:
            raise ValueError("the baseline's metrics have no fair_accuracy: skill needs it")
        return float(baseline["fair_accuracy"])
    spectrum = _tensor(baseline, target.device)
    if spectrum.shape != target.shape[-1:]:
        raise ValueError(f"the baseline spectrum {tuple(spectrum.shape)} must be "
                         f"({target.shape[-1]},), one value per grid point")
    return evaluate(spectrum.expand_as(target), target, None, grid, sigma, reference_sigma,
                    metrics=["fair_accuracy"], scale_free=scale_free)["fair_accuracy"]


def evaluate(pred, target, levels, grid, sigma: float, reference_sigma: float | None = None,
             metrics: Iterable[str] | None = None, scale_free: bool = False,
             baseline=None) -> dict[str, float]:
    """Metrics of (N, Np) predictions against targets, per spectrum then averaged (see the module
    docstring). ``levels`` (N, 16) eV are only needed for the level errors; ``metrics`` picks a
    subset of ``METRICS`` (all when None; ``skill`` only with a ``baseline``). ``scale_free``:
    the model was trained with a loss that fixes no scale (``SCALE_FREE_LOSSES``), so each
    prediction is first scaled to its target's L2 norm, as the report judged such runs;
    otherwise a study comparing losses would always rank them last for a scale they were never
    asked to learn. ``baseline``: for ``skill``, the baseline's metrics on these targets (a dict
    with ``fair_accuracy``, as :func:`baseline_metrics` gives) or its spectrum (Np,)."""
    if metrics is None:
        wanted = [m for m in METRICS if m != "skill" or baseline is not None]
    else:
        wanted = list(metrics)
    unknown = [m for m in wanted if m not in METRICS]
    if unknown:
        raise ValueError(f"unknown metric {unknown[0]!r}; choose from: {', '.join(METRICS)}")
    if "skill" in wanted and baseline is None:
        raise ValueError("skill needs a baseline: pass baseline= (baseline_metrics(...) of "
                         "these targets, or the mean training spectrum)")
    device = pred.device if isinstance(pred, torch.Tensor) else None
    p, t = _tensor(pred, device), _tensor(target, device)
    if p.shape != t.shape or p.dim() != 2:
        raise ValueError(f"predictions {tuple(p.shape)} and targets {tuple(t.shape)} must both "
                         "be (N, Np)")
    if len(p) == 0:
        raise ValueError("no spectra to evaluate")
    de, step = _grid_info(grid, p.shape[-1])
    if scale_free:
        p = scaled_to_target(p, t)
    reference_sigma = sigma if reference_sigma is None else reference_sigma
    out: dict[str, torch.Tensor] = {}
    if {"accuracy", "accuracy_min", "accuracy_max"} & set(wanted):
        acc = _accuracy(p, t, de)
        out.update(accuracy=acc.mean(), accuracy_min=acc.min(), accuracy_max=acc.max())
    if "rmse" in wanted:
        out["rmse"] = ((p - t) ** 2).mean(-1).sqrt().mean()
    if "mae" in wanted:
        out["mae"] = (p - t).abs().mean(-1).mean()
    if "r2" in wanted:
        out["r2"] = _r2(p, t).mean()
    if "negative_share" in wanted:
        out["negative_share"] = (p < 0).double().mean()
    if "negative_magnitude" in wanted:
        neg = _unit(p).clamp(max=0.0)
        out["negative_magnitude"] = neg.neg().sum() / (p < 0).sum().clamp_min(1)
    if any(m.endswith("_normalised") for m in wanted):
        pn, tn = _unit(p), _unit(t)
        out.update(accuracy_normalised=_accuracy(pn, tn, de).mean(),
                   rmse_normalised=((pn - tn) ** 2).mean(-1).sqrt().mean(),
                   mae_normalised=(pn - tn).abs().mean(-1).mean(),
                   r2_normalised=_r2(pn, tn).mean())
    if {"fair_accuracy", "skill"} & set(wanted):
        pb = rebroaden(p, sigma, reference_sigma, step)
        tb = rebroaden(t, sigma, reference_sigma, step)
        out["fair_accuracy"] = _accuracy(pb, tb, de).mean()
    if "skill" in wanted:
        base = _baseline_fair_accuracy(baseline, t, grid, sigma, reference_sigma, scale_free)
        out["skill"] = torch.tensor(skill_score(float(out["fair_accuracy"]), base))
    if "wasserstein_eV" in wanted:
        out["wasserstein_eV"] = wasserstein_per_spectrum(p, t, step).mean()
    for name, spectra in (("level_error_eV", p), ("level_error_target_eV", t)):
        if name in wanted:
            if levels is None:
                raise ValueError(f"{name} needs the true levels")
            out[name] = level_error_per_spectrum(spectra, _tensor(levels, device), grid,
                                                 sigma).mean()
    return {k: float(out[k]) for k in wanted}
