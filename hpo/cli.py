"""The ``specopt`` command: a thin layer over the packages' Python APIs."""

from __future__ import annotations

import typer

from data_prep.cli import app as data_app
from hpo.report_cli import register as register_report
from hpo.study_cli import register as register_study
from model.cli import register as register_model

app = typer.Typer(help="specopt: hyperparameter optimisation of CNNs for molecular "
                  "photoemission spectra (QM9), built on Optuna.", no_args_is_help=True)
app.add_typer(data_app, name="data")
register_model(app)  # train
register_study(app)  # worker, launch, studies, run
register_report(app)  # report, export-best, predict, dashboard
