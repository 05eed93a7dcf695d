"""Inference backends behind one interface: `Backend.infer({name: array}) -> {name: array}`.

    with open_backend(bundle, "global", backend="auto", precision=None) as be:
        outputs = be.infer({GLOBAL_INPUT: x})      # {GLOBAL_LOGITS: [1,C] float32, ...}

- OrtBackend: onnxruntime with the CPU, CUDA or TensorRT execution provider. INT8 uses the file made for
  the provider: the `cpu` flavour (QDQ U8S8) on the CPU EP, the `trt` flavour (symmetric S8S8) on the
  TensorRT EP.
- TrtBackend: native TensorRT from a serialized engine (tensorrt + cuda-python or pycuda; buffers: trt_buffers).

Imports of onnxruntime and tensorrt are lazy: this module imports with neither installed, and a
missing package raises BackendError naming what to install.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from edge_runtime import names
from edge_runtime.bundle.int8_gate import auto_int8, precision_note, run_label
from edge_runtime.bundle.manifest import Bundle, Manifest
from edge_runtime.errors import BackendError, BundleError
from edge_runtime.inference import trt_buffers
from edge_runtime.inference.device_info import CPU_EP, CUDA_EP, TRT_EP, ort_install_note
from edge_runtime.inference.engine_cache import DeviceInfo, cache_key, lookup, onnx_for

BACKENDS = ("auto", "ort", "trt")
PRECISIONS = ("int8", "fp16", "fp32")
ORT_HINT = ("pip install onnxruntime (CPU) or onnxruntime-gpu (CUDA/TensorRT; on a Jetson NVIDIA's aarch64 wheel, "
            "not PyPI's, in place of onnxruntime: docs/jetson.md)")
TRT_HINT = ("JetPack's TensorRT Python package (sudo apt install python3-libnvinfer) or `pip install "
            "tensorrt` on x86")


# TensorRT DataType member name -> numpy dtype. Not trt.nptype: TensorRT 8.5.x (JetPack 5: 8.5.2) builds its
# table with np.bool, which numpy 1.24 (the newest numpy for Python 3.8) removed: AttributeError on every call.
TRT_NUMPY = {"FLOAT": np.float32, "HALF": np.float16, "INT8": np.int8, "INT32": np.int32, "INT64": np.int64,
             "BOOL": np.bool_, "UINT8": np.uint8}


def trt_dtype(trt: Any, dtype: Any) -> np.dtype:
    """numpy dtype of a tensorrt.DataType member, found by comparing with trt.DataType's members (BF16,
    FP8, INT4 have no numpy type: BackendError)."""
    for name, np_type in TRT_NUMPY.items():
        member = getattr(trt.DataType, name, None)
        if member is not None and dtype == member:
            return np.dtype(np_type)
    raise BackendError(f"TensorRT tensor type {getattr(dtype, 'name', dtype)} has no numpy equivalent; "
                       "bundles use FLOAT inputs and outputs (re-export)")


class Backend:
    """One loaded graph. Context manager; `infer` takes and returns {tensor name: numpy array}.

    input_names / output_names: tuples of tensor names; input_shapes: {name: fixed shape tuple}.
    """

    name = "backend"
    why = ""  # one line: which backend open_backend picked and why (auto says why not native TensorRT)
    note = ""  # one line when the INT8 gate chose fp32 for auto, or int8 runs a file that did not pass
    int8_label = ""  # "int8-<flavour>-<status>" when an INT8 file that did not pass its gate runs
    input_names: tuple[str, ...] = ()
    output_names: tuple[str, ...] = ()
    input_shapes: dict[str, tuple[int, ...]] = {}

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise BackendError(f"{type(self).__name__} cannot run inference")

    def close(self) -> None:
        """Release the session/engine. Safe to call twice."""

    def check_feeds(self, feeds: dict[str, np.ndarray]) -> None:
        """BackendError unless `feeds` holds exactly the inputs with their fixed shapes (cheap)."""
        if len(feeds) != len(self.input_names) or any(n not in feeds for n in self.input_names):
            raise BackendError(f"{self.name}: expected inputs {list(self.input_names)}, got {sorted(feeds)}")
        for n in self.input_names:
            shape = getattr(feeds[n], "shape", None)
            if shape != self.input_shapes[n]:
                raise BackendError(f"{self.name}: input {n!r} has shape {shape}, the model needs "
                                   f"{self.input_shapes[n]}")

    def __enter__(self) -> "Backend":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ----------------------------------------------------------------------------------------- onnxruntime


def import_onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise BackendError(f"the onnxruntime backend needs onnxruntime: {ORT_HINT}") from None
    return onnxruntime


def ort_providers() -> list[str]:
    """Execution providers this onnxruntime build offers ([] without onnxruntime)."""
    try:
        return list(import_onnxruntime().get_available_providers())
    except BackendError:
        return []


class OrtBackend(Backend):
    """onnxruntime session on one ONNX file.

    path: the .onnx file. providers: provider names or (name, options) pairs in priority order, e.g.
    [("TensorrtExecutionProvider", {...}), "CUDAExecutionProvider", "CPUExecutionProvider"]; default CPU.
    threads: intra-op threads (None: onnxruntime's default). spin: let them busy-wait for work after
    each run (onnxruntime's default). Off here: the waiting threads hold the cores the next frame's OpenCV
    preprocessing wants, which ran 1.7x slower beside them on a 2-core CPU (benchmarks/bench_spinning.py).
    """

    def __init__(self, path: str | Path, providers: list | None = None, threads: int | None = None,
                 spin: bool = False) -> None:
        ort = import_onnxruntime()
        path = Path(path)
        if not path.is_file():
            raise BundleError(f"{path}: model file not found")
        providers = list(providers or [CPU_EP])
        available = ort.get_available_providers()
        wanted = [p[0] if isinstance(p, tuple) else p for p in providers]
        missing = [p for p in wanted if p not in available]
        if missing:
            raise BackendError(f"onnxruntime here has no {', '.join(missing)} (available: "
                               f"{', '.join(available)}); {ORT_HINT}")
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            opts.intra_op_num_threads = int(threads)
        opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
        try:
            self._session = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
        except Exception as exc:  # onnxruntime raises its own pybind exception types
            raise BackendError(f"{path.name}: onnxruntime cannot load it ({type(exc).__name__}: "
                               f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''})") from None
        self.path = path
        self.name = f"ort:{self._session.get_providers()[0]}:{path.name}"
        inputs = self._session.get_inputs()
        self.input_names = tuple(i.name for i in inputs)
        self.output_names = tuple(o.name for o in self._session.get_outputs())
        self.input_shapes = {}
        for i in inputs:
            if not all(isinstance(d, int) for d in i.shape):
                raise BackendError(f"{path.name}: input {i.name!r} has a dynamic shape {i.shape}; bundles "
                                   "have fixed shapes (re-export)")
            self.input_shapes[i.name] = tuple(i.shape)

    @property
    def providers(self) -> list[str]:
        return list(self._session.get_providers())

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.check_feeds(feeds)
        try:
            outs = self._session.run(None, feeds)
        except Exception as exc:  # onnxruntime's pybind exceptions; re-raised typed, one line
            raise BackendError(f"{self.name}: inference failed ({type(exc).__name__}: "
                               f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''})") from None
        return dict(zip(self.output_names, outs))

    def close(self) -> None:
        self._session = None


# ------------------------------------------------------------------------------------- native TensorRT


@contextlib.contextmanager
def tensorrt_required(what: str = "the trt backend") -> Iterator[None]:
    """Wrap `import tensorrt as trt`: an ImportError becomes the one-line BackendError naming what to
    install. Importing inside the caller (not returning the module) keeps `trt` typed for mypy."""
    try:
        yield
    except ImportError:
        raise BackendError(f"{what} needs TensorRT's Python package: {TRT_HINT}") from None


def check_tensorrt(trt: Any) -> str:
    """TensorRT's version, or BackendError when `tensorrt` imported but is not TensorRT's bindings (a
    namespace package left by a stub-only install, say)."""
    version = getattr(trt, "__version__", None)
    if not version or not hasattr(trt, "Runtime"):
        raise BackendError("the `tensorrt` module here is not TensorRT's Python bindings (no __version__ or "
                           f"Runtime; found {getattr(trt, '__file__', None) or 'a namespace package'}): {TRT_HINT}")
    return str(version)


def tensorrt_available() -> bool:
    """True when TensorRT's bindings import (does not touch the GPU)."""
    try:
        with tensorrt_required():
            import tensorrt as trt
        check_tensorrt(trt)
    except BackendError:
        return False
    return True


def import_tensorrt() -> Any:
    """The tensorrt module (untyped), or the one-line BackendError naming what to install."""
    with tensorrt_required():
        import tensorrt as trt
    check_tensorrt(trt)
    return trt


class TrtBackend(Backend):
    """Native TensorRT on a serialized engine (a plain plan file built on this device).

    Uses the name-based I/O API of TensorRT 10 (also present in 8.5; 10 removed the binding-index API):
    num_io_tensors, get_tensor_name, get_tensor_mode, set_tensor_address (its bool is checked),
    execute_async_v3. Buffers come from edge_runtime.inference.trt_buffers (cuda-python or pycuda, page-locked
    host memory), allocated once. Every shape must be fixed.

    cuda: a binding to share (export's engine check runs several plans on one); None loads one with
    trt_buffers.load_cuda(cuda_binding), which this backend then owns and closes. A failure half-way
    through __init__ frees what was allocated and pops pycuda's context before it raises.

    Tested end to end against tests/fake_tensorrt.py and tests/fake_cuda.py (TensorRT 8.5 and 10
    behaviour, both CUDA bindings, failures on demand); never run on a real GPU here.
    """

    def __init__(self, engine_path: str | Path, cuda_binding: str | None = None,
                 cuda: trt_buffers.CudaApi | None = None) -> None:
        with tensorrt_required():
            import tensorrt as trt
        version = check_tensorrt(trt)
        path = Path(engine_path)
        if not path.is_file():
            raise BackendError(f"{path}: TensorRT engine not found (build it on this device with "
                               "`mgfen-export --engine`)")
        self.path = path
        self.name = f"trt:{path.name}"
        self._buffers: trt_buffers.BufferSet | None = None
        self._runtime: Any = None
        self._engine: Any = None
        self._context: Any = None
        self._owns_cuda = cuda is None
        self._cuda: trt_buffers.CudaApi | None = cuda if cuda is not None else trt_buffers.load_cuda(cuda_binding)
        self.why = f"native TensorRT {version} ({self._cuda.name})"
        try:
            self._open(path)
        except BaseException:
            with contextlib.suppress(Exception):  # keep the original error
                self.close()
            raise

    def _open(self, path: Path) -> None:
        import tensorrt as trt  # already imported by __init__; typed here for mypy

        assert self._cuda is not None
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self._runtime = runtime
        engine = runtime.deserialize_cuda_engine(path.read_bytes())
        if engine is None:
            raise BackendError(f"{path.name}: TensorRT {trt.__version__} cannot load this engine (built "
                               "with another TensorRT version or GPU?); rebuild it with `mgfen-export --engine`")
        self._engine = engine
        context = engine.create_execution_context()
        if context is None:
            raise BackendError(f"{path.name}: TensorRT cannot create an execution context (out of GPU memory?)")
        self._context = context
        specs: dict[str, trt_buffers.Spec] = {}
        inputs, outputs = [], []
        for i in range(engine.num_io_tensors):
            tname = engine.get_tensor_name(i)
            dims = engine.get_tensor_shape(tname)
            shape = tuple(int(dims[j]) for j in range(len(dims)))
            if any(d < 0 for d in shape):
                raise BackendError(f"{path.name}: tensor {tname!r} has a dynamic shape {shape}")
            specs[tname] = (shape, trt_dtype(trt, engine.get_tensor_dtype(tname)))
            mode = engine.get_tensor_mode(tname)
            if mode == trt.TensorIOMode.INPUT:
                inputs.append(tname)
            elif mode == trt.TensorIOMode.OUTPUT:
                outputs.append(tname)
            else:
                raise BackendError(f"{path.name}: tensor {tname!r} is neither input nor output ({mode})")
        self._buffers = trt_buffers.BufferSet(self._cuda, specs)
        for tname, buf in self._buffers.buffers.items():
            if not context.set_tensor_address(tname, buf.device):
                raise BackendError(f"{path.name}: TensorRT refused the device address of tensor {tname!r}")
        self.input_names, self.output_names = tuple(inputs), tuple(outputs)
        self.input_shapes = {n: specs[n][0] for n in inputs}

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.check_feeds(feeds)
        bufs = self._buffers
        if bufs is None or self._context is None:
            raise BackendError(f"{self.name}: closed")
        for n in self.input_names:
            bufs.upload(n, feeds[n])
        if not self._context.execute_async_v3(bufs.stream_handle):
            raise BackendError(f"{self.name}: execute_async_v3 failed")
        for n in self.output_names:
            bufs.download(n)
        bufs.sync()
        return {n: bufs.buffers[n].host.astype(np.float32, copy=True) for n in self.output_names}

    def close(self) -> None:
        """Drop the context and engine, free the buffers, then (when owned) close the CUDA binding, popping
        pycuda's context -- each step runs even when an earlier one fails. Safe to call twice."""
        self._context = self._engine = self._runtime = None
        bufs, self._buffers = getattr(self, "_buffers", None), None
        cuda, self._cuda = getattr(self, "_cuda", None), None
        try:
            if bufs is not None:
                bufs.free()
        finally:
            if cuda is not None and getattr(self, "_owns_cuda", True):
                cuda.close()


def probe_device(trt_version: str, cuda: trt_buffers.CudaApi) -> DeviceInfo:
    """What engines are keyed by on this machine: TensorRT version, GPU name and compute capability of the
    binding's device, and the Jetson board from the device tree (empty elsewhere)."""
    from edge_runtime.inference.device_info import jetson_board

    gpu, cap = cuda.device()
    model, ids = jetson_board()
    return DeviceInfo(trt_version, gpu, f"{cap[0]}.{cap[1]}", model, ids)


# ------------------------------------------------------------------------------------------- selection


def onnx_file_for(manifest: Manifest, graph: str, precision: str, target: str) -> str:
    """The bundle file to run `graph` at `precision` on `target` ("cpu", "cuda" or "trt").

    int8 takes the flavour made for the target (cpu -> .int8.cpu.onnx, trt -> .int8.trt.onnx); fp16 on
    TensorRT builds from the fp32 file; an fp16 ONNX file (flavour None) is used where one exists.
    Raises BundleError/BackendError saying what the bundle lacks.
    """
    if precision not in PRECISIONS:
        raise BackendError(f"unknown precision {precision!r}; expected one of {', '.join(PRECISIONS)}")
    if precision == "int8":
        if target == "cuda":
            raise BackendError("int8 on onnxruntime's CUDA provider is not supported: use the TensorRT "
                               "provider or the CPU, or --precision fp16/fp32")
        name = manifest.file_for(graph, "int8", target)
        if name is None:
            raise BundleError(f"the bundle has no {target}-flavour int8 file for {graph} "
                              f"({names.model_file(graph, 'int8', target)}); export with --int8 or "
                              "use --precision fp32")
        return name
    if precision == "fp16":
        name = manifest.file_for(graph, "fp16")
        if name is not None:
            return name
        if target != "trt":
            raise BackendError(f"fp16 needs TensorRT (or an fp16 file in the bundle) for {graph}; use "
                               "--precision fp32 or int8 on the CPU")
    name = manifest.file_for(graph, "fp32")
    if name is None:
        raise BundleError(f"the bundle has no fp32 file for {graph} ({names.model_file(graph)})")
    return name


def resolve_precision(manifest: Manifest, graph: str, precision: str | None, target: str) -> str:
    """None means the best the bundle offers for the target: int8 when its flavour exists and passed its
    export gate (edge_runtime.bundle.int8_gate), else fp32."""
    if precision is not None:
        return precision
    return "int8" if auto_int8(manifest, graph, target) else "fp32"


def _label(be: Backend, manifest: Manifest, graph: str, requested: str | None, precision: str, target: str) -> Backend:
    """Set be.note and be.int8_label (above) for what runs; returns be."""
    be.note = precision_note(manifest, graph, requested, precision, target)
    be.int8_label = run_label(manifest, precision, target)
    return be


def ort_target(providers: list[str]) -> str:
    """The best onnxruntime target among available providers: "trt", "cuda" or "cpu"."""
    if TRT_EP in providers:
        return "trt"
    if CUDA_EP in providers:
        return "cuda"
    return "cpu"


def ort_provider_list(target: str, precision: str, cache_dir: Path | None) -> list:
    """Providers (with options) for onnxruntime on `target`, falling back down the chain to the CPU."""
    if target == "cpu":
        return [CPU_EP]
    if target == "cuda":
        return [CUDA_EP, CPU_EP]
    # int8 runs the QDQ file as export scored it: no FP16 for the layers Q/DQ leaves float (as build_recipe)
    trt_opts: dict[str, object] = {"trt_fp16_enable": precision == "fp16", "trt_int8_enable": precision == "int8"}
    if cache_dir is not None:
        trt_opts.update(trt_engine_cache_enable=True, trt_engine_cache_path=str(cache_dir))
    return [(TRT_EP, trt_opts), CUDA_EP, CPU_EP]


def native_engine_path(bundle: Bundle, graph: str, precision: str, device: DeviceInfo) -> Path | None:
    """The cached, intact engine `mgfen-export --engine` built for this graph, precision, device, TensorRT
    version and build recipe (edge_runtime.inference.engine_cache), or None when there is none."""
    onnx_name = onnx_for(bundle, graph, precision)
    key = cache_key(bundle.manifest.files[onnx_name].sha256, device, precision)
    return lookup(bundle.path(names.ENGINE_DIR), key)


def _native_engine(bundle: Bundle, graph: str, precision: str) -> tuple[Path | None, str]:
    """(cached engine or None, a one-line account of what was found). BackendError when TensorRT or a
    working CUDA binding is missing."""
    version = str(import_tensorrt().__version__)
    cuda = trt_buffers.load_cuda()
    try:
        device = probe_device(version, cuda)
    finally:
        cuda.close()
    skipped = f"; {'; '.join(cuda.skipped)}" if cuda.skipped else ""
    engine = native_engine_path(bundle, graph, precision, device)
    if engine is None:
        return None, (f"no TensorRT engine for {graph} at {precision} for this GPU and TensorRT version "
                      f"({device.label()}, TensorRT {version}) in {bundle.path(names.ENGINE_DIR)}: build it "
                      f"with `mgfen-export {bundle.root} --engine --precision {precision}`")
    return engine, (f"native TensorRT {version} via {cuda.name}{skipped}, {device.label()}, engine "
                    f"{engine.name}")


def open_backend(bundle: Bundle, graph: str, backend: str = "auto", precision: str | None = "int8",
                 threads: int | None = None, spin: bool = False) -> Backend:
    """Open `graph` ("global" | "parts") of a loaded bundle.

    backend: "ort" (onnxruntime, best provider present: TensorRT EP > CUDA EP > CPU), "trt" (native
    TensorRT engine from bundle/engines, keyed by edge_runtime.inference.engine_cache), or "auto": native TensorRT
    when tensorrt imports, a CUDA binding works and an engine for this device exists, else "ort".
    precision: "int8" | "fp16" | "fp32", or None for the best the bundle offers (int8 when present and its
    gate passed, else fp32: `note` says so). `why` is one line naming what was picked and, for auto on onnxruntime,
    why native TensorRT was not (not installed, no working CUDA binding, no engine for this device).
    threads, spin: onnxruntime's intra-op threads and whether they busy-wait (OrtBackend).
    """
    if graph not in names.GRAPHS:
        raise BackendError(f"unknown graph {graph!r}; expected one of {names.GRAPHS}")
    if backend not in BACKENDS:
        raise BackendError(f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    not_native = ""
    if backend in ("auto", "trt"):
        prec = resolve_precision(bundle.manifest, graph, precision, "trt")
        try:
            engine, why = _native_engine(bundle, graph, prec)
        except BackendError as exc:
            if backend == "trt":
                raise
            engine, why = None, str(exc)
        if engine is not None:
            native = TrtBackend(engine)
            native.why = f"{backend}: {why}"
            return _label(native, bundle.manifest, graph, precision, prec, "trt")
        if backend == "trt":
            raise BackendError(why)
        not_native = f"; native TensorRT not used: {why}"
    available = ort_providers()
    if not available:
        import_onnxruntime()  # raises the install hint
    target = ort_target(available)
    prec = resolve_precision(bundle.manifest, graph, precision, target)
    if target == "cuda" and prec == "int8":
        target = "cpu" if backend == "auto" else target  # the CUDA EP cannot run the QDQ files well
    name = onnx_file_for(bundle.manifest, graph, prec, target)
    cache = bundle.path(names.ENGINE_DIR) / "ort-trt" if target == "trt" else None
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
    be = OrtBackend(bundle.path(name), ort_provider_list(target, prec, cache), threads=threads, spin=spin)
    note = ort_install_note(available)
    be.why = f"{backend}: onnxruntime {be.providers[0]}, {prec} ({name}){not_native}{'; ' + note if note else ''}"
    return _label(be, bundle.manifest, graph, precision, prec, target)
