"""Facts with one home (issue 22): every error class in ``model/errors.py``, a leaf; torch's
threads set by ``model.device.set_threads`` alone."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import model.errors
from model.errors import SpecoptError

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ("data_prep", "model", "hpo", "studies", "bench")
ERRORS = ROOT / "model" / "errors.py"


def _modules(*packages: str):
    for package in packages:
        for path in sorted((ROOT / package).rglob("*.py")):
            yield path, ast.parse(path.read_text(), str(path))


def _base_names(node: ast.ClassDef) -> set[str]:
    return {b.id if isinstance(b, ast.Name) else b.attr for b in node.bases
            if isinstance(b, ast.Name | ast.Attribute)}


def test_every_error_class_is_in_model_errors():
    ours = {name for name, obj in vars(model.errors).items()
            if isinstance(obj, type) and issubclass(obj, SpecoptError)}
    assert {"ClusterError", "OutOfDomain", "InfrastructureError"} <= ours
    elsewhere = [f"{path.relative_to(ROOT)}:{node.lineno} {node.name}"
                 for path, tree in _modules(*PRODUCT) if path != ERRORS
                 for node in ast.walk(tree)
                 if isinstance(node, ast.ClassDef) and _base_names(node) & ours]
    assert not elsewhere, f"error classes outside model/errors.py: {elsewhere}"


def test_model_errors_is_a_leaf():
    tree = ast.parse(ERRORS.read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree)
                if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module}
    assert imported <= set(sys.stdlib_module_names) | {"__future__"}, imported


def test_torch_threads_are_set_in_one_place():
    """``model.device.set_threads`` (data_prep's one-thread sections aside: below model)."""
    calls = [f"{path.relative_to(ROOT)}:{node.lineno}" for path, tree in _modules("model", "hpo")
             for node in ast.walk(tree)
             if isinstance(node, ast.Attribute) and node.attr == "set_num_threads"]
    assert [c.split(":")[0] for c in calls] == ["model/device.py"], calls
