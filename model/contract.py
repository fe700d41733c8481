"""The project's shared facts, each written once: every other module imports them from here.

A leaf module: it imports nothing from the project and no third-party package (no torch), so
``data_prep``, ``model``, ``hpo`` and the study-file validation can all use it (see
docs/ARCHITECTURE.md: the one import that goes against the data flow).
"""

from __future__ import annotations

from typing import Literal

# --- molecules and representation ---------------------------------------------------------------

#: Atoms of the largest QM9 molecule: geometries and Coulomb matrices are zero-padded to this.
MATRIX_SIZE = 29
#: Occupied orbital levels per molecule (the highest ones), the spectra's peaks.
N_LEVELS = 16
#: The report's energy window of the spectra, eV.
E_MIN, E_MAX = -30.0, 0.0

# --- physical constants (CODATA 2018) -----------------------------------------------------------

HARTREE_EV = 27.211386245988
BOHR_ANGSTROM = 0.529177210903  # Coulomb matrices use positions in bohr
BOHR_PER_ANGSTROM = 1.0 / BOHR_ANGSTROM

# --- losses and output heads --------------------------------------------------------------------

#: Training losses, in the report's order first (see model.losses).
LOSSES: tuple[str, ...] = (
    "rmse", "smoothl1", "logcosh", "cosine", "pearson", "mae", "huber", "sid", "wasserstein",
)
#: Losses that fix no scale: their runs are judged on predictions scaled to the target. SID
#: normalises both spectra to unit sum, so it learns no scale either.
SCALE_FREE_LOSSES = frozenset({"cosine", "pearson", "sid"})
OUTPUT_HEADS: tuple[str, ...] = ("linear", "softplus", "levels")

# --- metrics ------------------------------------------------------------------------------------

Direction = Literal["maximize", "minimize"]


class Metric:
    """The metrics' names: the keys of every metrics dict (model.metrics.evaluate)."""

    ACCURACY = "accuracy"
    ACCURACY_MIN = "accuracy_min"
    ACCURACY_MAX = "accuracy_max"
    RMSE = "rmse"
    MAE = "mae"
    R2 = "r2"
    NEGATIVE_SHARE = "negative_share"
    NEGATIVE_MAGNITUDE = "negative_magnitude"
    ACCURACY_NORMALISED = "accuracy_normalised"
    RMSE_NORMALISED = "rmse_normalised"
    MAE_NORMALISED = "mae_normalised"
    R2_NORMALISED = "r2_normalised"
    FAIR_ACCURACY = "fair_accuracy"  # a study's default objective
    WASSERSTEIN_EV = "wasserstein_eV"
    LEVEL_ERROR_EV = "level_error_eV"
    LEVEL_ERROR_TARGET_EV = "level_error_target_eV"
    #: Share of the mean-training-spectrum baseline's error (1 - fair accuracy) removed.
    SKILL = "skill"


#: Every metric of model.metrics.evaluate with the direction in which it is better.
METRICS: dict[str, Direction] = {
    Metric.ACCURACY: "maximize",
    Metric.ACCURACY_MIN: "maximize",
    Metric.ACCURACY_MAX: "maximize",
    Metric.RMSE: "minimize",
    Metric.MAE: "minimize",
    Metric.R2: "maximize",
    Metric.NEGATIVE_SHARE: "minimize",
    Metric.NEGATIVE_MAGNITUDE: "minimize",
    Metric.ACCURACY_NORMALISED: "maximize",
    Metric.RMSE_NORMALISED: "minimize",
    Metric.MAE_NORMALISED: "minimize",
    Metric.R2_NORMALISED: "maximize",
    Metric.FAIR_ACCURACY: "maximize",
    Metric.WASSERSTEIN_EV: "minimize",
    Metric.LEVEL_ERROR_EV: "minimize",
    Metric.LEVEL_ERROR_TARGET_EV: "minimize",
    Metric.SKILL: "maximize",
}
#: Cheap enough to compute on the model-selection split after every epoch (by the trainer).
#: model.loop adds ``skill`` to each epoch's, from its fair_accuracy and the run's baseline (the
#: trainer has none).
EPOCH_METRICS: tuple[str, ...] = (
    Metric.ACCURACY, Metric.RMSE, Metric.MAE, Metric.R2, Metric.FAIR_ACCURACY,
    Metric.WASSERSTEIN_EV,
)
#: What model.metrics.baseline_metrics scores for the mean-training-spectrum baseline (plus
#: level_error_eV when given the levels: the validation split): what reports show beside a
#: trial's scores. rmse_normalised is the RMSE that scale-free runs are judged on.
BASELINE_METRICS: tuple[str, ...] = (
    Metric.ACCURACY, Metric.FAIR_ACCURACY, Metric.RMSE, Metric.RMSE_NORMALISED,
    Metric.WASSERSTEIN_EV,
)
#: Space parameters that a multi-objective study may also use as an objective (minimised).
PARAMETER_OBJECTIVES: tuple[str, ...] = ("sigma", "n_points")


