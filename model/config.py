"""``TrainConfig``: everything one training run needs, validated (pydantic).

Defaults are the report's: its network (three blocks of three 3x3 convolutions with 22, 47 and
42 channels, max pooling), Adam with lr 1e-4 and betas (0.9, 0.999), batch 90, RMSE loss, sigma
0.5 eV, Np 300 on [-30, 0] eV. The report trained for 2500 epochs; the default here is 50,
enough for a first look (set ``epochs=2500`` to reproduce it).

Constraints are declared on the fields (``gt``/``ge``/``lt``/``le``, lengths, ``Literal`` choices
read from :mod:`model.contract`, finite floats), so that code deriving options or a search space
from ``TrainConfig.model_fields`` sees them; the few rules a field constraint cannot state are
validators below. Every violation reads as one sentence naming the field, e.g. ``sigma must be a
positive number (greater than 0), got 0`` or ``unknown loss 'l2'; choose one of: rmse, ...``.

Field types are plain on purpose (int, float, bool, str, a ``Literal``, ``Path``, ``None``
unions, tuples of ints or floats): ``hpo`` builds study parameters and CLI options from them.
"""

from __future__ import annotations

import difflib
import math
import os
import re
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails, InitErrorDetails, PydanticCustomError

from model.contract import (
    E_MAX,
    E_MIN,
    LOSSES,
    LR_SCHEDULES,
    MATRIX_SIZE,
    N_LEVELS,
    OUTPUT_HEADS,
    POOLINGS,
)
from model.errors import ConfigError

DEFAULT_REFERENCE_SIGMA = 0.5
#: Convolutional blocks the matrix allows: each halves its side, 29 -> 14 -> 7 -> 3 -> 1.
MAX_BLOCKS = MATRIX_SIZE.bit_length() - 1
#: The arguments of model.network.SpectraCNN (saved in checkpoints to rebuild the network).
#: The last three say which spectrum it makes: a levels head broadens its levels with them.
NETWORK_FIELDS = ("n_points", "output_head", "channels", "convs_per_block", "kernel_size",
                  "pooling", "batch_norm", "dropout", "sigma", "e_min", "e_max")
#: Settings of where and how fast a run goes, or how it is scored and stored, rather than of
#: what it learns: not searchable (a study fixes them for all its trials).
NOT_SEARCHABLE = frozenset({"dataset", "e_min", "e_max", "reference_sigma", "device", "amp",
                            "compile", "num_threads", "eval_batch_size", "checkpoint_dir"})
#: After warmup, the "step" schedule multiplies lr by STEP_GAMMA at these fractions of the epochs.
STEP_MILESTONES = (0.5, 0.75)
STEP_GAMMA = 0.1

# -- the limits of every number: what the physics means and the machine can hold -----------------
#: Narrowest broadening, eV: finer than any photoemission spectrometer resolves.
MIN_SIGMA = 0.01
#: Widest broadening, eV: the report's window; wider, every spectrum is one flat bump.
MAX_SIGMA = E_MAX - E_MIN
#: Energies of the window, eV: valence levels of molecules of H to Xe lie well inside +-1000 eV.
ENERGY_LIMIT = 1000.0
#: Finest grid: 3 meV steps on the report's window, far below MIN_SIGMA's resolution.
MAX_N_POINTS = 10_000
#: Molecules of a dataset, subset or batch: 75 times QM9's 130,831.
MAX_MOLECULES = 10_000_000
#: Epochs (and warmup, patience): 40 times the report's 2500.
MAX_EPOCHS = 100_000
#: Width of a convolutional block and convolutions per block: far beyond what 29x29 inputs use.
MAX_CHANNELS = 4096
MAX_CONVS_PER_BLOCK = 32
#: Seeds: numpy's and most RNGs' 32-bit limit (trainers derive per-epoch seeds from it).
MAX_SEED = 2**32 - 1
#: CPU threads of one run.
MAX_THREADS = 1024
#: Learning rate and weight decay: the weights are float32, where anything larger is inf (an
#: lr far below it already diverges, which the run reports as TrainingFailed).
FLOAT32_MAX = 3.4028234663852886e38
#: Row-norm noise far beyond the largest row norm of a Coulomb matrix (hundreds): a full shuffle.
MAX_COULOMB_NOISE = 1000.0
#: Above the highest intensity a spectrum can have (16 coinciding peaks at MIN_SIGMA) the huber
#: loss is the squared error: larger deltas mean nothing more.
MAX_HUBER_DELTA = math.ceil(N_LEVELS / (MIN_SIGMA * math.sqrt(2 * math.pi)))
#: Molecules per evaluation batch when eval_batch_size is None (the CPU's; model.trainer).
ESTIMATE_EVAL_BATCH = 256
_FLOAT_BYTES = 4


