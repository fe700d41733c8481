"""``specopt export-mlflow``: every trial of a study as an MLflow run
(:mod:`hpo.report.mlflow_export`)."""

from __future__ import annotations

from pathlib import Path

import typer

from hpo.cli.options import STORED_STUDY_HELP, StoredArtifactsOpt
from hpo.escape import terminal_text
from hpo.storage.home import mask_url
from hpo.study.create import open_study


def export_mlflow(
    study: str = typer.Argument(..., help=STORED_STUDY_HELP),
    storage: str | None = typer.Option(None, "--storage", help="storage URL (default: the "
                                       "study file's, else sqlite:///$SPECOPT_HOME/STUDY.db)"),
    artifacts: Path | None = StoredArtifactsOpt,
    tracking_uri: str | None = typer.Option(
        None, "--tracking-uri", metavar="URI", help="MLflow tracking store (default: "
        "$MLFLOW_TRACKING_URI, else sqlite:///$SPECOPT_HOME/mlflow.db; artifacts of a local "
        "SQLite store go beside it, in mlflow-artifacts/)"),
    experiment: str | None = typer.Option(None, "--experiment", metavar="NAME",
                                          help="MLflow experiment (default: the study's name)"),
) -> None:
    """Write every finished trial of STUDY (complete, pruned, failed) to MLflow: one run per trial with its settings (params), final metrics, learning curves (step = epoch), state tags and artifacts (checkpoint, history.json, predictions).

    Running again adds the trials finished since and replaces those that changed: no run is duplicated. Names: validation_* (held-out split), selection_* (model-selection split, best epoch), objective_*; curves train_loss, test_loss, test_* (model-selection split) and epoch_seconds. Needs MLflow: pip install 'specopt[mlflow]' (mlflow-skinny). Browse with `mlflow ui --backend-store-uri URI` (the full mlflow package).
    """  # noqa: E501 - typer keeps line breaks: one line per paragraph
    # pandas, plotly: kept out of specopt's start
    from hpo.report.mlflow_export import export_mlflow as export
    from hpo.report.mlflow_export import mlflow_available

    mlflow_available()  # before the study is read: the error that matters first
    opened = open_study(study, storage, artifacts)
    done = export(opened.study, opened.artifact_store, storage_url=opened.storage_url,
                  tracking_uri=tracking_uri, experiment=experiment)
    total = len(done.created) + len(done.replaced) + len(done.unchanged)
    typer.echo(f"MLflow: {total} runs in experiment {done.experiment!r} (id "
               f"{done.experiment_id}) at {mask_url(done.tracking_uri)}: "
               f"{len(done.created)} new, {len(done.replaced)} replaced (changed since), "
               f"{len(done.unchanged)} unchanged")
    if done.not_finished:
        typer.echo(f"not exported (running or waiting; export again later): trials "
                   f"{', '.join(f'#{n}' for n in done.not_finished)}", err=True)
    for number, names in done.missing_artifacts.items():
        typer.echo(f"warning: trial #{number}: {', '.join(map(terminal_text, names))} not in "
                   "the artifact store "
                   "(give --artifacts FOLDER if the study's artifacts live elsewhere)", err=True)
    if opened.artifact_store is None:
        typer.echo("warning: no artifact store found: runs without artifacts (give --artifacts "
                   "FOLDER)", err=True)


def register(app: typer.Typer) -> None:
    app.command("export-mlflow")(export_mlflow)
