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
    # the molecule inside the domain is predicted, each other refused on a line of its own
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    refused = [line for line in lines if line.startswith("refused: ")]
    assert [line.split(" (")[0] for line in refused] == [
        "refused: water.xyz", "refused: chloro.xyz", "refused: squeezed.xyz"], r.output
    assert ("refused: water.xyz (H2O): element" not in r.output
            and "refused: water.xyz (H2O): 3 atoms" in r.output)
    assert "8 valence electrons" in r.output and "4 occupied valence levels" in r.output
    assert "element Cl" in r.output and "(H, C, N, O" in r.output
    assert "Coulomb-matrix norm" in refused[2]
    assert any(line.startswith("good.xyz (C") and "strongest peak at" in line for line in lines)
    assert "3 of 4 molecules" in r.output and "--force" in r.output  # the way out named
    spectra = pd.read_csv(out / "spectra.csv")
    assert list(spectra.columns)[0] == "energy_eV" and len(spectra.columns) == 2
    assert spectra.columns[1].startswith("good.xyz (C")
    mols = pd.read_csv(out / "molecules.csv", keep_default_na=False)
    assert list(mols["molecule"].str.split(" ").str[0]) == [
        "good.xyz", "water.xyz", "chloro.xyz", "squeezed.xyz"]
    assert list(mols["predicted"]) == [True, False, False, False]
    assert list(mols["in_domain"]) == [True, False, False, False]
    assert "4 occupied valence levels" in mols["out_of_domain"][1]
    assert mols["strongest_peak_eV"][1] == ""  # not predicted: no peak
    html = (out / "spectra.html").read_text()
    assert "Not predicted" in html and "chloro.xyz" in html


def test_nothing_predicted_is_an_error_and_writes_nothing(trained, molecule, tmp_path):
    ckpt, _, _ = trained
    water = _water(tmp_path)
    cl = molecule[0].copy()
    cl[np.flatnonzero(cl == 1)[0]] = 17
    chloro = _xyz(tmp_path / "chloro.xyz", cl, molecule[1])
    out = tmp_path / "out"
    r = _predict(ckpt, water, chloro, "--out", out)
    assert r.exit_code == 2, r.output
    lines = r.output.strip().splitlines()
    assert [line.split(" (")[0] for line in lines[:2]] == ["refused: water.xyz",
                                                           "refused: chloro.xyz"], r.output
    assert lines[2].startswith("error: nothing predicted: 2 of 2 molecules"), r.output
    assert "--force" in lines[2] and len(lines) == 3, r.output
    assert not out.exists()  # nothing is written when nothing is predicted


def test_help_says_how_partial_refusals_end():
    r = CliRunner().invoke(app, ["predict", "--help"], env={"COLUMNS": "100"})
    assert r.exit_code == 0, r.output
    shown = " ".join(r.output.replace("\u2502", " ").split())
    assert "only when no molecule was predicted" in shown, shown
    assert "each with its reasons" in shown and "the others are predicted" in shown, shown


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
    assert "Predicted outside" in html
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
    assert "decane.xyz (C10H22): 32 atoms" in r.output and "29" in r.output
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
    # partial: the molecules inside the domain predicted, the others left out with reasons
    part = predict_spectra(ckpt, [good, water], partial=True)
    assert part.names == [part.molecules[0].name] and part.spectra.shape == (1, 300)
    assert [m.name for m in part.refused] == ["water.xyz (H2O)"] and part.flags == [""]
    assert "4 occupied valence levels" in "; ".join(part.refused[0].reasons)
    with pytest.raises(OutOfDomain, match="1 of 1 molecules"):
        predict_spectra(ckpt, [water], partial=True)  # nothing inside: nothing to predict
    written = predict_xyz(ckpt, [good, water], tmp_path / "partial", partial=True)
    assert written.names == part.names and [m.name for m in written.refused] == \
        ["water.xyz (H2O)"]
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
    assert "note: old.pt" in r.output and "training domain" in r.output
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


# --- another sigma and Np: only a levels-first model gives them --------------------------------

