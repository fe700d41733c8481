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
    # every score beside the mean training spectrum's, and the skill over it
    base = saved["baseline"]["validation"]
    fair = next(line for line in r.output.splitlines() if line.strip().startswith("fair_acc"))
    assert f"baseline {100 * base['fair_accuracy']:.2f} %" in fair
    assert f"{100 * saved['metrics']['skill']:.2f} %" in r.output


def test_help_explains_the_options():
    r = _run("--help")
    assert r.exit_code == 0
    for option in ("--sigma", "--np", "--loss", "--lr", "--batch-size", "--epochs", "--seed",
                   "--patience", "--output-head", "--amp", "--compile", "--reference-sigma"):
        assert option in r.output


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
