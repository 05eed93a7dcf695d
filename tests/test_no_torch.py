"""edge_runtime must import and run without torch: every module is imported in a child process where
`import torch` (and torchvision) fails, then a frame is scanned end to end on the fake bundle."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

CHILD = textwrap.dedent("""
    import importlib, pkgutil, sys
    import edge_runtime
    mods = sorted(m.name for m in pkgutil.walk_packages(edge_runtime.__path__, "edge_runtime."))
    for name in mods:
        importlib.import_module(name)
    leaked = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision"))
    assert not leaked, leaked
    sys.path.insert(0, sys.argv[2])
    from fake_bundle import make_fake_bundle, make_image
    from edge_runtime.bundle.manifest import load_bundle
    from edge_runtime.model_runner import ModelRunner
    with ModelRunner.open(load_bundle(make_fake_bundle(sys.argv[1])), "ort") as runner:
        assert runner.run_frame(make_image("blue")).decision == "counterfeit"
    print("ok", len(mods))
""")


def test_edge_runtime_imports_and_runs_without_torch(tmp_path):
    blocker = tmp_path / "block"
    for pkg in ("torch", "torchvision"):
        (blocker / pkg).mkdir(parents=True)
        (blocker / pkg / "__init__.py").write_text(f"raise ImportError('{pkg} is blocked in this test')\n")
    env = {"PYTHONPATH": f"{blocker}:{ROOT}", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path / "bundle"), str(ROOT / "tests")],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("ok") and int(proc.stdout.split()[1]) >= 10
    probe = subprocess.run([sys.executable, "-c", "import torch"], env=env, capture_output=True, text=True)
    assert probe.returncode != 0 and "blocked in this test" in probe.stderr  # the blocker works


def test_torch_free_step_fails_a_runtime_import_of_torch_and_skips_the_others():
    """tests/conftest.py's finder (active where torch is absent): an import of torch from a test or the
    training code is a skip; one made from edge_runtime/ code is a failure naming the file."""
    from conftest import SkipTorch

    finder = SkipTorch()
    with pytest.raises(pytest.skip.Exception, match="needs torch"):
        finder.find_spec("torch.nn")
    assert finder.find_spec("numpy") is None
    leaky = compile("finder.find_spec('torchvision')", str(ROOT / "edge_runtime" / "leaky.py"), "exec")
    with pytest.raises(pytest.fail.Exception, match=r"runtime imports torchvision .*edge_runtime/leaky.py:1"):
        exec(leaky, {"finder": finder})
