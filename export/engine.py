"""TensorRT engines built on the device from a bundle's ONNX files, cached in BUNDLE/engines/.

    engines = ensure_engines(Path("bundle"), precision="int8")     # on the Jetson

Cache: an engine is valid for one ONNX file (sha256), TensorRT version, GPU name, compute capability
and precision. `cache_key` hashes exactly those; the plan file is named from the key
(`global.int8.<key16>.plan`), and engines/index.json maps key -> {file, plan sha256, what it was built
from, verification}. An entry is reused while its plan exists and matches its sha256; an entry for the
same ONNX/precision under another key (other TensorRT, other GPU) is stale: it is removed and rebuilt.
Plans are plain TensorRT serialisations (no header), loadable by any TensorRT runtime of that version.

Which file is built: precision int8 -> the TensorRT-flavour QDQ file (explicit quantisation: strongly
typed network on TensorRT >= 10, the INT8 builder flag on 8.x; no calibrator, TensorRT 11 removed it);
fp16/fp32 -> the FP32 graph (fp16 via the FP16 builder flag, which TensorRT 11 removed).

tensorrt and the CUDA bindings are imported only when an engine is built or run; without them the
caller gets a BackendError naming what to install. Only the cache logic runs off the device.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Callable

import numpy as np

from edge_runtime import names
from edge_runtime.engine_cache import (DeviceInfo, cache_key, lookup, onnx_for, plan_name, read_index,
                                       stale_entries, write_index)
from edge_runtime.errors import BackendError, BundleError
from edge_runtime.manifest import Bundle, load_bundle, sha256_file

WORKSPACE_BYTES = 1 << 30
INSTALL_HINT = ("TensorRT's Python bindings are not installed: on a Jetson install JetPack's "
                "python3-libnvinfer (sudo apt install python3-libnvinfer) and cuda-python or pycuda")


BuildFn = Callable[[Path, str], bytes]  # (onnx path, precision) -> serialised plan
VerifyFn = Callable[[Path, Path], dict]  # (plan path, onnx path) -> report with "passed"


def ensure_engine(bundle: Bundle, graph: str, precision: str, device: DeviceInfo, build: BuildFn,
                  verify: VerifyFn | None = None, log: Callable[[str], None] = lambda m: None) -> Path:
    """Return a valid plan for (graph, precision) on `device`, building (and verifying) it if needed.

    build/verify are injected so the cache logic is testable without TensorRT; on the device they are
    build_plan and verify_plan. A failed verification removes the plan and raises BackendError.
    """
    engine_dir = bundle.root / names.ENGINE_DIR
    onnx_name = onnx_for(bundle, graph, precision)
    onnx_path = bundle.root / onnx_name
    key = cache_key(sha256_file(onnx_path), device, precision)
    cached = lookup(engine_dir, key)
    if cached is not None:
        log(f"{graph} {precision}: cached engine {cached.name}")
        return cached
    index = read_index(engine_dir)
    for old in stale_entries(index, onnx_name, key):
        (engine_dir / index[old].get("file", "_")).unlink(missing_ok=True)
        log(f"{graph} {precision}: removing stale engine {index[old].get('file')}")
        del index[old]
    engine_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    plan_bytes = build(onnx_path, precision)
    plan = engine_dir / plan_name(graph, key)
    tmp = plan.with_suffix(".tmp")
    tmp.write_bytes(plan_bytes)
    tmp.replace(plan)
    entry = {"file": plan.name, "plan_sha256": sha256_file(plan), "onnx": onnx_name, "graph": graph,
             "key": dataclasses.asdict(key), "build_seconds": round(time.perf_counter() - t0, 2),
             "built_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
    if verify is not None:
        check = verify(plan, onnx_path)
        entry["verify"] = check
        if not check.get("passed"):
            plan.unlink(missing_ok=True)
            raise BackendError(f"{plan.name}: engine outputs disagree with onnxruntime ({check.get('reason')})")
    index[key.digest()] = entry
    write_index(engine_dir, index)
    log(f"{graph} {precision}: built {plan.name} in {entry['build_seconds']} s")
    return plan


# ------------------------------------------------------------------------------ TensorRT (device only)


def import_tensorrt():
    """The tensorrt module, or BackendError with the one line naming what to install."""
    try:
        import tensorrt as trt  # noqa: PLC0415 (lazy: only the device has it)
    except ImportError:
        raise BackendError(INSTALL_HINT) from None
    return trt


def import_cudart():
    """cuda-python's runtime module (cuda.bindings.runtime from 12.6 on, cuda.cudart before)."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart
        except ImportError:
            raise BackendError("cuda-python is not installed: pip install cuda-python (matching JetPack's "
                               "CUDA version)") from None
    return cudart


