"""The scanner runtime and `mgfen-export BUNDLE --engine` must run on Python 3.8 (JetPack 5's system
Python, the only one its TensorRT 8.5 bindings exist for). No 3.8 interpreter can be installed here, so
the rules are checked statically: `make test` runs `vermin --target=3.8-` over the same files (library
APIs: str.removeprefix, functools.cache, dict |, zip(strict=), importlib.resources.files ...), and this
test checks what vermin does not see:

- the grammar of 3.8 (ast.parse with feature_version=(3, 8));
- PEP 585 generics (`list[int]`) and PEP 604 unions (`int | None`) that are evaluated at run time:
  outside annotations, or in annotations of a module without `from __future__ import annotations`.

The files are those the runtime and the engine path really import (found by importing them in a child
process), and the Makefile's RUNTIME_PY list handed to vermin must cover them.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GENERICS = {"list", "dict", "tuple", "set", "frozenset", "type"}
TYPES = GENERICS | {"int", "str", "float", "bytes", "bool", "object", "complex"}
IMPORT_ALL = """
import importlib, pkgutil, sys
import edge_runtime
for m in pkgutil.walk_packages(edge_runtime.__path__, "edge_runtime."):
    importlib.import_module(m.name)
import export.cli, export.engine, export.engine_check
for name, mod in sorted(sys.modules.items()):
    if name.split(".")[0] in ("edge_runtime", "export", "calibration", "train") and getattr(mod, "__file__", None):
        print(mod.__file__)
"""


def runtime_files() -> list[Path]:
    out = subprocess.run([sys.executable, "-c", IMPORT_ALL], capture_output=True, text=True, cwd=ROOT,
                         timeout=120, check=True)
    return [Path(line).resolve() for line in out.stdout.split()]


def _is_type(node: ast.AST) -> bool:
    if isinstance(node, ast.Constant) and node.value is None:
        return True
    if isinstance(node, ast.Name) and node.id in TYPES:
        return True
    return isinstance(node, ast.Subscript) and _is_type(node.value)


def violations(path: Path) -> list[str]:
    src = path.read_text()
    tree = ast.parse(src, filename=str(path), feature_version=(3, 8))
    future = any(isinstance(n, ast.ImportFrom) and n.module == "__future__" and
                 any(a.name == "annotations" for a in n.names) for n in tree.body)
    skip: set[int] = set()
    if future:  # annotations stay strings: anything goes inside them
        for node in ast.walk(tree):
            anns = []
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                args = node.args
                anns = [a.annotation for a in args.posonlyargs + args.args + args.kwonlyargs] + [node.returns]
                anns += [a.annotation for a in (args.vararg, args.kwarg) if a is not None]
            elif isinstance(node, ast.AnnAssign):
                anns = [node.annotation]
            for ann in anns:
                if ann is not None:
                    skip.update(id(n) for n in ast.walk(ann))
    found = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and node.value.id in GENERICS:
            found.append(f"{path.name}:{node.lineno}: {node.value.id}[...] needs Python 3.9 when evaluated")
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr) and (_is_type(node.left) or
                                                                              _is_type(node.right)):
            found.append(f"{path.name}:{node.lineno}: X | Y type union needs Python 3.10 when evaluated")
    return found


def test_runtime_and_engine_path_are_python38_clean():
    files = runtime_files()
    assert len(files) >= 30 and not any("/train/" in str(f) for f in files), files  # no training code
    problems = [v for f in files for v in violations(f)]
    assert not problems, "\n".join(problems)
    makefile = (ROOT / "Makefile").read_text().replace("\\\n", " ")  # join continued lines
    listed = re.search(r"^RUNTIME_PY\s*:?=\s*(.+)$", makefile, re.M).group(1).split()
    covered = {(ROOT / p).resolve() for p in listed}
    missing = [str(f.relative_to(ROOT)) for f in files if f not in covered and not covered & set(f.parents)]
    assert not missing, f"add to the Makefile's RUNTIME_PY (vermin): {missing}"


def test_the_checker_finds_what_it_should(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("X = dict[str, int]\ndef f(a: list[int] | None = None) -> None:\n    isinstance(a, int | str)\n")
    assert len(violations(bad)) == 4  # dict[...] and, without the future import, list[...], list | None, int | str
    good = tmp_path / "good.py"
    good.write_text("from __future__ import annotations\nfrom typing import Dict\nX = Dict[str, int]\n"
                    "def f(a: list[int] | None = None) -> dict[str, int] | None:\n    y: int | None = None\n"
                    "    return None\nflags = 1 | 2\n")
    assert violations(good) == []
