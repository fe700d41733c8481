"""Study definitions: TOML files in ``studies/`` validated by :class:`StudyConfig`.

A study file names the study, its storage, what to optimise (objectives and directions), the
sampler, the pruner, the budget and the search space.  Everything is checked here, in one place;
errors are one line naming the file and the field.

The training settings come from :class:`model.config.TrainConfig`, the one definition of a
training run, and are not restated here:

- ``[space]``: every field of ``TrainConfig`` that shapes what a trial learns
  (``TrainConfig.searchable_fields()``: data, network, loss, optimisation, epochs, seed) can be
  fixed (a scalar), chosen (a list) or searched over a range (a table ``{low, high, log,
  step}``, numeric fields only), under its ``TrainConfig`` name, with ``TrainConfig``'s default
  and checks.  A tuple-valued field is fixed
  by a list of numbers (``betas = [0.9, 0.99]``) and chosen by a list of lists
  (``channels = [[22, 47, 42], [32, 64, 64]]``: Optuna sees the choices as strings).  A field
  that ``model`` gains is searchable at once.
- ``[train]``: the fields in :data:`TRAIN_SECTION` (data file, energy window, device and speed),
  fixed for the whole study.
- ``[resume]``: ``save_interval`` (seconds, default 60; 0: every epoch): how often a trial saves
  its training state at the end of an epoch, so that a trial retried after a dead worker or
  re-queued after SIGINT/SIGTERM continues from its last saved epoch (see
  ``hpo.execution.objective``).

One default differs from ``TrainConfig``'s: a study that does not fix ``epochs`` trains the
report's 2500 (:data:`SPACE_DEFAULTS`) per trial, as studies always have (``TrainConfig``'s 50 is
for a first single run); the shipped studies set it explicitly.

Scoring across different sigma: the default objective is ``fair_accuracy``, the report's accuracy
after re-broadening prediction and target to a common ``reference_sigma`` (Gaussians compose:
sigma_ref^2 = sigma^2 + s^2), which defaults to the widest sigma in the space.  The report's plain
``accuracy`` is always recorded as well."""

from __future__ import annotations

import json
import math
import tomllib
import types
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Union, get_args, get_origin

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)

import studies
from hpo.storage.home import NAME_MAX_BYTES, is_file, name_problem
from hpo.study.pruners import CurveExtrapolationPruner
from model.config import TrainConfig, did_you_mean, refuse_bool_numbers, validation_message
from model.contract import (
    MAX_SECONDS,
    METRICS,
    PARAMETER_OBJECTIVES,
    Direction,
    Metric,
    direction,
)
from model.errors import ConfigError

__all__ = [
    "ConfigError", "ParamSpec", "SET_BY_STUDY", "SPACE_DEFAULTS", "StudyConfig", "TRAIN_SECTION",
    "TrainSettings", "build_pruner", "build_sampler", "config_json", "load_study_config",
    "parse_param", "setting_type", "shipped_studies", "space_fields", "study_config_from_dict",
    "study_path", "worker_seed",
]
MULTI_OBJECTIVE_SAMPLERS = ("tpe", "grid", "random", "nsga2")
_F = TrainConfig.model_fields
#: TrainConfig fields a trial gets from the study (``reference_sigma``) or the worker.
SET_BY_STUDY = ("reference_sigma", "checkpoint_dir")
#: TrainConfig fields fixed for a whole study in its ``[train]`` section: those TrainConfig
#: does not let a study search (the data, the energy window that every trial's spectra share,
#: where and how fast to train) but the ones in SET_BY_STUDY.
TRAIN_SECTION = tuple(n for n in _F if n not in TrainConfig.searchable_fields()
                      and n not in SET_BY_STUDY)
#: Where a study's default differs from TrainConfig's: trials train the report's 2500 epochs
#: unless the study says otherwise (see the module docstring).
SPACE_DEFAULTS: dict[str, Any] = {"epochs": 2500}


def space_fields() -> tuple[str, ...]:
    """The searchable training settings (``TrainConfig.searchable_fields``), in its order."""
    return TrainConfig.searchable_fields()


