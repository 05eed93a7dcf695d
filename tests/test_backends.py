"""Backends: onnxruntime on the fake bundle, file/provider selection, TensorRT error paths, and the
TensorRT glue run against a fake `tensorrt` module and fake CUDA memory (no GPU here)."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from edge_runtime import names
from edge_runtime.bundle.manifest import load_bundle
from edge_runtime.errors import BackendError, BundleError
from edge_runtime.inference import backends, trt_buffers
from edge_runtime.inference.backends import (OrtBackend, TrtBackend, native_engine_path, onnx_file_for,
                                   open_backend, ort_provider_list, resolve_precision)
from edge_runtime.inference.engine_cache import INDEX_FILE, DeviceInfo, cache_key, onnx_for, plan_name, write_index
from fake_bundle import make_fake_bundle
from fake_cuda import FakeGpu, install
from fake_tensorrt import make_tensorrt


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return load_bundle(make_fake_bundle(tmp_path_factory.mktemp("b") / "bundle", int8=True))


@pytest.fixture(scope="module")
def fp32_bundle(tmp_path_factory):
    return load_bundle(make_fake_bundle(tmp_path_factory.mktemp("b32") / "bundle"))


def test_ort_backend_runs_global_graph(bundle):
    with OrtBackend(bundle.path("global.onnx")) as be:
        assert be.input_names == (names.GLOBAL_INPUT,)
        assert set(be.output_names) == set(names.GLOBAL_OUTPUTS)
        x = np.zeros((1, 3, 64, 64), np.float32)
        x[:, 2] = 1.0  # pure blue -> counterfeit logit high
        out = be.infer({names.GLOBAL_INPUT: x})
    assert out[names.GLOBAL_LOGITS].shape == (1, 2)
    assert out[names.GLOBAL_LOGITS][0, 1] > out[names.GLOBAL_LOGITS][0, 0]
    assert out[names.BOXES].shape == (1, 4, 4)
    assert out[names.HEATMAP].shape == (1, 1, 8, 8)


@pytest.mark.parametrize("feeds, match", [
    ({"wrong": np.zeros((1, 3, 64, 64), np.float32)}, "expected inputs"),
    ({names.GLOBAL_INPUT: np.zeros((1, 3, 32, 32), np.float32)}, "shape"),
])
def test_ort_backend_rejects_bad_feeds(bundle, feeds, match):
    with OrtBackend(bundle.path("global.onnx")) as be, pytest.raises(BackendError, match=match):
        be.infer(feeds)


def test_ort_backend_bad_files(tmp_path, bundle):
    with pytest.raises(BundleError, match="not found"):
        OrtBackend(tmp_path / "missing.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    with pytest.raises(BackendError, match="cannot load"):
        OrtBackend(junk)
    with pytest.raises(BackendError, match="TensorrtExecutionProvider"):
        OrtBackend(bundle.path("global.onnx"), providers=["TensorrtExecutionProvider"])


@pytest.mark.parametrize("graph, precision, target, expected", [
    ("global", "int8", "cpu", "global.int8.cpu.onnx"),
    ("parts", "int8", "trt", "parts.int8.trt.onnx"),
    ("global", "fp32", "cpu", "global.onnx"),
    ("global", "fp16", "trt", "global.onnx"),  # TensorRT builds fp16 from the fp32 file
])
def test_onnx_file_for(bundle, graph, precision, target, expected):
    assert onnx_file_for(bundle.manifest, graph, precision, target) == expected


def test_onnx_file_for_refusals(bundle, fp32_bundle):
    with pytest.raises(BackendError, match="CUDA"):
        onnx_file_for(bundle.manifest, "global", "int8", "cuda")
    with pytest.raises(BackendError, match="fp16 needs TensorRT"):
        onnx_file_for(bundle.manifest, "global", "fp16", "cpu")
    with pytest.raises(BundleError, match="--int8"):
        onnx_file_for(fp32_bundle.manifest, "global", "int8", "cpu")
    with pytest.raises(BackendError, match="unknown precision"):
        onnx_file_for(bundle.manifest, "global", "int4", "cpu")


def test_resolve_precision_prefers_int8_when_present(bundle, fp32_bundle):
    assert resolve_precision(bundle.manifest, "global", None, "cpu") == "int8"
    assert resolve_precision(bundle.manifest, "global", None, "cuda") == "fp32"
    assert resolve_precision(fp32_bundle.manifest, "global", None, "cpu") == "fp32"
    assert resolve_precision(fp32_bundle.manifest, "global", "fp16", "trt") == "fp16"


def test_provider_lists(tmp_path):
    trt = ort_provider_list("trt", "int8", tmp_path)
    name, opts = trt[0]
    assert name == backends.TRT_EP and opts["trt_int8_enable"] and opts["trt_engine_cache_enable"]
    assert opts["trt_engine_cache_path"] == str(tmp_path)
    assert trt[1:] == [backends.CUDA_EP, backends.CPU_EP]
    assert ort_provider_list("trt", "fp32", None)[0][1] == {"trt_fp16_enable": False, "trt_int8_enable": False}
    assert ort_provider_list("cpu", "int8", None) == [backends.CPU_EP]


def test_open_backend_auto_on_cpu_uses_cpu_int8(bundle, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # no TensorRT here, whatever is installed
    with open_backend(bundle, "parts", "auto", None) as be:
        assert isinstance(be, OrtBackend) and be.path.name == "parts.int8.cpu.onnx"
    with open_backend(bundle, "global", "ort", "fp32") as be:
        assert be.path.name == "global.onnx"


def test_onnxruntime_threads_do_not_spin_unless_asked(bundle):
    """The runtime's sessions leave the cores to OpenCV between runs (benchmarks/bench_spinning.py)."""
    key = "session.intra_op.allow_spinning"
    with open_backend(bundle, "global", "ort", "fp32", threads=2) as be:
        opts = be._session.get_session_options()
        assert opts.get_session_config_entry(key) == "0" and opts.intra_op_num_threads == 2
    with open_backend(bundle, "global", "ort", "fp32", spin=True) as be:
        assert be._session.get_session_options().get_session_config_entry(key) == "1"


