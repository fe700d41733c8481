"""The Optuna objective: one trial trains the report's CNN through ``model.train``.

Per epoch it reports the early-stopping split's score (the study's first objective) to Optuna and
prunes through the study's pruner, and logs one line (:class:`EpochLog`: trial, epoch/total, the
objective's value, s/epoch; at most one every ``LOG_INTERVAL`` seconds at INFO, the others at
DEBUG; the first and the last always), updating the compact ``progress`` attribute with it.  At
the end it records, as trial user attributes (compact: they are what optuna-dashboard lists):
``metrics`` (validation set, from ``model.metrics.evaluate``: the report's ``accuracy``, the
sigma-fair ``fair_accuracy`` and ``skill`` among them), ``selection_metrics`` (the test split,
best epoch), ``baseline`` (``{"test": ..., "validation": ...}``: the mean training spectrum's
accuracy, fair accuracy, RMSE, W1 and, on validation, level error; every score is read against
it), ``epochs_run``, ``device``, ``seconds_per_epoch``, ``dataset`` (fingerprint and provenance
summary), ``seed``, ``status``, ``params`` (every training setting, fixed or searched),
``worker``; and as Optuna artifacts ``checkpoint.pt``, ``predictions.npz`` (``pred``, ``target``,
``index``, ``grid``) and ``history.json`` (every epoch's dict: the learning curves).  Pruned,
diverged and interrupted trials upload their ``history.json`` too.  Without an artifact store
the history (thinned to 200 epochs) stays in a ``history`` attribute, as studies written before
kept it (the report reads either).

Resuming (issue 9): every trial saves its training state (``model.checkpoint.TrainingState``)
at ``<artifact dir>/state/<origin>/state.pt`` at the end of an epoch, at most every
``[resume] save_interval`` seconds and always when a signal stops it (``should_stop``).
``origin`` (``TrialAttr.ORIGIN``, set at the start of every trial) is the first attempt of a
chain of retries (dead worker) and re-queues (SIGINT/SIGTERM): the trial's own ``origin``
attribute if it inherited one, else the first number of Optuna's retry history, else its own
number.  A trial that finds a state there continues from it, on whichever worker: it logs
``trial N continues trial M from epoch k``, reports the epochs done to Optuna (one continuous
curve for the pruner), then trains the rest; ``epochs_trained`` counts the epochs it trained
itself, ``resumed_from`` says whose state after which epoch.  The state of a complete, pruned
or diverged (``TrainingFailed``) trial is removed; the best checkpoint is uploaded as before.
The trial's temporary folder (best checkpoint, files to upload) is :func:`trial_workdir`'s,
``$TMPDIR/specopt-trial-<study>-<n>-*``, locked while in use: a worker removes those of dead
workers when it starts (:func:`remove_dead_workdirs`).
Fault injection points (``hpo.faults``): ``epoch_end_<n>`` after epoch n's state save and
report, ``after_upload`` after the artifacts are recorded.

Per-attempt attributes: a retry inherits its dead attempt's user attributes (Optuna's retry
callback copies them).  Those that describe one attempt (:data:`PER_ATTEMPT_ATTRS`: artifacts,
metrics, status, failure, history, ...) are set to ``None`` at the start of a trial that
inherited them (Optuna cannot delete an attribute): readers treat ``None`` as absent.  The
parameters, seed, origin and dataset are kept (the retry trains the same configuration).

Which split scores a trial: ``objective_split = "test"`` (default) uses the report's test split,
the one the report used for early stopping and model selection, so that the validation split stays
untouched by the search and its metrics remain an unbiased estimate; ``"validation"`` scores on the
validation split instead."""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import math
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import optuna

import model
from data_prep.dataset import dataset_path, load_levels
from data_prep.files import atomic_write
from hpo import faults
from hpo.storage.artifacts import store_folder
from hpo.storage.optuna_private import study_storage, trial_id
from hpo.storage.stale import retried_trial_number, retry_history
from hpo.study.config import StudyConfig
from model.contract import (
    PARAMETER_OBJECTIVES,
    ArtifactName,
    Split,
    Status,
    TrialAttr,
    metric_text,
)
from model.errors import TrainingFailed, WorkerInterrupted

