"""The house rules of the source tree, read from the files (no imports run): no import circles (deferred and
TYPE_CHECKING imports included), no module over 500 lines, library code never imports a CLI module, click only
in CLI modules on the training side, package __init__ files that import nothing in train/, and one name per
module (so the verdict log and the dataset audit cannot share one)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("train", "export", "calibration", "edge_runtime")
MAX_LINES = 500
SHARED_NAMES = {"__init__", "errors"}  # each package's typed errors live in its own errors.py


def module_files(root: Path = ROOT) -> dict[str, Path]:
    """Dotted module name -> file, for every module of the project packages under `root`."""
    out = {}
    for pkg in PACKAGES:
        for path in sorted((root / pkg).rglob("*.py")):
            rel = path.relative_to(root).with_suffix("")
            parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
            out[".".join(parts)] = path
    return out


def imported_modules(name: str, path: Path, known: set[str]) -> set[str]:
    """The project modules `name` imports anywhere in its file (top level, in functions, under TYPE_CHECKING).
    `from a.b import c` counts as importing a.b.c when that is a module, else a.b."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            for a in node.names:
                found.add(f"{base}.{a.name}" if f"{base}.{a.name}" in known else base)
    return {m for m in found if m in known and m != name}


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    files = module_files(root)
    return {name: imported_modules(name, path, set(files)) for name, path in files.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            v, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[v] = min(low[v], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                component = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    component.append(w)
                    if w == v:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def is_cli(name: str) -> bool:
    """Console-script modules: train/cli/, edge_runtime/cli/ (the error boundary every CLI shares included)
    and export/cli.py."""
    return name.startswith(("train.cli", "edge_runtime.cli")) or name == "export.cli"


def test_no_import_circles():
    assert cycles(import_graph()) == []


def test_the_circle_check_finds_a_deferred_and_a_type_checking_circle(tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "__init__.py").write_text("")
    (tmp_path / "train" / "a.py").write_text("def f():\n    from train.b import g\n")
    (tmp_path / "train" / "b.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from train import a\n")
    (tmp_path / "train" / "c.py").write_text("from train.a import f\n")
    for pkg in PACKAGES[1:]:
        (tmp_path / pkg).mkdir()
    assert cycles(import_graph(tmp_path)) == [["train.a", "train.b"]]


def test_no_module_over_the_line_limit():
    long = {str(p.relative_to(ROOT)): n for p in module_files().values()
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}


def test_library_modules_do_not_import_cli_modules():
    graph = import_graph()
    bad = {m: sorted(t for t in targets if is_cli(t)) for m, targets in graph.items() if not is_cli(m)}
    assert {m: t for m, t in bad.items() if t} == {}


def test_click_only_in_the_training_side_cli():
    users = []
    for name, path in module_files().items():
        if name.startswith("train.") and not is_cli(name):
            tree = ast.parse(path.read_text())
            names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
            names |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
            if any(n == "click" or n.startswith("click.") for n in names):
                users.append(name)
    assert users == []


@pytest.mark.parametrize("package", sorted({str(p.parent.relative_to(ROOT)) for p in (ROOT / "train").rglob("__init__.py")}))
def test_train_package_inits_import_nothing(package):
    tree = ast.parse((ROOT / package / "__init__.py").read_text())
    assert [n for n in tree.body if not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant))] == []


def test_every_module_name_is_used_once():
    seen: dict[str, list[str]] = {}
    for name, path in module_files().items():
        if path.name != "__init__.py":
            seen.setdefault(path.stem, []).append(name)
    assert {k: v for k, v in seen.items() if len(v) > 1 and k not in SHARED_NAMES} == {}
