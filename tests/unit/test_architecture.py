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
    upper = ("hpo.report", "hpo.cli")
    service = [p for p in _sources("hpo") if not _within(_module_name(p), upper)]
    assert service
    for path in service:
        for name in _project_imports(path):
            assert not _within(name, upper), (path, name)


def test_nothing_imports_the_cli():
    for package in PROJECT:
        for path in _sources(package):
            if _module_name(path).startswith("hpo.cli"):
                continue
            assert not any(_within(n, ("hpo.cli",)) for n in _imports(path)), path


@pytest.mark.parametrize("module", ["model.contract", "model.errors", "model.config",
                                    "hpo.study.config", "data_prep.files", "data_prep.dataset",
                                    "data_prep.progress", "hpo.cli"])
def test_torch_free_modules_load_without_torch(module):
    """Study files are validated (hpo.study.config) and ``specopt`` starts (hpo.cli: --help,
    status, studies) without importing torch; hpo uses data_prep's files, datasets and bars."""
    code = f"import sys, {module}; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def _is_type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _runtime_imports(tree: ast.AST):
    """Import statements at any depth (module or function level), those under
    ``if TYPE_CHECKING:`` left out: they never run."""
    for node in ast.iter_child_nodes(tree):
        if _is_type_checking(node):
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        yield from _runtime_imports(node)