@pytest.fixture(scope="module")
def levels_checkpoint(trained, tmp_path_factory):
    """A real levels-first model (output_head 'levels', 1 epoch) on the same 200 molecules."""
    import model

    _, data, _ = trained
    config = model.TrainConfig(subset=200, epochs=1, lr=1e-3, device="cpu", num_threads=1,
                               output_head="levels",
                               checkpoint_dir=tmp_path_factory.mktemp("levels"))
    result = model.train(config, data, progress=False)
    assert result.checkpoint_path is not None
    return result.checkpoint_path


def _levels_of(checkpoint, Z, R):
    """The 16 levels the levels model predicts for the molecule Z, R (eV)."""
    from data_prep import coulomb_matrix
    from model import load_checkpoint
    from model.inference import predict_levels

    net, _ = load_checkpoint(checkpoint)
    return predict_levels(net, coulomb_matrix(Z, R)[None])[0]


def _csv(out):
    return pd.read_csv(out / "spectra.csv")


def _title(out) -> str:
    """The plot page's heading."""
    import html
    import re

    found = re.search(r"<h1>(.*?)</h1>", (out / "spectra.html").read_text(), re.S)
    assert found is not None
    return html.unescape(found.group(1))


def test_levels_model_predicts_at_another_sigma_and_np(levels_checkpoint, molecule, tmp_path):
    from data_prep import broaden

    Z, R = molecule
    good = _xyz(tmp_path / "good.xyz", Z, R)
    out = tmp_path / "out"
    r = _predict(levels_checkpoint, good, "--sigma", "0.1", "--n-points", "700", "--out", out)
    assert r.exit_code == 0, r.output
    assert "sigma 0.1 eV, Np 700" in r.output and "trained at sigma 0.5 eV, Np 300" in r.output
    spectra = _csv(out)
    assert spectra.shape == (700, 2)
    grid = np.linspace(-30.0, 0.0, 700)
    np.testing.assert_allclose(spectra["energy_eV"], grid, atol=1e-6)
    got = spectra.iloc[:, 1].to_numpy()
    levels = _levels_of(levels_checkpoint, Z, R)
    assert (levels > -29).all() and (levels < -1).all()  # whole peaks inside the window
    # 16 unit-area Gaussians: the area is 16 whatever sigma and Np
    assert np.trapezoid(got, grid) == pytest.approx(16, rel=1e-3)
    want = broaden(levels, 0.1, 700)
    assert np.abs(got - want).max() < 1e-4 * want.max()
    # narrower Gaussians than at the model's own sigma: a higher highest point
    assert got.max() > 1.2 * broaden(levels, 0.5, 700).max()
    peak = pd.read_csv(out / "molecules.csv")["strongest_peak_eV"][0]
    assert np.abs(grid - peak).argmin() == got.argmax()  # a point of the 700-point grid
    title = _title(out)
    assert "sigma 0.1 eV, Np 700" in title and levels_checkpoint.name in title, title
    assert "trained at sigma 0.5 eV, Np 300" in title, title
    from tests.support import parse_report, plotly_values

    fig = next(iter(parse_report(out / "spectra.html").figures.values()))
    np.testing.assert_allclose(plotly_values(fig["data"][0]["x"]), grid)
    np.testing.assert_allclose(plotly_values(fig["data"][0]["y"]), got, rtol=1e-6, atol=1e-9)


def test_levels_model_another_np_alone_keeps_its_sigma(levels_checkpoint, molecule, tmp_path):
    from data_prep import broaden

    Z, R = molecule
    good = _xyz(tmp_path / "good.xyz", Z, R)
    r = _predict(levels_checkpoint, good, "--np", "500", "--out", tmp_path / "out")
    assert r.exit_code == 0, r.output
    assert "sigma 0.5 eV, Np 500" in r.output and "trained at sigma 0.5 eV" in r.output
    got = _csv(tmp_path / "out").iloc[:, 1].to_numpy()
    want = broaden(_levels_of(levels_checkpoint, Z, R), 0.5, 500)
    assert got.shape == (500,) and np.abs(got - want).max() < 1e-4 * want.max()