def setting_type(name: str) -> Any:
    """The type of the TrainConfig field ``name``: its annotation without ``None`` (``int | None``
    -> ``int``; pydantic has already dropped ``Annotated``); a union of several types as is."""
    ann = _F[name].annotation
    if get_origin(ann) in (Union, types.UnionType):
        args = [a for a in get_args(ann) if a is not type(None)]
        ann = args[0] if len(args) == 1 else ann
    return ann


def _is_sequence(name: str) -> bool:
    return get_origin(setting_type(name)) in (tuple, list)


def _numeric(name: str) -> type | None:
    """``int`` or ``float`` for a numeric field, else ``None``."""
    t = setting_type(name)
    return t if t in (int, float) else None


def _default(name: str) -> Any:
    if name in SPACE_DEFAULTS:
        return SPACE_DEFAULTS[name]
    value = _F[name].get_default(call_default_factory=True)
    return tuple(value) if isinstance(value, list) else value


def _check_value(name: str, value: Any) -> Any:
    """One value of a space field, validated (and normalised) by TrainConfig itself."""
    if _numeric(name) is not None and (isinstance(value, bool | str)):
        raise ValueError(f"expected a number, got {value!r}")
    try:
        cfg = TrainConfig.model_validate({name: value})
    except ValidationError as err:
        msg = validation_message(err, first=True).removeprefix(f"{name}: ")
        raise ValueError(msg if repr(value) in msg else f"{msg}, got {value!r}") from None
    out = getattr(cfg, name)
    return tuple(out) if isinstance(out, list) else out


def _choice_key(value: Any) -> Any:
    """Optuna's categorical value of a choice: tuples become their JSON text."""
    return json.dumps(list(value)) if isinstance(value, tuple) else value


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


class ParamSpec(BaseModel):
    """One search-space entry: fixed value, choice list or numeric range."""

    model_config = ConfigDict(frozen=True)

    name: str
    kind: Literal["fixed", "choice", "range"]
    value: Any = None
    choices: tuple = ()
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None

    @property
    def searched(self) -> bool:
        return self.kind != "fixed"

    @property
    def is_int(self) -> bool:
        return _numeric(self.name) is int

    def values(self) -> list:
        """Every value this parameter can take (ranges: only for grid studies, not allowed)."""
        if self.kind == "fixed":
            return [self.value]
        if self.kind == "choice":
            return list(self.choices)
        raise ConfigError(f"space.{self.name}: a range has no finite list of values")

    def distribution_values(self) -> list:
        """The choices as Optuna sees them (primitives: tuples as JSON text)."""
        return [_choice_key(c) for c in self.values()]

    def suggest(self, trial) -> Any:
        if self.kind == "fixed":
            return self.value
        if self.kind == "choice":
            key = trial.suggest_categorical(self.name, self.distribution_values())
            return dict(zip(self.distribution_values(), self.choices, strict=True))[key]
        low, high = self.bounds()
        if self.is_int:
            step = int(self.step or 1)
            return trial.suggest_int(self.name, int(low), int(high), step=step, log=self.log)
        return trial.suggest_float(self.name, low, high, log=self.log, step=self.step)

    def bounds(self) -> tuple[float, float]:
        """(low, high) of a range."""
        if self.low is None or self.high is None:
            raise ConfigError(f"space.{self.name}: not a range")
        return self.low, self.high

    def to_toml(self) -> Any:
        """The entry in the study file's form."""
        if self.kind == "fixed":
            return _jsonable(self.value)
        if self.kind == "choice":
            return [_jsonable(c) for c in self.choices]
        r: dict[str, Any] = {"low": self.low, "high": self.high, "log": self.log}
        if self.step is not None:
            r["step"] = self.step
        return r


