"""The checkpoint of a trained model: its weights and everything needed to rebuild and use it
(the network's arguments, the spectra's sigma, Np and window, the grid, the data fingerprint)."""

from __future__ import annotations

from pathlib import Path

import torch

from data_prep import TrainingData
from data_prep.cache import atomic_write
from model.config import TrainConfig
from model.errors import DataError
from model.network import SpectraCNN

CHECKPOINT_FORMAT = "specopt-checkpoint-1"


def save_checkpoint(path: Path, model: SpectraCNN, config: TrainConfig, data: TrainingData,
                    epoch: int, test_loss: float) -> None:
    """Write ``model`` (trained with ``config`` on ``data``) atomically: a reader never sees half
    a file, even while training overwrites it with a better epoch."""
    payload = {
        "format": CHECKPOINT_FORMAT,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
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
    }
    atomic_write(Path(path), lambda f: torch.save(payload, f))


def load_checkpoint(path: str | Path, n_points: int | None = None,
                    map_location: str | torch.device = "cpu") -> tuple[SpectraCNN, dict]:
    """(model in eval mode, metadata) from a checkpoint written by ``train``. With ``n_points``,
    a checkpoint trained for another Np is an error (``DataError``, as an unreadable file).
    Checkpoints from before the network knobs (no ``network`` entry) are the report's network."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:
        raise DataError(f"{path}: not a readable checkpoint ({err})") from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise DataError(f"{path}: not a specopt checkpoint")
    if n_points is not None and payload["n_points"] != n_points:
        raise DataError(f"{path}: the model was trained for Np={payload['n_points']} points, "
                        f"not Np={n_points}")
    network = payload.get("network") or {"n_points": payload["n_points"],
                                         "output_head": payload["output_head"]}
    model = SpectraCNN(**network)
    model.load_state_dict(payload["state_dict"])
    model.eval()
    meta = {k: v for k, v in payload.items() if k != "state_dict"}
    meta["grid"] = meta["grid"].numpy()
    return model, meta
