"""Backends: onnxruntime on the fake bundle, file/provider selection, TensorRT error paths, and the
TensorRT glue run against a fake `tensorrt` module and fake CUDA memory (no GPU here)."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest

from edge_runtime import backends, names, trt_buffers
from edge_runtime.backends import (OrtBackend, TrtBackend, native_engine_path, onnx_file_for,
                                   open_backend, ort_provider_list, resolve_precision)
from edge_runtime.engine_cache import INDEX_FILE, DeviceInfo, cache_key, onnx_for, plan_name, write_index
from edge_runtime.errors import BackendError, BundleError
from edge_runtime.manifest import load_bundle
from fake_bundle import make_fake_bundle


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


def _fake_tensorrt() -> types.ModuleType:
    trt = types.ModuleType("tensorrt")
    trt.__version__ = "10.3.0"
    return trt


def test_trt_without_cuda_binding(bundle, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", _fake_tensorrt())
    for mod in ("cuda", "cuda.bindings", "cuda.cudart", "pycuda", "pycuda.driver"):
        monkeypatch.setitem(sys.modules, mod, None)
    with pytest.raises(BackendError, match="cuda-python.*pycuda"):
        trt_buffers.load_cuda()
    with pytest.raises(BackendError, match="CUDA binding"):
        open_backend(bundle, "global", "trt", "int8")
    # auto falls back to onnxruntime when native TensorRT cannot run
    with open_backend(bundle, "global", "auto", "int8") as be:
        assert isinstance(be, OrtBackend)


def _cache_engine(bundle, graph: str, precision: str, device: DeviceInfo):
    """Put a plan into the bundle's engine cache as `mgfen-export --engine` would; return its path."""
    onnx_name = onnx_for(bundle, graph, precision)
    key = cache_key(bundle.manifest.files[onnx_name].sha256, device, precision)
    engine_dir = bundle.path(names.ENGINE_DIR)
    engine_dir.mkdir(exist_ok=True)
    plan = engine_dir / plan_name(graph, key)
    plan.write_bytes(b"PLAN")
    from edge_runtime.manifest import sha256_file
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


class FakeCuda(trt_buffers.CudaApi):
    """Device memory as numpy byte arrays; records calls."""

    name = "fake"

    def __init__(self):
        self.mem, self.next, self.freed, self.closed = {}, 4096, [], False

    def malloc(self, nbytes):
        ptr, self.next = self.next, self.next + nbytes + 256
        self.mem[ptr] = np.zeros(nbytes, np.uint8)
        return ptr

    def free(self, ptr):
        self.freed.append(ptr)
        del self.mem[ptr]

    def stream_create(self):
        return 7

    def stream_sync(self, stream):
        assert stream == 7

    def stream_destroy(self, stream):
        pass

    def htod_async(self, ptr, host, stream):
        self.mem[ptr][: host.nbytes] = host.reshape(-1).view(np.uint8)

    def dtoh_async(self, host, ptr, stream):
        host.reshape(-1).view(np.uint8)[:] = self.mem[ptr][: host.nbytes]

    def device(self):
        return "Fake GPU", (8, 7)

    def close(self):
        self.closed = True


def _fake_trt_runtime(cuda: FakeCuda) -> types.ModuleType:
    """A `tensorrt` module whose engine doubles input "x" [1,3] float32 into output "y" [1,3]."""
    trt = _fake_tensorrt()
    trt.Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda self, level: None})
    trt.TensorIOMode = types.SimpleNamespace(INPUT="in", OUTPUT="out")
    trt.nptype = lambda dt: dt

    class Context:
        def __init__(self):
            self.addr = {}

        def set_tensor_address(self, name, ptr):
            self.addr[name] = ptr

        def execute_async_v3(self, stream):
            x = cuda.mem[self.addr["x"]].view(np.float32)
            cuda.mem[self.addr["y"]].view(np.float32)[:] = 2 * x
            return True

    class Engine:
        num_io_tensors = 2

        def get_tensor_name(self, i):
            return ("x", "y")[i]

        def get_tensor_shape(self, name):
            return (1, 3)

        def get_tensor_dtype(self, name):
            return np.float32

        def get_tensor_mode(self, name):
            return "in" if name == "x" else "out"

        def create_execution_context(self):
            return Context()

    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, data):
            return Engine() if data == b"PLAN" else None

    trt.Runtime = Runtime
    return trt


def test_trt_backend_glue_with_fakes(tmp_path, monkeypatch):
    cuda = FakeCuda()
    monkeypatch.setitem(sys.modules, "tensorrt", _fake_trt_runtime(cuda))
    monkeypatch.setattr(trt_buffers, "load_cuda", lambda prefer=None: cuda)
    with pytest.raises(BackendError, match="engine not found"):
        TrtBackend(tmp_path / "none.engine")
    stale = tmp_path / "stale.engine"
    stale.write_bytes(b"OTHER")
    with pytest.raises(BackendError, match="cannot load this engine"):
        TrtBackend(stale)
    plan = tmp_path / "ok.engine"
    plan.write_bytes(b"PLAN")
    be = TrtBackend(plan)
    assert be.input_names == ("x",) and be.output_names == ("y",)
    for value in (1.5, -3.0):  # buffers are reused across calls
        out = be.infer({"x": np.full((1, 3), value, np.float32)})
        np.testing.assert_array_equal(out["y"], np.full((1, 3), 2 * value, np.float32))
    with pytest.raises(BackendError, match="shape"):
        be.infer({"x": np.zeros((2, 3), np.float32)})
    be.close()
    be.close()
    assert len(cuda.freed) == 2 and cuda.closed and not cuda.mem


def test_open_backend_auto_picks_native_engine_when_cached(bundle, tmp_path, monkeypatch):
    cuda = FakeCuda()
    monkeypatch.setitem(sys.modules, "tensorrt", _fake_trt_runtime(cuda))
    monkeypatch.setattr(trt_buffers, "load_cuda", lambda prefer=None: cuda)
    # no engine cached: auto uses onnxruntime, explicit trt says what to build
    with open_backend(bundle, "global", "auto", "int8") as be:
        assert isinstance(be, OrtBackend)
    with pytest.raises(BackendError, match=r"no TensorRT engine .*mgfen-export .* --engine --precision int8"):
        open_backend(bundle, "global", "trt", "int8")
    engine = _cache_engine(bundle, "global", "int8", DeviceInfo("10.3.0", "Fake GPU", "8.7"))
    try:
        with open_backend(bundle, "global", "auto", "int8") as be:
            assert isinstance(be, TrtBackend) and be.path == engine
    finally:
        engine.unlink()
        (engine.parent / INDEX_FILE).unlink()


def test_buffer_set_frees_on_failed_allocation():
    cuda = FakeCuda()
    calls = {"n": 0}
    real = cuda.malloc

    def failing(nbytes):
        calls["n"] += 1
        if calls["n"] == 2:
            raise BackendError("out of memory")
        return real(nbytes)

    cuda.malloc = failing
    with pytest.raises(BackendError, match="out of memory"):
        trt_buffers.BufferSet(cuda, {"a": ((4,), np.float32), "b": ((4,), np.float32)})
    assert not cuda.mem
