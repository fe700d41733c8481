"""What the data cache holds (``specopt cache info``) and emptying it (``specopt cache clear``),
on a cache filled by :func:`data_prep.prepare` with real molecules."""

from __future__ import annotations

import os

import numpy as np
import pytest
from typer.testing import CliRunner

from data_prep import load_qm9pack, prepare
from data_prep.cache import DATASETS, cache_entries, clear_cache
from hpo.cli import app


@pytest.fixture
def filled(tmp_path, levels_dataset):
    """A private cache with one subset's Coulomb matrices and its spectra at two sigmas."""
    dataset = os.environ.get("SPECOPT_TEST_DATASET") or None
    geoms = load_qm9pack()  # the session's cache: parsed once
    for sigma in (0.3, 0.5):
        data = prepare(dataset, sigma=sigma, n_points=300, subset=200, cache_dir=tmp_path,
                       geometries=geoms)
    return tmp_path, data.fingerprint, dataset


def test_entries_say_what_each_file_is(filled):
    root, fp, dataset = filled
    source = "bundled" if dataset is None else str(dataset)
    by_name = {e.path.relative_to(root).as_posix(): e for e in cache_entries(root)}
    coulomb = by_name[f"coulomb/{fp}_v2.npy"]
    assert coulomb.kind == "coulomb" and coulomb.size == (root / "coulomb" / f"{fp}_v2.npy"
                                                          ).stat().st_size
    assert all(word in coulomb.what for word in ("Coulomb", f"dataset {source}", "subset 200",
                                                 fp, "200 molecules")), coulomb.what
    spectra = by_name[f"spectra/{fp}_s0.3_n300_-30.0_0.0.npy"]
    assert spectra.kind == "spectra"
    assert spectra.what.startswith("spectra at sigma 0.3 eV, Np 300, window -30.0..0.0 eV; "
                                   f"dataset {source}, subset 200")
    assert f"spectra/{fp}_s0.5_n300_-30.0_0.0.npy" in by_name
    assert by_name[f"{DATASETS}/{fp}.json"].kind == "note"


def test_the_bundled_dataset_is_named_without_a_note(filled):
    root, fp, dataset = filled
    if dataset is not None:
        pytest.skip("names the bundled dataset; SPECOPT_TEST_DATASET is another")
    (root / DATASETS / f"{fp}.json").unlink()
    (root / "coulomb" / ".x.npy.123.tmp").write_bytes(b"half")
    np.save(root / "spectra" / "0123abcd_s0.1_n500_-30.0_0.0.npy", np.zeros((30, 500)))
    by_name = {e.path.name: e for e in cache_entries(root)}
    assert f"dataset bundled, subset 200 ({fp}), 200 molecules" in by_name[f"{fp}_v2.npy"].what
    assert by_name[".x.npy.123.tmp"].kind == "temporary"
    assert by_name["0123abcd_s0.1_n500_-30.0_0.0.npy"].what.endswith(
        "dataset 0123abcd, 30 molecules")


def test_cache_info_and_clear_through_the_cli(filled, monkeypatch):
    root, fp, _ = filled
    monkeypatch.setenv("SPECOPT_CACHE", str(root))
    entries = cache_entries(root)
    runner = CliRunner()
    r = runner.invoke(app, ["cache", "info"])
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert lines[0].startswith(f"cache: {root} (SPECOPT_CACHE), {len(entries)} file(s), ")
    assert any(f"coulomb/{fp}_v2.npy  sorted Coulomb matrices" in x for x in lines)
    assert len(lines) == 1 + len(entries)
    r = runner.invoke(app, ["cache", "clear"])  # no terminal: refused
    assert r.exit_code == 2 and "Refused" in r.output and "--yes" in r.output
    assert len(cache_entries(root)) == len(entries)
    r = runner.invoke(app, ["cache", "clear", "--yes"])
    assert r.exit_code == 0 and f"cleared {root}: {len(entries)} file(s)" in r.stdout
    assert root.is_dir() and not any(root.iterdir())
    r = runner.invoke(app, ["cache", "info"])
    assert r.stdout.startswith(f"cache: {root} (SPECOPT_CACHE), 0 file(s), 0 B")
    assert clear_cache(root) == (0, 0)