def parse_param(name: str, raw: Any) -> ParamSpec:
    """A space entry from its TOML form: scalar (fixed), list (choice), table (range)."""
    if name not in space_fields():
        hint = " (a [train] setting)" if name in TRAIN_SECTION else ""
        raise ValueError(f"unknown parameter{hint}{did_you_mean(name, space_fields())} "
                         f"(known: {', '.join(space_fields())})")
    if isinstance(raw, ParamSpec):
        return raw
    sequence = _is_sequence(name)
    if isinstance(raw, list | tuple) and not (
            sequence and not any(isinstance(v, list | tuple) for v in raw)):
        if not raw:
            raise ValueError("empty choice list")
        choices = tuple(_check_value(name, v) for v in raw)
        if len(set(choices)) != len(choices):
            raise ValueError(f"duplicate choices in {list(raw)}")
        if len(choices) == 1:
            return ParamSpec(name=name, kind="fixed", value=choices[0])
        return ParamSpec(name=name, kind="choice", choices=choices)
    if isinstance(raw, dict):
        typ = _numeric(name)
        if typ is None:
            raise ValueError("a range needs a numeric parameter; give a list of choices")
        unknown = set(raw) - {"low", "high", "log", "step"}
        if unknown:
            raise ValueError(f"unknown range key(s) {sorted(unknown)} (allowed: low, high, log, "
                             "step)")
        if "low" not in raw or "high" not in raw:
            raise ValueError("a range needs both low and high")
        low, high = _check_value(name, raw["low"]), _check_value(name, raw["high"])
        if low is None or high is None:
            raise ValueError("a range needs numbers for low and high")
        if not low < high:
            raise ValueError(f"empty range: low {low!r} must be below high {high!r}")
        log = raw.get("log", False)
        if not isinstance(log, bool):
            raise ValueError("log must be true or false")
        step = raw.get("step")
        if step is not None:
            if isinstance(step, bool) or not isinstance(step, int | float) or step <= 0:
                raise ValueError(f"step must be a positive number, got {step!r}")
            if log:
                raise ValueError("a range cannot have both log = true and a step")
            if typ is int and not float(step).is_integer():
                raise ValueError(f"step of an integer parameter must be an integer, got {step}")
        return ParamSpec(name=name, kind="range", low=low, high=high, log=log,
                         step=None if step is None else float(step))
    return ParamSpec(name=name, kind="fixed", value=_check_value(name, raw))


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    _no_bool_numbers = field_validator("*", mode="before")(refuse_bool_numbers)


class SamplerConfig(_Section):
    name: Literal["tpe", "grid", "random", "cmaes", "gp", "nsga2"] = "tpe"
    seed: int | None = 0
    options: dict[str, Any] = {}


class PrunerConfig(_Section):
    name: Literal["median", "successive_halving", "hyperband", "extrapolation", "none"] = "median"
    options: dict[str, Any] = {}
#: Trials of one study: far more than any search runs, and an SQL integer holds them.
MAX_TRIALS = 1_000_000
#: Retries of a trial whose worker died: past a few, the trial (not the machine) is at fault.
MAX_RETRY = 100


class BudgetConfig(_Section):
    n_trials: int | None = None  # finished trials (COMPLETE, PRUNED, failed training) in total
    timeout: float | None = None  # seconds of wall time per worker

    @field_validator("n_trials")
    @classmethod
    def _n_trials(cls, v):
        if v is not None and not 1 <= v <= MAX_TRIALS:
            raise ValueError(f"must be between 1 and {MAX_TRIALS:,}, got {v}")
        return v

    @field_validator("timeout")
    @classmethod
    def _timeout(cls, v):
        if v is not None and not 0 < v <= MAX_SECONDS:
            raise ValueError(f"must be > 0 seconds and at most a year ({MAX_SECONDS} s), "
                             f"got {v}")
        return v


class HeartbeatConfig(_Section):
    interval: int = 30  # seconds between heartbeats of a running trial
    grace: int = 120  # a RUNNING trial silent this long is failed (and retried)
    max_retry: int = 3  # retries of a trial whose worker died

    @model_validator(mode="after")
    def _check(self):
        if not 1 <= self.interval <= MAX_SECONDS:
            raise ValueError(f"interval must be between 1 and {MAX_SECONDS} seconds, got "
                             f"{self.interval}")
        if self.grace <= self.interval:
            raise ValueError(f"grace ({self.grace} s) must exceed interval ({self.interval} s)")
        if self.grace > MAX_SECONDS:
            raise ValueError(f"grace must be at most a year ({MAX_SECONDS} s), got {self.grace}")
        if not 0 <= self.max_retry <= MAX_RETRY:
            raise ValueError(f"max_retry must be between 0 and {MAX_RETRY}, got "
                             f"{self.max_retry}")
        return self


