"""QM9 geometries: qm9pack loading and the dsgdb9nsd ``.xyz`` reader, on real molecules."""

from __future__ import annotations

import ast
import csv
import math
from pathlib import Path

import numpy as np
import pytest

from data_prep import DataError, load_qm9pack, read_xyz
from data_prep.qm9 import MAX_ATOMS, N_QM9PACK, qm9pack_dir, read_xyz_files

SYMBOLS = {1: "H", 6: "C", 7: "N", 8: "O", 9: "F"}


@pytest.fixture(scope="module")
def geoms():
    return load_qm9pack()


def mathematica(x: float) -> str:
    """A number as QM9 writes small ones: ``-1.2345*^-5``."""
    if x != 0 and abs(x) < 1e-4:
        mantissa, exponent = f"{x:.7e}".split("e")
        return f"{mantissa}*^{int(exponent)}"
    return f"{x:.10f}"


def write_dsgdb9nsd(folder: Path, geoms, row: int) -> Path:
    """Write one molecule exactly as a QM9 ``dsgdb9nsd_NNNNNN.xyz`` file."""
    idx, n = int(geoms.index[row]), int(geoms.n_atoms[row])
    lines = [str(n), f"gdb {idx}\t157.7118\t157.70997\t157.70699\t0.\t13.21\t-0.3877\t0.1171\t"
             "0.5048\t35.3641\t0.044749\t-40.47893\t-40.476062\t-40.475117\t-40.498597\t6.469\t"]
    for z, r in zip(geoms.Z[row, :n], geoms.R[row, :n].astype(np.float64), strict=True):
        coords = "\t".join(mathematica(float(x)) for x in r)
        lines.append(f"{SYMBOLS[int(z)]}\t{coords}\t-1.3*^-5")  # 5th column: Mulliken charge
    lines += ["1341.307\t1341.3284\t1562.6731", "C\tC", "InChI=1S/CH4/h1H4\tInChI=1S/CH4/h1H4"]
    path = folder / f"dsgdb9nsd_{idx:06d}.xyz"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_qm9pack_has_all_molecules(geoms):
    assert len(geoms) == N_QM9PACK == 130_831
    assert geoms.index[0] == 1 and np.all(np.diff(geoms.index) > 0)
    assert geoms.n_atoms.max() == MAX_ATOMS and geoms.n_atoms.min() >= 1
    assert set(np.unique(geoms.Z)) == {0, 1, 6, 7, 8, 9}
    # padding is zero, real atoms have an element
    slots = np.arange(MAX_ATOMS)[None, :] < geoms.n_atoms[:, None]
    assert np.all((geoms.Z > 0) == slots)
    assert np.all(geoms.R[~slots] == 0)


def test_methane_matches_the_csv(geoms):
    with open(qm9pack_dir() / "qm9_part1.csv", newline="") as f:
        first = next(csv.DictReader(f))
    assert first["Index"] == "1" and first["SMILES"] == "C"
    xyz = np.array(ast.literal_eval(first["XYZ_Ang"]))
    assert geoms.index[0] == 1 and geoms.n_atoms[0] == 5
    assert geoms.Z[0, :5].tolist() == [6, 1, 1, 1, 1]
    np.testing.assert_allclose(geoms.R[0, :5], xyz, atol=1e-6)
    np.testing.assert_allclose(geoms.R[0, 0], [-0.0126981359, 1.0858041578, 0.0080009958],
                               atol=1e-6)


def test_xyz_reader_on_a_real_molecule_with_mathematica_exponents(geoms, tmp_path):
    # A real QM9 molecule with coordinates below 1e-4 Angstrom, which QM9 writes as 1.2*^-5.
    tiny = (np.abs(geoms.R) < 1e-4) & (geoms.R != 0) & (geoms.Z[..., None] > 0)
    row = int(np.flatnonzero(tiny.any(axis=(1, 2)))[0])
    path = write_dsgdb9nsd(tmp_path, geoms, row)
    assert "*^-" in path.read_text()
    index, Z, R = read_xyz(path)
    n = int(geoms.n_atoms[row])
    assert index == geoms.index[row]
    assert Z.tolist() == geoms.Z[row, :n].tolist()
    np.testing.assert_allclose(R, geoms.R[row, :n], rtol=1e-6, atol=1e-9)
    small = np.abs(geoms.R[row, :n]) < 1e-4
    assert np.all(np.abs(R[small]) < 1e-4)  # the *^ numbers were read with their exponents


def test_xyz_reader_takes_the_index_from_the_name_without_a_gdb_header(geoms, tmp_path):
    path = write_dsgdb9nsd(tmp_path, geoms, 2)
    lines = path.read_text().splitlines()
    lines[1] = "a comment"
    path.write_text("\n".join(lines))
    assert read_xyz(path)[0] == 3


@pytest.mark.parametrize(
    "text, words",
    [
        ("", "malformed"),
        ("three\ngdb 1\nC 0 0 0\n", "malformed"),
        ("3\ngdb 1\nC 0 0 0\nH 1 0 0\n", "malformed"),  # fewer atom lines than announced
        ("2\ngdb 1\nC 0 0 0\nH 1 0\n", "malformed"),  # a missing coordinate
        ("2\ngdb 1\nC 0 0 0\nH 1 zero 0\n", "malformed"),
        ("2\ngdb 1\nC 0 0 0\nCl 1 0 0\n", "unknown element 'Cl'"),
    ],
)
def test_malformed_xyz_is_one_clear_line_naming_the_file(tmp_path, text, words):
    path = tmp_path / "dsgdb9nsd_000001.xyz"
    path.write_text(text)
    with pytest.raises(DataError) as err:
        read_xyz(path)
    message = str(err.value)
    assert words in message and str(path) in message and "\n" not in message