def test_open_backend_argument_errors(bundle):
    with pytest.raises(BackendError, match="unknown graph"):
        open_backend(bundle, "head")
    with pytest.raises(BackendError, match="unknown backend"):
        open_backend(bundle, "global", "tflite")


def test_trt_missing_package_names_what_to_install(bundle, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(BackendError, match="libnvinfer"):
        open_backend(bundle, "global", "trt", "int8")
    with pytest.raises(BackendError, match="tensorrt"):
        TrtBackend("x.engine")


def test_trt_without_cuda_binding(bundle, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", make_tensorrt(FakeGpu()))
    install(monkeypatch, FakeGpu(), cuda_python=False, pycuda=False)
    with pytest.raises(BackendError, match="cuda-python.*pycuda"):
        trt_buffers.load_cuda()
    with pytest.raises(BackendError, match="CUDA binding"):
        open_backend(bundle, "global", "trt", "int8")
    # auto falls back to onnxruntime when native TensorRT cannot run, and says why
    with open_backend(bundle, "global", "auto", "int8") as be:
        assert isinstance(be, OrtBackend)
        assert be.why.startswith("auto: onnxruntime CPUExecutionProvider, int8 (global.int8.cpu.onnx); native "
                                 "TensorRT not used: native TensorRT needs a CUDA binding")


def test_tensorrt_namespace_package_is_not_tensorrt(bundle, monkeypatch):
    """A stub-only install (tensorrt-stubs) leaves a `tensorrt` folder without code: it imports as a
    namespace package. That is not TensorRT: a one-line error for trt, onnxruntime for auto."""
    monkeypatch.setitem(sys.modules, "tensorrt", types.ModuleType("tensorrt"))
    assert not backends.tensorrt_available()
    with pytest.raises(BackendError, match="not TensorRT's Python bindings"):
        open_backend(bundle, "global", "trt", "int8")
    with open_backend(bundle, "global", "auto", "int8") as be:
        assert isinstance(be, OrtBackend) and "not TensorRT's Python bindings" in be.why


def _cache_engine(bundle, graph: str, precision: str, device: DeviceInfo):
    """Put a plan into the bundle's engine cache as `mgfen-export --engine` would; return its path."""
    onnx_name = onnx_for(bundle, graph, precision)
    key = cache_key(bundle.manifest.files[onnx_name].sha256, device, precision)
    engine_dir = bundle.path(names.ENGINE_DIR)
    engine_dir.mkdir(exist_ok=True)
    plan = engine_dir / plan_name(graph, key)
    plan.write_bytes(b"PLAN")
    from edge_runtime.bundle.manifest import sha256_file
    write_index(engine_dir, {key.digest(): {"file": plan.name, "plan_sha256": sha256_file(plan), "onnx": onnx_name}})
    return plan


def test_native_engine_path_reads_the_export_cache(bundle):
    orin = DeviceInfo("10.3.0", "Orin", "8.7")
    assert native_engine_path(bundle, "global", "int8", orin) is None
    plan = _cache_engine(bundle, "global", "int8", orin)
    try:
        assert native_engine_path(bundle, "global", "int8", orin) == plan
        # Another TensorRT version, GPU or precision is another key: not this plan.
        assert native_engine_path(bundle, "global", "int8", DeviceInfo("8.5.2", "Orin", "8.7")) is None
        assert native_engine_path(bundle, "global", "int8", DeviceInfo("10.3.0", "Xavier", "7.2")) is None
        assert native_engine_path(bundle, "global", "fp16", orin) is None
        plan.write_bytes(b"ALTERED")  # a plan that no longer matches its sha256 is not used
        assert native_engine_path(bundle, "global", "int8", orin) is None
    finally:
        plan.unlink()
        (plan.parent / INDEX_FILE).unlink()


# ------------------------------------------- TensorRT glue against fakes (the real thing needs a Jetson)


def _plan(tmp_path, gpu, trt_version: str, graph: str = "parts") -> Path:
    """A plan of the fake bundle's graph, built by the fake TensorRT with export's build_plan."""
    from edge_runtime.inference.engine_cache import build_recipe
    from export.engine import build_plan

    root = make_fake_bundle(tmp_path / "plan_src")
    gpu.runtime_context = True
    plan = tmp_path / f"{graph}.plan"
    plan.write_bytes(build_plan(root / f"{graph}.onnx", build_recipe("fp32", trt_version)))
    gpu.runtime_context = False
    return plan


@pytest.mark.parametrize("binding", ["cuda-python", "pycuda"])
@pytest.mark.parametrize("version", ["8.5.2", "10.3.0"])
def test_trt_backend_end_to_end(tmp_path, monkeypatch, gpu, binding, version):
    monkeypatch.setitem(sys.modules, "tensorrt", make_tensorrt(gpu, version))
    plan = _plan(tmp_path, gpu, version)
    with pytest.raises(BackendError, match="engine not found"):
        TrtBackend(tmp_path / "none.plan", binding)
    be = TrtBackend(plan, binding)
    assert be.input_names == (names.PARTS_INPUT,) and be.output_names == (names.PART_LOGITS,)
    assert be.input_shapes == {names.PARTS_INPUT: (4, 3, 32, 32)}
    ref = OrtBackend(make_fake_bundle(tmp_path / "ref") / "parts.onnx")
    for value in (0.2, 0.9):  # buffers are reused across calls
        x = np.full((4, 3, 32, 32), value, np.float32)
        x[:, 2] = 1 - value
        np.testing.assert_allclose(be.infer({names.PARTS_INPUT: x})[names.PART_LOGITS],
                                   ref.infer({names.PARTS_INPUT: x})[names.PART_LOGITS], atol=1e-6)
    with pytest.raises(BackendError, match="shape"):
        be.infer({names.PARTS_INPUT: np.zeros((2, 3, 32, 32), np.float32)})
    # host buffers are page-locked, so the copies on the stream are really asynchronous
    assert gpu.async_copies == 4 and gpu.pageable_copies == 0
    assert gpu.ctx_stack if binding == "pycuda" else not gpu.ctx_stack
    be.close()
    be.close()
    assert not gpu.leaks()


TRT_INIT_FAULTS = [("deserialize", "cannot load this engine"), ("context", "cannot create an execution context"),
                   ("set_tensor_address", "refused the device address")]


@pytest.mark.parametrize("binding, fault, match", [
    ("cuda-python", "cudaMalloc", "cudaMalloc failed: cudaErrorMemoryAllocation"),
    ("pycuda", "mem_alloc", "mem_alloc failed: MemoryError"),
    ("cuda-python", "cudaMallocHost", "cudaMallocHost failed"), ("pycuda", "pagelocked_empty", "pagelocked_empty failed"),
    ("cuda-python", "cudaStreamCreate", "cudaStreamCreate failed"), ("pycuda", "Stream", "Stream failed"),
] + [(b, f, m) for b in ("cuda-python", "pycuda") for f, m in TRT_INIT_FAULTS])
def test_failed_trt_backend_init_frees_everything_and_pops_the_context(tmp_path, monkeypatch, gpu, binding,
                                                                       fault, match):
    """Each failure while opening an engine is one BackendError line; what was allocated is freed and
    pycuda's context popped (the gpu fixture checks: no memory, stream or pushed context left)."""
    monkeypatch.setitem(sys.modules, "tensorrt", make_tensorrt(gpu, "10.3.0"))
    plan = _plan(tmp_path, gpu, "10.3.0", "global")
    gpu.fail[fault] = 2 if fault in ("cudaMalloc", "mem_alloc", "cudaMallocHost", "pagelocked_empty") else 1
    gpu.calls.clear()
    with pytest.raises(BackendError, match=match) as err:
        TrtBackend(plan, binding)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("binding, fault, match", [
    ("cuda-python", "cudaMemcpyAsync", "cudaMemcpyAsync .to device. failed"),
    ("pycuda", "memcpy_htod_async", "memcpy_htod_async failed"),
    ("cuda-python", "cudaStreamSynchronize", "cudaStreamSynchronize failed"),
    ("pycuda", "synchronize", "Stream.synchronize failed"),
    ("cuda-python", "execute", "execute_async_v3 failed"), ("pycuda", "execute", "execute_async_v3 failed"),
])
def test_failed_inference_is_one_line(tmp_path, monkeypatch, gpu, binding, fault, match):
    monkeypatch.setitem(sys.modules, "tensorrt", make_tensorrt(gpu, "8.5.2"))
    plan = _plan(tmp_path, gpu, "8.5.2")
    with TrtBackend(plan, binding) as be:
        gpu.fail[fault] = 0
        with pytest.raises(BackendError, match=match):
            be.infer({names.PARTS_INPUT: np.zeros((4, 3, 32, 32), np.float32)})
        gpu.fail.clear()


def test_load_cuda_falls_back_when_cuda_python_imports_but_cannot_run(monkeypatch):
    """cuda-python 13 on JetPack 6 (driver for CUDA 12.6): it imports, every call returns
    cudaErrorInsufficientDriver. Old code picked it on import alone; now pycuda is used, and why is kept."""
    g = FakeGpu(driver=12060, runtime=13000)
    install(monkeypatch, g)
    cuda = trt_buffers.load_cuda()
    assert cuda.name == "pycuda"
    assert cuda.skipped == ["cuda-python: CUDA cudaGetDeviceCount failed: cudaErrorInsufficientDriver (35) (the "
                            "driver supports CUDA 12.6; a cuda-python for a newer CUDA imports but cannot run on it)"]
    cuda.close()
    g.assert_clean()
    install(monkeypatch, g, pycuda=False)
    with pytest.raises(BackendError) as err:
        trt_buffers.load_cuda()
    line = str(err.value)
    assert "cudaErrorInsufficientDriver" in line and "pycuda: not installed" in line
    assert "'.[jetson6]'` (cuda-python 12.6.x)" in line and "\n" not in line
    g.fail["init"] = 0  # pycuda present but no usable device either
    install(monkeypatch, g)
    with pytest.raises(BackendError, match=r"pycuda: CUDA initialisation failed: RuntimeError"):
        trt_buffers.load_cuda()
    g.assert_clean()


def test_open_backend_auto_picks_native_engine_when_cached_and_says_why(bundle, tmp_path, monkeypatch, gpu):
    monkeypatch.setitem(sys.modules, "tensorrt", make_tensorrt(gpu, "10.3.0"))
    # no engine cached: auto uses onnxruntime and says why; explicit trt says what to build
    with open_backend(bundle, "global", "auto", "int8") as be:
        assert isinstance(be, OrtBackend)
        assert "native TensorRT not used: no TensorRT engine for global at int8 for this GPU and TensorRT " \
               "version (Orin (sm 8.7), TensorRT 10.3.0)" in be.why
    with pytest.raises(BackendError, match=r"no TensorRT engine .*mgfen-export .* --engine --precision int8"):
        open_backend(bundle, "global", "trt", "int8")
    device = backends.probe_device("10.3.0", trt_buffers.load_cuda())
    assert device == DeviceInfo("10.3.0", "Orin", "8.7")
    engine = _cache_engine(bundle, "global", "int8", device)
    engine.write_bytes(_plan(tmp_path, gpu, "10.3.0", "global").read_bytes())
    from edge_runtime.bundle.manifest import sha256_file
    from edge_runtime.inference.engine_cache import write_index
    write_index(engine.parent, {k: dict(v, plan_sha256=sha256_file(engine))
                                for k, v in json.loads((engine.parent / INDEX_FILE).read_text()).items()})
    try:
        with open_backend(bundle, "global", "auto", "int8") as be:
            assert isinstance(be, TrtBackend) and be.path == engine
            assert be.why == f"auto: native TensorRT 10.3.0 via cuda-python, Orin (sm 8.7), engine {engine.name}"
    finally:
        engine.unlink()
        (engine.parent / INDEX_FILE).unlink()


def test_buffer_set_frees_on_failed_allocation(gpu):
    install_cuda = trt_buffers.load_cuda("cuda-python")
    gpu.fail["cudaMalloc"] = 2
    with pytest.raises(BackendError, match="cudaMalloc failed"):
        trt_buffers.BufferSet(install_cuda, {"a": ((4,), np.float32), "b": ((4,), np.float32)})
    assert not gpu.leaks()
