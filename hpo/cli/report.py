"""Report commands: ``report``, ``export-best``, ``predict`` and ``dashboard`` (``hpo.report``)."""

from __future__ import annotations

from pathlib import Path

import typer

from hpo.cli.options import (
    ALIASES,
    STORED_STUDY_HELP,
    ReportOutOpt,
    StoredArtifactsOpt,
    number_option,
)
from hpo.escape import terminal_text as shown
from hpo.observe.dashboard import serve_dashboard, write_reading_note
from hpo.storage.home import predictions_dir
from hpo.storage.optuna_private import study_id
from hpo.study.create import open_study
from model.contract import ArtifactName
from model.errors import DataError, OutOfDomain, ReportError, SpecoptError

StoredStorageOpt = typer.Option(None, "--storage", help="storage URL (default: the study "
                                "file's, else sqlite:///$SPECOPT_HOME/STUDY.db)")


def echo_report(opened, out: Path | None, formats: str = "html",
                plotlyjs: str = "inline") -> None:
    """Write the report of an opened study and print where it went (and its best trial)."""
    # pandas, plotly: kept out of specopt's start
    from hpo.report import best_trial_table, default_out_dir, write_report

    s = opened.study
    paths = write_report(s, out or default_out_dir(s.study_name, "report"),
                         opened.artifact_store, formats=formats, plotlyjs=plotlyjs)
    if paths.message:
        typer.echo(paths.message, err=True)
    else:
        typer.echo(best_trial_table(s))
    typer.echo(f"report: {shown(paths.html)}")  # the folder may be named by the study
    typer.echo(f"tables: {shown(paths.markdown)}, "
               + ", ".join(shown(p) for p in paths.csv.values()))
    if paths.figures:
        typer.echo(f"figures: {len(paths.figures)} files in {shown(paths.figures[0].parent)}")


FormatOpt = typer.Option(
    "html", "--format", metavar="FORMATS",
    help="figure formats, comma-separated: html (the page, always written), png, svg, pdf; "
    "png/svg/pdf also write every figure as a file under OUT/figures/ (needs kaleido, the "
    "package's 'figures' extra, and Chrome or Chromium)")
PlotlyjsOpt = typer.Option(
    "inline", "--plotlyjs", metavar="HOW",
    help="where the page gets plotly.js: inline (default: one self-contained file, works "
    "offline, ~5 MB), cdn (a small page loading plotly.js from cdn.plot.ly: needs a network) "
    "or directory (a small page beside a plotly.min.js: share the folder)")


def report(
    study: str = typer.Argument(..., help=STORED_STUDY_HELP),
    storage: str | None = StoredStorageOpt,
    artifacts: Path | None = StoredArtifactsOpt,
    out: Path | None = ReportOutOpt,
    formats: str = FormatOpt,
    plotlyjs: str = PlotlyjsOpt,
) -> None:
    """The report's tables (Markdown, CSV) and a self-contained HTML report of STUDY, with the seed report's figures (accuracy against sigma, Np and loss) and the published numbers beside ours for the paper studies.

    Objective values are scored on the test split (model selection: early stopping and the best epoch); every other metric comes from the validation split (held out). Accuracies are in %, energies in eV.
    """  # noqa: E501 - typer keeps line breaks: one line per paragraph
    from hpo.report.page import PLOTLYJS_MODES  # pandas, plotly: kept out of specopt's start

    if plotlyjs not in PLOTLYJS_MODES:
        raise ReportError(f"--plotlyjs {plotlyjs!r}: one of {', '.join(PLOTLYJS_MODES)}")
    # pandas, plotly: kept out of specopt's start
    from hpo.report.export_figures import parse_formats

    parse_formats(formats)  # a typo fails before the study is read
    echo_report(open_study(study, storage, artifacts), out, formats, plotlyjs)


def export_best(
    study: str = typer.Argument(..., help=STORED_STUDY_HELP),
    out: Path | None = typer.Option(None, "--out", help="folder to write the best trial into "
                                    "(default: $SPECOPT_HOME/STUDY/export)"),
    storage: str | None = StoredStorageOpt,
    artifacts: Path | None = StoredArtifactsOpt,
) -> None:
    """The best trial of STUDY, ready to share: parameters (JSON), metrics, checkpoint, validation predictions and the HTML report."""  # noqa: E501 - typer keeps line breaks
    # pandas, plotly: kept out of specopt's start
    from hpo.report import best_trial_table, default_out_dir, export_best

    opened = open_study(study, storage, artifacts)
    out = out or default_out_dir(opened.study.study_name, "export")
    paths = export_best(opened.study, out, opened.artifact_store)
    typer.echo(best_trial_table(opened.study))
    for label, p in (("parameters", paths.params), ("metrics", paths.metrics),
                     ("checkpoint", paths.checkpoint), ("predictions", paths.predictions),
                     ("predictions (CSV)", paths.predictions_csv),
                     ("report", paths.report.html if paths.report else None)):
        if p is not None:
            typer.echo(f"{label}: {shown(p)}")
    if paths.missing:
        typer.echo(f"warning: the best trial has no {', '.join(paths.missing)} in the artifact "
                   "store (give --artifacts FOLDER if the study's artifacts live elsewhere)",
                   err=True)


