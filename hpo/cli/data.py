"""``specopt data ...``: build, import and inspect orbital-level datasets (``data_prep``)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

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
    from data_prep.dataset import BUNDLED_PATH, load_levels

    ds = load_levels(dataset)
    typer.echo(f"dataset: {dataset or BUNDLED_PATH}")
    typer.echo(json.dumps(ds.summary(), indent=1))


@app.command("import-original")
def import_original(
    folder: Path = typer.Argument(..., help="Folder with coulomb.npz, energies.txt and "
                                  "(optionally) spectra.npz, as in Zenodo 3386508."),
    out: Path = typer.Option(..., help="Dataset file to write (.npz)."),
    not_negated: bool = typer.Option(False, "--not-negated",
                                     help="coulomb.npz is stored as is, not negated."),
) -> None:
    """Import the original dataset of Ghosh et al. 2019 (molecules with a -10000 level dropped)."""
    from data_prep.original import import_original as import_files

    ds = import_files(folder, negated=not not_negated)
    ds.save(out)
    typer.echo(json.dumps(ds.provenance["molecules"]))
    typer.echo(f"original spectra: {json.dumps(ds.provenance['original_spectra'])}")
    typer.echo(f"wrote {out}: {len(ds)} molecules")