_log = logging.getLogger("specopt.training")


__all__ = ["LOG_INTERVAL", "PER_ATTEMPT_ATTRS", "WORKDIR_PREFIX", "EpochLog", "WorkerInterrupted",
           "epoch_dict", "objective", "remove_dead_workdirs", "state_path", "thin_history",
           "training_data", "trial_origin", "trial_workdir"]
MAX_HISTORY = 200
STATE_FILE = "state.pt"
#: Prefix of a trial's temporary folder (its best checkpoint, the files it uploads) in $TMPDIR.
WORKDIR_PREFIX = "specopt-trial-"
#: Seconds between a worker's INFO epoch lines when epochs are fast (slower ones: every epoch).
LOG_INTERVAL = 10.0
#: User attributes that describe one attempt of a trial, not its configuration: a retry that
#: inherited them from its dead attempt sets them to None at its start (see the docstring).
PER_ATTEMPT_ATTRS: tuple[str, ...] = (
    TrialAttr.ARTIFACTS, TrialAttr.METRICS, TrialAttr.SELECTION_METRICS, TrialAttr.BEST_EPOCH,
    TrialAttr.STATUS, TrialAttr.FAILURE, TrialAttr.HISTORY, TrialAttr.EPOCHS_RUN,
    TrialAttr.EPOCHS_TRAINED, TrialAttr.RESUMED_FROM, TrialAttr.SECONDS_PER_EPOCH,
    TrialAttr.DEVICE, TrialAttr.OBJECTIVE_FALLBACK, TrialAttr.REFERENCE_SIGMA,
    TrialAttr.RETRY_OF, TrialAttr.PROGRESS,
)


def trial_origin(frozen) -> int:
    """The trial whose saved state this one continues (see the module docstring): its
    inherited ``origin``, else the first of its retry history, else its own number."""
    inherited = frozen.user_attrs.get(TrialAttr.ORIGIN)
    if isinstance(inherited, int) and not isinstance(inherited, bool) and inherited >= 0:
        return inherited
    history = retry_history(frozen)
    return int(history[0]) if history else int(frozen.number)


def state_path(artifact_dir: str | Path, origin: int) -> Path:
    """``<artifact dir>/state/<origin>/state.pt`` (``origin`` an int: the path stays inside)."""
    return Path(artifact_dir) / "state" / str(int(origin)) / STATE_FILE


def _round(x: Any, digits: int = 6) -> Any:
    if isinstance(x, float | np.floating):
        x = float(x)
        if not math.isfinite(x):
            return None
        return float(f"{x:.{digits}g}")
    if isinstance(x, int | np.integer) and not isinstance(x, bool):
        return int(x)
    if isinstance(x, dict):
        return {k: _round(v, digits) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_round(v, digits) for v in x]
    return x


def epoch_dict(report) -> dict:
    """An ``EpochReport`` (or its dict) as a rounded, JSON-friendly dict."""
    if not isinstance(report, dict):
        report = {k: getattr(report, k) for k in ("epoch", "train_loss", "test_loss",
                                                   "test_metrics", "seconds", "best")
                  if hasattr(report, k)}
    return _round(dict(report))


def _provenance_summary(provenance: dict, limit: int = 3000) -> dict:
    out: dict = {}
    for k, v in provenance.items():
        text = json.dumps(v, default=str)
        if len(text) <= 400:
            out[k] = json.loads(text)
        else:
            out[k] = text[:200] + "..."
    while len(json.dumps(out, default=str)) > limit and out:
        out.pop(next(reversed(out)))
    return out


