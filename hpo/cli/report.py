"""Report commands: ``report``, ``export-best``, ``predict`` and ``dashboard`` (``hpo.report``)."""

from __future__ import annotations

from pathlib import Path

import typer

from hpo.cli.options import STORED_STUDY_HELP, ReportOutOpt, StoredArtifactsOpt
from model.contract import ArtifactName
from model.errors import SpecoptError

StoredStorageOpt = typer.Option(None, "--storage", help="storage URL (default: the study "
                                "file's, else sqlite:///runs/STUDY.db)")


def echo_report(opened, out: Path | None) -> None:
    """Write the report of an opened study and print where it went (and its best trial)."""
    from hpo.report import best_trial_table, default_out_dir, write_report

    s = opened.study
    paths = write_report(s, out or default_out_dir(s.study_name, "report"),
                         opened.artifact_store)
    if paths.message:
        typer.echo(paths.message, err=True)
    else:
        typer.echo(best_trial_table(s))
    typer.echo(f"report: {paths.html}")
    typer.echo(f"tables: {paths.markdown}, " + ", ".join(str(p) for p in paths.csv.values()))


def report(
    study: str = typer.Argument(..., help=STORED_STUDY_HELP),
    storage: str | None = StoredStorageOpt,
    artifacts: Path | None = StoredArtifactsOpt,
    out: Path | None = ReportOutOpt,
) -> None:
    """The report's tables (Markdown, CSV) and a self-contained HTML report of STUDY."""
    from hpo.study import open_study

    echo_report(open_study(study, storage, artifacts), out)


def export_best(
    study: str = typer.Argument(..., help=STORED_STUDY_HELP),
    out: Path = typer.Option(..., "--out", help="folder to write the best trial into"),
    storage: str | None = StoredStorageOpt,
    artifacts: Path | None = StoredArtifactsOpt,
) -> None:
    """The best trial of STUDY, ready to share: parameters (JSON), metrics, checkpoint, validation predictions and the HTML report."""  # noqa: E501 - typer keeps line breaks
    from hpo.report import best_trial_table, export_best
    from hpo.study import open_study

    opened = open_study(study, storage, artifacts)
    paths = export_best(opened.study, out, opened.artifact_store)
    typer.echo(best_trial_table(opened.study))
    for label, p in (("parameters", paths.params), ("metrics", paths.metrics),
                     ("checkpoint", paths.checkpoint), ("predictions", paths.predictions),
                     ("predictions (CSV)", paths.predictions_csv),
                     ("report", paths.report.html if paths.report else None)):
        if p is not None:
            typer.echo(f"{label}: {p}")
    if paths.missing:
        typer.echo(f"warning: the best trial has no {', '.join(paths.missing)} in the artifact "
                   "store (give --artifacts FOLDER if the study's artifacts live elsewhere)",
                   err=True)


def predict(
    checkpoint: Path = typer.Argument(..., help=f"a {ArtifactName.CHECKPOINT} (from `specopt "
                                      "export-best` or `specopt train --checkpoint-dir`)"),
    xyz: list[Path] = typer.Argument(..., help="molecules as QM9-style .xyz files"),
    out: Path = typer.Option(Path("predictions"), "--out", help="output folder"),
) -> None:
    """Predict the spectra of new molecules (.xyz) with a saved model: a CSV and a plot."""
    from hpo.report import predict_xyz

    paths = predict_xyz(checkpoint, xyz, out)
    for name, s in zip(paths.names, paths.spectra, strict=True):
        top = paths.grid[int(s.argmax())]
        typer.echo(f"{name}: strongest peak at {top:.2f} eV")
    typer.echo(f"spectra (CSV): {paths.csv}")
    typer.echo(f"plot: {paths.html}")


def dashboard(
    study: str = typer.Argument(..., help=STORED_STUDY_HELP),
    storage: str | None = StoredStorageOpt,
    artifacts: Path | None = StoredArtifactsOpt,
    host: str = typer.Option("127.0.0.1", "--host", help="address to listen on (localhost)"),
    port: int = typer.Option(8080, "--port", help="port (0: any free port)"),
) -> None:
    """optuna-dashboard on STUDY's storage: trials with their metrics (user attributes) and artifacts. Prints the URL; Ctrl-C stops it."""  # noqa: E501 - typer keeps line breaks
    from hpo.dashboard import serve_dashboard
    from hpo.study import open_study

    opened = open_study(study, storage, artifacts)
    try:
        serve_dashboard(opened.storage, host=host, port=port,
                        artifact_store=opened.artifact_store, study_id=opened.study._study_id,
                        echo=typer.echo)
    except OSError as err:
        raise SpecoptError(f"cannot listen on {host}:{port} ({err})") from None


def register(app: typer.Typer) -> None:
    app.command("report")(report)
    app.command("export-best")(export_best)
    app.command("predict")(predict)
    app.command("dashboard")(dashboard)
