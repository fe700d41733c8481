"""Pruners of our own (registered in :func:`hpo.study.config.build_pruner`).

:class:`CurveExtrapolationPruner` (pruner name ``"extrapolation"``) decides on where a trial's
learning curve is going, not where it is.  Issue 10 found that the median rule, replayed on
random search's recorded curves, pruned the eventual best trial in 3 of 6 runs: on this problem
early epochs rank configurations badly (a slow start often ends best, curves cross).

At each reported step the pruner fits the running trial's intermediate values with a saturating
power law, extrapolates it to ``max_resource`` and prunes only when even that optimistic
prediction, plus a margin, cannot beat the ``top_k``-th best completed trial:

- the curve, turned so that larger is better (``study.direction``), is fitted as
  ``y(t) = a - b * t**(-c)`` with ``b >= 0`` and ``c > 0``: least squares in
  ``a, b`` for each ``c`` of a fixed grid, the ``c`` with the smallest error wins; ``t`` is
  ``step + step_offset``, points with ``t < 1`` are left out of the fit.  The
  prediction is the larger of the trial's best value so far and the fit at ``max_resource``;
- a completed trial scores the best value of its own curve: the quantity the prediction
  estimates, in the same units whatever split or rule gave the trial's objective value;
- the margin is ``margin`` when given, else learnt: every completed trial whose curve runs past
  the current step is cut at that step and extrapolated to its own last step; how far its
  real score came out above that prediction (a quantile, ``margin_quantile``, of those errors,
  never below 0) is how much this step's extrapolation may fall short.  With no completed
  trial to learn from at this step the pruner keeps the trial;
- nothing is pruned before ``min_steps`` values are reported or ``n_startup_trials`` trials
  completed; after that a NaN or infinite value prunes (the curve diverged).

Only numpy; fits are a few vectorised least-squares solves, and the error of each completed
trial at each step is remembered, so that a replay calling the pruner every epoch of thousands
of trials stays cheap: one array per completed curve (keyed on a digest of the curve itself),
of the curves the study has completed now only (a pruner reused by another study drops the
first study's)."""

from __future__ import annotations

import hashlib
import math
from typing import Literal

import numpy as np
import optuna
from numpy.typing import ArrayLike
from optuna.pruners import BasePruner
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

__all__ = ["CurveExtrapolationPruner", "extrapolate"]
#: Exponents tried for ``t**(-c)``: small c is near log-linear growth, large c saturates fast.
_C_GRID = np.geomspace(0.05, 5.0, 48)


def _fits(t: np.ndarray, z: np.ndarray, cs: np.ndarray) -> tuple[np.ndarray, ...]:
    """For each ``c`` in ``cs``: ``(a, b, sse)`` of the least-squares ``z = a - b * t**(-c)``
    with ``b >= 0``."""
    x = t[None, :] ** -cs[:, None]  # (n_c, n)
    xm = x.mean(axis=1, keepdims=True)
    zm = z.mean()
    dx = x - xm
    sxx = (dx * dx).sum(axis=1)
    sxz = (dx * (z - zm)).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        b = np.where(sxx > 0, -sxz / sxx, 0.0)
    b = np.maximum(b, 0.0)  # a curve getting worse is fitted as flat, not extrapolated down
    a = zm + b * xm[:, 0]
    sse = ((a[:, None] - b[:, None] * x - z) ** 2).sum(axis=1)
    return a, b, sse


def _fit(t: np.ndarray, z: np.ndarray) -> tuple[float, float, float]:
    """``(a, b, c)`` of the best fit: the coarse grid of ``c``, then a fine one around its
    best (a coarse ``c`` alone misses a noise-free curve's end by a few tenths)."""
    i = int(np.argmin(_fits(t, z, _C_GRID)[2]))
    fine = np.geomspace(_C_GRID[max(i - 1, 0)], _C_GRID[min(i + 1, _C_GRID.size - 1)], 33)
    a, b, sse = _fits(t, z, fine)
    j = int(np.argmin(sse))
    return float(a[j]), float(b[j]), float(fine[j])


def extrapolate(steps: ArrayLike, values: ArrayLike, target_step: int,
                step_offset: int = 0) -> float:
    """The optimistic final score of a curve whose larger values are better: the larger of its
    best value and the saturating fit's value at ``target_step`` (``t = step + step_offset``;
    non-finite points and points with ``t < 1`` are left out of the fit).  NaN for a curve
    with no finite point."""
    s = np.asarray(steps, dtype=float)
    z = np.asarray(values, dtype=float)
    ok = np.isfinite(z)
    s, z = s[ok], z[ok]
    if z.size == 0:
        return math.nan
    best = float(z.max())
    t = s + step_offset
    fit = t >= 1
    if np.count_nonzero(fit) < 3 or target_step <= s.max():
        return best
    a, b, c = _fit(t[fit], z[fit])
    return max(best, a - b * (target_step + step_offset) ** -c)


