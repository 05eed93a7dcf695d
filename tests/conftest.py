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
RUNTIME_DIR = Path(__file__).resolve().parents[1] / "edge_runtime"


def runtime_caller() -> str | None:
    """'file:line' of the innermost frame on the current call stack inside edge_runtime/, or None."""
    frame = sys._getframe(1)
    while frame is not None:
        path = Path(frame.f_code.co_filename)
        if path.is_absolute() and RUNTIME_DIR in path.resolve().parents:
            return f"{path}:{frame.f_lineno}"
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
