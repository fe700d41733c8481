"""Helpers for tests of studies and workers (tiny real studies, waiting on trial states; also
used by ``bench/chaos.py``) and of the HTML report (``ReportPage`` parses its figures, notes,
tables and scripts)."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from hpo.storage.database import open_storage
from model.contract import TrialAttr


def write_study(path: Path, name: str, *, space: dict, storage: str, sampler: str = "grid",
                pruner: str = "none", n_trials: int | None = None, heartbeat=(1, 3),
                artifacts: Path | None = None, dataset: str | None = None) -> Path:
    """A study TOML (JSON values are valid TOML for strings, numbers and lists)."""
    dataset = dataset if dataset is not None else os.environ.get("SPECOPT_TEST_DATASET")
    lines = [f"name = {json.dumps(name)}", f"storage = {json.dumps(storage)}"]
    if artifacts is not None:
        lines.append(f"artifacts = {json.dumps(str(artifacts))}")
    lines += ["[sampler]", f"name = {json.dumps(sampler)}", "seed = 0",
              "[pruner]", f"name = {json.dumps(pruner)}"]
    if n_trials is not None:
        lines += ["[budget]", f"n_trials = {n_trials}"]
    lines += ["[heartbeat]", f"interval = {heartbeat[0]}", f"grace = {heartbeat[1]}"]
    if dataset:
        lines += ["[train]", f"dataset = {json.dumps(str(dataset))}", 'device = "cpu"']
    else:
        lines += ["[train]", 'device = "cpu"']
    lines.append("[space]")
    lines += [f"{k} = {json.dumps(v)}" for k, v in space.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def start_worker(study_file: Path, *extra: str, index: int = 0, threads: int = 1,
                 log: Path | None = None, env: dict[str, str] | None = None) -> subprocess.Popen:
    """``specopt worker`` in a subprocess (inherits the environment, plus ``env``: e.g.
    ``SPECOPT_FAULT``), as ``launch`` starts it."""
    cmd = [sys.executable, "-m", "hpo.cli", "worker", str(study_file), "--worker-index",
           str(index), "--threads", str(threads), *extra]
    out = open(log, "ab") if log is not None else subprocess.DEVNULL
    return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                            env={**os.environ, **(env or {})})


def run_worker_to_end(study_file: Path, *extra: str, timeout: float = 180, **options) -> int:
    """:func:`start_worker` (same options), wait for it to end and return its exit status; a
    worker still running after ``timeout`` seconds is killed (and the wait raises)."""
    proc = start_worker(study_file, *extra, **options)
    try:
        return proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()


def study_trials(study_name: str, url: str, states=None) -> list[FrozenTrial]:
    """The trials of a study in any storage URL that :func:`hpo.storage.database.open_storage` takes
    (``journal:///`` too), read without heartbeats."""
    storage = open_storage(url, heartbeat_interval=None)
    return optuna.load_study(study_name=study_name, storage=storage).get_trials(states=states)


def wait_for_running(study_name: str, url: str, *, min_epochs: int = 1, timeout: float = 120,
                     procs=()) -> FrozenTrial:
    """The first RUNNING trial that has reported ``min_epochs`` epochs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            for t in study_trials(study_name, url, states=(TrialState.RUNNING,)):
                if len(t.intermediate_values) >= min_epochs and TrialAttr.WORKER in t.user_attrs:
                    return t
        except KeyError:  # the study does not exist yet
            pass
        for p in procs:
            if p.poll() is not None:
                raise RuntimeError(f"worker {p.pid} exited with {p.returncode} too early")
        time.sleep(0.2)
    raise TimeoutError(f"no trial of {study_name} reached epoch {min_epochs} in {timeout} s")


def small_study_config(root: Path, name: str, space: dict, n_trials: int, **extra):
    """A small real study (200 molecules, 2 epochs, CPU, SQLite and artifacts under ``root``)."""
    from hpo.study.config import study_config_from_dict

    return study_config_from_dict({
        "name": name, "storage": f"sqlite:///{root / 'studies.db'}",
        "artifacts": str(root / "artifacts" / name),
        "sampler": extra.pop("sampler", {"name": "random", "seed": 1}), "pruner": {"name": "none"},
        "budget": {"n_trials": n_trials},
        "train": {"dataset": os.environ.get("SPECOPT_TEST_DATASET") or None, "device": "cpu",
                  "num_threads": 1},
        "space": {"n_points": 300, "lr": 1e-3, "epochs": 2, "subset": 200, **space},
        **extra,
    })


class ReportPage(HTMLParser):
    """A report page, parsed: its figures (plotly JSON by key), figure notes, tables (rows of cell
    text), every element (tag, attributes; comments as ``"!--"``), every script (attributes, text)
    and the text outside scripts."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.figures: dict[str, dict] = {}
        self.notes: dict[str, str] = {}
        self.tables: dict[str, list[list[str]]] = {}
        self.tags: list[tuple[str, dict]] = []
        self.scripts: list[tuple[dict, str]] = []
        self.text: list[str] = []
        self._script: dict | None = None
        self._note: str | None = None
        self._table: list[list[str]] | None = None
        self._cell: list[str] | None = None
        self._data: list[str] = []
        self.feed(text)
        self.close()

    @property
    def links(self) -> list[dict]:
        """The elements that could load something: link, img and iframe (with ``tag``)."""
        return [{"tag": t, **a} for t, a in self.tags if t in ("link", "img", "iframe")]

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append((tag, a))
        if tag == "script":
            self._script, self._data = a, []
        elif tag == "p" and a.get("data-figure-note"):
            self._note, self._data = a["data-figure-note"], []
        elif tag == "table" and a.get("data-table"):
            self._table = self.tables[a["data-table"]] = []
        elif tag == "tr" and self._table is not None:
            self._table.append([])
        elif tag in ("td", "th") and self._table is not None:
            self._cell = []

    def handle_endtag(self, tag):
        if tag == "script" and self._script is not None:
            body = "".join(self._data)
            self.scripts.append((self._script, body))
            if self._script.get("type") == "application/json" and self._script.get("data-figure"):
                self.figures[self._script["data-figure"]] = json.loads(body)
            self._script = None
        elif tag == "p" and self._note is not None:
            self.notes[self._note] = "".join(self._data)
            self._note = None
        elif tag in ("td", "th") and self._cell is not None and self._table is not None:
            self._table[-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data):
        if self._script is not None or self._note is not None:
            self._data.append(data)
        if self._script is None:
            self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)

    def handle_comment(self, data):
        self.tags.append(("!--", {"text": data}))


def parse_report(path: Path) -> ReportPage:
    """The report page at ``path``, parsed."""
    return ReportPage(path.read_text())


def plotly_values(v) -> np.ndarray:
    """A plotly array: a list, or plotly's typed-array form {"dtype", "bdata"}."""
    if isinstance(v, dict) and "bdata" in v:
        return np.frombuffer(base64.b64decode(v["bdata"]), dtype=np.dtype(v["dtype"]))
    return np.asarray([np.nan if x is None else x for x in v], dtype=float)
