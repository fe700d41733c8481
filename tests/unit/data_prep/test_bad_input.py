"""Bad input is refused with one line, never trained on (issue 9, item 8): non-finite
coordinates and levels, levels out of order, duplicate molecules, molecules with no level in the
window; corrupt cache files are named and rebuilt; a write that fails on a full disk leaves no
temporary file."""

from __future__ import annotations

import errno
import logging
from pathlib import Path

import numpy as np
import pytest

from data_prep import DataError, LevelsDataset, load_levels, prepare, read_xyz
from data_prep.cache import save_atomic
from data_prep.files import atomic_write
from data_prep.qm9 import read_xyz_files

WATER = """3
gdb 7\t0
O\t0.0\t0.0\t0.1173
H\t0.0\t0.7572\t-0.4692
H\t0.0\t{y}\t-0.4692
"""


@pytest.mark.parametrize("bad", ["nan", "inf", "-Infinity", "1e999"])
def test_xyz_with_a_non_finite_coordinate_is_refused(tmp_path, bad):
    path = tmp_path / "dsgdb9nsd_000007.xyz"
    path.write_text(WATER.format(y=bad))
    with pytest.raises(DataError, match=r"dsgdb9nsd_000007.xyz: atom 3 \(H\) has a non-finite "
                                        "coordinate") as err:
        read_xyz(path)
    assert "\n" not in str(err.value)
    good = tmp_path / "ok.xyz"
    good.write_text(WATER.format(y="-0.7572"))
    geoms, errors = read_xyz_files([path, good])
    assert len(geoms) == 1 and len(errors) == 1 and "non-finite" in errors[0]


@pytest.fixture(scope="module")
def small(levels_dataset):
    """200 real molecules with their Coulomb matrices (as an imported dataset has them): the
    tests' own cache folders then never parse the 130k qm9pack geometries again."""
    sub = levels_dataset.subset(2000)
    coulomb = prepare(sub).coulomb  # the session's cache
    return LevelsDataset(sub.index, sub.levels, sub.split, sub.rank, {}, coulomb).subset(200)


def _save(tmp_path: Path, ds: LevelsDataset, levels=None, index=None) -> Path:
    """Write a dataset .npz as LevelsDataset.save does, with its arrays replaced (bypassing the
    validation, as a file damaged or made elsewhere would)."""
    path = tmp_path / "bad.npz"
    np.savez_compressed(path, index=ds.index if index is None else index,
                        levels=ds.levels if levels is None else levels, split=ds.split,
                        rank=ds.rank, provenance=np.array("{}"))
    return path


def test_dataset_with_nan_or_inf_levels_is_refused(small, tmp_path):
    levels = small.levels.copy()
    levels[3, 15] = np.nan
    levels[7, 0] = -np.inf
    path = _save(tmp_path, small, levels=levels)
    with pytest.raises(DataError, match=rf"bad.npz: 2 molecules have NaN or infinite levels "
                                        rf"\(QM9 index {small.index[3]}, {small.index[7]}\)"):
        load_levels(path)
    with pytest.raises(DataError, match="NaN or infinite levels"):
        prepare(_save(tmp_path, small, levels=levels), subset=None)


def test_dataset_with_levels_out_of_order_or_a_duplicate_molecule_is_refused(small, tmp_path):
    levels = small.levels.copy()
    levels[5] = levels[5][::-1]
    with pytest.raises(DataError, match=rf"bad.npz: 1 molecules have levels not in ascending "
                                        rf"order \(QM9 index {small.index[5]}\)"):
        load_levels(_save(tmp_path, small, levels=levels))
    index = small.index.copy()
    index[9] = index[2]
    with pytest.raises(DataError, match=rf"bad.npz: 1 QM9 indices occur more than once "
                                        rf"\({index[2]}\)"):
        load_levels(_save(tmp_path, small, index=index))


def test_molecule_without_a_level_in_the_window_is_named(small, tmp_path):
    levels = small.levels.copy()
    levels[11] -= 200.0  # every level far below -30 eV: an all-zero spectrum
    ds = LevelsDataset(small.index, levels, small.split, small.rank, {}, small.coulomb)
    with pytest.raises(DataError, match=rf"1 of 200 molecules have no level inside the window "
                                        rf"-30\.\.0 eV: .*QM9 index {small.index[11]}\)"):
        prepare(ds, cache_dir=tmp_path / "c1")
    assert not list((tmp_path / "c1" / "spectra").glob("*.npy"))  # nothing bad was cached


def _spectra_file(cache: Path) -> Path:
    (path,) = (cache / "spectra").glob("*.npy")
    return path


def _coulomb_file(cache: Path) -> Path:
    (path,) = (cache / "coulomb").glob("*.npy")
    return path


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _wrong_shape(path: Path) -> None:
    np.save(path, np.load(path)[:-1])


def _nan_inside(path: Path) -> None:
    a = np.load(path)
    a.reshape(-1)[17] = np.nan
    np.save(path, a)


def _zero_row(path: Path) -> None:
    a = np.load(path)
    a[4] = 0
    np.save(path, a)


def _garbage(path: Path) -> None:
    path.write_bytes(b"\x93NUMPY not really")


