"""Inference with a saved model: load a checkpoint, predict spectra of Coulomb matrices or of
``.xyz`` molecules."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from data_prep import coulomb_matrix, read_xyz, sort_coulomb
from model.checkpoint import load_checkpoint
from model.contract import MATRIX_SIZE
from model.errors import DataError
from model.network import SpectraCNN


def predict(model: SpectraCNN, coulomb, batch_size: int = 256,
            device: str | torch.device | None = None) -> np.ndarray:
    """(N, Np) float32 spectra of (N, 29, 29) Coulomb matrices (numpy or torch). The matrices
    are sorted by row norm first, as in training (sorting a sorted matrix changes nothing)."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    x = torch.as_tensor(np.asarray(coulomb, np.float32) if not torch.is_tensor(coulomb)
                        else coulomb, dtype=torch.float32)
    if x.dim() == 4:
        x = x.squeeze(1)
    if x.dim() != 3 or x.shape[1:] != (MATRIX_SIZE, MATRIX_SIZE):
        raise DataError(f"expected (N, {MATRIX_SIZE}, {MATRIX_SIZE}) Coulomb matrices, got "
                         f"{tuple(x.shape)}")
    finite = torch.isfinite(x).flatten(1).all(dim=1)
    if not bool(finite.all()):
        rows = torch.nonzero(~finite).flatten()[:5].tolist()
        raise DataError(f"{int((~finite).sum())} Coulomb matrices hold NaN or inf (rows {rows}): "
                        "no spectrum predicted")
    model = model.to(device).eval()
    out = []
    with torch.inference_mode():
        for s in range(0, len(x), batch_size):
            xb = sort_coulomb(x[s : s + batch_size].to(device)).unsqueeze(1)
            out.append(model(xb).float().cpu())
    if not out:
        return np.zeros((0, model.n_points), np.float32)
    return torch.cat(out).numpy()


@dataclass
class XyzPrediction:
    names: list[str]  # one per file: its stem, made unique
    spectra: np.ndarray  # (molecules, Np) float64
    grid: np.ndarray  # (Np,) eV
    meta: dict  # the checkpoint's metadata (sigma, Np, window, config, ...)


def _unique_names(paths: Sequence[Path]) -> list[str]:
    names: list[str] = []
    seen: dict[str, int] = {}
    for p in paths:
        name = p.stem
        if name in seen:
            seen[name] += 1
            name = f"{name}_{seen[name]}"
        else:
            seen[name] = 0
        names.append(name)
    return names


def predict_xyz(checkpoint: str | Path, xyz_files: Sequence[str | Path]) -> XyzPrediction:
    """The spectrum of every ``.xyz`` molecule with the model in ``checkpoint``. Bad files and
    checkpoints raise ``DataError`` (one line naming the file)."""
    paths = [Path(p) for p in xyz_files]
    if not paths:
        raise DataError("no .xyz files given")
    try:
        net, meta = load_checkpoint(checkpoint)
    except (FileNotFoundError, ValueError) as err:
        raise DataError(str(err)) from None
    except (RuntimeError, KeyError, TypeError) as err:  # a damaged state dict or payload
        why = str(err).strip().splitlines()
        raise DataError(f"{checkpoint}: not a readable checkpoint "
                        f"({why[0] if why else type(err).__name__})") from None
    matrices = []
    for p in paths:
        _, Z, R = read_xyz(p)
        try:
            matrices.append(coulomb_matrix(Z, R))
        except DataError as err:
            raise DataError(f"{p}: {err}") from None
    spectra = np.asarray(predict(net, np.stack(matrices)), np.float64)
    grid = np.asarray(meta["grid"], np.float64)
    return XyzPrediction(_unique_names(paths), spectra, grid, meta)
