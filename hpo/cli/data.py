"""``specopt data ...``: build, import and inspect orbital-level datasets (``data_prep``);
``specopt cache ...``: what the data cache holds, and emptying it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from data_prep.build import build_levels
from data_prep.cache import cache_entries, cache_root, clear_cache
from data_prep.dataset import check_output, dataset_path, load_levels
from hpo.storage.home import data_dir
from model.errors import SpecoptError

app = typer.Typer(help="Build, import and inspect orbital-level datasets.", no_args_is_help=True)
cache_app = typer.Typer(
    help="The data cache ($SPECOPT_CACHE, default ~/.cache/specopt): parsed QM9 geometries, "
    "Coulomb matrices and spectra, rebuilt when missing.", no_args_is_help=True)


@app.command()
def build(
    out: Path = typer.Option(None, help="Dataset file to write (default: "
                             "$SPECOPT_HOME/data/qm9_levels.npz)."),
    method: str = typer.Option("gfn2-xtb", help="gfn2-xtb, ipea1-xtb, gfn1-xtb, or pyscf:XC/BASIS "
                               "(e.g. pyscf:hf/sto-3g; needs pip install pyscf)."),
    xyz_dir: Path = typer.Option(None, help="Folder of QM9 dsgdb9nsd_*.xyz files "
                                 "(default: all 130,831 qm9pack geometries)."),
    limit: int = typer.Option(None, help="Only the first N molecules."),
    workers: int = typer.Option(None, help="Processes (default: one per CPU core)."),
) -> None:
    """Compute the 16 highest occupied orbital levels of every molecule (resumable)."""
    out = out or data_dir() / "qm9_levels.npz"
    ds = build_levels(out, method, xyz_dir, limit, workers)
    typer.echo(json.dumps(ds.provenance["molecules"]))
    typer.echo(f"wrote {out}: {len(ds)} molecules")


@app.command()
def info(dataset: str = typer.Argument(
        None, help="A bundled dataset's name (gfn2-xtb, the default, or ipea1-xtb) or a "
        "dataset file.")):
    """Counts, split sizes, level range and provenance of a dataset."""
    ds = load_levels(dataset)
    typer.echo(f"dataset: {dataset_path(dataset)}")
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
    from data_prep.original import import_original as import_files  # torch: kept out of start

    check_output(out)  # before reading the files
    ds = import_files(folder, negated=not not_negated)
    ds.save(out)
    typer.echo(json.dumps(ds.provenance["molecules"]))
    typer.echo(f"original spectra: {json.dumps(ds.provenance['original_spectra'])}")
    typer.echo(f"wrote {out}: {len(ds)} molecules")


def _size(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError


@cache_app.command("info")
def cache_info() -> None:
    """The cache's folder, its total size, and each file with its size and what it is (which dataset, sigma, Np, subset)."""  # noqa: E501 - typer keeps line breaks
    root = cache_root()
    entries = cache_entries(root)
    typer.echo(f"cache: {root} (SPECOPT_CACHE), {len(entries)} file(s), "
               f"{_size(sum(e.size for e in entries))}")
    for e in entries:
        typer.echo(f"{_size(e.size):>9}  {e.path.relative_to(root)}  {e.what}")


@cache_app.command("clear")
def cache_clear(
    yes: bool = typer.Option(False, "--yes", "-y", help="do not ask first (required where "
                             "there is no terminal to ask on)"),
) -> None:
    """Delete everything in the cache (rebuilt when next needed: the first run of a dataset then takes longer). Do not clear it under running workers."""  # noqa: E501
    root = cache_root()
    entries = cache_entries(root)
    if not entries:
        typer.echo(f"cache {root} is empty")
        return
    question = (f"Delete {len(entries)} file(s), {_size(sum(e.size for e in entries))}, "
                f"in {root}?")
    if not yes:
        if not sys.stdin.isatty():
            raise SpecoptError(f"{question} Refused: no terminal to ask on; give --yes")
        if not typer.confirm(question, default=False, err=True):
            raise typer.Exit(1)
    files, size = clear_cache(root)
    typer.echo(f"cleared {root}: {files} file(s), {_size(size)}")
