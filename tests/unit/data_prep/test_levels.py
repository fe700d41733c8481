"""Orbital levels with GFN2-xTB (tblite) on real QM9 molecules: dropping, counting, resuming."""

from __future__ import annotations

import numpy as np
import pytest

import data_prep.levels as levels_mod
from data_prep import DataError, load_qm9pack
from data_prep.levels import (
    FAILED,
    N_LEVELS,
    OK,
    TOO_FEW,
    Method,
    compute_levels,
    levels_of_one,
    occupied_top,
)

# QM9 1 (methane, 4 occupied valence orbitals), 3 (water), 54, 55, 81 and 133 (16 or more).
SAMPLE = [1, 3, 54, 55, 81, 133]


@pytest.fixture(scope="module")
def sample():
    g = load_qm9pack()
    return g.take(g.rows_for(np.array(SAMPLE)))


def test_method_parsing():
    assert Method.parse("GFN2-xTB").name == "gfn2-xtb"
    assert Method.parse("pyscf:hf/sto-3g").name == "pyscf:hf/sto-3g"
    assert not Method.parse("pyscf:pbe0/6-31g").is_xtb
    for bad in ("dft", "pyscf:hf", "pyscf:/sto-3g", "pyscf:hf/"):
        with pytest.raises(DataError, match="unknown method"):
            Method.parse(bad)


def test_occupied_top_takes_the_16_highest_occupied():
    e = np.arange(30.0)[::-1]  # unsorted input: 29 .. 0
    assert occupied_top(e, 15) is None
    np.testing.assert_array_equal(occupied_top(e, 20), np.arange(4.0, 20.0))


def test_xtb_levels_of_real_molecules(sample):
    methane = levels_of_one("gfn2-xtb", sample.Z[0, :5], sample.R[0, :5])
    assert methane is None  # CH4 has 4 occupied valence orbitals
    n = int(sample.n_atoms[2])
    lv = levels_of_one("gfn2-xtb", sample.Z[2, :n], sample.R[2, :n])
    assert lv.shape == (N_LEVELS,) and np.all(np.diff(lv) >= 0)
    assert -40 < lv[0] and lv[-1] < -5  # valence levels in eV


def test_compute_levels_drops_and_counts(sample):
    res = compute_levels(sample, workers=1, progress=False)
    assert res.counts == {"total": 6, "ok": 4, "fewer than 16 occupied levels": 2,
                          "calculation failed": 0}
    assert res.index.tolist() == [54, 55, 81, 133]
    assert res.levels.shape == (4, 16) and res.levels.dtype == np.float32
    assert np.all(np.diff(res.levels, axis=1) >= 0)


def test_a_failed_calculation_is_counted_not_fatal(sample, monkeypatch):
    real = levels_mod.levels_of_one

    def flaky(method, Z, R):
        if len(Z) == int(sample.n_atoms[3]) and np.allclose(R, sample.R[3, : len(Z)]):
            raise RuntimeError("SCF did not converge")
        return real(method, Z, R)

    monkeypatch.setattr(levels_mod, "levels_of_one", flaky)
    res = compute_levels(sample, workers=1, progress=False)
    assert res.counts["calculation failed"] == 1 and res.counts["ok"] == 3
    assert 55 not in res.index.tolist()


def test_interrupted_run_resumes_without_recomputing(sample, tmp_path, monkeypatch):
    parts = tmp_path / "parts"
    calls: list[int] = []
    real = levels_mod._compute_chunk

    def counting(method, geoms):
        calls.append(int(geoms.index[0]))
        if len(calls) == 2 and interrupt:
            raise KeyboardInterrupt  # the user presses Ctrl-C during the second chunk
        return real(method, geoms)

    monkeypatch.setattr(levels_mod, "_compute_chunk", counting)
    interrupt = True
    with pytest.raises(KeyboardInterrupt):
        compute_levels(sample, parts_dir=parts, chunk_size=2, workers=1, progress=False)
    assert calls == [1, 54] and len(list(parts.glob("chunk_*.npz"))) == 1

    interrupt, calls[:] = False, []
    first = compute_levels(sample, parts_dir=parts, chunk_size=2, workers=1, progress=False)
    assert calls == [54, 81]  # the finished chunk (QM9 1 and 3) is not recomputed

    # Delete one finished chunk: only that one is recomputed, the result is the same.
    (parts / "chunk_0000002.npz").unlink()
    calls[:] = []
    again = compute_levels(sample, parts_dir=parts, chunk_size=2, workers=1, progress=False)
    assert calls == [54]
    np.testing.assert_array_equal(again.index, first.index)
    np.testing.assert_array_equal(again.levels, first.levels)
    assert again.counts == first.counts

    # Nothing left to do: nothing is computed.
    calls[:] = []
    compute_levels(sample, parts_dir=parts, chunk_size=2, workers=1, progress=False)
    assert calls == []


def test_parts_of_other_molecules_are_refused(sample, tmp_path):
    parts = tmp_path / "parts"
    compute_levels(sample.take(slice(0, 2)), parts_dir=parts, chunk_size=2, workers=1,
                   progress=False)
    with pytest.raises(DataError, match="computed for other molecules"):
        compute_levels(sample.take(slice(2, 4)), parts_dir=parts, chunk_size=2, workers=1,
                       progress=False)


@pytest.mark.slow
def test_parallel_processes_agree_with_one_process(sample, tmp_path):
    one = compute_levels(sample, workers=1, chunk_size=2, progress=False)
    two = compute_levels(sample, workers=2, chunk_size=2, parts_dir=tmp_path / "p",
                         progress=False)
    np.testing.assert_array_equal(two.index, one.index)
    np.testing.assert_allclose(two.levels, one.levels, atol=1e-5)
    assert two.counts == one.counts
    assert len(list((tmp_path / "p").glob("chunk_*.npz"))) == 3


def test_status_codes_are_distinct():
    assert len({OK, TOO_FEW, FAILED}) == 3
