"""``specopt data build|info|import-original`` through typer's CliRunner (the root app) and the
real command."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import numpy as np
import pytest
from typer.testing import CliRunner

from data_prep import load_levels, load_qm9pack
from hpo.cli import app

runner = CliRunner()


def test_info(tmp_path, levels_dataset):
    path = tmp_path / "d.npz"
    levels_dataset.subset(100).save(path)
    result = runner.invoke(app, ["data", "info", str(path)])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output.split("\n", 1)[1])
    assert summary["molecules"] == 100
    assert summary["train"] + summary["test"] + summary["validation"] == 100
    assert summary["provenance"]["method"] == "gfn2-xtb" and len(summary["fingerprint"]) == 16


@pytest.mark.slow
def test_info_and_train_by_bundled_name(tmp_path):
    """A bundled dataset by its name: `data info ipea1-xtb` and `train --dataset ipea1-xtb`."""
    result = runner.invoke(app, ["data", "info", "ipea1-xtb"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0].endswith("qm9_ipea1xtb_levels.npz")
    summary = json.loads(result.output.split("\n", 1)[1])
    assert summary["provenance"]["method"] == "ipea1-xtb" and summary["molecules"] > 130_000
    out = tmp_path / "run.json"
    result = runner.invoke(app, ["train", "--dataset", "ipea1-xtb", "--subset", "100",
                                 "--epochs", "1", "--device", "cpu", "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["config"]["dataset"] == "ipea1-xtb"
    result = runner.invoke(app, ["data", "info", "ipea9-xtb"])
    assert result.exit_code != 0 and "bundled name: gfn2-xtb, ipea1-xtb" in result.output


def test_info_on_a_missing_file_is_one_line(tmp_path):
    result = runner.invoke(app, ["data", "info", str(tmp_path / "nothere.npz")])
    assert result.exit_code == 2
    line = result.output.strip()
    assert line.startswith("error: ") and "\n" not in line, line
    assert str(tmp_path / "nothere.npz") in line and "gfn2-xtb" in line, line  # the bundled names


def test_build_with_limit(tmp_path):
    out = tmp_path / "levels.npz"
    result = runner.invoke(app, ["data", "build", "--limit", "60", "--out", str(out),
                                 "--workers", "1"])
    assert result.exit_code == 0, result.output
    ds = load_levels(out)
    counts = ds.provenance["molecules"]
    assert counts["total"] == 60 and counts["ok"] == len(ds)
    assert counts["ok"] + counts["fewer than 16 occupied levels"] + counts[
        "calculation failed"] == 60
    assert counts["fewer than 16 occupied levels"] > 0  # methane, water, ... are dropped
    printed = re.findall(r"\{.*?\}", result.output)  # after the progress bar
    assert json.loads(printed[-1]) == counts
    assert ds.provenance["source"].startswith("qm9pack") and ds.provenance["command"]
    assert (tmp_path / "levels.npz.parts" / "gfn2-xtb").is_dir()
    geoms = load_qm9pack()
    assert set(ds.index.tolist()) <= set(geoms.index[:60].tolist())


def write_xyz(folder, geoms, row):
    n, idx = int(geoms.n_atoms[row]), int(geoms.index[row])
    atoms = [f"{'HCNOF'[[1, 6, 7, 8, 9].index(int(z))]} {x:.10f} {y:.10f} {w:.10f} 0.0"
             for z, (x, y, w) in zip(geoms.Z[row, :n], geoms.R[row, :n].tolist(), strict=True)]
    text = "\n".join([str(n), f"gdb {idx}\t1.0", *atoms, "1.0", "C C", "InChI= InChI="])
    (folder / f"dsgdb9nsd_{idx:06d}.xyz").write_text(text + "\n")


def test_build_from_xyz_files_skips_and_counts_bad_ones(tmp_path):
    geoms = load_qm9pack()
    xyz = tmp_path / "xyz"
    xyz.mkdir()
    for row in (0, 60000, 60001):
        write_xyz(xyz, geoms, row)
    (xyz / "dsgdb9nsd_999999.xyz").write_text("2\ngdb 999999\nC 0 0 0\nU 1 0 0\n")
    out = tmp_path / "x.npz"
    result = runner.invoke(app, ["data", "build", "--xyz-dir", str(xyz), "--out", str(out),
                                 "--workers", "1"])
    assert result.exit_code == 0, result.output
    ds = load_levels(out)
    p = ds.provenance
    assert p["bad_files"] == 1 and "unknown element 'U'" in p["bad_file_examples"][0]
    assert p["molecules"]["total"] == 3 and p["molecules"]["ok"] == 2  # methane dropped
    np.testing.assert_array_equal(ds.index, geoms.index[[60000, 60001]])


def test_build_bad_method_and_empty_folder_are_one_line(tmp_path):
    result = runner.invoke(app, ["data", "build", "--method", "dft", "--out",
                                 str(tmp_path / "x.npz")])
    assert result.exit_code == 2 and result.output.startswith("error: unknown method 'dft'")
    assert len(result.output.strip().splitlines()) == 1
    result = runner.invoke(app, ["data", "build", "--xyz-dir", str(tmp_path), "--out",
                                 str(tmp_path / "x.npz")])
    assert result.exit_code == 2 and result.output.startswith("error: "), result.output
    assert ".xyz" in result.output and str(tmp_path) in result.output


def test_import_original(tmp_path, levels_dataset):
    folder = tmp_path / "orig"
    folder.mkdir()
    ds = levels_dataset.subset(30)
    c = np.zeros((30, 29, 29), np.float32)
    c[:, 0, 0] = -36.86  # negated, as stored
    np.savez(folder / "coulomb.npz", coulomb=c)
    energies = ds.levels.astype(np.float64)
    energies[0, :4] = -10000
    np.savetxt(folder / "energies.txt", energies)
    out = tmp_path / "imported.npz"
    result = runner.invoke(app, ["data", "import-original", str(folder), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert '"missing levels (-10000)": 1' in result.output and "original spectra: \"absent\"" \
        in result.output
    assert len(load_levels(out)) == 29
    result = runner.invoke(app, ["data", "import-original", str(tmp_path / "none"), "--out",
                                 str(out)])
    assert result.exit_code == 2 and "not a folder" in result.output


@pytest.mark.slow
def test_the_installed_command(tmp_path, levels_dataset):
    exe = shutil.which("specopt")
    assert exe, "the specopt command is not installed (pip install -e .)"
    path = tmp_path / "d.npz"
    levels_dataset.subset(50).save(path)
    proc = subprocess.run([exe, "data", "info", str(path)], capture_output=True, text=True,
                          timeout=120, env={**os.environ})
    assert proc.returncode == 0, proc.stderr
    assert '"molecules": 50' in proc.stdout