class CurveExtrapolationPruner(BasePruner):
    """Prune a trial whose extrapolated learning curve cannot beat the ``top_k``-th best
    completed trial (see the module docstring).

    Args:
        n_startup_trials: completed trials needed before anything is pruned.
        min_steps: reported values a trial needs before it can be pruned (at least 3: the fit
            has three parameters).
        max_resource: the step curves are extrapolated to; ``"auto"``: the largest last step of
            any completed trial.
        top_k: prune when the prediction cannot beat the k-th best completed trial (1: the
            incumbent; larger keeps trials that could reach the top k).
        margin: a fixed allowance added to every prediction, in the objective's units; ``None``:
            learnt from completed trials (see ``margin_quantile``).
        margin_quantile: which quantile of the completed trials' extrapolation errors is the
            learnt margin (1.0: the worst error seen).
        step_offset: ``t = step + step_offset`` is the training done at a step, the power law's
            time.  0 fits steps that count epochs from 1 (``hpo.execution.objective`` reports epoch
            n after
            n epochs); 1 fits steps counted from 0.
    """

    def __init__(self, n_startup_trials: int = 4, min_steps: int = 3,
                 max_resource: int | Literal["auto"] = "auto", top_k: int = 1,
                 margin: float | None = None, margin_quantile: float = 1.0,
                 step_offset: int = 0) -> None:
        if isinstance(n_startup_trials, bool) or not isinstance(n_startup_trials, int) \
                or n_startup_trials < 1:
            raise ValueError(f"n_startup_trials must be an integer >= 1, got {n_startup_trials!r}")
        if isinstance(min_steps, bool) or not isinstance(min_steps, int) or min_steps < 3:
            raise ValueError(f"min_steps must be an integer >= 3 (the fit has three "
                             f"parameters), got {min_steps!r}")
        if max_resource != "auto" and (isinstance(max_resource, bool)
                                       or not isinstance(max_resource, int) or max_resource < 1):
            raise ValueError(f"max_resource must be 'auto' or an integer >= 1, got "
                             f"{max_resource!r}")
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise ValueError(f"top_k must be an integer >= 1, got {top_k!r}")
        if margin is not None and (isinstance(margin, bool) or not isinstance(margin, int | float)
                                   or not math.isfinite(margin) or margin < 0):
            raise ValueError(f"margin must be a number >= 0 or None (learnt), got {margin!r}")
        if isinstance(margin_quantile, bool) or not isinstance(margin_quantile, int | float) \
                or not 0.0 <= margin_quantile <= 1.0:
            raise ValueError(f"margin_quantile must be in [0, 1], got {margin_quantile!r}")
        if isinstance(step_offset, bool) or not isinstance(step_offset, int) or step_offset < 0:
            raise ValueError(f"step_offset must be an integer >= 0, got {step_offset!r}")
        self.n_startup_trials = n_startup_trials
        self.min_steps = min_steps
        self.max_resource = max_resource
        self.top_k = top_k
        self.margin = None if margin is None else float(margin)
        self.margin_quantile = float(margin_quantile)
        self.step_offset = step_offset
        #: digest of a completed curve -> the error of its prediction cut after k points, at
        #: index k (NaN: not computed yet; inf: no prediction there)
        self._errors: dict[bytes, np.ndarray] = {}

    # --- the decision -----------------------------------------------------------------------

    def prune(self, study: optuna.study.Study, trial: FrozenTrial) -> bool:
        step = trial.last_step
        if step is None or len(trial.intermediate_values) < self.min_steps:
            return False
        completed = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if len(completed) < self.n_startup_trials:
            return False
        sign = 1.0 if study.direction == StudyDirection.MAXIMIZE else -1.0
        steps, values = _curve(trial, sign)
        if not np.all(np.isfinite(values)):
            return True  # diverged
        curves = [c for c in (_curve(t, sign) for t in completed) if np.isfinite(c[1]).any()]
        if len(curves) < self.top_k:
            return False
        scores = sorted((float(np.nanmax(np.where(np.isfinite(v), v, np.nan)))
                         for _, v in curves), reverse=True)
        threshold = scores[self.top_k - 1]
        horizon = self._horizon(curves)
        if horizon is None:
            return False
        margin = self.margin if self.margin is not None else self._learnt_margin(curves, step)
        if margin is None:
            return False
        upper = extrapolate(steps, values, max(horizon, step), self.step_offset)
        return upper + margin < threshold

    def _horizon(self, curves: list[tuple[np.ndarray, np.ndarray]]) -> int | None:
        if self.max_resource != "auto":
            return int(self.max_resource)
        return max((int(s[-1]) for s, _ in curves if s.size), default=None)

    def _learnt_margin(self, curves: list[tuple[np.ndarray, np.ndarray]],
                       step: int) -> float | None:
        """A quantile of how far completed trials' real scores came out above what their
        curves, cut at ``step``, predicted; None when no completed trial runs past ``step``."""
        known: dict[bytes, np.ndarray] = {}  # only the curves completed now: bounded, no strays
        errors = []
        for s, v in curves:
            key = hashlib.blake2b(s.tobytes() + v.tobytes(), digest_size=16).digest()
            cached = known.get(key)
            if cached is None:
                cached = self._errors.get(key)
                known[key] = cached = np.full(s.size + 1, np.nan) if cached is None else cached
            k = int(np.searchsorted(s, step, side="right"))  # points at steps <= step (sorted)
            if s.size == 0 or s[-1] <= step or k < self.min_steps:
                continue
            if math.isnan(cached[k]):
                real = float(np.nanmax(np.where(np.isfinite(v), v, np.nan)))
                err = real - extrapolate(s[:k], v[:k], int(s[-1]), self.step_offset)
                cached[k] = err if math.isfinite(err) else math.inf
            if math.isfinite(cached[k]):
                errors.append(float(cached[k]))
        self._errors = known
        if not errors:
            return None
        return max(0.0, float(np.quantile(errors, self.margin_quantile)))


def _curve(trial: FrozenTrial, sign: float) -> tuple[np.ndarray, np.ndarray]:
    """The trial's (steps, values) in step order, values times ``sign`` (larger is better)."""
    items = sorted(trial.intermediate_values.items())
    steps = np.fromiter((k for k, _ in items), dtype=np.int64, count=len(items))
    values = np.fromiter((v for _, v in items), dtype=float, count=len(items)) * sign
    return steps, values

