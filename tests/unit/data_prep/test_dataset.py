"""The levels dataset: its fixed 90/5/5 split, nested subsets, saving and loading, names; and
the bundled datasets themselves (GFN2-xTB, IPEA1-xTB), recomputed for a random sample of
molecules."""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np
import pytest

from data_prep import TEST, TRAIN, VALIDATION, DataError, LevelsDataset, load_levels, load_qm9pack
from data_prep.dataset import (
    BUNDLED_DATASETS,
    BUNDLED_PATH,
    DEFAULT_DATASET,
    SPLIT_SEED,
    dataset_path,
    make_split,
)
from data_prep.levels import compute_levels
from data_prep.qm9 import N_QM9PACK


def test_split_is_90_5_5_and_seeded():
    for n in (405, 1000, 117_234):
        split, rank = make_split(n)
        counts = np.bincount(split, minlength=3)
        assert counts.tolist() == [round(0.9 * n), round(0.05 * n), n - round(0.9 * n)
                                   - round(0.05 * n)]
        assert sorted(rank.tolist()) == list(range(n))
        s2, r2 = make_split(n)
        np.testing.assert_array_equal(s2, split)
        np.testing.assert_array_equal(r2, rank)
    other, _ = make_split(1000, seed=SPLIT_SEED + 1)
    assert not np.array_equal(other, make_split(1000)[0])


def test_split_is_stable_across_versions():
    # A pinned digest: a numpy or code change that moved molecules between train, test and
    # validation would make old studies incomparable with new ones.
    split, rank = make_split(1000)
    digest = hashlib.sha256(split.tobytes() + rank.tobytes()).hexdigest()[:16]
    assert digest == PINNED_DIGEST


PINNED_DIGEST = "d1502e845159dff1"


def test_subsets_nest(levels_dataset):
    full = levels_dataset
    label = dict(zip(full.index.tolist(), full.split.tolist(), strict=True))
    small, smaller = full.subset(200), full.subset(100)
    assert len(small) == 200 and len(smaller) == 100
    assert set(smaller.index.tolist()) <= set(small.index.tolist())
    for sub in (small, smaller):
        # every test / validation molecule of a subset is one of the full set
        for idx, part in zip(sub.index.tolist(), sub.split.tolist(), strict=True):
            assert label[idx] == part
        assert np.all(np.diff(sub.index) > 0)  # dataset order kept
        counts = np.bincount(sub.split, minlength=3) / len(sub)
        assert counts[TRAIN] > 0.8 and counts[TEST] > 0.01 and counts[VALIDATION] > 0.01
    assert full.subset(None) is full and full.subset(len(full)) is full
    with pytest.raises(DataError, match=f"larger than the dataset, which has {len(full)}"):
        full.subset(len(full) + 1)  # it trained on every molecule without a word
    with pytest.raises(DataError, match="too small"):
        full.subset(5)


def test_save_and_load_round_trip(levels_dataset, tmp_path):
    sub = levels_dataset.subset(100)
    sub.save(tmp_path / "d.npz")
    back = load_levels(tmp_path / "d.npz")
    for name in ("index", "levels", "split", "rank"):
        np.testing.assert_array_equal(getattr(back, name), getattr(sub, name))
    assert back.provenance == json.loads(json.dumps(sub.provenance))
    assert back.fingerprint == sub.fingerprint and back.coulomb is None
    assert back.summary()["molecules"] == 100


def test_create_splits_and_validates():
    index = np.arange(1, 41)
    levels = np.sort(np.random.default_rng(0).uniform(-25, -8, (40, 16)), axis=1)
    ds = LevelsDataset.create(index, levels, {"method": "test"})
    assert ds.provenance["split"] == {"fractions": (0.9, 0.05, 0.05), "seed": SPLIT_SEED}
    assert np.bincount(ds.split).tolist() == [36, 2, 2]
    with pytest.raises(DataError, match=r"levels have shape \(40, 15\)"):
        LevelsDataset.create(index, levels[:, :15], {})
    with pytest.raises(DataError, match="coulomb has shape"):
        LevelsDataset.create(index, levels, {}, coulomb=np.zeros((40, 28, 28)))


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(DataError, match="dataset not found: .*nothere.npz"):
        load_levels(tmp_path / "nothere.npz")
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"PK\x03\x04 this is not a zip file")
    with pytest.raises(DataError, match="bad.npz: not a specopt levels dataset"):
        load_levels(bad)
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(DataError, match="other.npz: not a specopt levels dataset"):
        load_levels(tmp_path / "other.npz")


