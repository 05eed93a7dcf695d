"""TensorRT engine cache: keys, file layout, reuse/rebuild, verification and the missing-TensorRT error.

TensorRT cannot run here, so builds are injected (a fake build function writing known bytes); what runs
is exactly the cache logic export.engine uses on the device."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edge_runtime import names
from edge_runtime.errors import BackendError, BundleError
from edge_runtime.manifest import load_bundle, sha256_file
from export import engine
from edge_runtime.engine_cache import INDEX_FILE, DeviceInfo, cache_key, plan_name
from export.engine import ensure_engine
from fake_bundle import make_fake_bundle

ORIN = DeviceInfo("10.3.0", "Orin", "8.7")


class FakeBuilder:
    """Counts builds; the 'plan' is the ONNX bytes' sha256 plus the precision (deterministic)."""

    def __init__(self) -> None:
        self.calls = []

    def __call__(self, onnx_path, precision):
        self.calls.append((onnx_path.name, precision))
        return f"PLAN {sha256_file(onnx_path)} {precision}".encode()


@pytest.fixture()
def bundle(tmp_path):
    return load_bundle(make_fake_bundle(tmp_path / "b", int8=True))


def test_cache_key_is_pure_and_names_everything():
    key = cache_key("ab" * 32, ORIN, "int8")
    assert key == cache_key("ab" * 32, ORIN, "int8")
    assert key.digest() == cache_key("ab" * 32, DeviceInfo("10.3.0", "Orin", "8.7"), "int8").digest()
    variants = [cache_key("cd" * 32, ORIN, "int8"), cache_key("ab" * 32, ORIN, "fp16"),
                cache_key("ab" * 32, dataclasses.replace(ORIN, trt_version="8.5.2"), "int8"),
                cache_key("ab" * 32, dataclasses.replace(ORIN, gpu_name="Xavier"), "int8"),
                cache_key("ab" * 32, dataclasses.replace(ORIN, compute_capability="7.2"), "int8")]
    digests = {key.digest()} | {v.digest() for v in variants}
    assert len(digests) == 6
    assert all(len(d) == 64 for d in digests)
    name = plan_name("global", key)
    assert name == f"global.int8.{key.digest()[:16]}.plan"
    with pytest.raises(BackendError, match="precision"):
        cache_key("ab" * 32, ORIN, "int4")


def test_engine_built_once_then_reused(bundle):
    build = FakeBuilder()
    plan = ensure_engine(bundle, "global", "int8", ORIN, build)
    assert plan.parent == bundle.root / names.ENGINE_DIR
    # int8 engines come from the TensorRT-flavour QDQ file
    assert build.calls == [(names.model_file("global", "int8", "trt"), "int8")]
    assert plan.read_bytes().startswith(b"PLAN ")  # a plain plan: nothing prepended
    index = json.loads((plan.parent / INDEX_FILE).read_text())
    (digest, entry), = index.items()
    assert entry["file"] == plan.name and plan.name.endswith(digest[:16] + ".plan")
    assert entry["plan_sha256"] == sha256_file(plan)
    assert entry["key"]["onnx_sha256"] == sha256_file(bundle.root / names.model_file("global", "int8", "trt"))
    again = ensure_engine(bundle, "global", "int8", ORIN, build)
    assert again == plan and len(build.calls) == 1


def test_other_tensorrt_or_gpu_rebuilds_and_drops_stale(bundle):
    build = FakeBuilder()
    first = ensure_engine(bundle, "global", "int8", ORIN, build)
    second = ensure_engine(bundle, "global", "int8", dataclasses.replace(ORIN, trt_version="10.16.0"), build)
    assert len(build.calls) == 2 and second != first
    assert not first.exists(), "the stale plan must be removed"
    index = json.loads((second.parent / INDEX_FILE).read_text())
    assert [e["file"] for e in index.values()] == [second.name]
    third = ensure_engine(bundle, "global", "int8", dataclasses.replace(ORIN, gpu_name="Thor", compute_capability="11.0"), build)
    assert len(build.calls) == 3 and not second.exists() and third.exists()
    # other graphs and precisions live side by side
    parts = ensure_engine(bundle, "parts", "fp16", ORIN, build)
    assert third.exists() and parts.exists() and build.calls[-1] == (names.model_file("parts"), "fp16")


