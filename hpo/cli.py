"""The ``specopt`` command: a thin layer over the packages' Python APIs."""

from __future__ import annotations

import typer

from data_prep.cli import app as data_app

app = typer.Typer(help="specopt: hyperparameter optimisation of CNNs for molecular "
                  "photoemission spectra (QM9), built on Optuna.", no_args_is_help=True)
app.add_typer(data_app, name="data")