def _finite(**kw: Any) -> Any:
    """A float field that must be a finite number (no inf or nan)."""
    return Field(allow_inf_nan=False, **kw)


def _admits_bool(annotation: Any) -> bool:
    return annotation is bool or annotation is Any or any(map(_admits_bool, get_args(annotation)))


def refuse_bool_numbers(cls: Any, value: Any, info: ValidationInfo) -> Any:
    """A ``mode="before"`` validator of every field: a number field (or a list of numbers)
    refuses ``true``/``false``, which pydantic's lax mode would read as 1 and 0."""
    items = value if isinstance(value, list | tuple) else (value,)
    if (any(isinstance(v, bool) for v in items)
            and not _admits_bool(cls.model_fields[info.field_name].annotation)):
        raise ValueError(f"expected a number, not {value!r}")
    return value


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    _no_bool_numbers = field_validator("*", mode="before")(refuse_bool_numbers)

    # Data: which spectra to learn (must match the prepared dataset).
    sigma: float = _finite(default=0.5, ge=MIN_SIGMA, le=MAX_SIGMA,
                           description="Gaussian broadening of the target spectra, eV.")
    n_points: int = Field(300, ge=2, le=MAX_N_POINTS, description="Np: points of the energy "
                          "grid.")
    e_min: float = _finite(default=E_MIN, ge=-ENERGY_LIMIT, le=ENERGY_LIMIT,
                           description="Low end of the energy window, eV.")
    e_max: float = _finite(default=E_MAX, ge=-ENERGY_LIMIT, le=ENERGY_LIMIT,
                           description="High end of the energy window, eV.")
    subset: int | None = Field(None, ge=20, le=MAX_MOLECULES, description="Only this many "
                               "molecules (unset: all).")
    dataset: str | None = Field(
        None, description="Levels dataset: a bundled name ('gfn2-xtb', the default, or "
        "'ipea1-xtb') or a levels file.")
    coulomb_noise: float = _finite(
        default=1.0, ge=0, le=MAX_COULOMB_NOISE,
        description="Std of the row-norm noise of the randomised Coulomb "
        "matrices (0: plain sorted matrices, no augmentation).")

    # Network (model.network.SpectraCNN).
    channels: tuple[int, ...] = Field(
        (22, 47, 42), min_length=1, max_length=MAX_BLOCKS,
        description=f"Output channels of each convolutional block; its length is the number of "
        f"blocks (1 to {MAX_BLOCKS}), each ending in a 2x2 pooling.")
    convs_per_block: int = Field(3, ge=1, le=MAX_CONVS_PER_BLOCK,
                                 description="Convolutions (each with a ReLU) per block.")
    kernel_size: int = Field(3, ge=1, le=MATRIX_SIZE,
                             description="Side of the square convolution kernels (odd).")
    pooling: Literal[POOLINGS] = Field(  # type: ignore[valid-type]
        "max", description="Pooling after each block: 'max' or 'avg'.")
    batch_norm: bool = Field(False, description="Batch normalisation after every convolution "
                             "(before its ReLU; the convolution then has no bias).")
    dropout: float = Field(0.0, ge=0, lt=1,
                           description="Dropout probability before the output layer.")
    output_head: Literal[OUTPUT_HEADS] = Field(  # type: ignore[valid-type]
        "linear", description="'linear' (the report): Np intensities; 'softplus': Np "
        "non-negative intensities; 'levels': the 16 levels, broadened into the spectrum as the "
        "targets are (non-negative, and one model gives any sigma and Np).")

    # Loss.
    loss: Literal[LOSSES] = Field(  # type: ignore[valid-type]
        "rmse", description=f"Training loss: one of {', '.join(LOSSES)}.")
    huber_delta: float = _finite(default=1.0, gt=0, le=MAX_HUBER_DELTA,
                                 description="Delta of the huber loss.")

    # Optimisation.
    lr: float = _finite(default=1e-4, gt=0, le=FLOAT32_MAX,
                        description="Learning rate (AdamW), the peak of the schedule.")
    betas: tuple[float, float] = Field((0.9, 0.999), description="AdamW betas, each in [0, 1).")
    weight_decay: float = _finite(
        default=0.0, ge=0, le=FLOAT32_MAX,
        description="Decoupled weight decay of AdamW (0: plain Adam, as the report).")
    lr_schedule: Literal[LR_SCHEDULES] = Field(  # type: ignore[valid-type]
        "constant", description="Learning rate per epoch after the warmup: 'constant'; "
        "'cosine' (half a cosine from lr towards 0 over the remaining epochs); 'step' (x0.1 "
        "after half and again after three quarters of them).")
    warmup_epochs: int = Field(0, ge=0, le=MAX_EPOCHS, description="Epochs of linear warmup: "
                               "epoch e <= W trains at lr * e / (W + 1). Must be below epochs.")
    batch_size: int = Field(90, ge=1, le=MAX_MOLECULES,
                            description="Molecules per optimiser step.")
    epochs: int = Field(50, ge=1, le=MAX_EPOCHS, description="Maximum epochs (the report: 2500).")
    patience: int | None = Field(
        None, ge=1, le=MAX_EPOCHS, description="Stop after this many epochs without a lower "
        "test loss (default: never, as the report, which ran all its epochs).")
    seed: int = Field(0, ge=0, le=MAX_SEED,
                      description="Seeds weights, shuffling and Coulomb noise.")

    # Scoring.
    reference_sigma: float | None = _finite(
        default=None, ge=MIN_SIGMA, le=MAX_SIGMA, description="Width (eV) that fair_accuracy "
        "re-broadens to, >= sigma; compare runs at one value. Default: max(0.5, sigma).")

    # Where and how fast.
    device: str = Field("auto", description="'auto' (CUDA when available), 'cpu', 'cuda' or "
                        "'cuda:N'.")
    amp: Literal["auto", "bf16", "off"] = Field(
        "auto", description="bf16 autocast of the convolutions (the output layer stays "
        "float32): 'auto' uses it on CUDA and on CPUs with AMX.")
    compile: bool = Field(False, description="torch.compile the model for training steps "
                          "(measure first: slower than without on the CPUs tried).")
    num_threads: int | None = Field(None, ge=1, le=MAX_THREADS,
                                    description="CPU threads (default: the cores other "
                                    "processes are not busy on, at least 1).")
    eval_batch_size: int | None = Field(
        None, ge=1, le=MAX_MOLECULES, description="Molecules per evaluation batch (default: "
        "256 on the CPU, where it stays in cache, 8192 on CUDA).")
    checkpoint_dir: Path | None = Field(
        None, description="Write the best model to checkpoint_dir/checkpoint.pt.")

    # -- the rules a field constraint cannot state --------------------------------------------
    @field_validator("channels")
    @classmethod
    def _channels(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if not all(c >= 1 for c in v):
            raise ValueError(f"channels must all be at least 1, got {v}")
        if not all(c <= MAX_CHANNELS for c in v):
            raise ValueError(f"channels must all be between 1 and {MAX_CHANNELS}, got {v}")
        return v

    @field_validator("kernel_size")
    @classmethod
    def _odd_kernel(cls, v: int) -> int:
        if v % 2 == 0:
            raise ValueError(f"kernel_size must be odd (the matrix keeps its size), got {v}")
        return v

    @field_validator("dataset", mode="before")
    @classmethod
    def _dataset(cls, v):
        return str(v) if isinstance(v, Path) else v  # a file given as a Path

    @field_validator("amp", mode="before")
    @classmethod
    def _amp(cls, v):
        if isinstance(v, bool):  # amp=True / False read naturally in TOML and Python.
            return "bf16" if v else "off"
        return v

    @field_validator("betas")
    @classmethod
    def _betas(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not all(0.0 <= b < 1.0 for b in v):
            raise ValueError(f"betas must lie in [0, 1), got {v}")
        return v

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        ok = v in ("auto", "cpu", "cuda") or (v.startswith("cuda:") and v[5:].isdigit())
        if not ok:
            raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {v!r}")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        if not self.e_max > self.e_min:
            raise ValueError(f"empty energy window: e_min {self.e_min} >= e_max {self.e_max}")
        width = self.e_max - self.e_min
        for name in ("sigma", "reference_sigma"):
            value = getattr(self, name)
            if value is not None and value > width:
                raise ValueError(f"{name} {value:g} eV is wider than the energy window "
                                 f"({self.e_min:g} to {self.e_max:g} eV): every spectrum would "
                                 "be one flat bump; narrow it or widen the window")
        if self.reference_sigma is None:
            self.reference_sigma = max(DEFAULT_REFERENCE_SIGMA, self.sigma)
        if self.reference_sigma < self.sigma:
            raise ValueError(
                f"reference_sigma {self.reference_sigma} is below sigma {self.sigma}: fair "
                "accuracy re-broadens to reference_sigma, which must be >= every sigma compared")
        if self.warmup_epochs >= self.epochs:
            raise ValueError(f"warmup_epochs {self.warmup_epochs} must be below epochs "
                             f"{self.epochs}")
        if self.subset is not None:  # the molecules are known: check before anything is made
            self.check_memory(self.subset, error=ValueError)
        return self

    @model_validator(mode="wrap")
    @classmethod
    def _readable_errors(cls, data: Any, handler):
        """Every error as one sentence that names the field (pydantic's own wording does not)."""
        try:
            return handler(data)
        except ValidationError as err:
            details: list[InitErrorDetails] = [
                {"type": PydanticCustomError(e["type"], "{text}", {"text": _sentence(e)}),
                 "loc": e["loc"], "input": e["input"]} for e in err.errors()]
            raise ValidationError.from_exception_data(err.title, details) from None

    # -- derived values -------------------------------------------------------------------------
    @property
    def de(self) -> float:
        """The report's grid spacing dE = (e_max - e_min) / Np, eV."""
        return (self.e_max - self.e_min) / self.n_points

    @classmethod
    def searchable_fields(cls) -> tuple[str, ...]:
        """The fields a study may search or fix per trial: everything that changes what a run
        learns (data, network, loss, optimisation, epochs, seed). Not searchable
        (``NOT_SEARCHABLE``): the dataset and energy window, ``reference_sigma`` (runs are only
        comparable at one), and where and how fast a run goes: device, amp, compile,
        num_threads, eval_batch_size, checkpoint_dir."""
        return tuple(name for name in cls.model_fields if name not in NOT_SEARCHABLE)

    def network_kwargs(self) -> dict[str, Any]:
        """The arguments of ``SpectraCNN`` for this run (JSON-friendly: channels as a list)."""
        kw = {name: getattr(self, name) for name in NETWORK_FIELDS}
        kw["channels"] = list(kw["channels"])
        return kw

    def memory_bytes(self, n_molecules: int) -> int:
        """An estimate of the host memory (bytes) a run on ``n_molecules`` needs: the prepared
        Coulomb matrices, spectra and levels, the trainer's copies of them and each epoch's
        randomised matrices; the network's weights, gradients, AdamW moments and best weights;
        one training batch's activations kept for the backward pass, one evaluation batch's."""
        n, cells = n_molecules, MATRIX_SIZE * MATRIX_SIZE
        floats = n * (3 * cells + 2 * self.n_points + N_LEVELS)
        outputs = N_LEVELS if self.output_head == "levels" else self.n_points
        weights, per_sample, widest, width, side = 0, cells, cells, 1, MATRIX_SIZE
        for channels in self.channels:
            for _ in range(self.convs_per_block):
                weights += width * channels * self.kernel_size ** 2 + channels
                per_sample += 2 * channels * side * side  # the convolution's output, its ReLU's
                widest = max(widest, (width + channels) * side * side)
                width = channels
            side //= 2
        weights += width * side * side * outputs + outputs
        floats += 5 * weights  # weights, gradients, two AdamW moments, the best weights
        floats += 2 * min(self.batch_size, n) * per_sample  # activations and their gradients
        floats += min(self.eval_batch_size or ESTIMATE_EVAL_BATCH, n) * widest
        return _FLOAT_BYTES * floats

    def check_memory(self, n_molecules: int, error: type[Exception] = ConfigError) -> None:
        """Refuse settings whose :meth:`memory_bytes` exceed what this process may use
        (:func:`memory_limit`), before any array is made."""
        need, (limit, what) = self.memory_bytes(n_molecules), memory_limit()
        if limit is not None and need > limit:
            raise error(
                f"these settings need about {need / 1e9:.1f} GB of memory ({n_molecules:,} "
                f"molecules, Np {self.n_points}, batch_size {self.batch_size}, channels "
                f"{','.join(map(str, self.channels))} x {self.convs_per_block}), more than the "
                f"{limit / 1e9:.1f} GB {what}: lower subset, n_points, batch_size or the "
                "network's size")

    @property
    def scheduled(self) -> bool:
        """Whether the learning rate changes between epochs."""
        return self.lr_schedule != "constant" or self.warmup_epochs > 0

    def lr_at(self, epoch: int) -> float:
        """The learning rate of ``epoch`` (1-based); it is set before the epoch and held for all
        of its steps. With W = warmup_epochs, epochs 1..W train at lr * e / (W + 1); then, with
        t = (e - W - 1) / (epochs - W) going from 0 to below 1, 'constant' gives lr, 'cosine'
        lr * (1 + cos(pi t)) / 2, and 'step' lr, 0.1 lr from t >= 0.5 and 0.01 lr from
        t >= 0.75."""
        w = self.warmup_epochs
        if epoch <= w:
            return self.lr * epoch / (w + 1)
        t = (epoch - w - 1) / max(1, self.epochs - w)
        if self.lr_schedule == "cosine":
            return self.lr * 0.5 * (1.0 + math.cos(math.pi * t))
        if self.lr_schedule == "step":
            return self.lr * STEP_GAMMA ** sum(t >= m for m in STEP_MILESTONES)
        return self.lr


def memory_limit() -> tuple[int | None, str]:
    """The bytes this process may use, and what sets it: the smallest of the machine's memory,
    the address-space and data limits (ulimit -v / -d) and a cgroup's (SLURM, containers);
    None where none is known."""
    import resource

    found: list[tuple[int, str]] = []
    try:
        found.append((os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"),
                      "this machine has"))
    except (ValueError, OSError, AttributeError):
        pass
    for which, name in ((resource.RLIMIT_AS, "ulimit -v"), (resource.RLIMIT_DATA, "ulimit -d")):
        soft = resource.getrlimit(which)[0]
        if soft != resource.RLIM_INFINITY:
            found.append((soft, f"this process may use ({name})"))
    try:
        text = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if text.isdigit():
            found.append((int(text), "this process's cgroup allows"))
    except OSError:
        pass
    return min(found) if found else (None, "")


def did_you_mean(word: Any, known: Any) -> str:
    """`` (did you mean 'x'?)`` for the name of ``known`` closest to a mistyped ``word``
    (difflib's, as click's for commands), or "" where none is close."""
    close = difflib.get_close_matches(str(word), [str(k) for k in known], n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _quoted(text: str) -> list[str]:
    """The quoted names of pydantic's list of allowed values (``'a', 'b' or 'c'``)."""
    return re.findall(r"'([^']*)'", text)


def _known_keys(model: type[BaseModel] | None, section: tuple) -> tuple[str, ...]:
    """The keys of the (nested) model at ``section`` of ``model``; () where unknown."""
    for part in section:
        field = model.model_fields.get(str(part)) if model else None
        inner = field.annotation if field else None
        model = inner if isinstance(inner, type) and issubclass(inner, BaseModel) else None
    return tuple(model.model_fields) if model else ()


def validation_message(err: ValidationError, source: str | Path | None = None, *,
                       first: bool = False, model: type[BaseModel] | None = None,
                       sep: str = "; ") -> str:
    """The one line a user reads for ``err`` (every pydantic model of specopt: a
    ``TrainConfig``, a study file): ``source: `` where given (the file, or the section the
    errors lie in), then each error as ``LOC: message`` (LOC dotted; none for a whole-model
    rule), joined by ``sep``; only the first with ``first`` (a message that a validator of an
    enclosing model raises again). Pydantic's own wording of an unknown key, a missing one and
    a wrong choice reads ``unknown key 'k' in [section]``, ``LOC: required``, ``LOC: 'x' is
    not allowed (...)``; a message ``name: text`` of a table's validator reads
    ``LOC.name: text`` (several such lines: one each).  An unknown key or value gets the
    closest known one (:func:`did_you_mean`): the keys of ``model`` (the model validated;
    TrainConfig's own errors find it themselves)."""
    errors = err.errors()[:1] if first else err.errors()
    if model is None and err.title == TrainConfig.__name__:
        model = TrainConfig
    text = sep.join(_placed(e, model) for e in errors)
    return f"{source}: {text}" if source is not None else text


def _placed(error: ErrorDetails, model: type[BaseModel] | None = None) -> str:
    """One error of :func:`validation_message`."""
    loc = ".".join(str(x) for x in error["loc"])
    msg, kind = error["msg"].removeprefix("Value error, "), error["type"]
    if kind == "extra_forbidden":
        section = ".".join(str(x) for x in error["loc"][:-1])
        key = error["loc"][-1]
        return (f"unknown key {key!r}" + (f" in [{section}]" if section else "")
                + did_you_mean(key, _known_keys(model, error["loc"][:-1])))
    if kind == "missing":
        return f"{loc}: required"
    if kind == "literal_error" and msg.startswith("Input should be "):  # not TrainConfig's own
        allowed = msg.removeprefix("Input should be ")
        return (f"{loc}: {error['input']!r} is not allowed"
                f"{did_you_mean(error['input'], _quoted(allowed))}; choose one of: {allowed}")
    return "; ".join(_entry(loc, line) for line in msg.split("\n"))


def _entry(loc: str, msg: str) -> str:
    """``msg`` placed at ``loc``: ``LOC.name: text`` for a table's entry ``name: text``."""
    name, sep, rest = msg.partition(": ")
    if loc and sep and name.isidentifier():  # a table's entry named by its validator
        return f"{loc}.{name}: {rest}"
    return f"{loc}: {msg}" if loc else msg


def _sentence(error: ErrorDetails) -> str:
    """A pydantic error as one sentence naming the field."""
    name = ".".join(str(x) for x in error["loc"]) or "config"
    kind, ctx, value = error["type"], error.get("ctx") or {}, error["input"]
    if kind == "greater_than" and ctx.get("gt") == 0:
        return f"{name} must be a positive number (greater than 0), got {value!r}"
    bounds = {"greater_than": ("greater than", "gt"), "greater_than_equal": ("at least", "ge"),
              "less_than": ("below", "lt"), "less_than_equal": ("at most", "le")}
    if kind == "greater_than_equal" and 0 < ctx["ge"] < 1:  # a small positive lower bound
        return f"{name} must be a positive number (at least {ctx['ge']}), got {value!r}"
    if kind in bounds:
        words, key = bounds[kind]
        return f"{name} must be {words} {ctx[key]}, got {value!r}"
    if kind == "finite_number":
        return f"{name} must be a finite number, got {value!r}"
    if kind == "too_short":
        n = ctx["min_length"]
        return f"{name} needs at least {n} {'entry' if n == 1 else 'entries'}, got {value!r}"
    if kind == "too_long":
        n = ctx["max_length"]
        return f"{name} takes at most {n} {'entry' if n == 1 else 'entries'}, got {value!r}"
    if kind == "literal_error":
        return (f"unknown {name} {value!r}{did_you_mean(value, _quoted(ctx['expected']))}; "
                f"choose one of: {ctx['expected']}")
    return error["msg"].removeprefix("Value error, ")
