"""Spectra of new molecules from ``.xyz`` files with a saved model, written as CSVs and an
offline plot (``specopt predict``). The computing, and the check of every molecule against the
model's training domain, is :func:`model.inference.predict_xyz`. A model that predicts levels
(``output_head="levels"``) gives the spectra at any sigma and Np; any other model only at its
own (``ConfigError``)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hpo.escape import write_csv
from hpo.report.figures import Figure, plain
from hpo.report.page import esc, figure_html, page

#: Added to the CSV header and the plot's legend of a molecule predicted outside the domain.
OUT_OF_DOMAIN = "[outside training domain]"


@dataclass
class PredictPaths:
    """Files written by :func:`predict_xyz`, and what they hold."""

    csv: Path  # spectra.csv: energy column, one column per molecule
    html: Path
    names: list[str]  # "water.xyz (H2O)": file and formula
    spectra: np.ndarray  # (molecules, Np)
    grid: np.ndarray  # (Np,) eV
    molecules_csv: Path | None = None  # molecules.csv: one row per molecule, its domain flag
    flags: list[str] = field(default_factory=list)  # per molecule: '' in domain, else why not
    notes: list[str] = field(default_factory=list)  # checks an older checkpoint could not do
    sigma: float | None = None  # eV: the width the spectra were predicted at
    trained_sigma: float | None = None  # eV: the model's own (what it was trained for)
    trained_n_points: int | None = None  # the model's own Np
    refused: list = field(default_factory=list)  # model.inference.Molecule: not predicted

    @property
    def n_points(self) -> int:
        return len(self.grid)

    @property
    def regridded(self) -> bool:
        """Whether the spectra are at another sigma or Np than the model was trained for."""
        return _regridded(self.sigma, self.n_points, self.trained_sigma, self.trained_n_points)


def _regridded(sigma, n_points, trained_sigma, trained_n_points) -> bool:
    if trained_n_points is not None and n_points != trained_n_points:
        return True
    numbers = all(isinstance(v, int | float) for v in (sigma, trained_sigma))
    return numbers and not math.isclose(sigma, trained_sigma, rel_tol=1e-9)


def _grid_text(sigma, n_points) -> str:
    """"sigma 0.5 eV, Np 300" (Np alone where a checkpoint does not say its sigma)."""
    return (f"sigma {sigma:g} eV, Np {n_points}" if isinstance(sigma, int | float)
            else f"Np {n_points}")


def predict_xyz(checkpoint: str | Path, xyz_files: Sequence[str | Path], out_dir: str | Path,
                force: bool = False, *, sigma: float | None = None,
                n_points: int | None = None, partial: bool = False) -> PredictPaths:
    """Predict the spectrum of every ``.xyz`` molecule with the model in ``checkpoint``; write
    ``spectra.csv`` (energy column, one column per molecule), ``molecules.csv`` (one row per
    molecule: formula, atoms, valence electrons, Coulomb norm, ``in_domain`` and
    ``out_of_domain``, the reasons) and ``spectra.html`` (a plot that works offline) into
    ``out_dir``. Molecules outside the model's training domain raise
    ``model.inference.OutOfDomain`` (nothing is written) unless ``force``: then they are
    predicted and flagged in both CSVs and the plot. ``partial``: the molecules that can be
    predicted are written, the refused ones left out of the spectra (``PredictPaths.refused``;
    in ``molecules.csv`` after the predicted ones, ``predicted`` false, and named on the plot's
    page); ``OutOfDomain`` only when none is left. Bad files raise ``DataError`` (one line).

    ``sigma`` (eV) / ``n_points``: the spectra at another width and on another grid over the
    model's window (default: the model's own); only a model that predicts levels
    (``output_head="levels"``) can give them, any other raises ``ConfigError`` (nothing is
    written). The grid of ``spectra.csv`` and the plot follow them, and the plot's title names
    the model's own sigma and Np beside them."""
    import pandas as pd
    import plotly.graph_objects as go

    from model.inference import predict_xyz as predict_spectra  # torch: out of the report's import

    found = predict_spectra(checkpoint, xyz_files, force=force, sigma=sigma, n_points=n_points,
                            partial=partial)
    names, spectra, grid, meta = found.names, found.spectra, found.grid, found.meta
    flags = found.flags
    shown = [f"{n} {OUT_OF_DOMAIN}" if f else n for n, f in zip(names, flags, strict=True)]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # one column per molecule, even two of one name (a dict would keep one)
    df = pd.DataFrame(np.column_stack([grid, *spectra]), columns=["energy_eV", *shown])
    csv_path = write_csv(df, out / "spectra.csv", float_format="%.9g")
    molecules_csv = out / "molecules.csv"
    peaks = [grid[int(s.argmax())] for s in spectra] + [None] * len(found.refused)
    write_csv(pd.DataFrame([{
        "molecule": m.name, "file": str(m.path), "formula": m.formula,
        "atoms": m.n_atoms, "valence_electrons": m.valence_electrons,
        "coulomb_norm": m.coulomb_norm, "predicted": peak is not None,
        "strongest_peak_eV": peak, "in_domain": m.in_domain,
        "out_of_domain": "; ".join(m.reasons),
    } for m, peak in zip([*found.molecules, *found.refused], peaks, strict=True)]),
        molecules_csv, float_format="%.6g")

    fig = go.Figure()
    for n, s, f in zip(shown, spectra, flags, strict=True):
        # File names are the user's text: plotly draws them as text, never as its HTML subset.
        fig.add_trace(go.Scatter(x=grid.tolist(), y=s.tolist(), mode="lines", name=plain(n),
                                 line=dict(dash="dash") if f else None))
    # meta holds what was predicted; the model's own values are kept as trained_* when asked
    shown_sigma = meta.get("sigma")
    trained_sigma = meta.get("trained_sigma", shown_sigma)
    trained_n = meta.get("trained_n_points", meta.get("n_points"))
    points = spectra.shape[1]
    fig.update_layout(xaxis_title="energy (eV)", yaxis_title="intensity", height=480,
                      margin=dict(t=40), showlegend=True)  # the molecule's name, even alone
    title = f"Predicted spectra ({_grid_text(shown_sigma, points)}) from {Path(checkpoint).name}"
    if _regridded(shown_sigma, points, trained_sigma, trained_n):
        title += f" (trained at {_grid_text(trained_sigma, trained_n)})"
    flagged = [(n, f) for n, f in zip(names, flags, strict=True) if f]
    warning = ("" if not flagged else
               "<p class='warning'><b>Predicted outside the model's training domain (dashed; "
               "these spectra are not to be trusted):</b></p><ul>"
               + "".join(f"<li>{esc(n)}: {esc(f)}</li>" for n, f in flagged) + "</ul>")
    if found.refused:
        warning += ("<p><b>Not predicted (outside the model's training domain):</b></p><ul>"
                    + "".join(f"<li>{esc(m.name)}: {esc('; '.join(m.reasons))}</li>"
                              for m in found.refused) + "</ul>")
    notes = "".join(f"<p>{esc(n)}</p>" for n in found.notes)
    html_path = out / "spectra.html"
    html_path.write_text(page(title, [f"<h1>{esc(title)}</h1>" + warning + notes,
                                      figure_html(Figure("spectra", "", fig))]))
    return PredictPaths(csv_path, html_path, names, spectra, grid, molecules_csv, flags,
                        found.notes, shown_sigma, trained_sigma, trained_n, found.refused)