@pytest.mark.parametrize("which", ["levels", "linear"])
def test_default_is_the_models_own_grid(which, levels_checkpoint, trained, molecule, tmp_path):
    """No option: the model's own sigma and Np, as before; asking for them explicitly gives the
    same files."""
    from data_prep import broaden

    ckpt = levels_checkpoint if which == "levels" else trained[0]
    Z, R = molecule
    good = _xyz(tmp_path / "good.xyz", Z, R)
    r = _predict(ckpt, good, "--out", tmp_path / "default")
    assert r.exit_code == 0, r.output
    assert "spectra at sigma" not in r.output
    spectra = _csv(tmp_path / "default")
    assert spectra.shape == (300, 2)
    np.testing.assert_allclose(spectra["energy_eV"], np.linspace(-30, 0, 300), atol=1e-6)
    title = _title(tmp_path / "default")
    assert "sigma 0.5 eV, Np 300" in title and ckpt.name in title, title
    assert "trained at" not in title, title  # the model's own grid: no note
    if which == "levels":
        want = broaden(_levels_of(ckpt, Z, R), 0.5, 300)
        got = spectra.iloc[:, 1].to_numpy()
        assert np.abs(got - want).max() < 1e-4 * want.max()
    r = _predict(ckpt, good, "--sigma", "0.5", "--n-points", "300", "--out", tmp_path / "own")
    assert r.exit_code == 0, r.output
    assert "spectra at sigma" not in r.output
    for name in ("spectra.csv", "molecules.csv"):
        assert (tmp_path / "own" / name).read_text() == \
            (tmp_path / "default" / name).read_text().replace("/default/", "/own/")


@pytest.mark.parametrize("option", [["--sigma", "0.1"], ["--n-points", "700"],
                                    ["--sigma", "0.1", "--n-points", "700"]])
def test_linear_model_refuses_another_grid(option, trained, molecule, tmp_path):
    from model.errors import ConfigError

    ckpt = trained[0]
    good = _xyz(tmp_path / "good.xyz", *molecule)
    out = tmp_path / "out"
    r = _predict(ckpt, good, *option, "--out", out)
    assert r.exit_code == ConfigError.exit_code, r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1, r.output
    assert lines[0].startswith("error: ") and "sigma 0.5 eV, Np 300" in lines[0], lines[0]
    assert "'linear'" in lines[0] and "output_head='levels'" in lines[0], lines[0]
    assert not out.exists()  # refused before anything is written


@pytest.mark.parametrize("which", ["levels", "linear"])
@pytest.mark.parametrize("option, words", [
    (["--sigma", "nan"], ["--sigma 'nan'", "finite"]),  # the option's parser
    (["--sigma", "0"], ["sigma", "positive", "0.0"]),
    (["--sigma", "-0.1"], ["sigma", "positive", "-0.1"]),
    (["--n-points", "1"], ["Np", ">= 2", "got 1"]),
])
def test_impossible_grid_is_refused(which, option, words, levels_checkpoint, trained, molecule,
                                    tmp_path):
    """Refused in one line whatever the head (a NaN sigma would otherwise pass a spectrum
    head's own-sigma check), and nothing written."""
    ckpt = levels_checkpoint if which == "levels" else trained[0]
    good = _xyz(tmp_path / "good.xyz", *molecule)
    out = tmp_path / "out"
    r = _predict(ckpt, good, *option, "--out", out)
    assert r.exit_code == 2, r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.output
    assert all(word in lines[0] for word in words), r.output
    assert not out.exists()


def test_python_api_takes_sigma_and_np(levels_checkpoint, trained, molecule, tmp_path):
    from hpo.report import predict_xyz
    from model.errors import ConfigError

    good = _xyz(tmp_path / "good.xyz", *molecule)
    paths = predict_xyz(levels_checkpoint, [good], tmp_path / "out", sigma=0.1, n_points=700)
    assert paths.spectra.shape == (1, 700) and paths.n_points == 700
    assert (paths.sigma, paths.trained_sigma, paths.trained_n_points) == (0.1, 0.5, 300)
    assert paths.regridded
    np.testing.assert_allclose(paths.grid, np.linspace(-30, 0, 700))
    own = predict_xyz(levels_checkpoint, [good], tmp_path / "own")
    assert (own.sigma, own.n_points, own.regridded) == (0.5, 300, False)
    with pytest.raises(ConfigError, match="sigma 0.5 eV, Np 300 only"):
        predict_xyz(trained[0], [good], tmp_path / "linear", sigma=0.1)
    assert not (tmp_path / "linear").exists()


