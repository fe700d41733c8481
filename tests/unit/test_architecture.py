"""The import rules of docs/ARCHITECTURE.md, checked on the source: data flows one way."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROJECT = ("data_prep", "model", "hpo", "studies")
LEAVES = ("model.contract", "model.errors")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Every module a file imports (absolute names; the project uses no relative imports)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import"
            out.add(node.module or "")
            out.update(f"{node.module}.{a.name}" for a in node.names)
    return out


def _sources(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def _project_imports(path: Path) -> set[str]:
    return {m for m in _imports(path) if m.split(".")[0] in PROJECT}


def _within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def test_the_leaves_import_nothing_of_the_project_or_third_parties():
    for leaf in LEAVES:
        path = ROOT / (leaf.replace(".", "/") + ".py")
        imported = {m.split(".")[0] for m in _imports(path)}
        assert imported <= sys.stdlib_module_names, (leaf, imported - sys.stdlib_module_names)


def test_data_prep_imports_only_itself_and_the_leaves():
    for path in _sources("data_prep"):
        for name in _project_imports(path):
            assert _within(name, ("data_prep", *LEAVES)), (path.name, name)


def test_model_never_imports_hpo():
    for path in _sources("model"):
        for name in _project_imports(path):
            assert _within(name, ("data_prep", "model")), (path.name, name)


def test_the_hpo_service_imports_neither_the_report_nor_the_cli():
    service = [p for p in _sources("hpo")
               if not _within(_module_name(p), ("hpo.report", "hpo.cli", "hpo.observe.dashboard"))]
    assert service
    for path in service:
        for name in _project_imports(path):
            assert not _within(name, ("hpo.report", "hpo.cli", "hpo.observe.dashboard")), (path,
            name)


def test_nothing_imports_the_cli():
    for package in PROJECT:
        for path in _sources(package):
            if _module_name(path).startswith("hpo.cli"):
                continue
            assert not any(_within(n, ("hpo.cli",)) for n in _imports(path)), path


@pytest.mark.parametrize("module", ["model.contract", "model.errors", "model.config",
                                    "hpo.study.config"])
def test_torch_free_modules_load_without_torch(module):
    """Study files are validated (hpo.study.config) without importing torch."""
    code = f"import sys, {module}; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