class EpochLog:
    """A trial's epoch lines: ``[study worker 0] trial 3 epoch 5/20: test fair accuracy 81.23%,
    1.9 s/epoch``.  At INFO at most one every ``interval`` seconds (with every epoch when epochs are
    slower than that), the first and the last epoch always; the others at DEBUG (``-v``).  Each
    INFO line also updates the trial's ``progress`` attribute (``specopt status``), so the
    database sees one write per line, not per epoch."""

    def __init__(self, trial, label: str, total: int, names: list[str],
                 interval: float = LOG_INTERVAL, clock: Callable[[], float] = time.monotonic):
        self.trial, self.label, self.total, self.names = trial, label, int(total), names
        self.interval, self.clock = float(interval), clock
        self.last: float | None = None  # clock of the last INFO line
        self.pending: dict | None = None  # the last epoch, when it was logged at DEBUG only
        self.seconds: list[float] = []

    def _values(self, entry: dict) -> str:
        metrics = entry.get("test_metrics") or {}
        # per-epoch values are the model-selection split's, whatever the objective_split
        # in the unit of the metric's label, as `specopt status` shows it (accuracies in %)
        shown = [f"{Split.TEST} {metric_text(n, metrics[n])}" for n in self.names
                 if metrics.get(n) is not None]
        if not shown and entry.get("test_loss") is not None:
            shown = [f"test loss {entry['test_loss']:.4g}"]
        return ", ".join(shown)

    def __call__(self, entry: dict) -> None:
        """Log one finished epoch (a dict of :func:`epoch_dict`)."""
        if entry.get("seconds") is not None:
            self.seconds.append(float(entry["seconds"]))
        now = self.clock()
        epoch = int(entry["epoch"])
        due = self.last is None or now - self.last >= self.interval or epoch >= self.total
        self._line(entry, logging.INFO if due else logging.DEBUG)
        if due:
            self.last = now
            self._record(entry)
        self.pending = None if due else entry

    def finish(self) -> None:
        """The last epoch at INFO when it was not (early stopping, pruning, a signal)."""
        if self.pending is not None:
            self._line(self.pending, logging.INFO)
            self._record(self.pending)
            self.pending = None

    def _per_epoch(self) -> float | None:
        return float(np.mean(self.seconds)) if self.seconds else None

    def _line(self, entry: dict, level: int) -> None:
        per = self._per_epoch()
        speed = f", {per:.3g} s/epoch" if per is not None else ""
        _log.log(level, f"{self.label} trial {self.trial.number} epoch {entry['epoch']}/"
                 f"{self.total}: {self._values(entry)}{speed}")

    def _record(self, entry: dict) -> None:
        metrics = entry.get("test_metrics") or {}
        value = next((metrics[n] for n in self.names if metrics.get(n) is not None), None)
        try:
            self.trial.set_user_attr(TrialAttr.PROGRESS, _round({
                "epoch": int(entry["epoch"]), "epochs": self.total, "value": value,
                "seconds_per_epoch": self._per_epoch()}))
        except Exception as err:  # deliberately broad: a display attribute never fails a trial
            _log.debug(f"{self.label} trial {self.trial.number}: progress not recorded ({err})")


def thin_history(history: list[dict], keep: int = MAX_HISTORY) -> list[dict]:
    """At most ``keep`` entries: evenly spaced, always the first and the last."""
    if len(history) <= keep:
        return history
    idx = np.unique(np.linspace(0, len(history) - 1, keep).round().astype(int))
    return [history[i] for i in idx]
_LEVELS: dict = {}


def _levels(dataset: str | None):
    """The dataset's levels, loaded once per process."""
    key = str(dataset_path(dataset).resolve())
    if key not in _LEVELS:
        _LEVELS[key] = load_levels(key)
    return _LEVELS[key]


def training_data(dataset: str | None, sigma: float, n_points: int, e_min: float, e_max: float,
                  subset: int | None):
    from data_prep.training_data import prepare  # torch: kept out of hpo's import

    return prepare(_levels(dataset), sigma=sigma, n_points=n_points, e_min=e_min, e_max=e_max,
                   subset=subset)


def _metric(metrics: dict, name: str, where: str) -> float:
    if name not in metrics:
        raise KeyError(f"objective {name!r} is not among the {where} metrics "
                       f"({', '.join(sorted(metrics))})")
    return float(metrics[name])


