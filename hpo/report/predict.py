"""Spectra of new molecules from ``.xyz`` files with a saved model, written as a CSV and an
offline plot (``specopt predict``). The computing is :func:`model.inference.predict_xyz`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class PredictPaths:
    """Files written by :func:`predict_xyz`, and what they hold."""

    csv: Path
    html: Path
    names: list[str]
    spectra: np.ndarray  # (molecules, Np)
    grid: np.ndarray  # (Np,) eV


def _csv_text(name: str) -> str:
    """A file name as a CSV header that spreadsheets show as text, never run as a formula."""
    return "'" + name if name[:1] in ("=", "+", "-", "@", "\t", "\r") else name


def predict_xyz(checkpoint: str | Path, xyz_files: Sequence[str | Path], out_dir: str | Path
                ) -> PredictPaths:
    """Predict the spectrum of every ``.xyz`` molecule with the model in ``checkpoint``; write
    ``spectra.csv`` (energy column, one column per molecule) and ``spectra.html`` (a plot that
    works offline) into ``out_dir``. Bad files raise ``DataError`` (one line)."""
    import pandas as pd
    import plotly.graph_objects as go

    from hpo.report.figures import Figure, plain
    from hpo.report.page import esc, figure_html, page
    from model.inference import predict_xyz as predict_spectra

    found = predict_spectra(checkpoint, xyz_files)
    names, spectra, grid, meta = found.names, found.spectra, found.grid, found.meta
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    df = pd.DataFrame({"energy_eV": grid, **{_csv_text(n): s
                                             for n, s in zip(names, spectra, strict=True)}})
    csv_path = out / "spectra.csv"
    df.to_csv(csv_path, index=False, float_format="%.9g")

    fig = go.Figure()
    for n, s in zip(names, spectra, strict=True):
        # File names are the user's text: plotly draws them as text, never as its HTML subset.
        fig.add_trace(go.Scatter(x=grid.tolist(), y=s.tolist(), mode="lines", name=plain(n)))
    sigma = meta.get("sigma")
    fig.update_layout(xaxis_title="energy (eV)", yaxis_title="intensity", height=480,
                      margin=dict(t=40), showlegend=True)  # the molecule's name, even alone
    title = (f"Predicted spectra (sigma {sigma:g} eV, Np {spectra.shape[1]}) from "
             f"{Path(checkpoint).name}" if isinstance(sigma, int | float)
             else f"Predicted spectra from {Path(checkpoint).name}")
    html_path = out / "spectra.html"
    html_path.write_text(page(title, [f"<h1>{esc(title)}</h1>",
                                      figure_html(Figure("spectra", "", fig))]))
    return PredictPaths(csv_path, html_path, names, spectra, grid)

