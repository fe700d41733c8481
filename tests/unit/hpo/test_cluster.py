"""``hpo.execution.cluster``'s checks, without a scheduler: sbatch options and time limits as SLURM
reads
them, the storage every node must reach, and one clear line when submitit or Ray is missing."""

from __future__ import annotations

import sys

import pytest
from typer.testing import CliRunner

from hpo.cli import app
from hpo.execution import cluster
from hpo.execution.cluster import ClusterError, check_storage, parse_sbatch, time_minutes
from model.errors import ConfigError


@pytest.mark.parametrize("text,minutes", [("90", 90), ("1:30", 2), ("4:00:00", 240),
                                          ("1-0", 1440), ("1-2:30", 1590),
                                          ("0-0:0:59", 1)])
def test_time_limits_in_slurm_formats(text, minutes):
    assert time_minutes(text) == minutes


@pytest.mark.parametrize("text", ["", "1h", "0", "1:2:3:4", "-5"])
def test_bad_time_limits_are_refused(text):
    with pytest.raises(ConfigError, match="--time"):
        time_minutes(text)


def test_sbatch_options_and_flags():
    assert parse_sbatch(["account=proj", "--qos = long", "requeue", "constraint=a100|h100"]) \
        == {"account": "proj", "qos": "long", "requeue": True, "constraint": "a100|h100"}
    for bad in ("=x", "account="):
        with pytest.raises(ConfigError, match="--sbatch"):
            parse_sbatch([bad])


def test_sqlite_is_refused_where_workers_may_run_on_several_nodes(caplog):
    with pytest.raises(ClusterError, match="SQLite file.*4 nodes.*postgresql"):
        check_storage("sqlite:////tmp/x.db", 4, "SLURM")
    check_storage("sqlite:////tmp/x.db", 1, "SLURM")  # one node: allowed, with a warning
    assert "single-node SLURM" in caplog.text
    check_storage("journal:////shared/x.log", 4, "Ray")  # shared file system: a warning
    assert "shared file system" in caplog.text
    check_storage("postgresql+psycopg://u:secret@db/x", 4, "SLURM")  # nothing to say


@pytest.mark.parametrize("on,package,extra", [("slurm", "submitit", "slurm"),
                                              ("ray", "ray", "ray")])
def test_missing_package_is_one_line_naming_the_extra(tmp_path, monkeypatch, on, package, extra):
    from tests.support import write_study

    monkeypatch.setitem(sys.modules, package, None)  # import fails as if not installed
    monkeypatch.setattr(cluster, "slurm_nodes", lambda partition: 1)
    monkeypatch.setenv("SPECOPT_HOME", str(tmp_path))
    path = write_study(tmp_path / "s.toml", "s", storage=f"sqlite:///{tmp_path}/s.db",
                       space={"loss": "rmse", "epochs": 1, "subset": 200}, n_trials=1)
    result = CliRunner().invoke(app, ["launch", str(path), "--on", on])
    assert result.exit_code != 0
    assert f"specopt[{extra}]" in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output


@pytest.mark.parametrize("command", ["launch", "run"])
def test_unknown_place_and_gpu_shares_on_slurm_are_refused(tmp_path, monkeypatch, command):
    from tests.support import write_study

    monkeypatch.setenv("SPECOPT_HOME", str(tmp_path))
    path = write_study(tmp_path / "s.toml", "s", storage=f"sqlite:///{tmp_path}/s.db",
                       space={"loss": "rmse", "epochs": 1, "subset": 200}, n_trials=1)
    for args, message in ((["--on", "kubernetes"], "expected one of local, slurm, ray"),
                          (["--on", "slurm", "--gpus-per-worker", "0.5"],
                           "SLURM gives whole GPUs"),
                          (["--pack", "0"], "--pack 0: must be at least 1")):
        result = CliRunner().invoke(app, [command, str(path), *args])
        assert result.exit_code == 2 and result.output.startswith("error: "), result.output
        assert message in result.output, result.output
    assert not (tmp_path / "s.db").exists()  # refused before the study was created


def test_launch_and_run_share_the_place_options():
    """One group of options (hpo.cli.options.PLACE_OPTIONS) on both commands."""
    import typer

    from hpo.cli.options import PLACE_OPTIONS

    root = typer.main.get_command(app)
    opts = {name: {o for p in root.commands[name].params
                   for o in p.opts} for name in ("launch", "run")}
    place = {"--on", "--partition", "--gpus-per-worker", "--cpus-per-worker", "--time", "--mem",
             "--sbatch", "--address", "--pack"}
    assert len(PLACE_OPTIONS) == len(place)
    assert place <= opts["launch"] and place <= opts["run"]
    assert "--wait" in opts["launch"] and "--wait" not in opts["run"]  # run always waits


def test_nodes_of_a_partition_from_sinfo(monkeypatch):
    """sinfo -N lists one line per node and partition; the default partition is starred."""
    import subprocess

    listing = "a1 gpu\na2 gpu\na1 cpu*\nb1 cpu*\nb2 cpu*\nb2 long\n"
    monkeypatch.setattr(cluster.subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(
        a, 0, stdout=listing, stderr=""))
    assert cluster.slurm_nodes("gpu") == 2
    assert cluster.slurm_nodes(None) == 3  # cpu*, the default
    assert cluster.slurm_nodes("long") == 1
    with pytest.raises(ClusterError, match="no partition 'nope'"):
        cluster.slurm_nodes("nope")
