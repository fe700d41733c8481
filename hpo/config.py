"""Study definitions: TOML files in ``studies/`` validated by :class:`StudyConfig`.

A study file names the study, its storage, what to optimise (objectives and directions), the
sampler, the pruner, the budget and the search space.  Every entry of ``[space]`` is either fixed
(a scalar), a choice (a list) or a range (a table ``{low, high, log, step}``).  Everything is
checked here, in one place; errors are one line naming the file and the field.

Scoring across different sigma: the default objective is ``fair_accuracy``, the report's accuracy
after re-broadening prediction and target to a common ``reference_sigma`` (Gaussians compose:
sigma_ref^2 = sigma^2 + s^2), which defaults to the widest sigma in the space.  The report's plain
``accuracy`` is always recorded as well.
"""

from __future__ import annotations

import itertools
import json
import math
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

# The model package's contract (docs/ARCHITECTURE.md); TrainConfig re-checks at trial time.
KNOWN_LOSSES = ("rmse", "smoothl1", "logcosh", "cosine", "pearson", "mae", "huber", "sid",
                "wasserstein")
OUTPUT_HEADS = ("linear", "softplus")
KNOWN_METRICS = (
    "accuracy", "rmse", "mae", "r2", "negative_share", "negative_magnitude",
    "accuracy_normalised", "rmse_normalised", "mae_normalised", "r2_normalised",
    "fair_accuracy", "wasserstein_eV", "level_error_eV",
)
MAXIMIZED_METRICS = ("accuracy", "fair_accuracy", "r2", "accuracy_normalised", "r2_normalised")
SAMPLERS = ("tpe", "grid", "random", "cmaes", "gp", "nsga2")
PRUNERS = ("median", "successive_halving", "hyperband", "none")
MULTI_OBJECTIVE_SAMPLERS = ("tpe", "grid", "random", "nsga2")


class ConfigError(ValueError):
    """A study definition is invalid: one line naming the file and the field."""


# --- search-space parameters -------------------------------------------------------------------

# name -> (type, check, description, default); ``None`` as default means "not set" (the model's).
def _positive(x) -> bool:
    return x > 0 and math.isfinite(x)


PARAMETERS: dict[str, tuple[type, Any, str, Any]] = {
    "sigma": (float, _positive, "Gaussian broadening in eV (> 0)", 0.5),
    "n_points": (int, lambda x: x >= 2, "grid points Np (>= 2)", 300),
    "loss": (str, lambda x: x in KNOWN_LOSSES, f"one of {', '.join(KNOWN_LOSSES)}", "rmse"),
    "lr": (float, _positive, "Adam learning rate (> 0)", 1e-4),
    "batch_size": (int, lambda x: x >= 1, "batch size (>= 1)", 90),
    "output_head": (str, lambda x: x in OUTPUT_HEADS, f"one of {', '.join(OUTPUT_HEADS)}",
                    "linear"),
    "epochs": (int, lambda x: x >= 1, "epochs budget of one trial (>= 1)", 2500),
    "subset": (int, lambda x: x >= 20, "molecules used (>= 20; omit for all)", None),
    "seed": (int, lambda x: x >= 0, "training seed (>= 0)", 0),
    "patience": (int, lambda x: x >= 1, "early-stopping patience in epochs (>= 1)", None),
    "huber_delta": (float, _positive, "Huber delta (> 0)", None),
    "coulomb_noise": (float, lambda x: x >= 0 and math.isfinite(x),
                      "row-norm noise of the randomised Coulomb matrices (>= 0)", None),
}


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
        return PARAMETERS[self.name][0] is int

    def values(self) -> list:
        """Every value this parameter can take (ranges: only for grid studies, not allowed)."""
        if self.kind == "fixed":
            return [self.value]
        if self.kind == "choice":
            return list(self.choices)
        raise ConfigError(f"space.{self.name}: a range has no finite list of values")

    def suggest(self, trial) -> Any:
        if self.kind == "fixed":
            return self.value
        if self.kind == "choice":
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.is_int:
            step = int(self.step or 1)
            return trial.suggest_int(self.name, int(self.low), int(self.high), step=step,
                                     log=self.log)
        return trial.suggest_float(self.name, self.low, self.high, log=self.log, step=self.step)

    def describe(self) -> str:
        if self.kind == "fixed":
            return repr(self.value)
        if self.kind == "choice":
            return "{" + ", ".join(repr(c) for c in self.choices) + "}"
        scale = ", log" if self.log else ""
        return f"[{self.low:g}, {self.high:g}{scale}]"


