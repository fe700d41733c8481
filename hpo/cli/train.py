"""``specopt train``: one training run (``model.train``), its options made from TrainConfig."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from hpo.cli.options import PrintConfigOpt, SetOpt, echo_json, parse_sets, with_train_options
from model.config import TrainConfig


def _metrics_table(metrics: dict[str, float]) -> str:
    width = max(len(k) for k in metrics)
    rows = []
    for k, v in metrics.items():
        shown = f"{100 * v:8.2f} %" if k.startswith(("accuracy", "fair_accuracy")) or \
            k == "negative_share" else f"{v:10.4g}"
        rows.append(f"  {k:<{width}}  {shown}")
    return "\n".join(rows)


@with_train_options(TrainConfig.model_fields)
def train(
    settings: dict,
    json_out: Path | None = typer.Option(None, "--json", help="Also write the validation "
                                         "metrics, history and settings to this JSON file."),
    sets: list[str] = SetOpt,
    print_config: bool = PrintConfigOpt,
) -> None:
    """Train the report's CNN once and print its validation-set metrics.

    Model selection and early stopping use the test split; the metrics come from the validation split. Defaults are TrainConfig's: the report's settings, with fewer epochs.
    """  # noqa: E501 - typer keeps line breaks: one line per paragraph
    config = TrainConfig.model_validate({**settings, **parse_sets(sets)})
    if print_config:
        echo_json(config.model_dump(mode="json"))
        return

    import model

    # model.train's own bars (data preparation, epochs): on a terminal, off with specopt -q
    result = model.train(config)
    typer.echo(f"{result.status} after {len(result.history)} epochs on {result.device} "
               f"({result.seconds_per_epoch:.2f} s/epoch); best test loss "
               f"{result.best_test_loss:.4g} in epoch {result.best_epoch}")
    typer.echo(f"validation set ({len(result.val_index)} molecules):")
    typer.echo(_metrics_table(result.metrics))
    if result.checkpoint_path:
        typer.echo(f"checkpoint: {result.checkpoint_path}")
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps({
            "status": result.status, "best_epoch": result.best_epoch,
            "metrics": result.metrics, "history": result.history, "config": result.config,
            "device": result.device, "seconds_per_epoch": result.seconds_per_epoch,
        }, indent=1))


def register(app: typer.Typer) -> None:
    app.command("train")(train)
