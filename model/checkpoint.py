"""The checkpoint of a trained model: its weights and everything needed to rebuild and use it
(the network's arguments, the spectra's sigma, Np and window, the grid, the data fingerprint,
the training domain that ``predict`` checks new molecules against);
and the *training state* of an unfinished run (:class:`TrainingState`), from which
``model.train`` continues where an interrupted run stopped."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from data_prep import TrainingData
from data_prep.files import atomic_write
from data_prep.qm9 import valence_electrons
from model.config import TrainConfig
from model.errors import DataError, InfrastructureError, describe_os_error
from model.network import SpectraCNN

CHECKPOINT_FORMAT = "specopt-checkpoint-1"
STATE_FORMAT = "specopt-training-state-1"

log = logging.getLogger("specopt.model")


def save_checkpoint(path: Path, model: SpectraCNN | dict[str, torch.Tensor], config: TrainConfig,
                    data: TrainingData, epoch: int, test_loss: float) -> None:
    """Write ``model`` (trained with ``config`` on ``data``; a network or its state dict)
    atomically: a reader never sees half a file, even while training overwrites it with a
    better epoch."""
    weights = model if isinstance(model, dict) else model.state_dict()
    payload = {
        "format": CHECKPOINT_FORMAT,
        "state_dict": {k: v.detach().cpu() for k, v in weights.items()},
        "config": config.model_dump(mode="json"),
        "network": config.network_kwargs(),
        "n_points": config.n_points,
        "output_head": config.output_head,
        "sigma": config.sigma,
        "e_min": config.e_min,
        "e_max": config.e_max,
        "grid": torch.from_numpy(data.grid),
        "fingerprint": data.fingerprint,
        "epoch": epoch,
        "test_loss": test_loss,
        "domain": training_domain(data),
    }
    _save(Path(path), payload)


def _save(path: Path, payload: dict) -> None:
    """``torch.save`` atomically; a write that fails (a full disk, a quota, a read-only folder)
    is an :class:`InfrastructureError` naming the file and the fix, the previous file whole
    and nothing partial left (``atomic_write``)."""
    try:
        atomic_write(path, lambda f: torch.save(payload, f))
    except OSError as err:
        what, fix = describe_os_error(err)
        raise InfrastructureError(f"cannot write {what} ({fix})") from err


def _unreadable(path: Path, err: BaseException) -> str:
    """Why ``torch.load`` could not read ``path``, in a few words (never PyTorch's advice to
    load with ``weights_only=False``: that runs whatever code the file holds)."""
    if isinstance(err, OSError):
        return err.strerror or type(err).__name__
    if path.stat().st_size == 0:
        return "an empty file"
    if "GLOBAL" in str(err):  # the weights-only unpickler refused a callable
        return "it names code to run, refused unread"
    return "truncated or not a PyTorch file"


#: Training domains already computed, by data (a run saves its checkpoint at every better epoch).
_DOMAINS: dict[tuple[str, int, int], dict[str, Any]] = {}


def training_domain(data: TrainingData) -> dict[str, Any]:
    """What the training molecules span, for ``predict``'s domain check: their elements, atom
    counts, valence electrons and Coulomb-matrix (Frobenius) norms, read back from the training
    split's matrices (the diagonal is 0.5 Z^2.4, zero for padding)."""
    key = (data.fingerprint, id(data.coulomb), len(data.coulomb))
    if key not in _DOMAINS:
        rows = data.train_rows if len(data.train_rows) else np.arange(len(data.coulomb))
        Zs, norms = [], []
        for s in range(0, len(rows), 8192):  # in chunks: all of QM9 in float64 is 0.8 GB
            C = np.asarray(data.coulomb[rows[s : s + 8192]], np.float64)
            Zs.append(np.rint((2.0 * np.diagonal(C, axis1=1, axis2=2)) ** (1 / 2.4)).astype(int))
            norms.append(np.linalg.norm(C, axis=(1, 2)))
        Z, norm = np.concatenate(Zs), np.concatenate(norms)
        valence = np.array([valence_electrons([z]) for z in range(Z.max() + 1)])[Z].sum(axis=1)
        n_atoms = (Z > 0).sum(axis=1)
        if len(_DOMAINS) > 8:
            _DOMAINS.clear()
        _DOMAINS[key] = {
            "molecules": len(rows),
            "elements": sorted(int(z) for z in np.unique(Z) if z > 0),
            "n_atoms": [int(n_atoms.min()), int(n_atoms.max())],
            "valence_electrons": [int(valence.min()), int(valence.max())],
            "coulomb_norm": [float(norm.min()), float(norm.max())],
        }
    return _DOMAINS[key]