def _check_value(name: str, value: Any) -> Any:
    typ, check, what, _ = PARAMETERS[name]
    if typ is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if isinstance(value, bool) or not isinstance(value, typ):
        raise ValueError(f"expected {what}, got {value!r}")
    if not check(value):
        raise ValueError(f"expected {what}, got {value!r}")
    return value


def parse_param(name: str, raw: Any) -> ParamSpec:
    """A space entry from its TOML form: scalar (fixed), list (choice), table (range)."""
    if name not in PARAMETERS:
        raise ValueError(f"unknown parameter (known: {', '.join(PARAMETERS)})")
    if isinstance(raw, ParamSpec):
        return raw
    if isinstance(raw, list | tuple):
        if not raw:
            raise ValueError("empty choice list")
        choices = tuple(_check_value(name, v) for v in raw)
        if len(set(choices)) != len(choices):
            raise ValueError(f"duplicate choices in {list(raw)}")
        if len(choices) == 1:
            return ParamSpec(name=name, kind="fixed", value=choices[0])
        return ParamSpec(name=name, kind="choice", choices=choices)
    if isinstance(raw, dict):
        typ = PARAMETERS[name][0]
        if typ is str:
            raise ValueError("a range needs a numeric parameter; give a list of choices")
        unknown = set(raw) - {"low", "high", "log", "step"}
        if unknown:
            raise ValueError(f"unknown range key(s) {sorted(unknown)} (allowed: low, high, log, "
                             "step)")
        if "low" not in raw or "high" not in raw:
            raise ValueError("a range needs both low and high")
        low, high = _check_value(name, raw["low"]), _check_value(name, raw["high"])
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


# --- sections -----------------------------------------------------------------------------------

class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SamplerConfig(_Section):
    name: Literal["tpe", "grid", "random", "cmaes", "gp", "nsga2"] = "tpe"
    seed: int | None = 0
    options: dict[str, Any] = {}


class PrunerConfig(_Section):
    name: Literal["median", "successive_halving", "hyperband", "none"] = "median"
    options: dict[str, Any] = {}


class BudgetConfig(_Section):
    n_trials: int | None = None  # finished trials (COMPLETE, PRUNED, failed training) in total
    timeout: float | None = None  # seconds of wall time per worker

    @field_validator("n_trials")
    @classmethod
    def _n_trials(cls, v):
        if v is not None and v < 1:
            raise ValueError(f"must be >= 1, got {v}")
        return v

    @field_validator("timeout")
    @classmethod
    def _timeout(cls, v):
        if v is not None and not v > 0:
            raise ValueError(f"must be > 0 seconds, got {v}")
        return v


class HeartbeatConfig(_Section):
    interval: int = 30  # seconds between heartbeats of a running trial
    grace: int = 120  # a RUNNING trial silent this long is failed (and retried)
    max_retry: int = 3  # retries of a trial whose worker died

    @model_validator(mode="after")
    def _check(self):
        if self.interval < 1:
            raise ValueError(f"interval must be >= 1 second, got {self.interval}")
        if self.grace <= self.interval:
            raise ValueError(f"grace ({self.grace} s) must exceed interval ({self.interval} s)")
        if self.max_retry < 0:
            raise ValueError(f"max_retry must be >= 0, got {self.max_retry}")
        return self


