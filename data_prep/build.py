"""Build a levels dataset from QM9 geometries (qm9pack, or a folder of .xyz files)."""

from __future__ import annotations

import datetime as dt
import shlex
import sys
from pathlib import Path

from data_prep.dataset import LevelsDataset, check_output
from data_prep.levels import Method, compute_levels
from data_prep.qm9 import DataError, Geometries, load_qm9pack, read_xyz_files


def load_geometries(xyz_dir: Path | None = None) -> tuple[Geometries, dict]:
    """Geometries and a note of where they came from; bad .xyz files are skipped and counted."""
    if xyz_dir is None:
        return load_qm9pack(), {"source": "qm9pack (PyPI), QM9 geometries, CC0"}
    paths = sorted(Path(xyz_dir).glob("*.xyz"))
    if not paths:
        raise DataError(f"no .xyz files in {xyz_dir}")
    geoms, errors = read_xyz_files(paths)
    return geoms, {"source": f"QM9 .xyz files in {xyz_dir}", "bad_files": len(errors),
                   "bad_file_examples": errors[:5]}


def build_levels(
    out: Path,
    method: str = "gfn2-xtb",
    xyz_dir: Path | None = None,
    limit: int | None = None,
    workers: int | None = None,
    progress: bool | None = None,
) -> LevelsDataset:
    """Compute levels for every molecule and save the dataset to ``out``.

    Finished chunks are kept in ``<out>.parts/``: rerunning after an interruption resumes.
    """
    m = Method.parse(method)
    check_output(out)  # before hours of work, not after
    geoms, source = load_geometries(xyz_dir)
    if limit is not None:
        geoms = geoms.take(slice(0, limit))
    parts = out.with_name(out.name + ".parts") / m.name.replace(":", "_").replace("/", "_")
    result = compute_levels(geoms, m.name, parts_dir=parts, workers=workers, progress=progress)
    provenance = {
        "method": m.name,
        "software": m.version(),
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d"),
        "command": "specopt " + shlex.join(sys.argv[1:]) if sys.argv[0].endswith("specopt")
        else shlex.join(sys.argv),
        "levels": "16 highest occupied orbital energies, eV, ascending",
        **source,
        "molecules": result.counts,
    }
    ds = LevelsDataset.create(result.index, result.levels, provenance)
    ds.save(out)
    return ds