class ResumeConfig(_Section):
    """``[resume]``: how often a trial saves its training state (weights, optimiser, RNGs,
    history) so that a retry or re-queue continues from it instead of from epoch 1."""

    #: Seconds between two saves at the end of an epoch (0: every epoch); the work a killed
    #: worker loses is at most this plus one epoch. A SIGINT/SIGTERM always saves.
    save_interval: float = 60.0

    @field_validator("save_interval")
    @classmethod
    def _save_interval(cls, v):
        if not 0 <= v <= MAX_SECONDS:
            raise ValueError(f"must be between 0 and {MAX_SECONDS} seconds, got {v}")
        return v


class _TrainSection(_Section):
    if TYPE_CHECKING:  # the fields are made from TrainConfig's at run time
        def __getattr__(self, name: str) -> Any: ...

    @model_validator(mode="before")
    @classmethod
    def _through_train_config(cls, data: Any) -> Any:
        """Validated and normalised by TrainConfig (unknown keys are left for ``extra``)."""
        if isinstance(data, BaseModel):
            data = data.model_dump()
        if not isinstance(data, dict):
            return data
        known = {k: v for k, v in data.items() if k in TRAIN_SECTION}
        try:
            cfg = TrainConfig.model_validate(known)
        except ValidationError as err:  # each error a line: the study's message places them
            raise ValueError(validation_message(err, sep="\n")) from None
        values = cfg.model_dump(mode="json", include=set(TRAIN_SECTION))
        return {**data, **values}

#: The ``[train]`` section: the TrainConfig fields of :data:`TRAIN_SECTION`, with its defaults
#: (values as in JSON: the dataset a string), validated by TrainConfig.
TrainSettings: type[_TrainSection] = create_model(  # type: ignore[call-overload]
    "TrainSettings", __base__=_TrainSection, __doc__="Fixed training settings of a study.",
    **{n: (Any, _jsonable(_F[n].get_default(call_default_factory=True)))
       for n in TRAIN_SECTION},
)


