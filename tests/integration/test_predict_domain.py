"""``specopt predict`` checks every molecule against the model's training domain (elements, atom
count, 16 occupied valence levels, Coulomb-matrix norm range stored in the checkpoint): molecules
outside it are refused with their reasons, or predicted and flagged with ``--force``. A real
model trained on 200 real molecules; the molecules are real QM9 geometries and edits of them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from data_prep.qm9 import SYMBOLS
from hpo.cli import app

WATER = "3\nwater\nO 0.0 0.0 0.1173\nH 0.0 0.7572 -0.4692\nH 0.0 -0.7572 -0.4692\n"


def _xyz(path, Z, R, comment="molecule"):
    lines = [str(len(Z)), comment]
    lines += [f"{SYMBOLS[int(z)]} {x!r} {y!r} {w!r}" for z, (x, y, w) in zip(Z, R.tolist(),
                                                                              strict=True)]
    path.write_text("\n".join(lines) + "\n")
    return path


def _water(root):
    """Water as an XYZ file: outside the training domain (3 atoms, 4 occupied valence levels)."""
    path = root / "water.xyz"
    path.write_text(WATER)
    return path


def _good_and_water(root, Z, R):
    """An in-domain molecule (the real geometry Z, R) and water as XYZ files."""
    return _xyz(root / "good.xyz", Z, R), _water(root)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, levels_dataset, one_torch_thread):
    """(checkpoint, the training data, geometries) of a real 1-epoch model on 200 molecules."""
    import model
    from data_prep import load_qm9pack, prepare

    root = tmp_path_factory.mktemp("domain")
    data = prepare(levels_dataset, sigma=0.5, n_points=300, subset=200)
    config = model.TrainConfig(subset=200, epochs=1, device="cpu", num_threads=1,
                               checkpoint_dir=root / "ckpt")
    result = model.train(config, data)
    assert result.checkpoint_path is not None
    return result.checkpoint_path, data, load_qm9pack()


@pytest.fixture(scope="module")
def molecule(trained):
    """Z, R of a molecule of the training split (inside the domain by construction)."""
    _, data, geoms = trained
    row = int(geoms.rows_for(data.index[data.train_rows[:1]])[0])
    n = int(geoms.n_atoms[row])
    return geoms.Z[row, :n].astype(int), geoms.R[row, :n].astype(np.float64)


def _predict(*args):
    return CliRunner().invoke(app, ["predict", *map(str, args)])


def test_checkpoint_records_the_training_domain(trained):
    ckpt, data, _ = trained
    domain = torch.load(ckpt, weights_only=True)["domain"]
    norms = np.linalg.norm(data.coulomb[data.train_rows].astype(np.float64), axis=(1, 2))
    assert domain["molecules"] == len(data.train_rows)
    assert set(domain["elements"]) <= {1, 6, 7, 8, 9} and {1, 6} <= set(domain["elements"])
    assert domain["coulomb_norm"] == pytest.approx([norms.min(), norms.max()])
    lo, hi = domain["n_atoms"]
    assert 3 < lo <= hi <= 29
    assert domain["valence_electrons"][0] >= 32  # every training molecule has 16 levels


def test_out_of_domain_molecules_are_refused_with_their_reasons(trained, molecule, tmp_path):
    ckpt, _, _ = trained
    Z, R = molecule
    good, water = _good_and_water(tmp_path, Z, R)
    cl = Z.copy()
    cl[np.flatnonzero(Z == 1)[0]] = 17  # one hydrogen becomes a chlorine
    chloro = _xyz(tmp_path / "chloro.xyz", cl, R)
    squeezed = _xyz(tmp_path / "squeezed.xyz", Z, R * 0.15)  # same atoms, closer
    out = tmp_path / "out"
    r = _predict(ckpt, good, water, chloro, squeezed, "--out", out)
    assert r.exit_code == 2, r.output
    assert "error: 3 of 4 molecules are outside the model's training domain" in r.output
    assert "(--force predicts them anyway, flagged)" in r.output
    assert ("refused: water.xyz (H2O): element" not in r.output
            and "refused: water.xyz (H2O): 3 atoms, outside the training range" in r.output)
    assert "8 valence electrons: 4 occupied valence levels, fewer than the 16" in r.output
    assert "element Cl not in the training set (H, C, N, O" in r.output
    assert "refused: squeezed.xyz" in r.output and "Coulomb-matrix norm" in r.output
    assert "good.xyz" not in r.output.replace("refused: good", "")  # in domain: not refused
    assert not out.exists()  # nothing is written when a molecule is refused
    r = _predict(ckpt, good, "--out", out)
    assert r.exit_code == 0, r.output
    assert "good.xyz (C" in r.output and "strongest peak at" in r.output


def test_force_predicts_and_flags_them(trained, molecule, tmp_path):
    ckpt, _, _ = trained
    good, water = _good_and_water(tmp_path, *molecule)
    out = tmp_path / "out"
    r = _predict(ckpt, good, water, "--out", out, "--force")
    assert r.exit_code == 0, r.output
    assert "water.xyz (H2O): strongest peak at" in r.output
    assert "[outside training domain: 3 atoms" in r.output
    spectra = pd.read_csv(out / "spectra.csv")
    names = list(spectra.columns)
    assert names[0] == "energy_eV" and names[1].startswith("good.xyz (C")
    assert names[2] == "water.xyz (H2O) [outside training domain]"
    assert spectra.shape == (300, 3) and np.isfinite(spectra.to_numpy()).all()
    mols = pd.read_csv(out / "molecules.csv", keep_default_na=False)
    assert list(mols["in_domain"]) == [True, False]
    assert mols["out_of_domain"][0] == ""
    assert "4 occupied valence levels" in mols["out_of_domain"][1]
    assert list(mols["formula"])[1] == "H2O" and list(mols["atoms"])[1] == 3
    html = (out / "spectra.html").read_text()
    assert "Predicted outside the model&#x27;s training domain" in html or \
        "Predicted outside the model's training domain" in html
    assert '"dash":"dash"' in html.replace(" ", "")  # the flagged curve is dashed


def test_too_many_atoms_are_refused_even_with_force(trained, tmp_path):
    ckpt, _, _ = trained
    n = 32  # decane, C10H22, as a straight line of atoms 1.2 A apart
    Z = np.array([6] * 10 + [1] * 22)
    R = np.zeros((n, 3))
    R[:, 0] = 1.2 * np.arange(n)
    big = _xyz(tmp_path / "decane.xyz", Z, R)
    r = _predict(ckpt, big, "--force", "--out", tmp_path / "out")
    assert r.exit_code == 2, r.output
    assert "decane.xyz (C10H22): 32 atoms, more than the 29 a Coulomb matrix holds" in r.output
    assert "even with --force" in r.output


def test_python_api_returns_the_flags(trained, molecule, tmp_path):
    from hpo.report import predict_xyz
    from model.inference import OutOfDomain
    from model.inference import predict_xyz as predict_spectra

    ckpt, _, _ = trained
    good, water = _good_and_water(tmp_path, *molecule)
    with pytest.raises(OutOfDomain) as err:
        predict_spectra(ckpt, [good, water])
    assert [m.name for m in err.value.refused] == ["water.xyz (H2O)"]
    found = predict_spectra(ckpt, [good, water], force=True)
    assert found.flags[0] == "" and "4 occupied valence levels" in found.flags[1]
    assert [m.in_domain for m in found.molecules] == [True, False]
    paths = predict_xyz(ckpt, [good, water], tmp_path / "out", force=True)
    assert paths.flags == found.flags and paths.names == found.names
    assert paths.molecules_csv is not None and paths.molecules_csv.is_file()


def test_old_checkpoint_without_a_domain_skips_the_range_checks(trained, molecule, tmp_path):
    ckpt, _, _ = trained
    payload = torch.load(ckpt, weights_only=True)
    del payload["domain"]
    old = tmp_path / "old.pt"
    torch.save(payload, old)
    Z, R = molecule
    squeezed = _xyz(tmp_path / "squeezed.xyz", Z, R * 0.15)  # refused by the new checkpoint
    water = _water(tmp_path)
    r = _predict(old, squeezed, "--out", tmp_path / "out")
    assert r.exit_code == 0, r.output
    assert "note: old.pt was saved before checkpoints recorded their training domain" in r.output
    r = _predict(old, water, "--out", tmp_path / "out")
    assert r.exit_code == 2 and "4 occupied valence levels" in r.output  # still checked


def test_predictions_default_under_specopt_home(trained, molecule, tmp_path, monkeypatch):
    ckpt, _, _ = trained
    Z, R = molecule
    good = _xyz(tmp_path / "good.xyz", Z, R)
    monkeypatch.setenv("SPECOPT_HOME", str(tmp_path / "home"))
    r = _predict(ckpt, good)
    assert r.exit_code == 0, r.output
    assert (tmp_path / "home" / "predictions" / "spectra.csv").is_file()
    assert (tmp_path / "home" / "predictions" / "molecules.csv").is_file()