def objective(trial: optuna.Trial, config: StudyConfig, *, artifact_store=None,
              should_stop: Callable[[], bool] | None = None,
              worker: dict | None = None,
              state_dir: str | Path | None = None,
              log_label: str | None = None,
              train_fn: Callable | None = None) -> float | list[float]:
    """Train one configuration and return the study's objective value(s), on the device and
    threads of ``config.train`` (where a worker's ``--device``/``--num-threads`` are set).
    ``state_dir``: the folder of the saved training states' ``state/`` (default: the artifact
    store's folder; neither: no resuming). ``log_label``: the epoch lines' prefix (default
    ``[study]``). ``train_fn``: ``model.train``'s stand-in (``hpo.execution.packed`` trains the
    trial in a pack)."""
    frozen = study_storage(trial.study).get_trial(trial_id(trial))
    for key in PER_ATTEMPT_ATTRS:  # inherited from a dead attempt: not this attempt's
        if frozen.user_attrs.get(key) is not None:
            trial.set_user_attr(key, None)
    origin = trial_origin(frozen)
    trial.set_user_attr(TrialAttr.ORIGIN, origin)
    params = config.suggest(trial)
    trial.set_user_attr(TrialAttr.PARAMS, _round(params))
    trial.set_user_attr(TrialAttr.SEED, params.get("seed"))
    trial.set_user_attr(TrialAttr.WORKER,
                        worker or {"host": socket.gethostname(), "pid": os.getpid()})
    retry_of = retried_trial_number(frozen)
    if retry_of is not None:
        trial.set_user_attr(TrialAttr.RETRY_OF, retry_of)
    base = Path(state_dir) if state_dir is not None else store_folder(artifact_store)
    state = state_path(base, origin) if base is not None else None

    # Settings whose arrays this machine cannot hold end the trial here, before any is made
    # (TrainConfig's own validator checks a subset; the whole dataset is checked here).
    settings = model.TrainConfig(**config.train_settings(params))
    if settings.subset is None:
        settings.check_memory(len(_levels(config.train.dataset)))
    data = training_data(config.train.dataset, params["sigma"], params["n_points"],
                         config.train.e_min, config.train.e_max, params.get("subset"))
    trial.set_user_attr(TrialAttr.DATASET, {
        "fingerprint": data.fingerprint,
        "molecules": int(len(data.index)),
        Split.TRAIN: int(len(data.train_rows)),
        Split.TEST: int(len(data.test_rows)),
        Split.VALIDATION: int(len(data.validation_rows)),
        "subset": params.get("subset"),
        "path": config.train.dataset or "bundled",
        "provenance": _provenance_summary(data.provenance),
    })

    single = not config.is_multi_objective
    first = config.objectives[0]
    history: list[dict] = []
    epoch_log: list[EpochLog] = []  # made with the TrainConfig (its epochs)

    def on_epoch(report) -> None:
        entry = epoch_dict(report)
        history.append(entry)
        for line in epoch_log:
            line(entry)
        metrics = entry.get("test_metrics") or {}
        value = metrics.get(first)
        if single and value is not None:
            trial.report(value, step=int(entry["epoch"]))
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at epoch {entry['epoch']} ({Split.TEST} "
                                         f"{metric_text(first, value)})")
        faults.inject(f"epoch_end_{entry['epoch']}")
        if should_stop is not None and should_stop():
            raise WorkerInterrupted(f"stopped by a signal after epoch {entry['epoch']}")

    resumed_epoch = [0]

    def on_resume(saved) -> None:
        resumed_epoch[0] = saved.epoch
        _log.info(f"trial {trial.number} continues trial {origin} from epoch {saved.epoch}")
        trial.set_user_attr(TrialAttr.RESUMED_FROM, {"trial": origin, "epoch": saved.epoch})
        for h in saved.history:
            entry = epoch_dict(h)
            history.append(entry)
            value = (entry.get("test_metrics") or {}).get(first)
            if single and value is not None:
                trial.report(value, step=int(entry["epoch"]))
        if single and saved.history and trial.should_prune():
            raise optuna.TrialPruned(f"pruned at epoch {saved.epoch} (continued)")

    def record_history(status: str) -> None:
        for line in epoch_log:
            line.finish()
        trial.set_user_attr(TrialAttr.STATUS, status)
        if artifact_store is None:  # nowhere else to keep the learning curve
            trial.set_user_attr(TrialAttr.HISTORY, thin_history(history))
        elif history:  # the learning curve of an unfinished trial
            try:
                _upload_history(trial, artifact_store, history, workdir)
            except OSError as err:  # a full disk must not hide why the trial stopped
                _log.warning(f"trial {trial.number}: its {ArtifactName.HISTORY} was not "
                             f"saved ({err})")
        trial.set_user_attr(TrialAttr.EPOCHS_RUN, len(history))
        trial.set_user_attr(TrialAttr.EPOCHS_TRAINED, len(history) - resumed_epoch[0])
        if history:
            secs = [h["seconds"] for h in history if h.get("seconds") is not None]
            if secs:
                trial.set_user_attr(TrialAttr.SECONDS_PER_EPOCH, _round(float(np.mean(secs))))

    with trial_workdir(config.name, trial.number) as workdir:
        tc = model.TrainConfig(**config.train_settings(params, checkpoint_dir=workdir))
        names = [n for n in config.objectives if n not in PARAMETER_OBJECTIVES]
        epoch_log.append(EpochLog(trial, log_label or f"[{config.name}]", tc.epochs, names))
        try:
            result = (train_fn or model.train)(
                tc, data=data, on_epoch=on_epoch, state_path=state,
                save_interval=config.resume.save_interval, on_resume=on_resume, progress=False)
        except optuna.TrialPruned:
            _remove_state(state)
            record_history(Status.PRUNED)
            raise
        except WorkerInterrupted:
            record_history(Status.INTERRUPTED)
            raise
        except TrainingFailed as err:
            _remove_state(state)
            record_history(Status.FAILED)
            trial.set_user_attr(TrialAttr.FAILURE, str(err)[:500])
            raise
        trial.set_user_attr(TrialAttr.EPOCHS_TRAINED, result.epochs_trained)
        for line in epoch_log:
            line.finish()
        values = _finish(trial, config, params, data, result, history, workdir, artifact_store)
        _remove_state(state)
        return values


