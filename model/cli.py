"""CLI commands of this package, added to the ``specopt`` app by ``hpo.cli``: ``specopt train``."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from model.config import TrainConfig

_F = TrainConfig.model_fields


def _default(name: str):
    return _F[name].default


def _help(name: str, extra: str = "") -> str:
    return (_F[name].description or "") + extra


def _format_validation_error(err) -> str:
    lines = []
    for e in err.errors():
        where = ".".join(str(x) for x in e["loc"]) or "config"
        lines.append(f"{where}: {e['msg'].removeprefix('Value error, ')}")
    return "; ".join(lines)


def _metrics_table(metrics: dict[str, float]) -> str:
    width = max(len(k) for k in metrics)
    rows = []
    for k, v in metrics.items():
        shown = f"{100 * v:8.2f} %" if k.startswith(("accuracy", "fair_accuracy")) or \
            k == "negative_share" else f"{v:10.4g}"
        rows.append(f"  {k:<{width}}  {shown}")
    return "\n".join(rows)


def train_command(
    sigma: float = typer.Option(_default("sigma"), help=_help("sigma")),
    n_points: int = typer.Option(_default("n_points"), "--n-points", "--np", help=_help(
        "n_points")),
    loss: str = typer.Option(_default("loss"), help=_help("loss")),
    lr: float = typer.Option(_default("lr"), help=_help("lr")),
    batch_size: int = typer.Option(_default("batch_size"), help=_help("batch_size")),
    epochs: int = typer.Option(_default("epochs"), help=_help("epochs")),
    seed: int = typer.Option(_default("seed"), help=_help("seed")),
    patience: int = typer.Option(None, help=_help("patience")),
    output_head: str = typer.Option(_default("output_head"), help=_help("output_head")),
    huber_delta: float = typer.Option(_default("huber_delta"), help=_help("huber_delta")),
    subset: int = typer.Option(None, help=_help("subset")),
    dataset: Path = typer.Option(None, help=_help("dataset")),
    e_min: float = typer.Option(_default("e_min"), help=_help("e_min")),
    e_max: float = typer.Option(_default("e_max"), help=_help("e_max")),
    coulomb_noise: float = typer.Option(_default("coulomb_noise"), help=_help("coulomb_noise")),
    reference_sigma: float = typer.Option(None, help=_help("reference_sigma")),
    device: str = typer.Option(_default("device"), help=_help("device")),
    amp: str = typer.Option(_default("amp"), help=_help("amp", " Also 'bf16' or 'off'.")),
    compile: bool = typer.Option(_default("compile"), "--compile/--no-compile",
                                 help=_help("compile")),
    num_threads: int = typer.Option(None, help=_help("num_threads")),
    checkpoint_dir: Path = typer.Option(None, help=_help("checkpoint_dir")),
    json_out: Path = typer.Option(None, "--json", help="Also write the validation metrics, "
                                  "history and settings to this JSON file."),
) -> None:
    """Train the report's CNN once and print its validation-set metrics.

    Model selection and early stopping use the test split; the metrics come from the
    validation split. Defaults are the report's settings except epochs (the report: 2500).
    """
    from pydantic import ValidationError
    from tqdm import tqdm

    from model.trainer import TrainingFailed, train

    try:
        config = TrainConfig(
            sigma=sigma, n_points=n_points, loss=loss, lr=lr, batch_size=batch_size,
            epochs=epochs, seed=seed, patience=patience, output_head=output_head,
            huber_delta=huber_delta, subset=subset, dataset=dataset, e_min=e_min, e_max=e_max,
            coulomb_noise=coulomb_noise, reference_sigma=reference_sigma, device=device,
            amp=amp, compile=compile, num_threads=num_threads, checkpoint_dir=checkpoint_dir)
    except ValidationError as err:
        typer.echo(f"error: {_format_validation_error(err)}", err=True)
        raise typer.Exit(2) from None

    bar = tqdm(total=config.epochs, unit="epoch", dynamic_ncols=True)

    def on_epoch(report) -> None:
        bar.set_postfix(train=f"{report.train_loss:.4g}", test=f"{report.test_loss:.4g}",
                        acc=f"{100 * report.test_metrics['accuracy']:.2f}%",
                        fair=f"{100 * report.test_metrics['fair_accuracy']:.2f}%",
                        refresh=False)
        bar.update(1)

    try:
        result = train(config, on_epoch=on_epoch)
    except TrainingFailed as err:
        bar.close()
        typer.echo(f"failed: {err}", err=True)
        raise typer.Exit(1) from None
    except ValueError as err:  # data that do not match, missing dataset, no CUDA, ...
        bar.close()
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None
    bar.close()
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
    app.command("train")(train_command)