def test_datasets_by_name(tmp_path):
    assert dataset_path(None) == BUNDLED_PATH == BUNDLED_DATASETS[DEFAULT_DATASET]
    assert dataset_path("ipea1-xtb") == BUNDLED_DATASETS["ipea1-xtb"]
    assert dataset_path(tmp_path / "x.npz") == tmp_path / "x.npz"
    assert load_levels("gfn2-xtb").fingerprint == load_levels().fingerprint
    with pytest.raises(DataError, match="bundled name: gfn2-xtb, ipea1-xtb"):
        load_levels("ipea2-xtb")


# --- the bundled datasets -------------------------------------------------------------------


@pytest.fixture(scope="module", params=sorted(BUNDLED_DATASETS))
def bundled(request):
    """Each bundled dataset (or $SPECOPT_TEST_DATASET for the default one). Never skipped:
    missing is a failure."""
    name = request.param
    path = BUNDLED_DATASETS[name]
    if name == DEFAULT_DATASET:
        path = os.environ.get("SPECOPT_TEST_DATASET") or path
    assert os.path.exists(path), (
        f"the bundled dataset {path} is missing: build it with `specopt data build --method "
        f"{name} --out {path}` (or point SPECOPT_TEST_DATASET at a levels .npz)")
    return load_levels(path), str(path) == str(BUNDLED_DATASETS[name]), name


def test_bundled_dataset_is_consistent(bundled):
    ds, is_bundled, name = bundled
    p = ds.provenance
    for key in ("method", "software", "date", "command", "source", "levels", "molecules",
                "split"):
        assert key in p, key
    assert (p["method"] == name or not is_bundled) and p["software"].startswith("tblite ")
    counts = p["molecules"]
    assert counts["ok"] == len(ds)
    assert counts["total"] == (counts["ok"] + counts["fewer than 16 occupied levels"]
                               + counts["calculation failed"])
    if is_bundled:
        assert counts["total"] == N_QM9PACK, "the bundled dataset covers every qm9pack molecule"
    assert ds.levels.dtype == np.float32 and np.isfinite(ds.levels).all()
    assert np.all(np.diff(ds.levels, axis=1) >= 0)  # ascending
    assert -60 < ds.levels.min() and ds.levels.max() < 0
    assert np.all(np.diff(ds.index) > 0) and ds.index.min() >= 1
    assert np.array_equal(ds.split, make_split(len(ds))[0])  # the seeded split, stored
    n = len(ds)
    assert np.bincount(ds.split, minlength=3).tolist() == [
        round(0.9 * n), round(0.05 * n), n - round(0.9 * n) - round(0.05 * n)]


def test_bundled_datasets_share_molecules_and_split():
    """Every bundled dataset holds the same molecules with the same split, so a model trained
    on one level of theory is tested on the same molecules as on another."""
    a, b = (load_levels(name) for name in sorted(BUNDLED_DATASETS))
    assert np.array_equal(a.index, b.index) and np.array_equal(a.split, b.split)
    assert np.array_equal(a.rank, b.rank)


def test_bundled_levels_recompute_to_1e_4_eV(bundled):
    ds, _, _ = bundled
    geoms = load_qm9pack()
    rows = np.random.default_rng(20190).choice(len(ds), size=20, replace=False)
    g = geoms.take(geoms.rows_for(ds.index[rows]))
    again = compute_levels(g, ds.provenance["method"], workers=1, progress=False)
    assert again.counts["ok"] == 20, again.counts
    np.testing.assert_array_equal(again.index, ds.index[rows])
    for i, r in enumerate(rows):
        np.testing.assert_allclose(again.levels[i], ds.levels[r], rtol=0, atol=1e-4,
                                   err_msg=f"QM9 molecule {ds.index[r]}")