class TrainSettings(_Section):
    """Fixed training settings that are not searched (passed to model.TrainConfig)."""

    dataset: str | None = None  # levels .npz; None: the bundled GFN2-xTB dataset
    device: str = "auto"  # auto, cpu, cuda or cuda:N
    amp: Literal["auto", "bf16", "off"] | bool = "auto"  # bf16 autocast; auto: CUDA, AMX CPUs
    compile: bool = False
    num_threads: int | None = None
    e_min: float = -30.0
    e_max: float = 0.0

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if not (v in ("auto", "cpu", "cuda") or (v.startswith("cuda:") and v[5:].isdigit())):
            raise ValueError(f"expected auto, cpu, cuda or cuda:N, got {v!r}")
        return v

    @model_validator(mode="after")
    def _window(self):
        if not self.e_max > self.e_min:
            raise ValueError(f"empty energy window: e_min {self.e_min} must be below e_max "
                             f"{self.e_max}")
        return self


class StudyConfig(_Section):
    """A validated study definition (see the module docstring and ``studies/*.toml``)."""

    name: str
    description: str = ""
    storage: str | None = None  # None: sqlite:///<runs>/<name>.db
    artifacts: str | None = None  # artifact folder; None: next to the SQLite file or runs/
    objectives: tuple[str, ...] = ("fair_accuracy",)
    directions: tuple[Literal["maximize", "minimize"], ...] | None = None
    objective_split: Literal["test", "validation"] = "test"
    reference_sigma: float | None = None
    sampler: SamplerConfig = SamplerConfig()
    pruner: PrunerConfig = PrunerConfig()
    budget: BudgetConfig = BudgetConfig()
    heartbeat: HeartbeatConfig = HeartbeatConfig()
    train: TrainSettings = TrainSettings()
    space: dict[str, ParamSpec] = Field(default_factory=dict, validate_default=True)
    source: str | None = None  # the file it was read from

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not v or len(v) > 100 or not all(c.isalnum() or c in "-_." for c in v):
            raise ValueError(f"{v!r}: use 1-100 letters, digits, '-', '_' or '.'")
        return v

    @field_validator("objectives", mode="before")
    @classmethod
    def _objectives(cls, v):
        if isinstance(v, str):
            v = [v]
        if not v:
            raise ValueError("at least one objective")
        allowed = KNOWN_METRICS + ("sigma", "n_points")
        for name in v:
            if name not in allowed:
                raise ValueError(f"unknown objective {name!r} (known: {', '.join(allowed)})")
        if len(set(v)) != len(v):
            raise ValueError(f"duplicate objectives in {list(v)}")
        return tuple(v)

    @field_validator("space", mode="before")
    @classmethod
    def _space(cls, v):
        if not isinstance(v, dict):
            raise ValueError("must be a table")
        out = {}
        for name, raw in v.items():
            try:
                out[name] = parse_param(name, raw)
            except ValueError as err:
                raise ValueError(f"{name}: {err}") from None
        for name, (_, _, _, default) in PARAMETERS.items():
            if name not in out and default is not None:
                out[name] = ParamSpec(name=name, kind="fixed", value=default)
        return {k: out[k] for k in PARAMETERS if k in out}

    @field_validator("reference_sigma")
    @classmethod
    def _reference_sigma(cls, v):
        if v is not None and not _positive(v):
            raise ValueError(f"must be a positive number of eV, got {v}")
        return v

    @model_validator(mode="after")
    def _consistent(self):
        n_obj = len(self.objectives)
        if self.directions is None:
            dirs = tuple("maximize" if o in MAXIMIZED_METRICS else "minimize"
                         for o in self.objectives)
            object.__setattr__(self, "directions", dirs)
        elif len(self.directions) != n_obj:
            raise ValueError(f"directions: {len(self.directions)} given for {n_obj} objectives "
                             f"{list(self.objectives)}")
        for o in self.objectives:
            if o in ("sigma", "n_points") and not self.space[o].searched:
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
        # samplers and pruners: build once so that bad options fail here, not in a worker
        build_sampler(self)
        build_pruner(self)
        return self

    # --- derived values ---------------------------------------------------------------------

    def sigma_values(self) -> list[float]:
        p = self.space["sigma"]
        if p.kind == "range":
            return [p.low, p.high]
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
        """The GridSampler search space: every searched parameter with its choices."""
        return {p.name: p.values() for p in self.space.values() if p.searched}

    def grid_size(self) -> int:
        return math.prod(len(v) for v in self.grid_space().values()) if self.is_grid else 0

    def grid_points(self) -> list[dict]:
        space = self.grid_space()
        return [dict(zip(space, combo, strict=True))
                for combo in itertools.product(*space.values())]

    @property
    def n_trials(self) -> int | None:
        """Trial budget: the file's, else (grid studies) the grid size."""
        if self.budget.n_trials is not None:
            return self.budget.n_trials
        return self.grid_size() if self.is_grid else None

    def searched(self) -> list[str]:
        return [p.name for p in self.space.values() if p.searched]

    def fixed(self) -> dict[str, Any]:
        return {p.name: p.value for p in self.space.values() if not p.searched}

    def suggest(self, trial) -> dict[str, Any]:
        """Every space parameter's value for this trial (searched ones through ``trial``)."""
        return {name: p.suggest(trial) for name, p in self.space.items()}

    def with_overrides(self, *, epochs: int | None = None, subset: int | None = None,
                       storage: str | None = None, n_trials: int | None = None,
                       timeout: float | None = None, artifacts: str | None = None,
                       dataset: str | None = None) -> StudyConfig:
        """A copy with command-line overrides applied (and validated)."""
        data = self.to_dict()
        if epochs is not None:
            data["space"]["epochs"] = epochs
        if subset is not None:
            data["space"]["subset"] = subset
        if storage is not None:
            data["storage"] = storage
        if artifacts is not None:
            data["artifacts"] = artifacts
        if dataset is not None:
            data["train"]["dataset"] = dataset
        if n_trials is not None:
            data["budget"]["n_trials"] = n_trials
        if timeout is not None:
            data["budget"]["timeout"] = timeout
        return study_config_from_dict(data, source=self.source)

    def to_dict(self) -> dict:
        """The TOML-shaped dict (round-trips through :func:`study_config_from_dict`)."""
        space: dict[str, Any] = {}
        for p in self.space.values():
            if p.kind == "fixed":
                space[p.name] = p.value
            elif p.kind == "choice":
                space[p.name] = list(p.choices)
            else:
                r: dict[str, Any] = {"low": p.low, "high": p.high, "log": p.log}
                if p.step is not None:
                    r["step"] = p.step
                space[p.name] = r
        data = self.model_dump(exclude={"space", "source"})
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