def _remove_state(path: Path | None) -> None:
    """The saved state of a trial that is over (its folder, with any temporary file; and
    ``state/`` when no other trial's is left in it)."""
    if path is not None:
        shutil.rmtree(path.parent, ignore_errors=True)
        with contextlib.suppress(OSError):
            path.parent.parent.rmdir()  # only if empty


@contextlib.contextmanager
def trial_workdir(study: str, number: int) -> Iterator[str]:
    """A trial's private temporary folder, removed when the trial ends. Its owner holds an
    ``flock`` on it while in use, so a worker killed meanwhile leaves it unlocked and the next
    worker on this machine removes it (:func:`remove_dead_workdirs`)."""
    while True:
        path = tempfile.mkdtemp(prefix=f"{WORKDIR_PREFIX}{study}-{number}-")
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:  # a cleaner may have taken it between mkdtemp and flock: then make another
            if os.path.samestat(os.fstat(fd), os.stat(path)):
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
        os.close(fd)


def remove_dead_workdirs() -> int:
    """Remove the trial folders (:func:`trial_workdir`) under $TMPDIR that no live process
    holds: those of killed workers, with their checkpoints. Returns how many."""
    removed = 0
    for path in Path(tempfile.gettempdir()).glob(f"{WORKDIR_PREFIX}*"):
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        except OSError:  # not a folder, or gone meanwhile
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # fails while its worker lives
            shutil.rmtree(path, ignore_errors=True)  # under the lock: its maker moves on
            removed += not path.exists()
        except OSError:
            pass
        finally:
            os.close(fd)
    if removed:
        _log.info(f"removed {removed} temporary trial folder(s) of dead workers from "
                  f"{tempfile.gettempdir()}")
    return removed


