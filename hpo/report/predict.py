"""Spectra of new molecules from ``.xyz`` files with a saved model (``specopt predict``), and
the optuna-dashboard server (``specopt dashboard``)."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class PredictPaths:
    csv: Path
    html: Path
    names: list[str]
    spectra: np.ndarray  # (molecules, Np)
    grid: np.ndarray  # (Np,) eV


def predict_xyz(checkpoint: str | Path, xyz_files: Sequence[str | Path], out_dir: str | Path
                ) -> PredictPaths:
    """Predict the spectrum of every ``.xyz`` molecule with the model in ``checkpoint``; write
    ``spectra.csv`` (energy column, one column per molecule) and ``spectra.html`` (a plot that
    works offline) into ``out_dir``. Bad files raise ``data_prep.DataError`` (one line)."""
    import pandas as pd
    import plotly.graph_objects as go

    from hpo.report_figures import Figure
    from hpo.report_html import figure_html, page
    from model.inference import predict_xyz as predict_spectra

    found = predict_spectra(checkpoint, xyz_files)
    names, spectra, grid, meta = found.names, found.spectra, found.grid, found.meta
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    df = pd.DataFrame({"energy_eV": grid, **{n: s for n, s in zip(names, spectra, strict=True)}})
    csv_path = out / "spectra.csv"
    df.to_csv(csv_path, index=False, float_format="%.9g")

    fig = go.Figure()
    for n, s in zip(names, spectra, strict=True):
        fig.add_trace(go.Scatter(x=grid.tolist(), y=s.tolist(), mode="lines", name=n))
    sigma = meta.get("sigma")
    fig.update_layout(xaxis_title="energy (eV)", yaxis_title="intensity", height=480,
                      margin=dict(t=40))
    title = (f"Predicted spectra (sigma {sigma:g} eV, Np {spectra.shape[1]}) from "
             f"{Path(checkpoint).name}" if isinstance(sigma, int | float)
             else f"Predicted spectra from {Path(checkpoint).name}")
    html_path = out / "spectra.html"
    html_path.write_text(page(title, [f"<h1>{title}</h1>",
                                      figure_html(Figure("spectra", "", fig))]))
    return PredictPaths(csv_path, html_path, names, spectra, grid)


# --- dashboard ----------------------------------------------------------------------------------

def dashboard_url(host: str, port: int, study_id: int | None = None) -> str:
    shown = f"[{host}]" if ":" in host else host
    base = f"http://{shown}:{port}/dashboard"
    return f"{base}/studies/{study_id}" if study_id is not None else base


def serve_dashboard(storage, *, host: str = "127.0.0.1", port: int = 8080, artifact_store=None,
                    study_id: int | None = None, echo=print) -> None:
    """optuna-dashboard on ``storage`` until interrupted. Binds first, then prints the URL (so
    ``port=0`` picks a free port and the printed URL has it)."""
    from socketserver import ThreadingMixIn
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

    from optuna_dashboard import wsgi

    class ThreadedServer(ThreadingMixIn, WSGIServer):  # as optuna-dashboard's own command
        daemon_threads = True

    class QuietHandler(WSGIRequestHandler):
        def log_message(self, format, *args):  # noqa: A002 - the base class's name
            pass

    app = wsgi(storage, artifact_store=artifact_store)
    with make_server(host, port, app, server_class=ThreadedServer,
                     handler_class=QuietHandler) as server:
        actual = server.server_address[1]
        echo(f"optuna-dashboard: {dashboard_url(host, actual, study_id)}")
        echo("(Ctrl-C stops it)")
        sys.stdout.flush()
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
