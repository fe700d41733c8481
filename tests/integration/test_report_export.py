"""``specopt export-best`` (the best trial ready to share) and ``specopt predict`` (spectra of new
molecules from .xyz files with the exported checkpoint), end to end through the command line."""

from __future__ import annotations

import json
import os

import numpy as np
import optuna
import pandas as pd
import pytest
from typer.testing import CliRunner

from hpo.cli import app

SYMBOLS = {1: "H", 6: "C", 7: "N", 8: "O", 9: "F"}


@pytest.fixture(scope="module")
def exported(report_study, tmp_path_factory):
    out = tmp_path_factory.mktemp("export")
    r = CliRunner().invoke(app, ["export-best", "tiny", "--storage", report_study.url,
                                 "--out", str(out)])
    assert r.exit_code == 0, r.output
    return report_study.load(), report_study, out, r.output


def _artifact(study, trial, built, name) -> bytes:
    meta = {m.filename: m.artifact_id for m in optuna.artifacts.get_all_artifact_meta(
        trial, storage=study._storage)}
    store = optuna.artifacts.FileSystemArtifactStore(str(built.artifacts))
    with store.open_reader(meta[name]) as f:
        return f.read()


def test_export_best_writes_everything(exported):
    study, built, out, output = exported
    best = study.best_trial
    params = json.loads((out / "params.json").read_text())
    assert params["trial"] == best.number and params["searched"] == best.params
    assert params["settings"]["n_points"] == 300 and params["settings"]["epochs"] == 2
    assert params["objectives"]["fair_accuracy"] == pytest.approx(best.value)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["validation"] == best.user_attrs["metrics"]
    assert metrics["device"] == "cpu" and metrics["epochs_run"] == 2
    assert (out / "predictions.npz").read_bytes() == _artifact(study, best, built,
                                                              "predictions.npz")
    assert (out / "checkpoint.pt").read_bytes() == _artifact(study, best, built, "checkpoint.pt")
    csv = pd.read_csv(out / "predictions.csv")
    z = np.load(out / "predictions.npz")
    assert len(csv) == len(z["pred"]) and list(csv["molecule"]) == list(z["index"])
    assert csv["accuracy"].mean() == pytest.approx(best.user_attrs["metrics"]["accuracy"],
                                                   abs=1e-5)
    assert csv.shape[1] == 2 + 2 * z["pred"].shape[1]
    assert (out / "report.html").is_file() and (out / "results.csv").is_file()
    assert f"| trial | {best.number} |" in output and "checkpoint: " in output


def test_checkpoint_reproduces_the_validation_predictions(exported):
    """The exported model, on the validation molecules' Coulomb matrices, gives the exported
    validation predictions."""
    import model
    from data_prep import load_levels, prepare

    study, built, out, _ = exported
    best = study.best_trial
    net, meta = model.load_checkpoint(out / "checkpoint.pt")
    s = best.user_attrs["params"]
    data = prepare(load_levels(os.environ.get("SPECOPT_TEST_DATASET") or None), s["sigma"],
                   s["n_points"], subset=s["subset"])
    z = np.load(out / "predictions.npz")
    rows = data.validation_rows
    assert list(data.index[rows]) == list(z["index"])
    np.testing.assert_allclose(model.predict(net, data.coulomb[rows]), z["pred"], atol=2e-5)
    np.testing.assert_allclose(meta["grid"], z["grid"])


def _write_xyz(path, index, Z, R):
    n = int((Z > 0).sum())
    lines = [str(n), f"gdb {index}\t0\t0\t0"]
    lines += [f"{SYMBOLS[int(z)]}\t{float(x)!r}\t{float(y)!r}\t{float(w)!r}"
              for z, (x, y, w) in zip(Z[:n], R[:n], strict=True)]
    path.write_text("\n".join(lines) + "\n")


def test_predict_from_xyz_files(exported, tmp_path):
    """Two validation molecules written as QM9 .xyz files: `specopt predict` gives the same
    spectra as the exported validation predictions, as CSV and as an offline plot."""
    from data_prep import load_qm9pack

    study, _, out, _ = exported
    z = np.load(out / "predictions.npz")
    geoms = load_qm9pack()  # cached by the study's data preparation
    paths = []
    for k in (0, 1):
        row = int(geoms.rows_for(z["index"][k : k + 1])[0])
        p = tmp_path / f"dsgdb9nsd_{int(z['index'][k]):06d}.xyz"
        _write_xyz(p, int(z["index"][k]), geoms.Z[row], geoms.R[row])
        paths.append(p)
    r = CliRunner().invoke(app, ["predict", str(out / "checkpoint.pt"), *map(str, paths),
                                 "--out", str(tmp_path / "pred")])
    assert r.exit_code == 0, r.output
    csv = pd.read_csv(tmp_path / "pred" / "spectra.csv")
    # each column named by its file and formula: "dsgdb9nsd_005291.xyz (C5H5NO2)"
    assert csv.columns[0] == "energy_eV"
    assert [c.split(" (")[0] for c in csv.columns[1:]] == [p.name for p in paths]
    np.testing.assert_allclose(csv["energy_eV"], z["grid"], atol=1e-6)
    for k in range(len(paths)):
        np.testing.assert_allclose(csv.iloc[:, k + 1], z["pred"][k], atol=1e-4, rtol=1e-4)
    html = (tmp_path / "pred" / "spectra.html").read_text()
    assert 'data-figure="spectra"' in html and "<script src" not in html
    assert "strongest peak at" in r.output


def test_predict_bad_input_is_one_line(exported, tmp_path):
    _, _, out, _ = exported
    bad = tmp_path / "bad.xyz"
    bad.write_text("3\ncomment\nC 0 0 0\n")
    runner = CliRunner()
    r = runner.invoke(app, ["predict", str(out / "checkpoint.pt"), str(bad)])
    assert r.exit_code == 2 and "malformed" in r.output and "Traceback" not in r.output
    r = runner.invoke(app, ["predict", str(tmp_path / "none.pt"), str(bad)])
    assert r.exit_code == 2 and "checkpoint not found" in r.output


def test_export_from_a_moved_artifact_folder(report_study, tmp_path):
    """--artifacts points at the study's artifacts when they are not where the study says."""
    import shutil

    moved = tmp_path / "moved"
    shutil.copytree(report_study.artifacts, moved)
    r = CliRunner().invoke(app, ["export-best", "tiny", "--storage", report_study.url,
                                 "--artifacts", str(moved), "--out", str(tmp_path / "x")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "x" / "checkpoint.pt").is_file()
    r = CliRunner().invoke(app, ["export-best", "tiny", "--storage", report_study.url,
                                 "--artifacts", str(tmp_path / "nowhere"),
                                 "--out", str(tmp_path / "y")])
    assert r.exit_code == 2 and "artifact folder not found" in r.output
