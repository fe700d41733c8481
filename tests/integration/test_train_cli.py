"""``specopt train``: a thin CLI over ``model.train``."""

import json

import pytest
import torch
from typer.testing import CliRunner

from hpo.cli import app


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def dataset_file(levels_dataset, tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "levels.npz"
    levels_dataset.save(path)
    return path


def _run(*args):
    return CliRunner().invoke(app, ["train", *map(str, args)])


@pytest.mark.slow
def test_train_prints_metrics_and_writes_json(dataset_file, tmp_path):
    out = tmp_path / "run.json"
    ckpt = tmp_path / "ckpt"
    r = _run("--dataset", dataset_file, "--subset", 100, "--epochs", 2, "--lr", 1e-3,
             "--num-threads", 1, "--device", "cpu", "--json", out, "--checkpoint-dir", ckpt)
    assert r.exit_code == 0, r.output
    assert "completed after 2 epochs on cpu" in r.output
    assert "validation split (held out)" in r.output and "fair_accuracy" in r.output
    saved = json.loads(out.read_text())
    assert len(saved["history"]) == 2 and 0 < saved["metrics"]["accuracy"] < 1
    assert saved["config"]["lr"] == 1e-3 and (ckpt / "checkpoint.pt").is_file()
    assert _saved_at(r.output) == ckpt / "checkpoint.pt"  # --checkpoint-dir: --out's old name
    # every score beside the mean training spectrum's, and the skill over it
    base = saved["baseline"]["validation"]
    fair = next(line for line in r.output.splitlines() if line.strip().startswith("fair_acc"))
    assert f"baseline {100 * base['fair_accuracy']:.2f} %" in fair
    assert f"{100 * saved['metrics']['skill']:.2f} %" in r.output


def _saved_at(output: str):
    """The checkpoint path ``specopt train`` printed ("model saved: PATH")."""
    from pathlib import Path

    lines = [line for line in output.splitlines() if line.startswith("model saved: ")]
    assert len(lines) == 1, output
    return Path(lines[0].removeprefix("model saved: ").split(" (")[0])


@pytest.mark.slow
def test_train_saves_the_model_and_predict_reads_it(dataset_file, repo_root, tmp_path,
                                                   monkeypatch):
    """A bare run keeps its best model under $SPECOPT_HOME/train/ and says where; `specopt
    predict` takes that path (the README's example molecule, toluene, inside its domain)."""
    home = tmp_path / "home"
    monkeypatch.setenv("SPECOPT_HOME", str(home))
    r = _run("--dataset", dataset_file, "--subset", 200, "--epochs", 1, "--num-threads", 1,
             "--device", "cpu")
    assert r.exit_code == 0, r.output
    saved = _saved_at(r.output)
    assert saved.is_file() and saved.name == "checkpoint.pt", saved
    assert saved.parent.parent == home / "train", saved  # one folder per run
    assert f"specopt predict {saved} " in r.output  # how to use it, said
    example = repo_root / "docs" / "examples" / "toluene.xyz"
    p = CliRunner().invoke(app, ["predict", str(saved), str(example), "--out",
                                 str(tmp_path / "pred")])
    assert p.exit_code == 0, p.output
    assert "toluene.xyz (C7H8): strongest peak at" in p.output and "refused" not in p.output
    assert (tmp_path / "pred" / "spectra.csv").is_file()
    # a second run: a folder of its own, the first model kept
    r = _run("--dataset", dataset_file, "--subset", 200, "--epochs", 1, "--num-threads", 1,
             "--device", "cpu", "--out", tmp_path / "mine")
    assert r.exit_code == 0, r.output
    assert _saved_at(r.output) == tmp_path / "mine" / "checkpoint.pt"
    assert (tmp_path / "mine" / "checkpoint.pt").is_file() and saved.is_file()
    assert len(list((home / "train").iterdir())) == 1


def test_an_unwritable_out_is_refused_before_training(dataset_file, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    r = _run("--dataset", dataset_file, "--subset", 60, "--epochs", 1, "--device", "cpu",
             "--out", blocker / "model")
    assert r.exit_code == 2, r.output
    assert r.output.startswith("error: ") and "is a file" in r.output, r.output
    assert "epoch" not in r.output  # said before the run


def test_help_explains_the_options():
    r = _run("--help")
    assert r.exit_code == 0
    for option in ("--sigma", "--np", "--loss", "--lr", "--batch-size", "--epochs", "--seed",
                   "--patience", "--output-head", "--amp", "--compile", "--reference-sigma"):
        assert option in r.output
    import re

    assert re.search(r"--out\b", r.output) and "--checkpoint-dir" not in r.output  # old name


@pytest.mark.parametrize(("args", "code", "message"), [
    (["--loss", "l3"], 2, "unknown loss 'l3'"),
    (["--sigma", "0.7", "--reference-sigma", "0.5"], 2, "below sigma"),
    (["--lr", "1e30", "--epochs", "3"], 1, "error: training failed in epoch"),
    (["--device", "cuda"], 2, "CUDA is not available"),
])
def test_bad_input(dataset_file, args, code, message):
    if "cuda" in args and torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    r = _run("--dataset", dataset_file, "--subset", 60, "--num-threads", 1, *args)
    assert r.exit_code == code
    assert message in r.output


_LIMITED = """
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, ({limit}, {limit}))
sys.argv = ["specopt", "train", "--full", "--np", "9000", "--epochs", "1", "--device", "cpu"]
from hpo.cli import app
app(prog_name="specopt")
"""


@pytest.mark.slow
def test_a_run_needing_more_memory_than_allowed_is_refused_before_it_starts(tmp_path):
    """Every molecule at Np 9000 needs about 11 GB; under a real address-space limit of 4 GiB
    the command says so in one line before preparing anything (it used to die in the
    allocator with a traceback)."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "SPECOPT_HOME": str(tmp_path), "SPECOPT_CACHE": str(tmp_path / "c")}
    r = subprocess.run([sys.executable, "-c", _LIMITED.format(limit=4 * 2**30)], env=env,
                       capture_output=True, text=True, timeout=300)
    out = r.stdout + r.stderr
    assert r.returncode == 2, out
    assert "error: " in out and "memory" in out and "GB" in out and "Traceback" not in out
    assert not (tmp_path / "c").exists() or not any((tmp_path / "c").rglob("*spectra*"))
