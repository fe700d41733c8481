"""Importing the original dataset format (Ghosh et al. 2019), on small files written by the test
from real molecules: coulomb.npz (negated), energies.txt (-10000 = missing), spectra.npz."""

from __future__ import annotations

import numpy as np
import pytest

from data_prep import DataError, broaden, coulomb_matrices, load_levels, load_qm9pack, prepare
from data_prep.original import import_original


@pytest.fixture(scope="module")
def original(levels_dataset, tmp_path_factory):
    """A folder in the original format: 40 real molecules, 3 of them with missing levels."""
    folder = tmp_path_factory.mktemp("original")
    ds = levels_dataset.subset(40)
    geoms = load_qm9pack()
    g = geoms.take(geoms.rows_for(ds.index))
    coulomb = coulomb_matrices(g.Z, g.R)
    energies = ds.levels[:, ::-1].astype(np.float64)  # written highest first, as a stranger might
    missing = [3, 17, 39]
    energies[3, :12] = -10000  # e.g. a molecule with only 4 valence levels
    energies[17, 0] = -10000
    energies[39, :] = -10000
    np.savez(folder / "coulomb.npz", coulomb=-coulomb)  # stored NEGATED
    np.savetxt(folder / "energies.txt", energies, fmt="%.6f")
    spectra = broaden(ds.levels, 0.5, 300)
    spectra[missing] = 0.0
    np.savez(folder / "spectra.npz", spectra=spectra)
    return folder, ds, coulomb, missing


def test_import(original):
    folder, ds, coulomb, missing = original
    imported = import_original(folder)
    keep = np.setdiff1d(np.arange(40), missing)
    assert len(imported) == 37
    np.testing.assert_array_equal(imported.index, keep)  # rows of the original files
    np.testing.assert_allclose(imported.levels, ds.levels[keep], atol=1e-6)  # sorted ascending
    assert np.all(np.diff(imported.levels, axis=1) >= 0)
    np.testing.assert_array_equal(imported.coulomb, coulomb[keep])  # negation undone
    assert np.all(np.diagonal(imported.coulomb, axis1=1, axis2=2)[:, 0] > 0)
    p = imported.provenance
    assert p["molecules"] == {"total": 40, "ok": 37, "missing levels (-10000)": 3}
    assert "Zenodo 3386508" in p["source"] and "not a QM9 index" in p["index"]
    cmp = p["original_spectra"]
    assert cmp["n_points"] == 300 and cmp["stored"] is False
    assert cmp["fitted_sigma_eV"] == pytest.approx(0.5, abs=1e-3)
    assert cmp["fitted_scale"] == pytest.approx(1.0, abs=1e-3)
    assert cmp["relative_l2_difference_at_fit"] < 1e-4
    assert np.bincount(imported.split, minlength=3).sum() == 37


def test_imported_dataset_trains_without_geometries(original, tmp_path):
    folder, ds, coulomb, missing = original
    imported = import_original(folder)
    imported.save(tmp_path / "orig.npz")
    back = load_levels(tmp_path / "orig.npz")
    np.testing.assert_array_equal(back.coulomb, imported.coulomb)
    data = prepare(back, sigma=0.3, n_points=200, cache_dir=tmp_path / "cache")
    assert data.coulomb.shape == (37, 29, 29) and data.spectra.shape == (37, 200)
    norms = np.linalg.norm(data.coulomb.astype(np.float64), axis=2)
    assert np.all(np.diff(norms, axis=1) <= 1e-9)  # sorted for evaluation
    assert not (tmp_path / "cache" / "qm9pack_geometries.npz").exists()


def test_without_spectra(original, tmp_path):
    folder, *_ = original
    for name in ("coulomb.npz", "energies.txt"):
        (tmp_path / name).write_bytes((folder / name).read_bytes())
    imported = import_original(tmp_path)
    assert imported.provenance["original_spectra"] == "absent" and len(imported) == 37


def write(folder, coulomb=None, energies=None, spectra=None):
    folder.mkdir(exist_ok=True)
    if coulomb is not None:
        np.savez(folder / "coulomb.npz", coulomb=coulomb)
    if energies is not None:
        (folder / "energies.txt").write_text(energies)
    if spectra is not None:
        np.savez(folder / "spectra.npz", spectra=spectra)
    return folder


LINE = " ".join(f"{-20 + i:.3f}" for i in range(16)) + "\n"


def negated(n):
    c = np.zeros((n, 29, 29), np.float32)
    c[:, 0, 0] = -36.9
    return c


@pytest.mark.parametrize(
    "files, words",
    [
        (dict(energies=LINE), "coulomb.npz: file not found"),
        (dict(coulomb=negated(1)), "energies.txt: file not found"),
        (dict(coulomb=np.zeros((1, 28, 28)), energies=LINE),
         r"'coulomb' has shape \(1, 28, 28\), expected \(N, 29, 29\)"),
        (dict(coulomb=negated(2), energies=LINE), "coulomb.npz has 2 molecules but energies.txt "
                                                  "has 1"),
        (dict(coulomb=negated(2), energies=LINE + LINE.rsplit(" ", 1)[0] + "\n"),
         r"energies.txt, line 2: 15 values, expected 16"),
        (dict(coulomb=negated(1), energies=LINE.replace("-20.000", "abc")),
         "energies.txt, line 1: not a number"),
        (dict(coulomb=-negated(1), energies=LINE), "negative diagonal after reading"),
        (dict(coulomb=negated(1), energies=LINE, spectra=np.zeros((2, 300))),
         r"'spectra' has shape \(2, 300\), expected \(1, Np\)"),
        (dict(coulomb=negated(1), energies=LINE.replace("-20.000", "-10000")),
         "every molecule has a missing level"),
    ],
)
def test_bad_files_are_one_line_errors(tmp_path, files, words):
    folder = write(tmp_path / "orig", **files)
    with pytest.raises(DataError, match=words) as err:
        import_original(folder)
    assert "\n" not in str(err.value)


def test_wrong_key_and_not_a_folder(tmp_path):
    folder = tmp_path / "orig"
    folder.mkdir()
    np.savez(folder / "coulomb.npz", matrices=negated(1))
    (folder / "energies.txt").write_text(LINE)
    with pytest.raises(DataError, match="no array 'coulomb' .*matrices"):
        import_original(folder)
    with pytest.raises(DataError, match="not a folder"):
        import_original(tmp_path / "nothere")


def test_not_negated_option(tmp_path):
    folder = write(tmp_path / "orig", coulomb=-negated(1), energies=LINE)
    imported = import_original(folder, negated=False)
    assert imported.coulomb[0, 0, 0] == pytest.approx(36.9)