class StudyConfig(_Section):
    """A validated study definition (see the module docstring and ``studies/*.toml``)."""

    name: str
    description: str = ""
    storage: str | None = None  # None: sqlite:///<runs>/<name>.db
    # None: $SPECOPT_HOME/<study>/artifacts/<storage> (hpo.storage.home)
    artifacts: str | None = None
    objectives: tuple[str, ...] = (Metric.FAIR_ACCURACY,)
    directions: tuple[Direction, ...] = ()  # empty: each objective's own direction
    objective_split: Literal["test", "validation"] = "test"
    reference_sigma: float | None = None
    sampler: SamplerConfig = SamplerConfig()
    pruner: PrunerConfig = PrunerConfig()
    budget: BudgetConfig = BudgetConfig()
    heartbeat: HeartbeatConfig = HeartbeatConfig()
    resume: ResumeConfig = ResumeConfig()
    if TYPE_CHECKING:
        train: _TrainSection = _TrainSection()
    else:
        train: TrainSettings = TrainSettings()  # made from TrainConfig's fields
    space: dict[str, ParamSpec] = Field(default_factory=dict, validate_default=True)
    source: str | None = None  # the file it was read from

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        # the one rule for names (hpo.storage.home), and a study file's own: letters, digits, -_.
        problem = name_problem(v) or (None if all(c.isalnum() or c in "-_." for c in v)
                                      else "holds a character other than a letter, digit, "
                                      "'-', '_' or '.'")
        if problem:
            raise ValueError(f"{v!r} {problem}: use letters, digits, '-', '_' or '.', at most "
                             f"{NAME_MAX_BYTES} bytes, not starting with '-' or '.'")
        return v

    @field_validator("objectives", mode="before")
    @classmethod
    def _objectives(cls, v):
        if isinstance(v, str):
            v = [v]
        if not isinstance(v, list | tuple):
            raise ValueError(f"a metric name or a list of them, not {v!r}")
        if not v:
            raise ValueError("at least one objective")
        allowed = (*METRICS, *PARAMETER_OBJECTIVES)
        for name in v:
            if not isinstance(name, str) or name not in allowed:
                raise ValueError(f"unknown objective {name!r}{did_you_mean(name, allowed)} "
                                 f"(known: {', '.join(allowed)})")
        if len(set(v)) != len(v):
            raise ValueError(f"duplicate objectives in {list(v)}")
        return tuple(v)

    @field_validator("space", mode="before")
    @classmethod
    def _space(cls, v):
        if not isinstance(v, dict):
            raise ValueError("must be a table")
        out, bad = {}, []
        for name, raw in v.items():
            try:
                out[name] = parse_param(name, raw)
            except ValueError as err:
                bad.append(f"{name}: {err}")
        if bad:  # every bad entry, one a line: the study's message places each
            raise ValueError("\n".join(bad))
        return {n: out.get(n) or ParamSpec(name=n, kind="fixed", value=_default(n))
                for n in space_fields()}

    @field_validator("reference_sigma")
    @classmethod
    def _reference_sigma(cls, v):
        if v is not None and not (v > 0 and math.isfinite(v)):
            raise ValueError(f"must be a positive number of eV, got {v}")
        return v

    @model_validator(mode="after")
    def _consistent(self):
        n_obj = len(self.objectives)
        if not self.directions:
            object.__setattr__(self, "directions", tuple(direction(o) for o in self.objectives))
        elif len(self.directions) != n_obj:
            raise ValueError(f"directions: {len(self.directions)} given for {n_obj} objectives "
                             f"{list(self.objectives)}")
        for o in self.objectives:
            if o in PARAMETER_OBJECTIVES and not self.space[o].searched:
                raise ValueError(f"objectives: {o!r} is fixed in the space; search it or drop it")
        if n_obj > 1:
            if self.pruner.name != "none":
                raise ValueError("pruner: Optuna cannot prune multi-objective studies; "
                                 "set pruner.name = \"none\"")
            if self.sampler.name not in MULTI_OBJECTIVE_SAMPLERS:
                raise ValueError(f"sampler: {self.sampler.name!r} is single-objective; use one "
                                 f"of {', '.join(MULTI_OBJECTIVE_SAMPLERS)}")
        if self.sampler.name == "grid":
            ranges = [p.name for p in self.space.values() if p.kind == "range"]
            if ranges:
                raise ValueError(f"space: a grid study needs choice lists, not ranges "
                                 f"({', '.join(ranges)})")
            if self.sampler.options:
                raise ValueError("sampler.options: the grid sampler takes none")
        elif self.budget.n_trials is None and self.budget.timeout is None:
            raise ValueError("budget: give n_trials or timeout (only grid studies default to "
                             "their grid size)")
        sigmas = self.sigma_values()
        if self.reference_sigma is not None and sigmas and self.reference_sigma < max(sigmas):
            raise ValueError(f"reference_sigma {self.reference_sigma} is below the widest sigma "
                             f"{max(sigmas)}: predictions can be broadened, not sharpened")
        # one whole training configuration (fixed values, first choices) through TrainConfig,
        # so that settings that only fail together fail here, not in every trial
        first = {p.name: p.value if p.kind == "fixed" else (
            p.choices[0] if p.kind == "choice" else p.low) for p in self.space.values()}
        try:
            TrainConfig.model_validate(self.train_settings(first))
        except ValidationError as err:
            raise ValueError(validation_message(err, "space", first=True)) from None
        # samplers and pruners: build once so that bad options fail here, not in a worker
        _try_sampler(self)
        build_pruner(self)
        return self

    # --- derived values ---------------------------------------------------------------------

    def sigma_values(self) -> list[float]:
        p = self.space["sigma"]
        if p.kind == "range":
            return list(p.bounds())
        return [float(x) for x in p.values()]

    @property
    def reference_sigma_value(self) -> float:
        """The common width for sigma-fair scores: the study's, else the widest sigma."""
        return self.reference_sigma or max(self.sigma_values())

    @property
    def is_grid(self) -> bool:
        return self.sampler.name == "grid"

    @property
    def is_multi_objective(self) -> bool:
        return len(self.objectives) > 1

    def grid_space(self) -> dict[str, list]:
        """The GridSampler search space: every searched parameter with its choices (as Optuna
        sees them)."""
        return {p.name: p.distribution_values() for p in self.space.values() if p.searched}

    def grid_size(self) -> int:
        return math.prod(len(v) for v in self.grid_space().values()) if self.is_grid else 0

    @property
    def n_trials(self) -> int | None:
        """Trial budget: the file's, else (grid studies) the grid size."""
        if self.budget.n_trials is not None:
            return self.budget.n_trials
        return self.grid_size() if self.is_grid else None

    def searched(self) -> list[str]:
        return [p.name for p in self.space.values() if p.searched]

    def fixed(self) -> dict[str, Any]:
        """Every training setting the study does not search, with its value (None: unset)."""
        return {p.name: p.value for p in self.space.values() if not p.searched}

    def suggest(self, trial) -> dict[str, Any]:
        """Every space parameter's value for this trial (searched ones through ``trial``)."""
        return {name: p.suggest(trial) for name, p in self.space.items()}

    def train_settings(self, params: dict, *, checkpoint_dir: str | None = None
                       ) -> dict[str, Any]:
        """Keyword arguments of ``model.TrainConfig`` for one trial with these ``params``: the
        ``[train]`` settings (device and threads: the worker's options set them there) and the
        study's reference_sigma with them."""
        kw = {k: v for k, v in params.items() if v is not None}
        kw.update({k: v for k, v in self.train.model_dump().items() if v is not None})
        kw["reference_sigma"] = self.reference_sigma_value
        if checkpoint_dir is not None:
            kw["checkpoint_dir"] = checkpoint_dir
        return kw

    # --- changes ------------------------------------------------------------------------------

    def override(self, changes: dict[str, Any] | None = None, /, **more: Any) -> StudyConfig:
        """A copy with changes applied, validated once like a study file.

        Keys are dotted paths into the TOML-shaped dict (``"space.epochs"``, ``"budget.n_trials"``,
        ``"train.device"``, ``"storage"``) or bare names, looked up as a top-level key, then a
        space field, a ``[train]`` setting, a ``[budget]`` key (``epochs``, ``n_trials``,
        ``dataset``).  A value of ``None`` removes the key (its default applies again).
        """
        changes = {**(changes or {}), **more}
        if not changes:
            return self
        data = self.to_dict()
        for key, value in changes.items():
            path = _resolve_key(key)
            node = data
            for part in path[:-1]:
                if not isinstance(node.get(part, {}), dict):
                    raise ConfigError(f"override {key!r}: {part!r} is not a table")
                node = node.setdefault(part, {})
            if value is None:
                node.pop(path[-1], None)
            else:
                node[path[-1]] = value
        return study_config_from_dict(data, source=self.source)

    def to_dict(self) -> dict:
        """The TOML-shaped dict (round-trips through :func:`study_config_from_dict`).  Space
        entries fixed at ``None`` (unset, e.g. no subset) are left out."""
        space = {p.name: p.to_toml() for p in self.space.values()
                 if not (p.kind == "fixed" and p.value is None)}
        data = self.model_dump(exclude={"space", "source"}, mode="json")
        data["objectives"] = list(self.objectives)
        data["directions"] = list(self.directions)
        data["space"] = space
        return data

    def identity(self) -> dict:
        """What makes two runs of a study comparable (stored with the study, checked on join)."""
        d = self.to_dict()
        return {k: d[k] for k in ("objectives", "directions", "objective_split", "space",
                                  "sampler", "pruner")} | {
            "reference_sigma": self.reference_sigma_value,
            "train": {k: d["train"][k] for k in ("dataset", "e_min", "e_max")},
        }