def trt_major(trt) -> int:
    return int(str(trt.__version__).split(".")[0])


def probe_device(trt) -> DeviceInfo:
    """TensorRT version, GPU name and compute capability of GPU 0 (cuda-python, else pycuda)."""
    try:
        cudart = import_cudart()
        err, props = cudart.cudaGetDeviceProperties(0)
        if int(err) != 0:
            raise BackendError(f"CUDA cannot open GPU 0 (error {int(err)})")
        name = props.name.decode() if isinstance(props.name, bytes) else str(props.name)
        return DeviceInfo(str(trt.__version__), name.strip("\x00 "), f"{props.major}.{props.minor}")
    except BackendError:
        pass
    try:
        import pycuda.driver as cuda
    except ImportError:
        raise BackendError("neither cuda-python nor pycuda is installed: pip install cuda-python "
                           "(matching JetPack's CUDA) or pycuda") from None
    cuda.init()
    dev = cuda.Device(0)
    major, minor = dev.compute_capability()
    return DeviceInfo(str(trt.__version__), dev.name(), f"{major}.{minor}")


def build_plan(onnx_path: Path, precision: str, workspace: int = WORKSPACE_BYTES) -> bytes:
    """Parse an ONNX file and build a serialised engine (plain plan bytes).

    TensorRT >= 10: the QDQ (int8) file is built as a strongly typed network, whose precisions come from
    the Q/DQ nodes; fp16 uses BuilderFlag.FP16 where it still exists (removed in TensorRT 11).
    TensorRT 8.x: explicit-batch network; int8 sets the INT8 flag (plus FP16 for the layers Q/DQ leaves
    in float), which with Q/DQ nodes means explicit quantisation -- no calibrator.
    """
    trt = import_tensorrt()
    major = trt_major(trt)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if major < 10:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    elif precision == "int8":
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx_path).read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise BackendError(f"{Path(onnx_path).name}: TensorRT cannot parse it: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace)
    if precision == "int8" and major < 10:
        config.set_flag(trt.BuilderFlag.INT8)
        config.set_flag(trt.BuilderFlag.FP16)
    elif precision == "fp16":
        if not hasattr(trt.BuilderFlag, "FP16"):
            raise BackendError(f"TensorRT {trt.__version__} has no FP16 builder flag; use --precision int8 "
                               "(QDQ) or fp32")
        config.set_flag(trt.BuilderFlag.FP16)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise BackendError(f"{Path(onnx_path).name}: TensorRT failed to build a {precision} engine (see log)")
    return bytes(serialized)


def run_plan(plan: Path, feeds: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
    """Run a plan on host feeds with the name-based I/O API (TensorRT 8.5+: num_io_tensors,
    set_tensor_address, execute_async_v3) and cuda-python buffers; returns outputs per feed."""
    trt = import_tensorrt()
    cudart = import_cudart()
    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    engine = runtime.deserialize_cuda_engine(plan.read_bytes())
    if engine is None:
        raise BackendError(f"{plan.name}: TensorRT cannot load this plan")
    context = engine.create_execution_context()
    _, stream = cudart.cudaStreamCreate()
    io = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    results = []
    for feed in feeds:
        host, device = {}, {}
        for name in io:
            shape = tuple(context.get_tensor_shape(name))
            dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
            is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            host[name] = np.ascontiguousarray(feed[name].astype(dtype)) if is_input else np.empty(shape, dtype)
            _, device[name] = cudart.cudaMalloc(host[name].nbytes)
            context.set_tensor_address(name, int(device[name]))
            if is_input:
                cudart.cudaMemcpyAsync(device[name], host[name].ctypes.data, host[name].nbytes,
                                       cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, stream)
        if not context.execute_async_v3(int(stream)):
            raise BackendError(f"{plan.name}: execution failed")
        outs = {}
        for name in io:
            if engine.get_tensor_mode(name) != trt.TensorIOMode.INPUT:
                cudart.cudaMemcpyAsync(host[name].ctypes.data, device[name], host[name].nbytes,
                                       cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost, stream)
                outs[name] = host[name]
        cudart.cudaStreamSynchronize(stream)
        for ptr in device.values():
            cudart.cudaFree(ptr)
        results.append(outs)
    cudart.cudaStreamDestroy(stream)
    return results


def compare_outputs(engine_outs: list[dict], ort_outs: list[dict], precision: str) -> dict:
    """Engine vs onnxruntime on the same feeds: worst abs error per output, argmax agreement of logits,
    and equality of boxes. Tolerances: fp32 1e-3, fp16 2e-2 on probabilities; int8 needs the same class
    on every frame (boxes may move by a heatmap cell)."""
    from edge_runtime.roi import softmax

    tol = {"fp32": 1e-3, "fp16": 2e-2, "int8": None}[precision]
    worst: dict[str, float] = {}
    agree, total, boxes_equal = 0, 0, True
    for e, o in zip(engine_outs, ort_outs):
        for name, ref in o.items():
            worst[name] = max(worst.get(name, 0.0), float(np.abs(e[name].astype(np.float64) - ref).max()))
            if name in (names.GLOBAL_LOGITS, names.PART_LOGITS):
                agree += int((e[name].argmax(-1) == ref.argmax(-1)).sum())
                total += ref.shape[0]
                worst[name + "_prob"] = max(worst.get(name + "_prob", 0.0),
                                            float(np.abs(softmax(e[name]) - softmax(ref)).max()))
            if name == names.BOXES:
                boxes_equal &= bool(np.array_equal(e[name], ref))
    prob_err = max((v for k, v in worst.items() if k.endswith("_prob")), default=0.0)
    passed = agree == total if tol is None else (prob_err <= tol and agree == total)
    reason = None if passed else f"probability error {prob_err:.3g}, class agreement {agree}/{total}"
    return {"passed": passed, "reason": reason, "max_abs": worst, "class_agreement": f"{agree}/{total}",
            "boxes_equal": boxes_equal, "frames": len(ort_outs)}


def sample_feeds(bundle: Bundle, graph: str) -> list[dict[str, np.ndarray]]:
    """Feeds for the engine check: the bundle's prepared calibration frames (calibration/sample*.png,
    sha256-checked) through the shared preprocessing; parts crops come from the FP32 global graph."""
    import cv2

    from calibration.accuracy import make_session
    from edge_runtime.preprocess import global_input
    from edge_runtime.roi import crop_rois

    man = bundle.manifest
    samples = (man.calibration or {}).get("samples") or {}
    if not samples:
        raise BundleError(f"{bundle.root}: no calibration samples to check engines with (export with --int8)")
    frames = []
    for rel, digest in sorted(samples.items()):
        path = bundle.root / rel
        if not path.is_file() or sha256_file(path) != digest:
            raise BundleError(f"{path}: calibration sample missing or altered")
        frames.append(cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB))
    cfg = man.preprocess
    if graph == "global":
        return [{names.GLOBAL_INPUT: global_input(f, cfg)} for f in frames]
    g = make_session(bundle.root / man.file_for("global", "fp32"))
    feeds = []
    for f in frames:
        (boxes,) = g.run([names.BOXES], {names.GLOBAL_INPUT: global_input(f, cfg)})
        feeds.append({names.PARTS_INPUT: crop_rois(f, boxes[0], cfg.crop_size)})
    return feeds


def verify_plan_for(bundle: Bundle, graph: str, precision: str) -> VerifyFn:
    """A verify function: engine vs onnxruntime (same ONNX file) on the bundle's calibration samples."""
    def verify(plan: Path, onnx_path: Path) -> dict:
        from calibration.accuracy import make_session

        feeds = sample_feeds(bundle, graph)
        sess = make_session(onnx_path)
        outs = [n.name for n in sess.get_outputs()]
        ort_outs = [dict(zip(outs, sess.run(outs, f))) for f in feeds]
        return compare_outputs(run_plan(plan, feeds), ort_outs, precision)
    return verify


def ensure_engines(root: str | Path, precision: str = "int8", workspace: int = WORKSPACE_BYTES,
                   log: Callable[[str], None] = lambda m: None) -> dict[str, Path]:
    """Build or reuse the global and parts engines of the bundle at `root` on this device.

    Raises BackendError (no TensorRT, build or verification failure) or BundleError (bad bundle)."""
    trt = import_tensorrt()
    bundle = load_bundle(root)
    device = probe_device(trt)
    log(f"TensorRT {device.trt_version} on {device.gpu_name} (sm {device.compute_capability})")
    out = {}
    for graph in names.GRAPHS:
        out[graph] = ensure_engine(bundle, graph, precision, device,
                                   lambda path, prec: build_plan(path, prec, workspace),
                                   verify_plan_for(bundle, graph, precision), log)
    return out