# --- loading ------------------------------------------------------------------------------------

def _format_error(err: ValidationError) -> str:
    e = err.errors()[0]
    loc = ".".join(str(x) for x in e["loc"])
    msg = e["msg"].removeprefix("Value error, ")
    if e["type"] == "extra_forbidden":
        section = ".".join(str(x) for x in e["loc"][:-1])
        key = e["loc"][-1]
        return f"unknown key {key!r}" + (f" in [{section}]" if section else "")
    if e["type"] == "missing":
        return f"{loc}: required"
    if e["type"] == "literal_error":
        return f"{loc}: {e['input']!r} is not allowed ({msg.removeprefix('Input should be ')})"
    if loc == "space" and ": " in msg and msg.split(": ", 1)[0].isidentifier():
        name, rest = msg.split(": ", 1)
        return f"space.{name}: {rest}"
    return f"{loc}: {msg}" if loc else msg


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
        raise ConfigError(f"{where}: {_format_error(err)}") from None
    except ConfigError as err:
        raise ConfigError(f"{where}: {err}") from None
    return cfg


def studies_dir() -> Path:
    import studies

    return Path(studies.__file__).parent


def shipped_studies() -> list[str]:
    return sorted(p.stem for p in studies_dir().glob("*.toml"))


def study_path(name_or_path: str | Path) -> Path:
    """The TOML file of a shipped study name, or the given path."""
    s = str(name_or_path)
    p = Path(s)
    if s.endswith((".toml", ".json")) or p.is_file() or "/" in s:
        if not p.is_file():
            raise ConfigError(f"study file not found: {p}")
        return p
    shipped = studies_dir() / f"{s}.toml"
    if shipped.is_file():
        return shipped
    raise ConfigError(f"unknown study {s!r}: shipped studies are {', '.join(shipped_studies())} "
                      "(or give the path of a .toml file)")


