"""``specopt status STUDY``: where a study stands (:mod:`hpo.observe.status`), as text or JSON."""

from __future__ import annotations

import typer

from hpo.cli.options import STORED_STUDY_HELP, StorageOpt, echo_json
from hpo.observe.status import status as study_status
from hpo.storage.home import shown_name
from model.contract import Metric, Split, metric_text


def duration(seconds: float) -> str:
    """``45 s``, ``12 min``, ``3.5 h``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _value(name: str, x: float | None) -> str:
    """``fair accuracy 92.31%``: in the unit of the label (accuracies in %)."""
    return metric_text(name, x) if x is not None else metric_text(name, 0).replace(
        metric_text(name, 0, label=False), "-")


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
        # every epoch's value is the model-selection split's, whatever the objective's split
        out.append(f"  running: trial {r.number} (worker {r.worker or '?'}) {where}, "
                   f"{Split.TEST} {_value(first, r.value)}{speed}")
    if s.best is not None:
        bases = s.best.baselines or [None] * len(s.best.values)
        shown = ", ".join(_value(n, v) + ("" if b is None else
                                         f" (baseline {metric_text(n, b, label=False)})")
                          for n, v, b in zip(s.objectives, s.best.values, bases, strict=False))
        if s.best.skill is not None and Metric.SKILL not in s.objectives:
            shown += f", {metric_text(Metric.SKILL, s.best.skill, 3)}"
        front = f" ({s.pareto_size} on the Pareto front)" if s.pareto_size else ""
        out.append(f"  best on the {s.objective_split} split: {shown} (trial {s.best.number}: "
                   f"{_params(s.best.params)}){front}")
    if s.state == "finished":
        out.append("  the budget is spent: --add-trials N (worker, launch, run) runs more")
    elif s.eta_seconds is not None:
        workers = max(1, s.workers)
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
    json_out: bool = typer.Option(
        False, "--json", help="print the status as JSON: values as stored (accuracies and "
        "skill as fractions, 0.923 = 92.3 %); running values on the test split, the best "
        "trial's values, baselines and skill on objective_split; workers: what the ETA "
        "divides the work by"),
) -> None:
    """Where STUDY stands: trials done / budget, counts per state, the running trials (worker, epoch, last value on the test split), the best so far (on the objective's split, with the baseline and skill there; accuracies in %) and an ETA from the measured seconds per epoch."""  # noqa: E501 - typer keeps line breaks
    s = study_status(study, storage)
    if json_out:
        echo_json(s.to_dict())
        return
    for line in status_text(s):
        typer.echo(line)


def register(app: typer.Typer) -> None:
    app.command("status")(status)
