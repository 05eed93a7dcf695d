"""Make tests/ importable (fake_bundle.py) for every test module; skip what needs torch where it is absent.

.ci/run's lowest-versions step (and a Jetson) has the scanner runtime without torch. There an import of
torch or torchvision -- at the top of a test module, in a fixture, in a test or in the training code it
calls -- skips that module or test with the reason "needs torch" instead of failing, so the runtime tests
run and the rest is skipped cleanly. The scanner's own code never imports torch (tests/test_no_torch.py)."""

import importlib.abc
import importlib.util
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

HAS_TORCH = importlib.util.find_spec("torch") is not None


class _SkipTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "torchvision"):
            raise pytest.skip.Exception(f"needs torch ({name} is not installed here: runtime-only environment)",
                                        allow_module_level=True)
        return None


if not HAS_TORCH:
    sys.meta_path.insert(0, _SkipTorch())


@pytest.fixture()
def gpu(monkeypatch):
    """A fake Orin (tests/fake_cuda.py) behind both CUDA bindings, in sys.modules for the test; nothing may
    leak by its end: device or page-locked memory, streams, pushed contexts."""
    from fake_cuda import FakeGpu, install

    g = FakeGpu()
    install(monkeypatch, g)
    yield g
    g.assert_clean()
