"""Replay HPO strategies on a learning-curve table: the table answers instead of training.

The table (``bench/lc_build.py``: ``configs.csv``, one row per run; ``table.csv``, one row per run
and epoch) records full training curves once; :func:`replay` then runs a real Optuna study
(``InMemoryStorage``) with the samplers and pruners a real study builds (``hpo.study.config``),
several
asynchronous workers simulated by an event queue on the recorded epoch seconds, at almost no cost
(as LCBench and YAHPO Gym do).  ``bench/hpo_efficiency.py`` is the command line over it.

How a proposal is answered (:meth:`LearningCurveTable.answer`): the learning rate is snapped to the
nearest recorded one in log space (a strategy's lr range ``10**-5.5 .. 10**-1.5`` gives each
recorded decade one half-decade either side), sigma, Np and batch to the nearest recorded value (a
shipped study's sigma 0.2 or Np 700); the seed-0 runs of the same (sigma, loss, lr) cell answer,
the exact (Np, batch) when recorded, else the same Np, then the same batch, then any (ties by run
id).  A cell without a run (a partial table) is answered by the nearest lr in log space with the
same (sigma, loss), then the nearest sigma, and when the loss has no run at all by the nearest
(sigma, lr) of any loss (ties: the smaller value, then the loss name); such answers are counted
as ``nearest``, not as exact hits.

What a simulated trial does mirrors ``hpo.execution.objective.objective``: every recorded epoch
reports the
test split's fair accuracy and asks the pruner; a complete run tells the test fair accuracy of its
best epoch (lowest test loss: ``best_epoch``), or the validation one when the study scores on
``objective_split = "validation"``; a diverged run reports its recorded epochs and fails in the
next one (that epoch costs the mean of its recorded epochs, or the table's median epoch of the
same Np and batch when it recorded none).

The exactly tabular problem (issue 21; :class:`CellSpace`, what ``bench/hpo_efficiency.py`` runs):
the search space is the table's own values, every point of it recorded.  A *cell* is one value of
each searched key: ``"cells"`` searches (sigma, loss, lr) with Huber left out (with delta 1 it is
SmoothL1 with beta 1: ``model/losses.py``), lr a categorical over the recorded decades, and Np and
batch not searched; ``"full"`` searches all five keys and is refused (one line, how many cells
have no run) until the table covers their product.  A query draws one of its cell's recorded runs
(any Np/batch pair, any seed) with the replay's random numbers, derived from (replay seed, cell,
how many times this replay asked that cell before): two strategies asking one cell the k-th time
in replay seed s get the same run (common random numbers).  A cell's value is the mean over its
completed runs of the final validation fair accuracy; the best is the best cell mean; regret is
the best cell mean minus the mean of the incumbent's cell (the incumbent chosen by what the study
sees: the drawn run's told test value).  No nearest neighbour: a proposal outside the cells is an
error.  Synchronous successive halving (:func:`sync_sh`) is replayed by its own driver here
(Optuna has no synchronous one): a batch of random cells at 1 epoch, the best 1/eta on to 5, the
best 1/eta of those to the end, then the next batch.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import heapq
import logging
import math
import random
import statistics
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from hpo.execution.worker import tell_trial
from hpo.study.config import (
    StudyConfig,
    build_pruner,
    build_sampler,
    load_study_config,
    study_config_from_dict,
)
from model.contract import LOSSES, Metric, Split
from model.errors import ConfigError

__all__ = ["Answer", "CellSpace", "LearningCurveTable", "NoiseFloor", "OBJECTIVE", "Run",
           "SEED_STRIDE", "SeedNoise", "Strategy", "Trace", "TrialRecord", "exact_strategies",
           "replay", "replay_config", "strategies", "sync_sh"]

#: The table's objective (maximised): the studies' sigma-fair accuracy (a fraction).
OBJECTIVE = Metric.FAIR_ACCURACY
#: Replay seed s gives worker i the sampler seed s * SEED_STRIDE + i (``build_sampler`` adds the
#: worker index), so that replays with seeds 0, 1, 2 share no workers' draws.
SEED_STRIDE = 1000
_PARAMS = ("sigma", "n_points", "loss", "lr", "batch_size")


@dataclass(frozen=True)
class Run:
    """One recorded training run: its configuration, curve (epoch 1 first) and outcome."""

    run_id: str
    config_id: str
    sigma: float
    n_points: int
    loss: str
    lr: float
    batch_size: int
    seed: int
    status: str  # "completed" (or "early_stopped") | "failed"
    best_epoch: int
    fair: tuple[float, ...]  # test-split fair accuracy per epoch
    seconds: tuple[float, ...]  # per epoch
    val: Mapping[str, float]  # final validation metrics (none for a failed run)
    fail_seconds: float = 0.0  # cost of the epoch a failed run diverged in

    @property
    def failed(self) -> bool:
        return self.status == "failed"

    @property
    def epochs_run(self) -> int:
        return len(self.fair)

    @property
    def val_fair(self) -> float | None:
        return self.val.get(OBJECTIVE)

    def told_value(self, objective_split: str = Split.TEST) -> float | None:
        """What ``hpo.execution.objective`` tells for this run: the test score of the best epoch
        (the last
        recorded one when no epoch was best), or the validation score; None if it failed."""
        if self.failed or not self.fair:
            return None
        if objective_split == Split.VALIDATION:
            return self.val_fair
        if 1 <= self.best_epoch <= len(self.fair):
            return self.fair[self.best_epoch - 1]
        return self.fair[-1]


@dataclass(frozen=True)
class Answer:
    run: Run
    # legacy: "exact" | "cell" (same sigma, loss, lr; other Np/batch) | "nearest";
    # CellSpace: "draw" (one of the cell's runs)
    kind: str
    cell: tuple | None = None  # CellSpace: the cell asked

    @property
    def exact(self) -> bool:
        return self.kind == "exact"


@dataclass(frozen=True)
class NoiseFloor:
    """|val fair accuracy(seed 0) - (seed 1)| over the repeated configurations."""

    mean: float
    sd: float
    n: int


def _snap(value: float, recorded: Sequence[float], log: bool = False) -> float:
    """The nearest recorded value (in log space when ``log``); ties go to the smaller."""
    def dist(v: float) -> float:
        return abs(math.log10(v) - math.log10(value)) if log else abs(v - value)
    return min(sorted(recorded), key=dist)


class LearningCurveTable:
    """The runs of a learning-curve table; seed-0 runs answer proposals, seed-1 repeats give the
    noise floor."""

    def __init__(self, runs: Sequence[Run], folder: Path | None = None) -> None:
        self.runs = _with_fail_seconds(list(runs))
        self.folder = folder
        self.answering = [r for r in self.runs if r.seed == 0]
        if not self.answering:
            raise ValueError("the table has no seed-0 run")
        self.sigmas = sorted({r.sigma for r in self.answering})
        self.n_points = sorted({r.n_points for r in self.answering})
        self.losses = sorted({r.loss for r in self.answering}, key=_loss_order)
        self.lrs = sorted({r.lr for r in self.answering})
        self.batch_sizes = sorted({r.batch_size for r in self.answering})
        self.epochs = max(r.epochs_run + r.failed for r in self.answering)
        self._cells: dict[tuple[float, str, float], list[Run]] = {}
        for r in self.answering:
            self._cells.setdefault((r.sigma, r.loss, r.lr), []).append(r)
        done = [r for r in self.answering if not r.failed and r.val_fair is not None]
        if not done:
            raise ValueError("the table has no completed seed-0 run")
        # ties: the first in the table's order
        self.best_run = max(done, key=lambda r: r.val_fair or -math.inf)
        self.best_value: float = float(self.best_run.val_fair or 0.0)

    # --- reading ---------------------------------------------------------------------------

    @classmethod
    def load(cls, folder: str | Path, seconds: str = "shape-median") -> LearningCurveTable:
        """Read ``configs.csv`` and ``table.csv`` (``bench/lc_build.py``'s format).

        ``seconds``: what an epoch costs in simulated time. ``"shape-median"`` (default): the
        median epoch seconds of all runs of the same (Np, batch), because the build shares its
        CPU with other work and single epochs vary 4x with the load, not with the
        configuration; ``"recorded"``: each epoch's own recorded seconds."""
        if seconds not in ("shape-median", "recorded"):
            raise ValueError(f"seconds must be 'shape-median' or 'recorded', got {seconds!r}")
        folder = Path(folder)
        curves: dict[str, list[tuple[int, float, float]]] = {}
        with (folder / "table.csv").open(newline="") as f:
            for row in csv.DictReader(f):
                curves.setdefault(row["run_id"], []).append(
                    (int(row["epoch"]), float(row["test_fair_accuracy"]), float(row["seconds"])))
        rows = []
        with (folder / "configs.csv").open(newline="") as f:
            rows = list(csv.DictReader(f))
        if not rows:
            raise ValueError(f"{folder / 'configs.csv'}: no runs")
        runs = []
        for row in rows:
            curve = sorted(curves.get(row["run_id"], []))
            if [e for e, _, _ in curve] != list(range(1, len(curve) + 1)):
                raise ValueError(f"{folder}: run {row['run_id']} has a gap in its epochs")
            val = {k.removeprefix("val_"): float(v) for k, v in row.items()
                   if k.startswith("val_") and v not in ("", None)}
            runs.append(Run(
                run_id=row["run_id"], config_id=row["config_id"], sigma=float(row["sigma"]),
                n_points=int(row["n_points"]), loss=row["loss"], lr=float(row["lr"]),
                batch_size=int(row["batch_size"]), seed=int(row["seed"]), status=row["status"],
                best_epoch=int(row["best_epoch"]), fair=tuple(v for _, v, _ in curve),
                seconds=tuple(s for _, _, s in curve), val=val))
        if seconds == "shape-median":
            runs = _shape_median_seconds(runs)
        return cls(runs, folder)

    # --- facts -----------------------------------------------------------------------------

    def noise_floor(self) -> NoiseFloor | None:
        """Mean and sd of |val fair(seed 0) - val fair(seed 1)| over the configurations run with
        both seeds (both completed); None without such a pair."""
        first = {r.config_id: r for r in self.answering if r.val_fair is not None}
        diffs = [abs((first[r.config_id].val_fair or 0.0) - (r.val_fair or 0.0))
                 for r in self.runs if r.seed == 1 and r.val_fair is not None
                 and r.config_id in first]
        if not diffs:
            return None
        return NoiseFloor(statistics.fmean(diffs),
                          statistics.stdev(diffs) if len(diffs) > 1 else 0.0, len(diffs))

    def total_epochs(self) -> int:
        """The compute of every seed-0 run to its end (the exhaustive grid's), epochs."""
        return sum(r.epochs_run + r.failed for r in self.answering)

    def run(self, run_id: str) -> Run:
        for r in self.runs:
            if r.run_id == run_id:
                return r
        raise KeyError(run_id)

    def params_of(self, run: Run) -> dict[str, Any]:
        """The proposal that this run answers exactly."""
        return {k: getattr(run, k) for k in _PARAMS}

    # --- answering -------------------------------------------------------------------------

    def answer(self, params: Mapping[str, Any]) -> Answer:
        """The recorded run for a proposal (see the module docstring for the rules)."""
        sigma = _snap(float(params["sigma"]), self.sigmas)
        n_points = int(_snap(int(params["n_points"]), self.n_points))
        batch = int(_snap(int(params["batch_size"]), self.batch_sizes))
        lr = _snap(float(params["lr"]), self.lrs, log=True)
        loss = str(params["loss"])
        # the lr snap is part of the replay's space; the others are not in the table's
        in_table = (sigma == params["sigma"] and n_points == params["n_points"]
                    and batch == params["batch_size"])
        cell = self._cells.get((sigma, loss, lr))
        kind = "cell"
        if not cell:
            kind = "nearest"
            cell = self._nearest_cell(sigma, loss, lr)
        run = min(cell, key=lambda r: (not (r.n_points == n_points and r.batch_size == batch),
                                       r.n_points != n_points, r.batch_size != batch, r.run_id))
        if kind == "cell" and in_table and run.n_points == n_points and run.batch_size == batch:
            kind = "exact"
        return Answer(run, kind)

    def _nearest_cell(self, sigma: float, loss: str, lr: float) -> list[Run]:
        same_loss = [k for k in self._cells if k[1] == loss]
        keys = same_loss or list(self._cells)

        def rank(k: tuple[float, str, float]) -> tuple:
            return (abs(k[0] - sigma), abs(math.log10(k[2]) - math.log10(lr)), k[0], k[2],
                    _loss_order(k[1]))
        return self._cells[min(keys, key=rank)]


def _loss_order(loss: str) -> tuple[int, str]:
    return (LOSSES.index(loss) if loss in LOSSES else len(LOSSES), loss)


def _seconds_by_shape(runs: list[Run]) -> dict[tuple[int, int], list[float]]:
    """The recorded epoch seconds of all runs, by (Np, batch)."""
    by_shape: dict[tuple[int, int], list[float]] = {}
    for r in runs:
        by_shape.setdefault((r.n_points, r.batch_size), []).extend(r.seconds)
    return by_shape


def _shape_median_seconds(runs: list[Run]) -> list[Run]:
    """Every epoch costs the median epoch seconds of its run's (Np, batch) shape."""
    median = {k: statistics.median(v) for k, v in _seconds_by_shape(runs).items() if v}
    return [dataclasses.replace(r, seconds=(median[(r.n_points, r.batch_size)],) * len(r.seconds))
            if r.seconds else r for r in runs]


def _with_fail_seconds(runs: list[Run]) -> list[Run]:
    """Failed runs get the cost of the epoch they diverged in (module docstring), unless given."""
    by_shape = _seconds_by_shape(runs)
    every = [s for r in runs for s in r.seconds] or [0.0]
    out = []
    for r in runs:
        if r.failed and not r.fail_seconds:
            cost = (statistics.fmean(r.seconds) if r.seconds else
                    statistics.median(by_shape.get((r.n_points, r.batch_size)) or every))
            r = dataclasses.replace(r, fail_seconds=cost)
        out.append(r)
    return out


# --- the exactly tabular problem -----------------------------------------------------------------

#: The searched keys of each exact space.
SPACE_KEYS: dict[str, tuple[str, ...]] = {"cells": ("sigma", "loss", "lr"), "full": _PARAMS}
#: Losses left out of the exact spaces: Huber with delta 1 is SmoothL1 with beta 1.
LEFT_OUT_LOSSES = ("huber",)


@dataclass(frozen=True)
class SeedNoise:
    """The standard deviation between seeds of one configuration (all five keys), pooled over the
    configurations with >= 2 completed runs: sqrt(sum (n_i - 1) s_i^2 / sum (n_i - 1))."""

    sd: float
    configurations: int
    runs: int


class CellSpace:
    """The table as an exactly tabular problem over ``keys`` (module docstring)."""

    def __init__(self, table: LearningCurveTable, space: str = "cells") -> None:
        if space not in SPACE_KEYS:
            raise ValueError(f"space must be one of {', '.join(SPACE_KEYS)}, got {space!r}")
        self.table = table
        self.name = space
        self.keys = SPACE_KEYS[space]
        runs = [r for r in table.runs if r.loss not in LEFT_OUT_LOSSES]
        self.values: dict[str, list] = {
            k: sorted({getattr(r, k) for r in runs}, key=_loss_order if k == "loss" else None)
            for k in self.keys}
        self.cells: dict[tuple, list[Run]] = {}
        for r in sorted(runs, key=lambda r: r.run_id):
            self.cells.setdefault(self.cell_of_run(r), []).append(r)
        product = 1
        for v in self.values.values():
            product *= len(v)
        self.n_cells = product
        self.missing = product - len(self.cells)
        if self.missing:
            raise ConfigError(
                f"--space {space}: {self.missing} of the {product} cells "
                f"({' x '.join(f'{len(v)} {k}' for k, v in self.values.items())}) have no "
                f"recorded run; the table covers {len(self.cells)}")
        self.epochs = table.epochs
        self.mean: dict[tuple, float | None] = {}
        for cell, rs in self.cells.items():
            vals = [r.val_fair for r in rs if not r.failed and r.val_fair is not None]
            self.mean[cell] = statistics.fmean(vals) if vals else None
        scored = {c: m for c, m in self.mean.items() if m is not None}
        if not scored:
            raise ValueError("the table has no completed run")
        self.best_cell = max(sorted(scored), key=lambda c: scored[c])
        self.best_value: float = scored[self.best_cell]
        self.worst_value: float = min(scored.values())
        #: G: the compute of one full grid pass: every cell trained once to its end (the mean
        #: epochs of its runs, a diverged run's failing epoch included), epochs
        self.grid_epochs = round(sum(statistics.fmean(r.epochs_run + r.failed for r in rs)
                                     for rs in self.cells.values()))

    def cell_of_run(self, run: Run) -> tuple:
        return tuple(getattr(run, k) for k in self.keys)

    def cell_of(self, params: Mapping[str, Any]) -> tuple:
        """The cell of a proposal; a value not recorded is an error (no nearest neighbour)."""
        cell = tuple(params[k] for k in self.keys)
        if cell not in self.cells:
            raise ConfigError(f"{dict(zip(self.keys, cell, strict=True))} is not a cell of the "
                              f"{self.name} space (the table's values: {self.values})")
        return cell

    def draw(self, cell: tuple, seed: int, k: int) -> Run:
        """The run answering the k-th query (from 0) of ``cell`` in replay ``seed``: common random
        numbers (str seeds hash with SHA-512 in ``random.Random``: the same in every process)."""
        runs = self.cells[cell]
        return runs[random.Random(f"{seed}|{cell}|{k}").randrange(len(runs))]

    def regret(self, cell: tuple) -> float:
        """Best cell mean minus this cell's mean (a cell without a completed run: the worst)."""
        m = self.mean[cell]
        return self.best_value - (m if m is not None else self.worst_value)

    def study_space(self) -> dict[str, Any]:
        """The study's space: the searched keys as categoricals over the recorded values, the
        others fixed (their value is not used: the drawn run decides)."""
        out: dict[str, Any] = {k: list(v) for k, v in self.values.items()}
        for k in _PARAMS:
            if k not in out:
                out[k] = sorted({getattr(r, k) for r in self.table.runs})[0]
        return {**out, "epochs": self.epochs, "seed": 0}

    def noise(self) -> SeedNoise | None:
        """:class:`SeedNoise` over the whole table (Huber left out); None without a repeat."""
        by_config: dict[str, list[float]] = {}
        for rs in self.cells.values():
            for r in rs:
                if not r.failed and r.val_fair is not None:
                    by_config.setdefault(r.config_id, []).append(r.val_fair)
        groups = [v for v in by_config.values() if len(v) >= 2]
        if not groups:
            return None
        df = sum(len(v) - 1 for v in groups)
        ss = sum((len(v) - 1) * statistics.variance(v) for v in groups)
        return SeedNoise(math.sqrt(ss / df), len(groups), sum(len(v) for v in groups))


# --- strategies --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Strategy:
    """A named study definition to replay; ``enqueue``: proposals asked first, in order
    (grids of recorded configurations); ``shuffle``: the enqueued order is shuffled per seed."""

    name: str
    config: StudyConfig
    enqueue: tuple[Mapping[str, Any], ...] = ()
    shuffle: bool = False
    note: str = ""
    #: synchronous successive halving (:func:`sync_sh`, replayed without Optuna's sampler):
    #: (configurations per batch, eta, rungs in epochs before the last); None: an Optuna study
    sync_sh: tuple[int, int, tuple[int, ...]] | None = None


def _space(table: LearningCurveTable, space: Mapping[str, Sequence] | None) -> dict[str, Any]:
    """The replay's search space: categorical sigma, Np, loss, batch; lr a log range half a
    decade beyond the outer recorded rates, so that each recorded rate owns one decade."""
    s = dict(space or {})
    lrs = sorted(s.get("lr", table.lrs))
    return {
        "sigma": list(s.get("sigma", table.sigmas)),
        "n_points": list(s.get("n_points", table.n_points)),
        "loss": list(s.get("loss", table.losses)),
        "batch_size": list(s.get("batch_size", table.batch_sizes)),
        "lr": {"low": 10 ** (math.log10(lrs[0]) - 0.5), "high": 10 ** (math.log10(lrs[-1]) + 0.5),
               "log": True},
        "epochs": table.epochs,
        "seed": 0,
    }


def _study(name: str, space: dict, sampler: dict, pruner: dict, n_trials: int) -> StudyConfig:
    sigma = space["sigma"]
    return study_config_from_dict({
        "name": name.replace("+", "_"), "objectives": [OBJECTIVE],
        "reference_sigma": max(sigma) if isinstance(sigma, list) else sigma,
        "sampler": {"seed": 0, **sampler}, "pruner": pruner, "budget": {"n_trials": n_trials},
        "space": space})



#: The Optuna sampler + pruner strategies of both problems: (name, sampler, pruner, note).
#: Optuna 5's default TPESampler() is multivariate with a constant liar already.
SAMPLER_PRUNER = (
    ("random", "random", "none", ""),
    ("tpe", "tpe", "none", "Optuna's default TPESampler()"),
    ("tpe+median", "tpe", "median", ""),
    ("tpe+hyperband", "tpe", "hyperband", ""),
    ("tpe+sh", "tpe", "successive_halving", ""),
    ("random+hyperband", "random", "hyperband", ""),
    ("gp", "gp", "none", ""),
)

def strategies(table: LearningCurveTable, space: Mapping[str, Sequence] | None = None, *,
               report_grid: Sequence[Sequence] | None = None,
               shipped: Sequence[str] = ("demo", "full-tpe"),
               n_trials: int = 100_000) -> dict[str, Strategy]:
    """The benchmark's strategies, by name.  ``space``: the values of sigma, n_points, loss, lr
    and batch_size searched (default: those recorded in the table; the benchmark passes the
    table's design, so that a partial table is searched over the whole space).  ``report_grid``:
    (sigma, n_points, loss, lr, batch_size) rows of the report's runs, each run to its end.
    ``shipped``: shipped study files replayed as they are (their space, sampler, pruner and
    trial budget; only their epochs become the table's).  ``n_trials``: the trial budget of the
    others (the replay's epoch budget normally stops them first)."""
    sp = _space(table, space)
    out: dict[str, Strategy] = {}

    def add(name: str, sampler: dict, pruner: dict, note: str = "") -> None:
        out[name] = Strategy(name, _study(name, sp, sampler, pruner, n_trials), note=note)

    if report_grid:
        rows = [dict(zip(_PARAMS, r, strict=True)) for r in report_grid]
        grid_space = {**sp, **{k: sorted({r[k] for r in rows}, key=str) for k in _PARAMS}}
        grid_space = {k: (v[0] if isinstance(v, list) and len(v) == 1 else v)
                      for k, v in grid_space.items()}
        cfg = _study("report-grid", grid_space, {"name": "random"}, {"name": "none"}, len(rows))
        out["report-grid"] = Strategy("report-grid", cfg, tuple(rows),
                                      note="the report's runs, each to its end")
    grid = tuple(table.params_of(r) for r in table.answering)
    out["table-grid"] = Strategy(
        "table-grid", _study("table-grid", sp, {"name": "random"}, {"name": "none"}, len(grid)),
        grid, shuffle=True, note="every seed-0 configuration, in a random order (reference)")
    for name, sampler, pruner, note in SAMPLER_PRUNER:
        add(name, {"name": sampler}, {"name": pruner}, note)
    try:  # the learning-curve extrapolation pruner, where hpo.study.config knows it
        add("tpe+extrapolation", {"name": "tpe"}, {"name": "extrapolation"})
    except ConfigError:
        pass
    for name in shipped:
        out[name] = Strategy(name, load_study_config(name), note="shipped study, as it is")
    return out


def exact_strategies(space: CellSpace, *, report_grid: Sequence[Sequence] | None = None,
                     n_trials: int = 100_000, sh_batch: int = 64, sh_eta: int = 4,
                     sh_rungs: tuple[int, ...] = (1, 5)) -> dict[str, Strategy]:
    """The strategies of the exact problem, by name (searched over ``space.study_space()``).
    ``report_grid``: (sigma, n_points, loss, lr, batch_size) rows of the report's runs: asked
    as they are (a loss left out of the space as its twin: Huber as SmoothL1) in ``report-grid``,
    and once per recorded lr in ``hand-grid-lr`` (the report's method with the learning rate
    searched too); each run to its end, in the report's order."""
    sp = space.study_space()
    out: dict[str, Strategy] = {}

    def add(name: str, sampler: dict, pruner: dict, note: str = "", **kw: Any) -> None:
        out[name] = Strategy(name, _study(name, sp, sampler, pruner, n_trials), note=note, **kw)

    def grid(name: str, rows: list[dict], note: str, shuffle: bool = False) -> None:
        out[name] = Strategy(name, _study(name, sp, {"name": "random"}, {"name": "none"},
                                          len(rows)), tuple(rows), shuffle=shuffle, note=note)

    if report_grid:
        twin = {"huber": "smoothl1"}
        rows = [dict(zip(_PARAMS, r, strict=True)) for r in report_grid]
        rows = [{k: (twin.get(v, v) if k == "loss" else v) for k, v in r.items()
                 if k in space.keys} for r in rows]
        for r in rows:
            space.cell_of(r)
        grid("report-grid", rows, "the report's runs, each to its end")
        lrs = space.values["lr"] if "lr" in space.keys else []
        grid("hand-grid-lr", [{**r, "lr": lr} for lr in lrs for r in rows],
             "the report's runs at every recorded lr, each to its end")
    grid("table-grid", [dict(zip(space.keys, c, strict=True)) for c in sorted(space.cells)],
         "every cell once, in a random order (G)", shuffle=True)
    for name, sampler, pruner, note in SAMPLER_PRUNER:
        add(name, {"name": sampler}, {"name": pruner}, note)
    with contextlib.suppress(ConfigError):
        add("tpe+extrapolation", {"name": "tpe"}, {"name": "extrapolation"})
    add("sync-sh", {"name": "random"}, {"name": "none"},
        f"synchronous successive halving: {sh_batch} random cells a batch, rungs "
        f"{', '.join(map(str, sh_rungs))} epochs, the best 1/{sh_eta} go on",
        sync_sh=(sh_batch, sh_eta, tuple(sh_rungs)))
    return out


# --- replay ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TrialRecord:
    """One finished trial of a replay."""

    number: int
    worker: int
    state: str  # "COMPLETE" | "PRUNED" | "FAIL"
    run_id: str
    answer: str  # Answer.kind
    epochs: int  # epochs this trial ran (its cost)
    start: float  # simulated time it was asked, s
    time: float  # simulated time it was told, s
    cum_epochs: int  # epochs run by all workers when it was told
    cum_seconds: float  # compute seconds of all workers when it was told
    value: float | None  # what it told (COMPLETE only)
    val_fair: float | None  # its run's final validation fair accuracy (COMPLETE only)
    regret: float | None  # the incumbent's regret after it (None: no COMPLETE trial yet)
    cell: tuple | None = None  # CellSpace: the cell it asked


@dataclass
class Trace:
    strategy: str
    seed: int
    n_workers: int
    budget_epochs: int | None
    best_value: float  # the table's
    trials: list[TrialRecord] = field(default_factory=list)
    incumbent: TrialRecord | None = None  # study.best_trial's record
    cut_off: int = 0  # trials running when the budget ran out
    total_epochs: int = 0
    total_seconds: float = 0.0  # compute, all workers
    end_time: float = 0.0  # simulated
    max_running: int = 0
    answers: dict[str, int] = field(default_factory=dict)  # by Answer.kind, every asked trial
    #: the replayed Optuna study (in memory), for inspection
    study: optuna.Study | None = field(default=None, repr=False, compare=False)

    @property
    def regret(self) -> float | None:
        """The final incumbent's regret (fraction; x100 for accuracy points)."""
        return self.incumbent.regret if self.incumbent else None

    @property
    def exact_share(self) -> float:
        n = sum(self.answers.values())
        return self.answers.get("exact", 0) / n if n else math.nan

    def regret_at(self, epochs: float) -> float | None:
        """The incumbent's regret once ``epochs`` epochs of compute were spent."""
        out = None
        for t in self.trials:
            if t.cum_epochs > epochs:
                break
            out = t.regret
        return out

    def first_within(self, tol: float) -> TrialRecord | None:
        """The first trial after which the incumbent's regret is at most ``tol``."""
        return next((t for t in self.trials if t.regret is not None and t.regret <= tol), None)


@contextlib.contextmanager
def _quiet_optuna() -> Iterator[None]:
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(logging.WARNING)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(level)


def replay_config(cfg: StudyConfig, table: LearningCurveTable, seed: int) -> StudyConfig:
    """The study as replayed: the sampler seeded for this replay (:data:`SEED_STRIDE`) and the
    table's epochs (so that Hyperband's maximum resource is the table's curve length)."""
    if cfg.is_multi_objective or cfg.objectives[0] != OBJECTIVE:
        raise ConfigError(f"{cfg.name}: a replay scores {OBJECTIVE!r} alone, not "
                          f"{list(cfg.objectives)}")
    return cfg.override({"sampler.seed": seed * SEED_STRIDE, "space.epochs": table.epochs})


@dataclass
class _Running:
    trial: optuna.Trial
    answer: Answer
    start: float
    done: int = 0  # epochs finished


def replay(study: StudyConfig | Strategy, table: LearningCurveTable | CellSpace, seed: int,
           n_workers: int = 4, budget_epochs: int | None = None) -> Trace:
    """Replay one strategy (or study definition) on the table with ``n_workers`` asynchronous
    workers; stop when the epochs run by all workers reach ``budget_epochs`` (running trials are
    cut off) or the study's ``n_trials`` have finished.  Deterministic for a seed.  ``table``: a
    :class:`CellSpace` is the exact problem (draws, seed-mean regret); a
    :class:`LearningCurveTable` the legacy one (nearest neighbours, regret against one run)."""
    strategy = study if isinstance(study, Strategy) else Strategy(study.name, study)
    if n_workers < 1:
        raise ValueError(f"n_workers must be >= 1, got {n_workers}")
    if strategy.sync_sh is not None:
        if not isinstance(table, CellSpace):
            raise ValueError(f"{strategy.name}: synchronous SH replays on a CellSpace only")
        return sync_sh(strategy, table, seed, n_workers, budget_epochs)
    cfg = replay_config(strategy.config, table, seed)
    if budget_epochs is None and cfg.n_trials is None:
        raise ValueError(f"{cfg.name}: give budget_epochs (the study has no n_trials)")
    split = cfg.objective_split
    trace = Trace(strategy.name, seed, n_workers, budget_epochs, table.best_value)
    with _quiet_optuna():
        storage = optuna.storages.InMemoryStorage()
        # One name per seed, whatever the strategy: Optuna's Hyperband assigns brackets by a hash
        # of the study name and trial number, so a name per strategy gave each strategy its own
        # bracket draws (common random numbers keep that noise out of the comparison).
        name = f"replay-{seed}"
        optuna.create_study(storage=storage, study_name=name, directions=list(cfg.directions))
        # one handle per worker with its own sampler and pruner, as real workers have
        handles = [optuna.load_study(study_name=name, storage=storage,
                                     sampler=build_sampler(cfg, worker_index=i),
                                     pruner=build_pruner(cfg)) for i in range(n_workers)]
        queued = list(strategy.enqueue)
        if strategy.shuffle:
            random.Random(seed).shuffle(queued)
        for params in queued:
            handles[0].enqueue_trial(dict(params))
        if isinstance(table, CellSpace):
            asked: dict[tuple, int] = {}

            def answer(params: Mapping[str, Any]) -> Answer:
                cell = table.cell_of(params)
                k = asked[cell] = asked.get(cell, -1) + 1
                return Answer(table.draw(cell, seed, k), "draw", cell)

            _simulate(cfg, table.table, handles, trace, split, answer, table.regret)
        else:
            _simulate(cfg, table, handles, trace, split, table.answer, None)
        best = None
        with contextlib.suppress(ValueError):  # no COMPLETE trial
            best = handles[0].best_trial.number
        trace.incumbent = next((t for t in trace.trials if t.number == best), None)
        trace.study = handles[0]
    return trace


def _simulate(cfg: StudyConfig, table: LearningCurveTable, handles: list[optuna.Study],
              trace: Trace, split: str, answer_of: Callable[[Mapping[str, Any]], Answer],
              cell_regret: Callable[[tuple], float] | None) -> None:
    events: list[tuple[float, int]] = []  # (simulated time an epoch ends, worker): ties by worker
    running: dict[int, _Running] = {}
    asked = 0
    best_value: float | None = None
    regret: float | None = None

    def epoch_seconds(r: _Running) -> float:
        run = r.answer.run
        return run.seconds[r.done] if r.done < run.epochs_run else run.fail_seconds

    def start(worker: int, now: float) -> None:
        nonlocal asked
        if cfg.n_trials is not None and asked >= cfg.n_trials:
            return
        asked += 1
        trial = handles[worker].ask()
        answer = answer_of(cfg.suggest(trial))
        trace.answers[answer.kind] = trace.answers.get(answer.kind, 0) + 1
        r = running[worker] = _Running(trial, answer, now)
        trace.max_running = max(trace.max_running, len(running))
        heapq.heappush(events, (now + epoch_seconds(r), worker))

    def finish(worker: int, now: float, state: TrialState, value: float | None) -> None:
        nonlocal best_value, regret
        r = running.pop(worker)
        tell_trial(handles[worker], r.trial, value, state=state)
        run = r.answer.run
        val = None
        if state == TrialState.COMPLETE:
            val = run.val_fair
            if value is not None and (best_value is None or value > best_value):
                best_value = value  # strictly better: study.best_trial keeps the first of ties
                if cell_regret is not None and r.answer.cell is not None:
                    regret = cell_regret(r.answer.cell)
                else:
                    regret = table.best_value - (val if val is not None else -math.inf)
        trace.trials.append(TrialRecord(
            r.trial.number, worker, state.name, run.run_id, r.answer.kind, r.done, r.start,
            now, trace.total_epochs, trace.total_seconds, value, val, regret, r.answer.cell))

    for w in range(len(handles)):
        start(w, 0.0)
    while events:
        now, w = heapq.heappop(events)
        r = running[w]
        run = r.answer.run
        trace.total_seconds += epoch_seconds(r)
        r.done += 1
        trace.total_epochs += 1
        trace.end_time = now
        if r.done > run.epochs_run:  # the epoch a diverged run failed in
            finish(w, now, TrialState.FAIL, None)
        else:
            r.trial.report(run.fair[r.done - 1], step=r.done)
            if r.trial.should_prune():
                finish(w, now, TrialState.PRUNED, None)
            elif r.done == run.epochs_run and not run.failed:
                finish(w, now, TrialState.COMPLETE, run.told_value(split))
            else:
                heapq.heappush(events, (now + epoch_seconds(r), w))
        if trace.budget_epochs is not None and trace.total_epochs >= trace.budget_epochs:
            trace.cut_off = len(running)
            return
        if w not in running:
            start(w, now)


@dataclass
class _Member:
    number: int
    answer: Answer
    start: float
    done: int = 0
    worker: int = -1
    failed: bool = False


def sync_sh(strategy: Strategy, space: CellSpace, seed: int, n_workers: int = 4,
            budget_epochs: int | None = None) -> Trace:
    """Synchronous successive halving over the cells: batches of ``n`` cells drawn at random
    (without replacement within a batch, with ``random.Random(f"sync-sh/{seed}")``), each run
    to the first rung; at every rung (a barrier: all of the batch's runs there) the best
    ``1/eta`` by the test fair accuracy they report at that epoch (ties: the earlier trial) go
    on to the next rung, the others are pruned; the last rung is the end of training, where a
    run tells its value as in :func:`replay`.  Then the next batch, until ``budget_epochs``
    (or one batch without a budget).  The ``n_workers`` workers take the rung's runs in order,
    one epoch at a time; the cells' runs are drawn as in :func:`replay` (common random
    numbers)."""
    assert strategy.sync_sh is not None
    n, eta, rungs = strategy.sync_sh
    targets = [e for e in rungs if e < space.epochs] + [space.epochs]
    rng = random.Random(f"sync-sh/{seed}")
    cells = sorted(space.cells)
    asked: dict[tuple, int] = {}
    trace = Trace(strategy.name, seed, n_workers, budget_epochs, space.best_value)
    split = strategy.config.objective_split
    number = 0
    now = 0.0
    best_told: float | None = None
    regret: float | None = None

    def record(m: _Member, state: str, value: float | None) -> None:
        nonlocal best_told, regret
        run = m.answer.run
        better = state == "COMPLETE" and value is not None and (best_told is None
                                                                or value > best_told)
        if better:
            best_told, regret = value, space.regret(m.answer.cell)
        rec = TrialRecord(m.number, m.worker, state, run.run_id, m.answer.kind, m.done, m.start,
                          now, trace.total_epochs, trace.total_seconds,
                          value if state == "COMPLETE" else None,
                          run.val_fair if state == "COMPLETE" else None, regret, m.answer.cell)
        trace.trials.append(rec)
        if better:
            trace.incumbent = rec

    def out_of_budget() -> bool:
        return budget_epochs is not None and trace.total_epochs >= budget_epochs

    while True:
        batch_cells = rng.sample(cells, min(n, len(cells)))
        batch_cells += [rng.choice(cells) for _ in range(n - len(batch_cells))]
        alive: list[_Member] = []
        for cell in batch_cells:
            k = asked[cell] = asked.get(cell, -1) + 1
            alive.append(_Member(number, Answer(space.draw(cell, seed, k), "draw", cell), now))
            number += 1
        for level, target in enumerate(targets):
            last = level == len(targets) - 1
            queue = list(alive)
            events: list[tuple[float, int]] = []
            running: dict[int, _Member] = {}

            for w in range(n_workers):
                _take(queue, running, events, w, now)
            trace.max_running = max(trace.max_running, len(running))
            while events:
                t, w = heapq.heappop(events)
                m = running[w]
                trace.total_seconds += _epoch_cost(m)
                m.done += 1
                trace.total_epochs += 1
                now = trace.end_time = max(now, t)
                run = m.answer.run
                finished = True
                if m.done > run.epochs_run:  # the epoch a diverged run failed in
                    m.failed = True
                    record(m, "FAIL", None)
                elif m.done >= target:
                    if last:
                        record(m, "COMPLETE", run.told_value(split))
                else:
                    finished = False
                    heapq.heappush(events, (t + _epoch_cost(m), w))
                if out_of_budget():
                    trace.cut_off = len(running) - finished
                    return trace
                if finished:
                    del running[w]
                    _take(queue, running, events, w, t)
            if last:
                break
            alive = [m for m in alive if not m.failed]
            ranked = sorted(alive, key=lambda m: (-m.answer.run.fair[target - 1], m.number))
            keep = max(1, len(ranked) // eta)
            for m in sorted(ranked[keep:], key=lambda m: m.number):
                record(m, "PRUNED", None)
            alive = sorted(ranked[:keep], key=lambda m: m.number)
            if not alive:
                break
        if budget_epochs is None:
            return trace


def _epoch_cost(m: _Member) -> float:
    run = m.answer.run
    return run.seconds[m.done] if m.done < run.epochs_run else run.fail_seconds


def _take(queue: list[_Member], running: dict[int, _Member], events: list[tuple[float, int]],
          worker: int, t: float) -> None:
    """The free ``worker`` starts the next queued run (if any) at time ``t``."""
    if queue:
        m = running[worker] = queue.pop(0)
        m.worker = worker
        heapq.heappush(events, (t + _epoch_cost(m), worker))