def direction(name: str) -> Direction:
    """The direction of a metric (or a parameter objective: minimised, e.g. sigma)."""
    return METRICS.get(name, "minimize")


# --- trial outcomes -----------------------------------------------------------------------------

class Status:
    """The ``status`` user attribute of a trial."""

    COMPLETED = "completed"
    EARLY_STOPPED = "early_stopped"
    PRUNED = "pruned"
    INTERRUPTED = "interrupted"
    FAILED = "failed"  # training diverged (NaN loss): the configuration's fault
    ERROR = "error"  # an unexpected error


# --- keys stored in the study database ----------------------------------------------------------

class StudyAttr:
    """User attributes of a study."""

    CONFIG = "specopt:config"
    IDENTITY = "specopt:identity"
    OBJECTIVES = "objectives"
    OBJECTIVE_SPLIT = "objective_split"
    REFERENCE_SIGMA = "reference_sigma"
    DESCRIPTION = "description"
    ARTIFACT_STORE = "artifact_store"
    N_TRIALS = "n_trials"
    #: Trials added to the budget after creation (``--add-trials``): every worker's budget is
    #: its n_trials plus these.
    ADDED_TRIALS = "specopt:added_trials"


class TrialAttr:
    """User attributes of a trial."""

    PARAMS = "params"  # every training setting, fixed or searched
    SEED = "seed"
    WORKER = "worker"
    RETRY_OF = "retry_of"
    #: The trial number whose saved training state this trial continues: the first attempt of
    #: a chain of retries (dead worker) and re-queues (SIGINT/SIGTERM); retries inherit it.
    ORIGIN = "origin"
    DATASET = "dataset"
    STATUS = "status"
    FAILURE = "failure"
    HISTORY = "history"  # per-epoch dicts, thinned: studies written before history.json held it
    EPOCHS_RUN = "epochs_run"
    SECONDS_PER_EPOCH = "seconds_per_epoch"
    METRICS = "metrics"  # held-out (validation) split
    SELECTION_METRICS = "selection_metrics"  # model-selection (test) split, best epoch
    BEST_EPOCH = "best_epoch"
    DEVICE = "device"
    ARTIFACTS = "artifacts"  # file name -> artifact id
    OBJECTIVE_FALLBACK = "objective_fallback"
    REFERENCE_SIGMA = "reference_sigma"  # of the trial's fair_accuracy, eV
    #: Epochs this attempt trained itself (EPOCHS_RUN less those continued from a saved state).
    EPOCHS_TRAINED = "epochs_trained"
    #: ``{"trial": M, "epoch": k}``: this attempt continued trial M's saved state after epoch k.
    RESUMED_FROM = "resumed_from"
    #: ``{"epoch", "epochs", "value", "seconds_per_epoch"}`` of a running trial, updated with its
    #: worker's epoch log lines (``specopt status``); the last one stays.
    PROGRESS = "progress"
    #: ``{split: metrics}`` of the mean-training-spectrum predictor on the test and validation
    #: splits (model.metrics.baseline_metrics): what every score is read against.
    BASELINE = "baseline"


class ArtifactName:
    """Files that every complete trial uploads to the study's artifact store."""

    CHECKPOINT = "checkpoint.pt"
    PREDICTIONS = "predictions.npz"  # pred, target, index, grid (validation split)
    HISTORY = "history.json"  # every epoch (pruned and failed trials upload it too)


# --- limits of settings -------------------------------------------------------------------------

#: Seconds of a budget, heartbeat, grace, save interval or storage outage wait: a year. Timers
#: and dates overflow far beyond it (a grace of 1e17 s is no datetime).
MAX_SECONDS = 365 * 24 * 3600

# --- the network and its optimisation -----------------------------------------------------------

#: Down-sampling after each convolutional block of model.network.SpectraCNN.
POOLINGS: tuple[str, ...] = ("max", "avg")
#: Per-epoch learning-rate schedules of model.config.TrainConfig (see TrainConfig.lr_at).
LR_SCHEDULES: tuple[str, ...] = ("constant", "cosine", "step")

# --- names a reader sees: one label (with its unit) per quantity ---------------------------------
# Tables, figures, the CLI and the dashboard all use these, so a quantity is called the same and
# shown in the same unit everywhere (accuracies in %, energies in eV).

