"""Inference with a saved model: load a checkpoint, predict spectra of Coulomb matrices or of
``.xyz`` molecules. Every ``.xyz`` molecule is first checked against the model's training domain
(:func:`domain_reasons`): a molecule unlike any the model was trained on gets a spectrum of the
right shape that means nothing, so it is refused, or predicted and flagged with ``force``.

A model that predicts levels (``output_head="levels"``) gives its spectra at any sigma and Np
(``predict(..., sigma=, n_points=)``, ``predict_xyz`` likewise) and its levels
(:func:`predict_levels`); :func:`score_at_sigmas` scores one trained model at several widths."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from data_prep import TrainingData, broaden, coulomb_matrix, energy_grid, read_xyz, sort_coulomb
from data_prep.dataset import TEST, VALIDATION
from data_prep.qm9 import ELEMENTS, SYMBOLS, formula, valence_electrons
from data_prep.spectra import check_grid, gaussian_spectra
from model.checkpoint import load_checkpoint
from model.config import DEFAULT_REFERENCE_SIGMA, TrainConfig
from model.contract import MATRIX_SIZE, N_LEVELS
from model.errors import ConfigError, DataError, OutOfDomain
from model.metrics import baseline_metrics, evaluate
from model.network import SpectraCNN


def predict(model: SpectraCNN, coulomb, batch_size: int = 256,
            device: str | torch.device | None = None, *, sigma: float | None = None,
            n_points: int | None = None) -> np.ndarray:
    """(N, Np) float32 spectra of (N, 29, 29) Coulomb matrices (numpy or torch). The matrices
    are sorted by row norm first, as in training (sorting a sorted matrix changes nothing).
    ``sigma`` / ``n_points``: the spectra at another width and grid (over the model's window),
    which only a model that predicts levels can give (``ConfigError`` otherwise)."""
    model.finish(torch.zeros(0, model.head.out_features), sigma, n_points)  # fail fast
    device = torch.device(device) if device is not None else next(model.parameters()).device
    x = _matrices(coulomb)
    model = model.to(device).eval()
    out = []
    with torch.inference_mode():
        for s in range(0, len(x), batch_size):
            xb = sort_coulomb(x[s : s + batch_size].to(device)).unsqueeze(1)
            out.append(model.spectrum(xb, sigma, n_points).float().cpu())
    if not out:
        return np.zeros((0, n_points or model.n_points), np.float32)
    return torch.cat(out).numpy()


def predict_levels(model: SpectraCNN, coulomb, batch_size: int = 256,
                   device: str | torch.device | None = None) -> np.ndarray:
    """(N, 16) float32 levels (eV, ascending) of (N, 29, 29) Coulomb matrices, from a model
    that predicts levels (``output_head="levels"``; ``ConfigError`` otherwise)."""
    model._need_levels("predict_levels")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    x = _matrices(coulomb)
    model = model.to(device).eval()
    with torch.inference_mode():
        out = [model.levels(sort_coulomb(x[s : s + batch_size].to(device)).unsqueeze(1))
               .float().cpu() for s in range(0, len(x), batch_size)]
    return torch.cat(out).numpy() if out else np.zeros((0, N_LEVELS), np.float32)


#: Widths (eV) at which :func:`score_at_sigmas` scores a levels model: the report's three.
SCORE_SIGMAS = (0.1, 0.3, 0.5)


def score_at_sigmas(model: SpectraCNN, data: TrainingData,
                    sigmas: Sequence[float] = SCORE_SIGMAS, *, split: str = "validation",
                    reference_sigma: float | None = None, n_points: int | None = None,
                    scale_free: bool = False,
                    batch_size: int = 256) -> dict[float, dict[str, float]]:
    """One trained model scored at several widths: ``{sigma: metrics}`` on ``data``'s ``split``
    ("validation", the held-out one, or "test"). At each sigma the targets are the split's
    levels broadened by ``data_prep.broaden`` (exactly what ``prepare`` would give at that
    sigma), the predictions the model's spectra at that sigma, both on ``n_points`` (default:
    the data's) over the data's window; the metrics are ``model.metrics.evaluate``'s, with
    ``fair_accuracy`` re-broadened to one ``reference_sigma`` for all (default: the widest of
    0.5 and the sigmas), plus, for a levels model, ``predicted_level_error_eV``: the mean
    |predicted - true| of the sorted levels themselves (no extraction from a spectrum), and
    ``skill`` (the baseline: the mean training spectrum at that sigma). A levels model's levels
    are predicted once and broadened at each sigma. ``scale_free``: the model was trained with a
    loss that fixes no scale (``SCALE_FREE_LOSSES``): judged as ``evaluate`` judges such runs.
    Only a levels model can be scored at a sigma or Np other than its own (``ConfigError``)."""
    parts = {"validation": VALIDATION, "test": TEST}
    if split not in parts:
        raise ConfigError(f"split must be 'validation' or 'test', got {split!r}")
    if not sigmas:
        raise ConfigError("no sigma to score at")
    reference = reference_sigma or max(DEFAULT_REFERENCE_SIGMA, *sigmas)
    n_points = n_points or data.n_points
    rows = data.rows(parts[split])
    if len(rows) == 0:
        raise DataError(f"the data have no {split} molecules")
    grid = energy_grid(n_points, data.e_min, data.e_max)
    levels = data.levels[rows]
    found = predict_levels(model, data.coulomb[rows], batch_size) if model.predicts_levels \
        else None
    out: dict[float, dict[str, float]] = {}
    for sigma in sigmas:
        if found is not None:  # the levels head's own broadening of its levels
            pred = gaussian_spectra(torch.from_numpy(found), sigma, n_points, data.e_min,
                                    data.e_max).numpy()
        else:
            pred = predict(model, data.coulomb[rows], batch_size, sigma=sigma,
                           n_points=n_points)
        target = broaden(levels, sigma, n_points, data.e_min, data.e_max)
        train = broaden(data.levels[data.train_rows], sigma, n_points, data.e_min, data.e_max)
        base = baseline_metrics(train, target, grid, sigma, reference, scale_free=scale_free)
        scores = evaluate(pred, target, levels, grid, sigma, reference, scale_free=scale_free,
                          baseline=base)
        if found is not None:
            err = np.abs(found - np.sort(levels, axis=1))
            scores["predicted_level_error_eV"] = float(np.nanmean(err))
        out[float(sigma)] = scores
    return out


def _matrices(coulomb) -> torch.Tensor:
    """(N, 29, 29) float32 matrices (numpy or torch, (N, 1, 29, 29) too), checked."""
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
    return x


#: Relative tolerance of the Coulomb-norm range (float32 rounding of the training matrices).
NORM_RTOL = 1e-5
#: Farthest an atom may be from its nearest neighbour, Angstrom: about twice QM9's farthest
#: (1.57 A, over all 130,831 molecules); beyond it the atom is not bonded to the molecule.
MAX_NEIGHBOUR_ANGSTROM = 3.0


@dataclass
class Molecule:
    """One ``.xyz`` molecule as ``predict_xyz`` saw it, and why it is out of domain (if it is)."""

    name: str  # "water.xyz (H2O)": its file and formula, made unique
    path: Path
    formula: str
    n_atoms: int
    valence_electrons: int
    coulomb_norm: float | None  # None when it has more atoms than a matrix holds
    reasons: list[str]  # empty when inside the training domain

    @property
    def in_domain(self) -> bool:
        return not self.reasons


@dataclass
class XyzPrediction:
    names: list[str]  # one per predicted molecule: "water.xyz (H2O)", made unique
    spectra: np.ndarray  # (molecules, Np) float64
    grid: np.ndarray  # (Np,) eV
    meta: dict  # the checkpoint's metadata (sigma, Np, window, config, domain, ...)
    molecules: list[Molecule] = field(default_factory=list)  # the predicted ones, as names
    notes: list[str] = field(default_factory=list)  # checks skipped (an older checkpoint)
    refused: list[Molecule] = field(default_factory=list)  # left out (``partial``): not predicted

    @property
    def flags(self) -> list[str]:
        """Per molecule: '' inside the training domain, else its reasons (predicted by force)."""
        return ["; ".join(m.reasons) for m in self.molecules]


def _unique(names: list[str]) -> list[str]:
    out: list[str] = []
    seen: dict[str, int] = {}
    for name in names:
        if name in seen:
            seen[name] += 1
            name = f"{name} #{seen[name]}"
        else:
            seen[name] = 1
        out.append(name)
    return out


def _elements(zs) -> str:
    return ", ".join(SYMBOLS.get(int(z), f"Z={z}") for z in zs)


def domain_reasons(Z: np.ndarray, coulomb_norm: float | None, domain: dict | None,
                   R: np.ndarray | None = None) -> list[str]:
    """Why a molecule (atomic numbers ``Z``, its Coulomb matrix's Frobenius norm, positions
    ``R`` in Angstrom when given) is outside the training ``domain`` of a checkpoint
    (``model.checkpoint.training_domain``); empty when it is inside. Without a domain (an older
    checkpoint) the elements are QM9's and the atom count and norm ranges are not checked.
    With ``R``: an atom farther than ``MAX_NEIGHBOUR_ANGSTROM`` from every other is not part of
    a molecule (its Coulomb entries vanish, and its norm may still look in range)."""
    reasons = []
    if R is not None and len(Z) > 1:
        d = np.linalg.norm(R[:, None, :] - R[None, :, :], axis=-1)
        np.fill_diagonal(d, np.inf)
        nearest = d.min(axis=1)
        far = int(np.argmax(nearest))
        if nearest[far] > MAX_NEIGHBOUR_ANGSTROM:
            reasons.append(f"atom {far + 1} ({_elements([Z[far]])}) is {nearest[far]:.3g} "
                           f"Angstrom from its nearest neighbour (a bonded atom is within "
                           f"{MAX_NEIGHBOUR_ANGSTROM:g})")
    elements = set(domain["elements"]) if domain else set(ELEMENTS.values())
    foreign = sorted({int(z) for z in Z} - elements)
    if foreign:
        reasons.append(f"element{'s' if len(foreign) > 1 else ''} {_elements(foreign)} not in "
                       f"the training set ({_elements(sorted(elements))})")
    n = len(Z)
    if n > MATRIX_SIZE:
        reasons.append(f"{n} atoms, more than the {MATRIX_SIZE} a Coulomb matrix holds")
    elif domain and not domain["n_atoms"][0] <= n <= domain["n_atoms"][1]:
        lo, hi = domain["n_atoms"]
        reasons.append(f"{n} atoms, outside the training range {lo}..{hi}")
    valence = valence_electrons(Z)
    if valence // 2 < N_LEVELS:
        # A spectrum is the 16 highest occupied levels broadened; the datasets hold valence
        # levels only, so a molecule with fewer has no spectrum the model learnt to give.
        reasons.append(f"{valence} valence electrons: {valence // 2} occupied valence levels, "
                       f"fewer than the {N_LEVELS} highest occupied levels the model predicts "
                       f"(every training molecule has at least {N_LEVELS})")
    if valence % 2:
        reasons.append(f"{valence} valence electrons, an odd number (a radical; the training "
                       "molecules are closed-shell)")
    if domain and coulomb_norm is not None:
        lo, hi = domain["coulomb_norm"]
        # The training norms come from sorted float32 matrices: allow their rounding.
        if not lo * (1 - NORM_RTOL) <= coulomb_norm <= hi * (1 + NORM_RTOL):
            reasons.append(f"Coulomb-matrix norm {coulomb_norm:.1f} outside the training range "
                           f"{lo:.1f}..{hi:.1f}")
    return reasons


def _check_grid(meta: dict, sigma: float | None, n_points: int | None) -> None:
    """A sigma or Np asked of a model: a grid that can exist (``check_grid``), within the
    bounds of a training setting (``TrainConfig``; an Np of 1e8 is 13 GB of Gaussians)."""
    from pydantic import ValidationError


    sigma = meta["sigma"] if sigma is None else sigma
    n_points = meta["n_points"] if n_points is None else n_points
    check_grid(sigma, n_points, meta["e_min"], meta["e_max"])
    try:
        TrainConfig.model_validate({"sigma": sigma, "n_points": n_points,
                                    "e_min": meta["e_min"], "e_max": meta["e_max"]})
    except ValidationError as err:
        raise ConfigError("; ".join(e["msg"] for e in err.errors())) from None


def predict_xyz(checkpoint: str | Path, xyz_files: Sequence[str | Path],
                force: bool = False, *, sigma: float | None = None,
                n_points: int | None = None, partial: bool = False) -> XyzPrediction:
    """The spectrum of every ``.xyz`` molecule with the model in ``checkpoint``, each checked
    against the model's training domain first (:func:`domain_reasons`). Molecules outside it
    raise :class:`OutOfDomain` (a ``DataError`` naming each with its reasons) unless ``force``:
    then they are predicted and flagged (``XyzPrediction.molecules``, ``.flags``); one with more
    atoms than a Coulomb matrix holds is refused even so. ``partial``: the molecules that can be
    predicted are, the refused ones are left out (``XyzPrediction.refused``, with their
    reasons), and :class:`OutOfDomain` is raised only when none is left. Bad files and
    checkpoints raise ``DataError`` (one line naming the file).

    ``sigma`` / ``n_points``: spectra at another width and grid than the model was trained for,
    which a model that predicts levels gives (any other raises ``ConfigError`` before reading a
    molecule). The prediction's ``meta`` then says what was predicted (``sigma``, ``n_points``)
    and keeps the training values as ``trained_sigma`` / ``trained_n_points``."""
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
    if sigma is not None or n_points is not None:  # within TrainConfig's bounds, before
        _check_grid(meta, sigma, n_points)       # any array of that size is made
    net.finish(torch.zeros(0, net.head.out_features), sigma, n_points)  # fail fast
    if sigma is not None or n_points is not None:
        meta = {**meta, "trained_sigma": meta["sigma"], "trained_n_points": meta["n_points"],
                "sigma": meta["sigma"] if sigma is None else sigma,
                "n_points": meta["n_points"] if n_points is None else n_points}
        meta["grid"] = energy_grid(meta["n_points"], meta["e_min"], meta["e_max"])
    domain = meta.get("domain")
    notes = [] if domain else [
        f"{Path(checkpoint).name} was saved before checkpoints recorded their training domain: "
        "elements and valence levels checked, atom-count and Coulomb-norm ranges not"]
    read = []
    for p in paths:
        _, Z, R = read_xyz(p, any_molecule=True)
        read.append((p, Z, R))
    names = _unique([f"{p.name} ({formula(Z)})" for p, Z, _ in read])
    molecules, matrices = [], []
    for name, (p, Z, R) in zip(names, read, strict=True):
        matrix = None
        if len(Z) <= MATRIX_SIZE:
            try:
                matrix = coulomb_matrix(Z, R)
            except DataError as err:
                raise DataError(f"{p}: {err}") from None
        norm = None if matrix is None else float(np.linalg.norm(matrix.astype(np.float64)))
        molecules.append(Molecule(name, p, formula(Z), len(Z), valence_electrons(Z), norm,
                                  domain_reasons(Z, norm, domain, R)))
        matrices.append(matrix)
    too_big = [m for m in molecules if m.coulomb_norm is None]
    refused = too_big if force else [m for m in molecules if not m.in_domain]
    if refused and (not partial or len(refused) == len(molecules)):
        raise OutOfDomain(refused, len(molecules),
                          force_helps=not force and len(too_big) < len(refused))
    left_out = {id(m) for m in refused}
    kept = [i for i, m in enumerate(molecules) if id(m) not in left_out]
    spectra = np.asarray(predict(net, np.stack([np.asarray(matrices[i]) for i in kept]),
                                 sigma=sigma, n_points=n_points), np.float64)
    grid = np.asarray(meta["grid"], np.float64)
    return XyzPrediction([names[i] for i in kept], spectra, grid, meta,
                         [molecules[i] for i in kept], notes, refused)