def load_study_config(name_or_path: str | Path) -> StudyConfig:
    """Read and validate a study: a shipped name (``demo``) or the path of a TOML file (or of
    the JSON that ``config_json`` writes, which ``launch`` hands to its workers)."""
    path = study_path(name_or_path)
    try:
        text = path.read_text()
    except OSError as err:
        raise ConfigError(f"{path}: cannot read ({err.strerror})") from None
    if path.suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ConfigError(f"{path}: not valid JSON ({err})") from None
        source = data.pop("source", None) or path
        return study_config_from_dict(data, source=source)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: not valid TOML ({err})") from None
    return study_config_from_dict(data, source=path)


def config_json(cfg: StudyConfig) -> str:
    """The definition as JSON (``load_study_config`` reads it back)."""
    return json.dumps({**cfg.to_dict(), "source": cfg.source}, sort_keys=True)


# --- samplers and pruners -----------------------------------------------------------------------

def build_sampler(cfg: StudyConfig, worker_index: int | None = 0):
    """The study's sampler.  Grid: the same seed in every worker (it orders the grid); other
    samplers: seed + worker index, so parallel workers do not propose identical points (no index:
    an offset from host name and process id, for workers started by hand on several machines)."""
    import optuna

    s = cfg.sampler
    if worker_index is None:
        import os
        import socket
        import zlib

        worker_index = zlib.crc32(f"{socket.gethostname()}:{os.getpid()}".encode()) % 1_000_003
    seed = s.seed if (s.seed is None or s.name == "grid") else s.seed + worker_index
    opts = dict(s.options)
    try:
        if s.name == "tpe":
            return optuna.samplers.TPESampler(seed=seed, **opts)
        if s.name == "random":
            return optuna.samplers.RandomSampler(seed=seed, **opts)
        if s.name == "grid":
            return optuna.samplers.GridSampler(cfg.grid_space(), seed=seed)
        if s.name == "cmaes":
            try:
                import cmaes  # noqa: F401
            except ImportError:
                raise ConfigError("sampler: 'cmaes' needs the cmaes package "
                                  "(pip install cmaes)") from None
            return optuna.samplers.CmaEsSampler(seed=seed, **opts)
        if s.name == "gp":
            return optuna.samplers.GPSampler(seed=seed, **opts)
        if s.name == "nsga2":
            return optuna.samplers.NSGAIISampler(seed=seed, **opts)
    except ConfigError:
        raise
    except (TypeError, ValueError) as err:
        raise ConfigError(f"sampler.options: {err}") from None
    raise ConfigError(f"sampler: unknown {s.name!r} (known: {', '.join(SAMPLERS)})")


def build_pruner(cfg: StudyConfig):
    import optuna

    p = cfg.pruner
    opts = dict(p.options)
    try:
        if p.name == "median":
            return optuna.pruners.MedianPruner(**opts)
        if p.name == "successive_halving":
            return optuna.pruners.SuccessiveHalvingPruner(**opts)
        if p.name == "hyperband":
            epochs = cfg.space["epochs"]
            max_resource = int(epochs.high if epochs.kind == "range" else max(epochs.values()))
            opts.setdefault("max_resource", max_resource)
            return optuna.pruners.HyperbandPruner(**opts)
        if p.name == "none":
            if opts:
                raise ConfigError("pruner.options: pruner 'none' takes none")
            return optuna.pruners.NopPruner()
    except ConfigError:
        raise
    except (TypeError, ValueError) as err:
        raise ConfigError(f"pruner.options: {err}") from None
    raise ConfigError(f"pruner: unknown {p.name!r} (known: {', '.join(PRUNERS)})")