_TOP_LEVEL = tuple(StudyConfig.model_fields)
_SECTIONS = {"budget": tuple(BudgetConfig.model_fields),
             "resume": tuple(ResumeConfig.model_fields)}


def _resolve_key(key: str) -> list[str]:
    """A dotted override key, or a bare name resolved to its section."""
    if "." in key:
        path = key.split(".")
        if path[0] not in _TOP_LEVEL or path[0] == "source":
            known = [k for k in _TOP_LEVEL if k != "source"]
            raise ConfigError(f"override {key!r}: unknown key {path[0]!r}"
                              f"{did_you_mean(path[0], known)} (known: {', '.join(known)})")
        return path
    if key in _TOP_LEVEL and key != "source":
        return [key]
    if key in space_fields():
        return ["space", key]
    if key in TRAIN_SECTION:
        return ["train", key]
    for section, keys in _SECTIONS.items():
        if key in keys:
            return [section, key]
    bare = [*(k for k in _TOP_LEVEL if k != "source"), *space_fields(), *TRAIN_SECTION,
            *(k for keys in _SECTIONS.values() for k in keys)]
    raise ConfigError(f"override {key!r}: not a study key, training setting or budget key"
                      f"{did_you_mean(key, bare)}")


def study_config_from_dict(data: dict, source: str | Path | None = None) -> StudyConfig:
    """Validate a study definition given as a dict (the TOML's shape)."""
    where = str(source) if source is not None else "study definition"
    data = dict(data)
    data.pop("source", None)
    if source is not None and "name" not in data:
        data["name"] = Path(source).stem
    try:
        cfg = StudyConfig.model_validate({**data, "source": None if source is None
                                          else str(source)})
    except ValidationError as err:
        raise ConfigError(validation_message(err, where, model=StudyConfig)) from None
    except ConfigError as err:
        raise ConfigError(f"{where}: {err}") from None
    return cfg