def predict(
    checkpoint: Path = typer.Argument(..., help=f"a {ArtifactName.CHECKPOINT} (from `specopt "
                                      "train`, which prints its path, or `specopt "
                                      "export-best`)"),
    xyz: list[Path] = typer.Argument(..., help="molecules as QM9-style .xyz files"),
    out: Path | None = typer.Option(None, "--out", help="output folder (default: "
                                    "$SPECOPT_HOME/predictions)"),
    force: bool = typer.Option(False, "--force", help="predict molecules outside the model's "
                               "training domain too, flagged in the CSVs and the plot"),
    sigma: float | None = number_option(
        None, "--sigma", kind=float, metavar="EV", show_default="the model's own",
        help="Gaussian width of the predicted spectra, eV. Only a levels-first model "
        "(output_head levels) can change it; any other model refuses a value but its own"),
    n_points: int | None = number_option(
        None, "--n-points", *ALIASES["n_points"], metavar="NP", show_default="the model's own",
        help="points of the energy grid of the predicted spectra (over the model's energy "
        "window). Only a levels-first model (output_head levels) can change it; any other model "
        "refuses a value but its own"),
) -> None:
    """Predict the spectra of new molecules (.xyz) with a saved model: CSVs and a plot.

    Each molecule is checked against the model's training domain first: its elements, atom count, at least 16 occupied valence levels (valence electrons / 2; the model predicts the 16 highest: benzene, with 15, is out) and its Coulomb-matrix norm within the training range. Molecules outside it are refused, each with its reasons on a line of its own, and the others are predicted and written; --force predicts them too, flagged. The exit status is 2 only when no molecule was predicted (every one refused) or a file cannot be read (that stops the run), else 0.

    The spectra come at the sigma and Np the model was trained for. A levels-first model (trained with output_head levels: it predicts the 16 levels and broadens them) also gives them at any other --sigma and --n-points, from the same checkpoint; a model that predicts the spectrum's grid points (linear, softplus) refuses them.
    """  # noqa: E501 - typer keeps line breaks: one line per paragraph
    from hpo.report import predict_xyz  # pandas, plotly: kept out of specopt's start

    try:
        paths = predict_xyz(checkpoint, xyz, out or predictions_dir(), force=force, sigma=sigma,
                            n_points=n_points, partial=True)
    except OutOfDomain as err:  # every molecule refused: nothing predicted, nothing written
        for m in err.refused:
            typer.echo(f"refused: {shown(m.name)}: {'; '.join(m.reasons)}", err=True)
        raise DataError("nothing predicted: " + err.summary.replace(" (force=True)", "")) \
            from None
    for m in paths.refused:
        typer.echo(f"refused: {shown(m.name)}: {'; '.join(m.reasons)}", err=True)
    for note in paths.notes:
        typer.echo(f"note: {note}", err=True)
    for name, s, flag in zip(paths.names, paths.spectra, paths.flags, strict=True):
        top = paths.grid[int(s.argmax())]
        mark = f"  [outside training domain: {flag}]" if flag else ""
        typer.echo(f"{shown(name)}: strongest peak at {top:.2f} eV{mark}")
    if paths.regridded:
        typer.echo(f"spectra at sigma {paths.sigma:g} eV, Np {paths.n_points} (the model was "
                   f"trained at sigma {paths.trained_sigma:g} eV, Np {paths.trained_n_points})")
    typer.echo(f"spectra (CSV): {shown(paths.csv)}")
    typer.echo(f"molecules (CSV): {shown(paths.molecules_csv)}")
    typer.echo(f"plot: {shown(paths.html)}")
    if paths.refused:  # said last, where it is seen: the outputs lack these molecules
        helps = not force and any(m.coulomb_norm is not None for m in paths.refused)
        how = ("--force predicts them anyway, flagged" if helps
               else "a Coulomb matrix cannot hold them, even with --force")
        typer.echo(f"note: {len(paths.refused)} of {len(paths.refused) + len(paths.names)} "
                   f"molecules refused, outside the model's training domain ({how}); "
                   f"{len(paths.names)} predicted", err=True)


def dashboard(
    study: str = typer.Argument(..., help=STORED_STUDY_HELP),
    storage: str | None = StoredStorageOpt,
    artifacts: Path | None = StoredArtifactsOpt,
    host: str = typer.Option("127.0.0.1", "--host", help="address to listen on (localhost)"),
    port: int = typer.Option(8080, "--port", help="port (0: any free port)"),
) -> None:
    """optuna-dashboard on STUDY's storage: trials with their metrics (user attributes) and artifacts. Prints the URL; Ctrl-C stops it.

    The study's note (on its page) says what each number is: the objective on the test split (model selection), the `metrics` attribute on the validation split (held out), accuracies as fractions. It is written once, never over a note of your own.
    """  # noqa: E501 - typer keeps line breaks
    opened = open_study(study, storage, artifacts)
    try:  # the study's note: which split each number is from, and its unit
        write_reading_note(opened.study)
    except Exception as err:  # deliberately broad: a read-only storage still gets its dashboard
        typer.echo(f"note: the study's reading note was not written ({err})", err=True)
    try:
        serve_dashboard(opened.storage, host=host, port=port,
                        artifact_store=opened.artifact_store, study_id=study_id(opened.study),
                        echo=typer.echo)
    except OSError as err:
        raise SpecoptError(f"cannot listen on {host}:{port} ({err})") from None


def register(app: typer.Typer) -> None:
    app.command("report")(report)
    app.command("export-best")(export_best)
    app.command("predict")(predict)
    app.command("dashboard")(dashboard)