def test_help_says_only_a_levels_model_changes_sigma_and_np():
    r = CliRunner().invoke(app, ["predict", "--help"], env={"COLUMNS": "100"})
    assert r.exit_code == 0, r.output
    shown = " ".join(r.output.replace("\u2502", " ").split())
    assert "--sigma" in shown and "--n-points" in shown
    # the heads that can and cannot change the grid
    assert all(word in shown for word in ("levels-first", "linear", "softplus", "refuses")), shown


# --- coordinates no molecule has (issue 20) -----------------------------------------------------

@pytest.mark.parametrize(("edit", "words"), [
    (lambda R: R.__setitem__((0, 0), 1e308), "too large"),  # finite in A, inf in bohr
    (lambda R: R.__setitem__((1, slice(None)), R[0]), "same position"),  # an infinite entry
])
def test_impossible_coordinates_are_refused_even_with_force(trained, molecule, tmp_path, edit,
                                                            words):
    """A coordinate of 1e308 A was predicted and marked in-domain (its distances overflow to
    inf in bohr, its Coulomb entries to 0); two atoms at one place have an infinite entry."""
    ckpt, _, _ = trained
    Z, R = molecule
    R = R.copy()
    edit(R)
    bad = _xyz(tmp_path / "bad.xyz", Z, R)
    good = _xyz(tmp_path / "good.xyz", *molecule)
    for force in ([], ["--force"]):
        r = _predict(ckpt, good, bad, "--out", tmp_path / "out", *force)
        assert r.exit_code == 2, r.output
        assert "error: " in r.output and "bad.xyz" in r.output and words in r.output
        assert "Traceback" not in r.output and not (tmp_path / "out").exists()


def test_an_atom_far_from_the_others_is_out_of_domain(trained, molecule, tmp_path):
    """One atom 1e6 A away: its Coulomb entries are ~0, the norm can stay in range, but it is no
    longer bonded to the molecule."""
    ckpt, _, _ = trained
    Z, R = molecule
    R = R.copy()
    R[-1] += 1e6
    far = _xyz(tmp_path / "far.xyz", Z, R)
    r = _predict(ckpt, far, "--out", tmp_path / "out")
    assert r.exit_code == 2, r.output
    assert "far.xyz" in r.output and "nearest" in r.output and "Traceback" not in r.output
    r = _predict(ckpt, far, "--out", tmp_path / "out", "--force")
    assert r.exit_code == 0, r.output
    assert "[outside training domain" in r.output


def test_huge_grid_asked_of_a_levels_model_is_one_line(levels_checkpoint, molecule, tmp_path):
    for option, value in (("--np", "100000000"), ("--sigma", "1e9")):
        r = _predict(levels_checkpoint, _xyz(tmp_path / "m.xyz", *molecule), option, value,
                     "--out", tmp_path / "out")
        assert r.exit_code == 2, r.output
        assert r.output.startswith("error: ") and "at most" in r.output
        assert "Traceback" not in r.output


# --- the README's worked example (docs/examples) ------------------------------------------------

def test_readme_example_toluene_predicted_benzene_refused(trained, repo_root, tmp_path):
    """The README's command: toluene (QM9 molecule 930) is predicted, benzene refused with why:
    15 occupied valence levels, one fewer than the 16 the model predicts."""
    ckpt, _, _ = trained
    examples = repo_root / "docs" / "examples"
    out = tmp_path / "out"
    r = _predict(ckpt, examples / "toluene.xyz", examples / "benzene.xyz", "--out", out)
    assert r.exit_code == 0, r.output
    assert "toluene.xyz (C7H8): strongest peak at" in r.output
    refused = [line for line in r.output.splitlines() if line.startswith("refused: ")]
    assert len(refused) == 1 and refused[0].startswith("refused: benzene.xyz (C6H6): "), r.output
    assert "15 occupied valence levels" in refused[0] and "16" in refused[0], refused[0]
    assert list(pd.read_csv(out / "spectra.csv").columns) == ["energy_eV", "toluene.xyz (C7H8)"]
