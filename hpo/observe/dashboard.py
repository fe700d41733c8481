"""optuna-dashboard on a study's storage (``specopt dashboard``): the trials with their metrics
(user attributes) and artifacts, in a browser. The study's note (shown on its page) says which
split each number comes from and in which unit, as the report labels them."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from hpo.escape import markdown_text
from model.contract import (
    METRICS,
    PARAMETER_OBJECTIVES,
    SPLIT_ROLE,
    Metric,
    Split,
    StudyAttr,
    TrialAttr,
    metric_label,
    metric_scale,
    objective_label,
    split_label,
)

__all__ = ["READING_NOTE_TITLE", "dashboard_url", "reading_note", "serve_dashboard",
           "write_reading_note"]


def dashboard_url(host: str, port: int, study_id: int | None = None) -> str:
    """The dashboard's address (an IPv6 host in brackets), of one study when ``study_id``."""
    shown = f"[{host}]" if ":" in host else host
    base = f"http://{shown}:{port}/dashboard"
    return f"{base}/studies/{study_id}" if study_id is not None else base
READING_NOTE_TITLE = "## How to read this study (specopt)"


def reading_note(study: Any) -> str:
    """The study's note for the dashboard (Markdown): the objective with its split and role,
    what the trial attributes ``metrics`` and ``selection_metrics`` hold, and the units (the
    dashboard shows values as stored: accuracies as fractions)."""
    split = study.user_attrs.get(StudyAttr.OBJECTIVE_SPLIT)
    names = study.user_attrs.get(StudyAttr.OBJECTIVES)
    if not isinstance(names, list) or len(names) != len(study.directions):
        names = study.metric_names or [f"objective {i}" for i in range(len(study.directions))]
    lines = [READING_NOTE_TITLE, ""]
    for name in names:
        unit = " (a fraction here: x100 for %)" if metric_scale(name) != 1.0 else ""
        # a name read from the database: in a code span only when it is one of ours
        shown = f"`{name}`" if name in (*METRICS, *PARAMETER_OBJECTIVES) else markdown_text(name)
        lines.append(f"- Objective {shown}: {markdown_text(objective_label(name, split))}{unit}.")
    lines += [
        f"- Trial attribute `{TrialAttr.METRICS}`: the {split_label(Split.VALIDATION)}: no choice "
        "has seen it; the report's tables and accuracy figures use these.",
        f"- Trial attribute `{TrialAttr.SELECTION_METRICS}`: the {split_label(Split.TEST)} at "
        f"the best epoch ({SPLIT_ROLE[Split.TEST]}: early stopping and the best epoch).",
        "- Units: accuracies are fractions (" + ", ".join(
            f"`{k}` = {metric_label(k)} / 100" for k in (Metric.ACCURACY, Metric.FAIR_ACCURACY))
        + "); energies in eV (`wasserstein_eV`, `level_error_eV`); sigma in eV; "
        "`n_points` is Np.",
        "",
        "`specopt report` shows the same numbers in % with these labels.",
    ]
    return "\n".join(lines)


def write_reading_note(study: Any) -> bool:
    """Give the study :func:`reading_note` as its dashboard note, unless it has a note already
    (a person's note is never replaced); True when written."""
    from optuna_dashboard import get_note, save_note

    current = get_note(study)
    if current and not current.startswith(READING_NOTE_TITLE):
        return False
    note = reading_note(study)
    if current == note:
        return False
    save_note(study, note)
    return True


def serve_dashboard(storage: Any, *, host: str = "127.0.0.1", port: int = 8080,
                    artifact_store: Any = None, study_id: int | None = None,
                    echo: Callable[[str], object] = print) -> None:
    """optuna-dashboard on ``storage`` until interrupted. Binds first, then prints the URL (so
    ``port=0`` picks a free port and the printed URL has it)."""
    from socketserver import ThreadingMixIn
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

    from optuna_dashboard import wsgi

    class ThreadedServer(ThreadingMixIn, WSGIServer):  # as optuna-dashboard's own command
        daemon_threads = True

    class QuietHandler(WSGIRequestHandler):
        def log_message(self, format, *args):  # "format": the base class's parameter name
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

