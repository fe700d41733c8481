"""``specopt data ...``: build, import and inspect levels datasets."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from data_prep.dataset import BUNDLED_PATH, load_levels

app = typer.Typer(help="Build, import and inspect orbital-level datasets.", no_args_is_help=True)


@app.command()
def build(
    out: Path = typer.Option(Path("runs/data/qm9_levels.npz"), help="Dataset file to write."),
    method: str = typer.Option("gfn2-xtb", help="gfn2-xtb, gfn1-xtb, or pyscf:XC/BASIS "
                               "(e.g. pyscf:hf/sto-3g; needs pip install pyscf)."),
    xyz_dir: Path = typer.Option(None, help="Folder of QM9 dsgdb9nsd_*.xyz files "
                                 "(default: all 130,831 qm9pack geometries)."),
    limit: int = typer.Option(None, help="Only the first N molecules."),
    workers: int = typer.Option(None, help="Processes (default: one per CPU core)."),
) -> None:
    """Compute the 16 highest occupied orbital levels of every molecule (resumable)."""
    from data_prep.build import build_levels

    ds = build_levels(out, method, xyz_dir, limit, workers)
    typer.echo(json.dumps(ds.provenance["molecules"]))
    typer.echo(f"wrote {out}: {len(ds)} molecules")


@app.command()
def info(dataset: Path = typer.Argument(None, help="Dataset file (default: the bundled one).")):
    """Counts, split sizes, level range and provenance of a dataset."""
    ds = load_levels(dataset)
    typer.echo(f"dataset: {dataset or BUNDLED_PATH}")
    typer.echo(json.dumps(ds.summary(), indent=1))
