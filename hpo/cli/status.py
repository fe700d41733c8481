"""``specopt status STUDY``: where a study stands (:mod:`hpo.observe.status`), as text or JSON."""

from __future__ import annotations

import typer

from hpo.cli.options import STORED_STUDY_HELP, StorageOpt, echo_json
from hpo.observe.status import status as study_status
from hpo.storage.home import shown_name


def duration(seconds: float) -> str:
    """``45 s``, ``12 min``, ``3.5 h``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _value(x: float | None) -> str:
    return "-" if x is None else f"{x:.4g}"


def _params(params: dict) -> str:
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                     for k, v in params.items())


def status_text(s) -> list[str]:
    """The lines ``specopt status`` prints for a :class:`hpo.observe.status.StudyStatus`."""
    budget = s.n_trials if s.n_trials is not None else "no trial budget (time only)"
    head = {"empty": "no trials yet", "running": "running",
            "stopped": "no worker running", "finished": "finished"}[s.state]

    out = [f"study {shown_name(s.study)}" + (f" ({s.storage})" if s.storage else "")
           + f": {head}: {s.finished} of {budget} trials"]
    out.append("  " + ", ".join(f"{k} {v}" for k, v in s.counts.items()))
    if s.objective_labels:
        out.append("  objective: " + "; ".join(s.objective_labels))
    first = s.objectives[0]
    for r in s.running:
        where = f"epoch {r.epoch or 0}/{r.epochs or '?'}"
        speed = f", {r.seconds_per_epoch:.3g} s/epoch" if r.seconds_per_epoch else ""
        out.append(f"  running: trial {r.number} (worker {r.worker or '?'}) {where}, "
                   f"{first} {_value(r.value)}{speed}")
    if s.best is not None:
        bases = s.best.baselines or [None] * len(s.best.values)
        shown = ", ".join(f"{n} {v:.4g}" + ("" if b is None else f" (baseline {b:.4g})")
                          for n, v, b in zip(s.objectives, s.best.values, bases, strict=False))
        if s.best.skill is not None and "skill" not in s.objectives:
            shown += f", skill {100 * s.best.skill:.1f}%"
        front = f" ({s.pareto_size} on the Pareto front)" if s.pareto_size else ""
        out.append(f"  best {shown} (trial {s.best.number}: {_params(s.best.params)}){front}")
    if s.state == "finished":
        out.append("  the budget is spent: --add-trials N (worker, launch, run) runs more")
    elif s.eta_seconds is not None:
        workers = max(1, len(s.running))
        out.append(f"  ETA ~{duration(s.eta_seconds)} ({s.seconds_per_epoch:.3g} s/epoch, "
                   f"{s.epochs_per_trial:.3g} epochs per trial, {workers} worker(s)"
                   + (", if one is started" if not s.running else "") + ")")
    elif s.state != "empty":
        out.append("  ETA unknown: " + ("no trial budget" if s.n_trials is None
                                        else "no epoch measured yet"))
    return out


def status(
    study: str = typer.Argument(..., help=STORED_STUDY_HELP),
    storage: str | None = StorageOpt,
    json_out: bool = typer.Option(False, "--json", help="print the status as JSON"),
) -> None:
    """Where STUDY stands: trials done / budget, counts per state, the running trials (worker, epoch, last value), the best so far and an ETA from the measured seconds per epoch."""  # noqa: E501 - typer keeps line breaks
    s = study_status(study, storage)
    if json_out:
        echo_json(s.to_dict())
        return
    for line in status_text(s):
        typer.echo(line)


def register(app: typer.Typer) -> None:
    app.command("status")(status)