def load_checkpoint(path: str | Path, n_points: int | None = None,
                    map_location: str | torch.device = "cpu") -> tuple[SpectraCNN, dict]:
    """(model in eval mode, metadata) from a checkpoint written by ``train``. With ``n_points``,
    a checkpoint trained for another Np is an error (``DataError``, as an unreadable file),
    unless the model predicts levels (``output_head="levels"``: any Np, see
    ``SpectraCNN.spectrum``). Checkpoints from before the network knobs (no ``network`` entry)
    are the report's network."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:
        raise DataError(f"{path}: not a readable checkpoint ({_unreadable(path, err)}; train "
                        "or export it again)") from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise DataError(f"{path}: not a specopt checkpoint")
    levels_head = (payload.get("network") or payload).get("output_head") == "levels"
    if n_points is not None and payload["n_points"] != n_points and not levels_head:
        raise DataError(f"{path}: the model was trained for Np={payload['n_points']} points, "
                        f"not Np={n_points}")
    network = payload.get("network") or {"n_points": payload["n_points"],
                                         "output_head": payload["output_head"]}
    # Checkpoints from before the network knew its spectrum: the one they were trained for.
    network = {"sigma": payload["sigma"], "e_min": payload["e_min"], "e_max": payload["e_max"],
               **network}
    model = SpectraCNN(**network)
    model.load_state_dict(payload["state_dict"])
    model.eval()
    meta = {k: v for k, v in payload.items() if k != "state_dict"}
    meta["grid"] = meta["grid"].numpy()
    return model, meta


# --- the training state of an unfinished run --------------------------------------------------

def state_identity(config: TrainConfig, data: TrainingData) -> dict[str, Any]:
    """What must agree for a saved state to be continued: the TrainConfig fields that shape what
    the run learns (the searchable ones and the energy window) and the data's fingerprint; where
    and how fast it trains (device, threads, compile) may differ."""
    fields = [*TrainConfig.searchable_fields(), "e_min", "e_max"]
    dump = config.model_dump(mode="json", include=set(fields))
    dump.pop("dataset", None)  # a path differs between machines: the fingerprint decides
    return {"config": dump, "fingerprint": data.fingerprint}


@dataclass
class TrainingState:
    """Everything ``model.train`` needs to continue a run after ``epoch`` as if it had never
    stopped: the trainer's state (``model.trainer.Trainer.get_state``: weights, AdamW state,
    the shuffling/noise generator, torch's global CPU RNG (dropout), the CUDA RNG on CUDA, the
    epoch, which is also the learning-rate schedule's position), the best epoch's weights, epoch
    and test loss, and the history of the epochs done. NumPy's and Python's RNGs are not used by
    training and not saved."""

    epoch: int
    trainer: dict[str, Any]
    best_epoch: int
    best_test_loss: float
    best_weights: dict[str, torch.Tensor] | None
    history: list[dict] = field(default_factory=list)
    identity: dict[str, Any] = field(default_factory=dict)


def save_training_state(path: Path, state: TrainingState) -> None:
    """Write ``state`` atomically (a reader, or a run killed while writing, leaves the previous
    state whole)."""
    payload = {"format": STATE_FORMAT, "epoch": state.epoch, "trainer": state.trainer,
               "best_epoch": state.best_epoch, "best_test_loss": state.best_test_loss,
               "best_weights": state.best_weights, "history": state.history,
               "identity": state.identity}
    _save(Path(path), payload)


def load_training_state(path: str | Path, config: TrainConfig | None = None,
                        data: TrainingData | None = None) -> TrainingState | None:
    """The state saved at ``path``; None when there is none. A state that cannot be read, or
    that another configuration or other data wrote (given ``config`` and ``data``), is not
    continued: one warning line names the file and the reason, the file is removed and the run
    starts from epoch 1."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # deliberately broad: any unreadable file means "start again"
        _discard(path, f"is unreadable ({_unreadable(path, err)})")
        return None
    try:
        if not isinstance(payload, dict) or payload.get("format") != STATE_FORMAT:
            raise ValueError("not a specopt training state")
        state = TrainingState(
            epoch=int(payload["epoch"]), trainer=payload["trainer"],
            best_epoch=int(payload["best_epoch"]),
            best_test_loss=float(payload["best_test_loss"]),
            best_weights=payload["best_weights"], history=list(payload["history"]),
            identity=payload["identity"])
        if len(state.history) != state.epoch or state.trainer.get("epoch") != state.epoch:
            raise ValueError(f"inconsistent epochs ({state.epoch}, {len(state.history)} "
                             "in its history)")
    except (ValueError, KeyError, TypeError, AttributeError) as err:  # a damaged payload
        why = (str(err) if isinstance(err, ValueError) else f"{type(err).__name__}: {err}")
        _discard(path, f"is unreadable ({why.splitlines()[0] if why else type(err).__name__})")
        return None
    if (config is not None and data is not None
            and state.identity != state_identity(config, data)):
        _discard(path, "was saved by another configuration or other data")
        return None
    return state


def _discard(path: Path, why: str) -> None:
    """A saved state that is not continued: one warning line, the file removed."""
    log.warning("training state %s %s; removed, training from epoch 1", path, why)
    path.unlink(missing_ok=True)