def _finish(trial, config: StudyConfig, params: dict, data, result, history: list[dict],
            workdir: str, artifact_store) -> float | list[float]:
    metrics = _round(dict(result.metrics))
    by_epoch = {h.get("epoch"): h for h in history}
    best = by_epoch.get(result.best_epoch) or (history[-1] if history else {})
    selection = best.get("test_metrics") or {}

    trial.set_user_attr(TrialAttr.STATUS, result.status)
    trial.set_user_attr(TrialAttr.METRICS, metrics)
    trial.set_user_attr(TrialAttr.SELECTION_METRICS, selection)
    trial.set_user_attr(TrialAttr.BASELINE, _round(result.baseline))
    trial.set_user_attr(TrialAttr.BEST_EPOCH, _round(result.best_epoch))
    trial.set_user_attr(TrialAttr.EPOCHS_RUN, len(history))
    if artifact_store is None:  # no history.json: the learning curve stays an attribute
        trial.set_user_attr(TrialAttr.HISTORY, thin_history(history))
    trial.set_user_attr(TrialAttr.DEVICE, str(result.device))
    trial.set_user_attr(TrialAttr.SECONDS_PER_EPOCH, _round(result.seconds_per_epoch))
    trial.set_user_attr(TrialAttr.REFERENCE_SIGMA, config.reference_sigma_value)

    values = []
    for name in config.objectives:
        if name in PARAMETER_OBJECTIVES:
            values.append(float(params[name]))
        elif config.objective_split == Split.VALIDATION:
            values.append(_metric(metrics, name, Split.VALIDATION))
        elif name in selection:
            values.append(float(selection[name]))
        else:
            # the per-epoch test metrics lack this one: fall back to the validation set, and say so
            trial.set_user_attr(TrialAttr.OBJECTIVE_FALLBACK, f"{name}: validation split")
            values.append(_metric(metrics, name, Split.VALIDATION))

    if artifact_store is not None:
        _upload(trial, artifact_store, result, data, history, workdir)
    return values[0] if len(values) == 1 else values


def _upload(trial, store, result, data, history: list[dict], workdir: str) -> None:
    from optuna.artifacts import upload_artifact

    ids = {}
    out = Path(workdir) / "upload"
    out.mkdir(exist_ok=True)
    pred = out / ArtifactName.PREDICTIONS
    atomic_write(pred, lambda f: np.savez_compressed(
        f, pred=np.asarray(result.val_predictions, np.float32),
        target=np.asarray(result.val_targets, np.float32),
        index=np.asarray(result.val_index), grid=data.grid, sigma=np.float64(data.sigma)))
    files = [pred, _history_file(out, history)]
    if result.checkpoint_path and Path(result.checkpoint_path).is_file():
        ckpt = out / ArtifactName.CHECKPOINT
        shutil.copyfile(result.checkpoint_path, ckpt)
        files.append(ckpt)
    for f in files:
        ids[f.name] = upload_artifact(artifact_store=store, file_path=str(f),
                                      study_or_trial=trial)
    trial.set_user_attr(TrialAttr.ARTIFACTS, ids)
    faults.inject("after_upload")


def _history_file(folder: Path, history: list[dict]) -> Path:
    path = folder / ArtifactName.HISTORY
    atomic_write(path, lambda f: f.write(json.dumps(history).encode()))  # names it when full
    return path


def _upload_history(trial, store, history: list[dict], workdir: str) -> None:
    """``history.json`` of a trial that ends without the other artifacts (pruned, diverged,
    interrupted): the report's learning curves and anytime costs read it."""
    from optuna.artifacts import upload_artifact

    out = Path(workdir) / "upload"
    out.mkdir(exist_ok=True)
    artifact_id = upload_artifact(artifact_store=store, file_path=str(_history_file(out, history)),
                                  study_or_trial=trial)
    trial.set_user_attr(TrialAttr.ARTIFACTS, {ArtifactName.HISTORY: artifact_id})