def test_more_than_29_atoms_is_refused(tmp_path):
    path = tmp_path / "big.xyz"
    atoms = "\n".join(f"H {i * 0.8:.3f} 0 0" for i in range(30))
    path.write_text(f"30\ngdb 7\n{atoms}\n")
    with pytest.raises(DataError, match=r"30 atoms, more than the 29") as err:
        read_xyz(path)
    assert str(path) in str(err.value)


def test_missing_file_names_the_file(tmp_path):
    with pytest.raises(DataError, match="nothere.xyz"):
        read_xyz(tmp_path / "nothere.xyz")


def test_batch_skips_and_counts_bad_files(geoms, tmp_path):
    good = [write_dsgdb9nsd(tmp_path, geoms, row) for row in (0, 2, 500)]
    bad = tmp_path / "dsgdb9nsd_999998.xyz"
    bad.write_text("2\ngdb 999998\nC 0 0 0\nXx 1 0 0\n")
    worse = tmp_path / "dsgdb9nsd_999999.xyz"
    worse.write_text("not a number\n")
    batch, errors = read_xyz_files(sorted(tmp_path.glob("*.xyz")))
    assert len(batch) == len(good) and len(errors) == 2
    assert sorted(batch.index.tolist()) == sorted(int(geoms.index[r]) for r in (0, 2, 500))
    assert any("999998" in e and "unknown element" in e for e in errors)
    assert any("999999" in e and "malformed" in e for e in errors)
    rows = geoms.rows_for(batch.index)
    np.testing.assert_array_equal(batch.Z, geoms.Z[rows])
    np.testing.assert_allclose(batch.R, geoms.R[rows], atol=1e-6)


def test_rows_for_names_missing_indices(geoms):
    assert geoms.rows_for(np.array([3, 1])).tolist() == [2, 0]
    with pytest.raises(DataError, match="not in the geometries"):
        geoms.rows_for(np.array([1, 10_000_000]))


def test_mathematica_helper():
    assert mathematica(-1.5e-5) == "-1.5000000*^-5"
    assert math.isclose(float(mathematica(-1.5e-5).replace("*^", "e")), -1.5e-5)


# --- files that are not what they say (issue 20) ------------------------------------------------

METHANE = "5\ngdb 1\nC 0 0 0\nH 0.63 0.63 0.63\nH -0.63 -0.63 0.63\nH -0.63 0.63 -0.63\n" \
          "H 0.63 -0.63 -0.63\n"


def _peak_bytes(fn) -> int:
    import tracemalloc

    tracemalloc.start()
    try:
        fn()
    except DataError:
        pass
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def test_a_big_file_is_streamed_not_read_whole(tmp_path):
    """A valid molecule followed by 40 MB of other lines (QM9 files carry frequencies, SMILES,
    InChI after the atoms): only the declared lines are read."""
    path = tmp_path / "dsgdb9nsd_000001.xyz"
    with path.open("w") as f:
        f.write(METHANE)
        f.write(("1341.307\t1341.3284\t1562.6731\n") * 1_400_000)
    assert path.stat().st_size > 40e6
    index, Z, R = read_xyz(path)
    assert index == 1 and list(Z) == [6, 1, 1, 1, 1]
    assert _peak_bytes(lambda: read_xyz(path)) < 2e6


def test_a_huge_atom_count_is_refused_before_reading_the_atoms(tmp_path):
    path = tmp_path / "huge.xyz"
    with path.open("w") as f:
        f.write("2000000000\ngdb 1\n")
        f.write("C 0 0 0\n" * 5_000_000)
    for any_molecule in (False, True):
        with pytest.raises(DataError) as err:
            read_xyz(path, any_molecule=any_molecule)
        assert "huge.xyz" in str(err.value) and "2000000000" in str(err.value)
    assert _peak_bytes(lambda: read_xyz(path, any_molecule=True)) < 2e6


@pytest.mark.parametrize(("content", "words"), [
    (b"-3\ngdb 1\nC 0 0 0\n", "atom count"),
    (b"2.5\ngdb 1\nC 0 0 0\nH 1 0 0\n", "atom count"),
    (b"0\ngdb 1\n", "atom count"),
    (b"", "empty"),
    (b"\x00\xff\xfe garbage \x89PNG\r\n\x1a\n" * 100, "malformed"),
    (b"5\ngdb 1\nC 0 0 0\n", "expected 5 atom lines"),
    (b"2\ngdb 1\nC 0 0 0\nH 0 nan 0\n", "non-finite"),
])
def test_bad_xyz_contents_are_one_line_naming_the_file(tmp_path, content, words):
    path = tmp_path / "bad.xyz"
    path.write_bytes(content)
    with pytest.raises(DataError) as err:
        read_xyz(path, any_molecule=True)
    assert "bad.xyz" in str(err.value) and words in str(err.value), str(err.value)
    assert "\n" not in str(err.value)


def test_a_folder_given_as_a_file_is_named(tmp_path):
    with pytest.raises(DataError, match="folder.xyz"):
        read_xyz(tmp_path.joinpath("folder.xyz").mkdir() or tmp_path / "folder.xyz")