@pytest.mark.parametrize("which", [_spectra_file, _coulomb_file])
@pytest.mark.parametrize("damage", [_truncate, _wrong_shape, _nan_inside, _zero_row, _garbage])
def test_corrupt_cache_file_is_named_and_rebuilt(small, tmp_path, caplog, which, damage):
    cache = tmp_path / "cache"
    first = prepare(small, cache_dir=cache)
    path = which(cache)
    damage(path)
    with caplog.at_level(logging.WARNING, logger="specopt.data"):
        again = prepare(small, cache_dir=cache)
    np.testing.assert_array_equal(again.spectra, first.spectra)
    np.testing.assert_array_equal(again.coulomb, first.coulomb)
    (record,) = [r for r in caplog.records if r.name == "specopt.data"]
    assert str(path) in record.getMessage() and "rebuilding" in record.getMessage()
    np.testing.assert_array_equal(np.load(path), np.load(which(cache)))  # rewritten, readable
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="specopt.data"):
        prepare(small, cache_dir=cache)
    assert not caplog.records  # the rebuilt file is used as it is


def test_atomic_write_on_a_tiny_disk_leaves_no_temporary_file(tiny_disk):
    big = np.ones((600, 600), np.float32)  # 1.4 MB: more than the disk holds
    with pytest.raises(OSError):  # ENOSPC, or numpy's "N requested and M written"
        save_atomic(tiny_disk / "sub" / "big.npy", big)
    with pytest.raises(OSError) as err:
        atomic_write(tiny_disk / "sub" / "raw.bin", lambda f: f.write(b"x" * 2_000_000))
    assert err.value.errno == errno.ENOSPC and err.value.filename == str(tiny_disk / "sub" /
                                                                         "raw.bin")
    assert list(tiny_disk.iterdir()) == []  # nor the folder made for it
    with pytest.raises(RuntimeError, match="boom"):
        atomic_write(tiny_disk / "x.bin", lambda f: (f.write(b"half"), _raise()))
    assert list(tiny_disk.iterdir()) == []
    save_atomic(tiny_disk / "small.npy", np.ones(10, np.float32))  # the space came back
    np.testing.assert_array_equal(np.load(tiny_disk / "small.npy"), np.ones(10))


def _raise():
    raise RuntimeError("boom")


def test_prepare_with_a_full_cache_disk_still_returns_the_data(small, tiny_disk, caplog):
    ds = LevelsDataset.create(np.arange(1, 2001), np.tile(small.levels, (10, 1)), {},
                              coulomb=np.tile(small.coulomb, (10, 1, 1)))
    # spectra of 2000 x 300 float32 (2.4 MB) and the matrices (6.7 MB): more than 1 MiB
    with caplog.at_level(logging.WARNING, logger="specopt.data"):
        data = prepare(ds, cache_dir=tiny_disk)
    assert data.spectra.shape == (2000, 300) and np.isfinite(data.spectra).all()
    assert any("cannot write" in r.getMessage() for r in caplog.records)
    leftovers = [p.name for p in tiny_disk.rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []


@pytest.mark.slow
def test_truncated_geometries_cache_is_named_and_rebuilt(tmp_path, caplog):
    from data_prep import load_qm9pack

    first = load_qm9pack(tmp_path)
    cache = tmp_path / "qm9pack_geometries.npz"
    _truncate(cache)
    with caplog.at_level(logging.WARNING, logger="specopt.data"):
        again = load_qm9pack(tmp_path)
    (record,) = [r for r in caplog.records if r.name == "specopt.data"]
    assert str(cache) in record.getMessage() and "rebuilding" in record.getMessage()
    np.testing.assert_array_equal(again.R, first.R)
    np.testing.assert_array_equal(again.index, first.index)
    assert np.load(cache)["R"].shape == first.R.shape  # written again, whole


@pytest.mark.parametrize("damage", [_truncate, _garbage, "nan"])
def test_corrupt_chunk_of_a_levels_build_is_named_and_recomputed(tmp_path, caplog, damage):
    from data_prep import load_qm9pack
    from data_prep.levels import compute_levels

    sample = load_qm9pack().take(np.array([0, 2, 53, 80]))  # QM9 1, 3, 54, 81: tiny molecules
    parts = tmp_path / "parts"
    first = compute_levels(sample, parts_dir=parts, chunk_size=2, workers=1, progress=False)
    chunk = parts / "chunk_0000002.npz"
    if damage == "nan":
        with np.load(chunk) as f:
            arrays = dict(f)
        arrays["levels"][0, 3] = np.nan
        np.savez(chunk, **arrays)
    else:
        damage(chunk)
    with caplog.at_level(logging.WARNING, logger="specopt.data"):
        again = compute_levels(sample, parts_dir=parts, chunk_size=2, workers=1, progress=False)
    (record,) = [r for r in caplog.records if r.name == "specopt.data"]
    assert str(chunk) in record.getMessage() and "rebuilding" in record.getMessage()
    np.testing.assert_array_equal(again.levels, first.levels)
    np.testing.assert_array_equal(again.index, first.index)


def test_subset_larger_than_the_dataset_names_both_numbers(small):
    """A subset of 500 of 200 molecules used to train on the 200 without a word."""
    for attempt in (lambda: small.subset(500), lambda: prepare(small, subset=500)):
        with pytest.raises(DataError) as err:
            attempt()
        assert "500" in str(err.value) and "200" in str(err.value)
    assert small.subset(200) is small  # exactly all of them is fine