class Split:
    """The data splits' names (model.loop, trial attributes, reports)."""

    TRAIN = "train"
    TEST = "test"
    VALIDATION = "validation"


#: What each data split is for. model.loop stops early and selects the model on "test"; the
#: reported metrics come from "validation", which no choice has seen (Ghosh et al.'s naming).
SPLIT_ROLE: dict[str, str] = {
    Split.TRAIN: "training", Split.TEST: "model selection", Split.VALIDATION: "held out",
}

#: Training settings as shown (with their unit).
SETTING_LABELS: dict[str, str] = {
    "loss": "loss", "sigma": "sigma (eV)", "n_points": "Np", "output_head": "output head",
    "lr": "learning rate", "batch_size": "batch size", "epochs": "epochs", "subset": "subset",
    "patience": "patience", "huber_delta": "Huber delta", "seed": "seed",
    "weight_decay": "weight decay", "lr_schedule": "learning-rate schedule",
    "kernel_size": "kernel size", "convs_per_block": "convolutions per block",
    "channels": "channels", "pooling": "pooling", "batch_norm": "batch norm",
    "dropout": "dropout",
}

#: Metrics as shown: (label, factor from the stored value to the shown one).
METRIC_LABELS: dict[str, tuple[str, float]] = {
    Metric.ACCURACY: ("accuracy (%)", 100.0),
    Metric.ACCURACY_MIN: ("worst single (%)", 100.0),
    Metric.ACCURACY_MAX: ("best single (%)", 100.0),
    Metric.RMSE: ("RMSE", 1.0),
    Metric.MAE: ("MAE", 1.0),
    Metric.R2: ("R^2", 1.0),
    Metric.NEGATIVE_SHARE: ("negative points (%)", 100.0),
    Metric.NEGATIVE_MAGNITUDE: ("negative magnitude", 1.0),
    Metric.ACCURACY_NORMALISED: ("accuracy_n (%)", 100.0),
    Metric.RMSE_NORMALISED: ("RMSE_n", 1.0),
    Metric.MAE_NORMALISED: ("MAE_n", 1.0),
    Metric.R2_NORMALISED: ("R^2_n", 1.0),
    Metric.FAIR_ACCURACY: ("fair accuracy (%)", 100.0),
    Metric.WASSERSTEIN_EV: ("W1 (eV)", 1.0),
    Metric.LEVEL_ERROR_EV: ("level error (eV)", 1.0),
    Metric.LEVEL_ERROR_TARGET_EV: ("level error of the target (eV)", 1.0),
    Metric.SKILL: ("skill (%)", 100.0),
}


def split_label(split: str) -> str:
    """``"test split (model selection)"``: a split with its role."""
    role = SPLIT_ROLE.get(split)
    return f"{split} split ({role})" if role else f"{split} split"


def setting_label(name: str) -> str:
    return SETTING_LABELS.get(name, name)


def metric_label(name: str) -> str:
    """A metric's label with its unit; a parameter objective (sigma, Np) its setting label."""
    if name in METRIC_LABELS:
        return METRIC_LABELS[name][0]
    return SETTING_LABELS.get(name, name)


def baseline_label(name: str) -> str:
    """``"baseline fair accuracy (%)"``: the mean-training-spectrum baseline's value of a
    metric, shown beside the model's."""
    return f"baseline {metric_label(name)}"


def metric_scale(name: str) -> float:
    """Factor from a metric's stored value (accuracies as fractions) to the shown one (%)."""
    return METRIC_LABELS[name][1] if name in METRIC_LABELS else 1.0


def metric_text(name: str, value: float, digits: int = 4, *, label: bool = True) -> str:
    """``"fair accuracy 92.31%"``, ``"W1 0.1234 eV"``: a stored value as a person reads it, in
    the unit of its label (:data:`METRIC_LABELS`, :func:`metric_scale`); any other name as
    stored.  ``label=False``: the value and unit only (``"92.31%"``)."""
    full = metric_label(name)
    bare, _, unit = full.rpartition(" (") if full.endswith(")") else (full, "", "")
    shown = f"{value * metric_scale(name):.{digits}g}" + (
        "%" if unit == "%)" else f" {unit[:-1]}" if unit else "")
    return f"{bare} {shown}" if label else shown


def objective_label(name: str, split: str | None) -> str:
    """``"fair accuracy (%), test split (model selection)"``: an objective as shown, with the
    split it is scored on (parameter objectives, such as sigma, have none)."""
    label = metric_label(name)
    if split and name in METRICS:
        return f"{label}, {split_label(split)}"
    return label
