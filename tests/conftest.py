"""Make tests/ importable (fake_bundle.py) for every test module; skip what needs torch where it is absent.

.ci/run's lowest-versions step (and a Jetson) has the scanner runtime without torch. There an import of
torch or torchvision by a test module, a fixture, a test or the training code it calls skips that module
or test with the reason "needs torch" instead of failing, so the runtime tests run and the rest is skipped
cleanly. An import of torch made from the scanner's own code (edge_runtime/, anywhere on the call stack)
fails instead: torch leaking into the runtime must not read as a skip (tests/test_no_torch.py)."""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

HAS_TORCH = importlib.util.find_spec("torch") is not None
ROOT = Path(__file__).resolve().parents[1]
RUNTIME_DIR = ROOT / "edge_runtime"
PROJECT_DIRS = tuple(ROOT / d for d in ("edge_runtime", "train", "export", "calibration", "benchmarks", "tests"))


def runtime_caller() -> str | None:
    """'file:line' when the innermost project frame on the current call stack (the code doing the import)
    is inside edge_runtime/, else None. Innermost, not anywhere: a training command runs under the shared
    error boundary (edge_runtime/cli/cli_errors.py), which is on the stack below every import it makes."""
    frame = sys._getframe(1)
    while frame is not None:
        path = Path(frame.f_code.co_filename)
        if path.is_absolute():
            resolved = path.resolve()
            if resolved != Path(__file__).resolve() and any(d in resolved.parents for d in PROJECT_DIRS):
                return f"{path}:{frame.f_lineno}" if RUNTIME_DIR in resolved.parents else None
        frame = frame.f_back
    return None


class SkipTorch(importlib.abc.MetaPathFinder):
    """Meta-path finder for the torch-free step: skips on torch imports, fails on those from the runtime."""

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] not in ("torch", "torchvision"):
            return None
        caller = runtime_caller()
        if caller is not None:
            pytest.fail(f"the scanner runtime imports {name} ({caller}); it must run without torch",
                        pytrace=False)
        raise pytest.skip.Exception(f"needs torch ({name} is not installed here: runtime-only environment)",
                                    allow_module_level=True)


if not HAS_TORCH:
    sys.meta_path.insert(0, SkipTorch())


@pytest.fixture()
def gpu(monkeypatch):
    """A fake Orin (tests/fake_cuda.py) behind both CUDA bindings, in sys.modules for the test; nothing may
    leak by its end: device or page-locked memory, streams, pushed contexts."""
    from fake_cuda import FakeGpu, install

    g = FakeGpu()
    install(monkeypatch, g)
    yield g
    g.assert_clean()