def _import_graph() -> dict[str, set[str]]:
    """Project module -> the project modules it imports, at any level. ``from a.b import c``
    counts as importing ``a.b.c`` where that is a module, else ``a.b``."""
    files = {_module_name(p): p for package in PROJECT for p in _sources(package)}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        edges = graph.setdefault(name, set())
        for node in _runtime_imports(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                edges.update(a.name for a in node.names if a.name in files)
            elif node.module in files:
                for a in node.names:
                    sub = f"{node.module}.{a.name}"
                    edges.add(sub if sub in files else node.module)
        edges.discard(name)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle through each strongly connected component of more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    components: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    cycles = []
    for component in components:  # shortest path from the first module back to itself
        start, inside = component[0], set(component)
        paths, seen = [[start]], {start}
        while paths:
            path = paths.pop(0)
            nxt = sorted(graph[path[-1]] & inside)
            if start in nxt:
                cycles.append([*path, start])
                break
            for w in nxt:
                if w not in seen:
                    seen.add(w)
                    paths.append([*path, w])
    return cycles


def test_no_import_cycles_counting_function_level_imports():
    cycles = _cycles(_import_graph())
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


# hpo's layers, lowest first: each subpackage may import only those named here (and itself).
HPO_LAYERS = {
    "hpo.faults": (),
    "hpo.escape": (),
    "hpo.storage": (),
    "hpo.study": ("hpo.storage",),
    "hpo.execution": ("hpo.storage", "hpo.study"),
    "hpo.observe": ("hpo.storage", "hpo.study", "hpo.execution"),
}
HPO_LEAVES = ("hpo.faults", "hpo.escape")


def test_hpo_subpackages_import_only_the_layers_below():
    graph = _import_graph()
    for layer, allowed in HPO_LAYERS.items():
        ok = (layer, *allowed) if layer in HPO_LEAVES else (layer, *allowed, *HPO_LEAVES)
        for module in (m for m in graph if _within(m, (layer,))):
            for name in graph[module]:
                assert not _within(name, ("hpo",)) or _within(name, ok), (module, name)
    for module in (m for m in graph if _within(m, ("hpo.report",))):
        assert not any(_within(n, ("hpo.cli",)) for n in graph[module]), module


# Optuna's private API is used in one module only, behind names of our own (issue 22).
OPTUNA_DOOR = Path("hpo/storage/optuna_private.py")


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _optuna_private_names() -> set[str]:
    """Every private name of the installed Optuna: its private modules, and the names with one
    leading underscore it defines or assigns (functions, classes, attributes, variables)."""
    import optuna

    root = Path(optuna.__file__).parent
    names: set[str] = set()
    for path in root.rglob("*.py"):
        names.update(p for p in path.relative_to(root).with_suffix("").parts if _private(p))
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                names.add(node.name)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
    return {n for n in names if _private(n)}


def _with_class(node: ast.AST, cls: ast.ClassDef | None = None):
    """Every node under ``node`` with the class whose body it is in (None: none)."""
    for child in ast.iter_child_nodes(node):
        yield child, cls
        yield from _with_class(child, child if isinstance(child, ast.ClassDef) else cls)


def _on_self(node: ast.AST) -> bool:
    return (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
            and node.value.id == "self")


def _optuna_private_uses(package: Path) -> list[str]:
    """``file:line: what`` for each use of a private Optuna name under ``package`` outside
    :data:`OPTUNA_DOOR`: an import of a private module or name of Optuna's; an attribute or a
    ``getattr`` string with a private name of Optuna's that is not one of hpo's own; in a class
    derived from one of Optuna's, a private method of Optuna's overridden or a private
    attribute used that the class does not set itself.  (A name of hpo's own that Optuna has
    too is told apart by where hpo defines it: outside the classes derived from Optuna's.)"""
    optuna_private = _optuna_private_names()
    door = (ROOT / OPTUNA_DOOR).resolve()
    trees = {p: ast.parse(p.read_text()) for p in sorted(package.rglob("*.py"))
             if p.resolve() != door}
    imported: set[str] = set()  # names imported from Optuna (or through the door)
    for tree in trees.values():
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and (
                    node.module.split(".")[0] == "optuna"
                    or node.module == "hpo.storage.optuna_private"):
                imported.update(a.asname or a.name for a in node.names)
    classes = [n for t in trees.values() for n in ast.walk(t) if isinstance(n, ast.ClassDef)]

    def from_optuna(base: ast.expr) -> bool:
        while isinstance(base, ast.Attribute):
            base = base.value
        return isinstance(base, ast.Name) and base.id in imported | derived | {"optuna"}

    derived: set[str] = set()  # hpo's classes derived from Optuna's, by name
    while more := {c.name for c in classes if any(map(from_optuna, c.bases))} - derived:
        derived |= more
    # what each derived class sets on self; hpo's own names: defined outside derived classes
    sets = {c.name: {n.attr for n in ast.walk(c) if _on_self(n)
                     and isinstance(n.ctx, ast.Store)} for c in classes if c.name in derived}
    own: set[str] = set()
    for tree in trees.values():
        for node, cls in _with_class(tree):
            if cls is not None and cls.name in derived:
                continue
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                own.add(node.name)
            elif isinstance(node, ast.Name | ast.Attribute) and isinstance(node.ctx, ast.Store):
                own.add(node.id if isinstance(node, ast.Name) else node.attr)
    theirs = optuna_private - own
    uses: list[str] = []
    for path, tree in trees.items():
        where = path.relative_to(package.parent)
        for node, cls in _with_class(tree):
            sub = cls.name if cls is not None and cls.name in derived else None
            found = ""
            if isinstance(node, ast.Import | ast.ImportFrom):
                module = node.module or "" if isinstance(node, ast.ImportFrom) else ""
                names = [*([module] if module else []), *(a.name for a in node.names)]
                if names[0].split(".")[0] == "optuna" and any(
                        _private(part) for n in names for part in n.split(".")):
                    found = f"import {', '.join(names)}"
            elif sub and _on_self(node) and node.attr in sets[sub]:
                pass  # the derived class's own attribute
            elif sub and _on_self(node) and node.attr in optuna_private:
                found = f"{sub} uses self.{node.attr}"
            elif isinstance(node, ast.Attribute) and node.attr in theirs:
                found = f".{node.attr}"
            elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                  and node.func.id in ("getattr", "hasattr", "setattr", "delattr")
                  and len(node.args) > 1 and isinstance(node.args[1], ast.Constant)
                  and node.args[1].value in theirs):
                found = f"{node.func.id}(..., {node.args[1].value!r})"
            elif (sub and isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
                  and node in cls.body and node.name in optuna_private):
                found = f"{sub} overrides {node.name}"
            if found:
                uses.append(f"{where}:{node.lineno}: {found}")
    return sorted(set(uses))


def test_optuna_private_api_is_used_only_behind_its_door():
    """Fault tolerance rests on Optuna's private API (heartbeats, its cache, the journal file,
    trial ids): every use goes through hpo.storage.optuna_private, which
    tests/unit/hpo/test_optuna_private.py checks against the installed Optuna."""
    assert (ROOT / OPTUNA_DOOR).is_file()
    uses = _optuna_private_uses(ROOT / "hpo")
    assert not uses, f"Optuna's private API outside {OPTUNA_DOOR}:\n" + "\n".join(uses)