def test_corrupt_plan_or_changed_onnx_rebuilds(bundle):
    build = FakeBuilder()
    plan = ensure_engine(bundle, "parts", "fp32", ORIN, build)
    plan.write_bytes(b"truncated")
    assert ensure_engine(bundle, "parts", "fp32", ORIN, build) == plan and len(build.calls) == 2
    assert plan.read_bytes().startswith(b"PLAN ")
    (plan.parent / INDEX_FILE).write_text("{not json")
    ensure_engine(bundle, "parts", "fp32", ORIN, build)
    assert len(build.calls) == 3  # unreadable index: rebuilt, never a crash
    onnx_path = bundle.root / names.model_file("parts")
    onnx_path.write_bytes(onnx_path.read_bytes() + b"\0")  # a new ONNX file means a new key
    new = ensure_engine(bundle, "parts", "fp32", ORIN, build)
    assert new != plan and not plan.exists() and len(build.calls) == 4


def test_failed_verification_removes_plan(bundle):
    build = FakeBuilder()
    seen = []

    def verify(plan, onnx_path):
        seen.append((plan.name, onnx_path.name))
        return {"passed": False, "reason": "class agreement 3/4"}

    with pytest.raises(BackendError, match="disagree with onnxruntime"):
        ensure_engine(bundle, "global", "fp32", ORIN, build, verify)
    assert seen and not list((bundle.root / names.ENGINE_DIR).glob("*.plan"))
    ok = ensure_engine(bundle, "global", "fp32", ORIN, build, lambda p, o: {"passed": True})
    entry = json.loads((ok.parent / INDEX_FILE).read_text())
    assert list(entry.values())[0]["verify"] == {"passed": True}


def test_int8_engine_needs_int8_file(tmp_path):
    b = load_bundle(make_fake_bundle(tmp_path / "fp32only"))
    with pytest.raises(BundleError, match="--int8"):
        ensure_engine(b, "global", "int8", ORIN, FakeBuilder())


def test_compare_outputs_tolerances():
    logits = np.array([[2.0, -1.0], [0.5, 0.2]], np.float32)
    ref = [{names.PART_LOGITS: logits}]
    close = [{names.PART_LOGITS: logits + 1e-5}]
    assert engine.compare_outputs(close, ref, "fp32")["passed"]
    flipped = [{names.PART_LOGITS: logits[:, ::-1].copy()}]
    res = engine.compare_outputs(flipped, ref, "int8")
    assert not res["passed"] and res["class_agreement"] == "0/2"
    shifted = [{names.PART_LOGITS: logits + np.array([0.05, 0.0], np.float32)}]
    assert engine.compare_outputs(shifted, ref, "int8")["passed"]  # int8: class agreement decides
    assert not engine.compare_outputs(shifted, ref, "fp32")["passed"]


def test_missing_tensorrt_is_one_line(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import fails as on a machine without it
    with pytest.raises(BackendError, match="python3-libnvinfer"):
        engine.import_tensorrt()
    root = make_fake_bundle(tmp_path / "b", int8=True)
    from export.cli import main

    res = CliRunner().invoke(main, [str(root), "--engine"])
    assert res.exit_code == 1
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "python3-libnvinfer" in lines[0] and "Traceback" not in res.output
    assert not (root / names.ENGINE_DIR).exists()


def test_engine_path_needs_no_torch(tmp_path):
    """On the Jetson only the bundle, onnxruntime and TensorRT exist: `mgfen-export BUNDLE --engine`
    must get as far as the TensorRT import without torch."""
    import subprocess
    import textwrap

    root = make_fake_bundle(tmp_path / "b", int8=True)
    code = textwrap.dedent(f"""
        import sys
        sys.modules["torch"] = None      # any torch import now fails
        sys.modules["tensorrt"] = None
        from click.testing import CliRunner
        from export.cli import main
        res = CliRunner().invoke(main, [{str(root)!r}, "--engine"])
        print(res.exit_code, res.output.strip())
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("1 Error:") and "python3-libnvinfer" in out.stdout