def shipped_studies() -> list[str]:
    """The names of the shipped studies (``studies/*.toml``)."""
    return sorted(p.stem for p in studies.DIR.glob("*.toml"))


def study_path(name_or_path: str | Path) -> Path:
    """The TOML file of a shipped study name, or the given path."""
    s = str(name_or_path)
    p = Path(s)
    if s.endswith((".toml", ".json")) or is_file(p) or "/" in s:
        if not is_file(p):
            raise ConfigError(f"study file not found: {p}")
        return p
    shipped = studies.DIR / f"{s}.toml"
    if is_file(shipped):
        return shipped
    raise ConfigError(f"unknown study {s!r}{did_you_mean(s, shipped_studies())}: shipped "
                      f"studies are {', '.join(shipped_studies())} (or give the path of a .toml "
                      "file)")
#: The largest study file read, in MiB: a study is a page of text; a bigger file is refused
#: before it fills memory.
MAX_STUDY_MIB = 1


def load_study_config(name_or_path: str | Path) -> StudyConfig:
    """Read and validate a study: a shipped name (``demo``) or the path of a TOML file (or of
    the JSON that ``config_json`` writes, which ``launch`` hands to its workers)."""
    path = study_path(name_or_path)
    limit = MAX_STUDY_MIB << 20
    try:
        with open(path, "rb") as f:
            raw = f.read(limit + 1)
    except OSError as err:
        raise ConfigError(f"{path}: cannot read ({err.strerror})") from None
    if len(raw) > limit:
        raise ConfigError(f"{path}: larger than {MAX_STUDY_MIB} MiB: not a study file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text (byte {err.start}): save it as UTF-8") \
            from None
    kind = "JSON" if path.suffix == ".json" else "TOML"
    try:
        data = json.loads(text) if kind == "JSON" else tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as err:
        raise ConfigError(f"{path}: not valid {kind} ({err})") from None
    except RecursionError:
        raise ConfigError(f"{path}: not valid {kind} (nested too deep)") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: not a study: {kind} {type(data).__name__}, expected an "
                          "object of keys")
    if kind == "JSON":
        source = data.pop("source", None) or path
        return study_config_from_dict(data, source=source)
    return study_config_from_dict(data, source=path)


def config_json(cfg: StudyConfig) -> str:
    """The definition as JSON (``load_study_config`` reads it back)."""
    return json.dumps({**cfg.to_dict(), "source": cfg.source}, sort_keys=True)


def worker_seed(seed: int, worker_index: int) -> int:
    """The sampler seed of worker ``worker_index`` of a study seeded ``seed``: a hash of the
    pair (numpy's SeedSequence), not ``seed + index``, which made worker 1 of seed 0 draw what
    worker 0 of seed 1 drew."""
    import numpy as np

    # SeedSequence takes non-negative entropy: a negative seed maps to its 64-bit residue
    entropy = [seed % (1 << 64), worker_index % (1 << 64)]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])


