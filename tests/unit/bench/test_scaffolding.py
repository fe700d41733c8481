"""bench/ and tests/ stay outside the product: the product never imports them, the bench scripts
are modules of the ``bench`` package (no ``sys.path`` edits), and the objective's metric name
comes from ``model.contract``."""

from __future__ import annotations

import ast
import importlib
import pkgutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from model.contract import Metric

ROOT = Path(__file__).resolve().parents[3]
PRODUCT = ("data_prep", "model", "hpo", "studies")
BENCH_MODULES = sorted(m.name for m in pkgutil.iter_modules([str(ROOT / "bench")]))


def _trees(*folders: str) -> Iterator[tuple[Path, ast.AST]]:
    for folder in folders:
        for path in sorted((ROOT / folder).rglob("*.py")):
            yield path, ast.parse(path.read_text(), str(path))


def _imported(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        return [node.module]
    return []


def test_the_product_never_imports_bench_or_tests():
    for path, tree in _trees(*PRODUCT):
        for node in ast.walk(tree):
            for name in _imported(node):
                assert name.split(".")[0] not in ("bench", "tests"), (str(path), name)


def test_no_bench_script_edits_sys_path():
    for path, tree in _trees("bench"):
        for node in ast.walk(tree):
            is_sys_path = (isinstance(node, ast.Attribute) and node.attr == "path"
                           and isinstance(node.value, ast.Name) and node.value.id == "sys")
            assert not is_sys_path, f"{path}:{node.lineno}: run it as python -m bench.{path.stem}"


@pytest.mark.parametrize("name", BENCH_MODULES)
def test_every_bench_script_imports_as_a_module_of_the_package(name):
    module = importlib.import_module(f"bench.{name}")
    assert module.__doc__, f"bench/{name}.py says what it measures"


def test_the_objectives_metric_name_is_written_in_model_contract_only():
    for path, tree in _trees("hpo", "bench"):
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and node.value == Metric.FAIR_ACCURACY:
                pytest.fail(f"{path}:{node.lineno}: use model.contract.Metric.FAIR_ACCURACY")