def build_sampler(cfg: StudyConfig, worker_index: int | None = 0):
    """The study's sampler.  Grid: the same seed in every worker (it orders the grid); other
    samplers: a seed hashed from (study seed, worker index) (:func:`worker_seed`), so parallel
    workers do not propose identical points and studies seeded 0, 1, 2 share no worker's draws
    (no index: one from host name and process id, for workers started by hand on several
    machines)."""
    import optuna

    s = cfg.sampler
    if worker_index is None:
        import os
        import socket
        import zlib

        worker_index = zlib.crc32(f"{socket.gethostname()}:{os.getpid()}".encode()) % 1_000_003
    seed = s.seed if (s.seed is None or s.name == "grid") else worker_seed(s.seed, worker_index)
    opts = dict(s.options)
    if s.name == "cmaes":
        try:
            import cmaes  # noqa: F401
        except ImportError:
            raise ConfigError("sampler: 'cmaes' needs the cmaes package "
                              "(pip install cmaes)") from None
    samplers = {
        "tpe": lambda: optuna.samplers.TPESampler(seed=seed, **opts),
        "random": lambda: optuna.samplers.RandomSampler(seed=seed, **opts),
        "grid": lambda: optuna.samplers.GridSampler(cfg.grid_space(), seed=seed),
        "cmaes": lambda: optuna.samplers.CmaEsSampler(seed=seed, **opts),
        "gp": lambda: optuna.samplers.GPSampler(seed=seed, **opts),
        "nsga2": lambda: optuna.samplers.NSGAIISampler(seed=seed, **opts),
    }
    try:
        return samplers[s.name]()  # the name is one of SamplerConfig's Literal
    except (TypeError, ValueError) as err:
        raise ConfigError(f"sampler.options: {err}") from None


def _try_sampler(cfg: StudyConfig) -> None:
    """Build the study's sampler and let it propose once on a throwaway in-memory study: an
    option of the wrong type (``n_startup_trials = "x"``) fails only when the sampler first
    proposes, which in a worker failed every trial."""
    import logging

    import optuna

    quiet, level = logging.getLogger("optuna"), logging.getLogger("optuna").level
    quiet.setLevel(logging.WARNING)  # no 'A new study created in memory' line
    try:
        study = optuna.create_study(sampler=build_sampler(cfg), directions=list(cfg.directions))
        cfg.suggest(study.ask())
    except ConfigError:  # build_sampler's, which names the key already
        raise
    except (TypeError, ValueError, AttributeError) as err:
        raise ConfigError(f"sampler.options: {err}") from None
    finally:
        quiet.setLevel(level)


def build_pruner(cfg: StudyConfig):
    """The study's pruner: Optuna's ``median``, ``successive_halving``, ``hyperband``, ``none``,
    or ``extrapolation`` (:class:`hpo.study.pruners.CurveExtrapolationPruner`: prunes a trial whose
    extrapolated learning curve cannot beat the best completed trial).  ``hyperband`` and
    ``extrapolation`` get ``max_resource`` from the study's (largest) ``epochs`` unless their
    options give it."""
    import optuna

    p = cfg.pruner
    opts = dict(p.options)
    if p.name == "none" and opts:
        raise ConfigError("pruner.options: pruner 'none' takes none")
    if p.name in ("hyperband", "extrapolation"):
        epochs = cfg.space["epochs"]
        opts.setdefault("max_resource",
                        int(epochs.bounds()[1] if epochs.kind == "range"
                            else max(epochs.values())))
    pruners = {
        "median": optuna.pruners.MedianPruner,
        "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
        "hyperband": optuna.pruners.HyperbandPruner,
        "extrapolation": CurveExtrapolationPruner,
        "none": optuna.pruners.NopPruner,
    }
    try:
        return pruners[p.name](**opts)  # the name is one of PrunerConfig's Literal
    except (TypeError, ValueError) as err:
        raise ConfigError(f"pruner.options: {err}") from None

