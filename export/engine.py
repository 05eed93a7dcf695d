"""TensorRT engines built on the device from a bundle's ONNX files, cached in BUNDLE/engines/.

    results = ensure_engines(Path("bundle"), precision="int8")     # on the Jetson
    for graph, res in results.items(): print(res.line)            # one verification line per engine

Cache (edge_runtime/inference/engine_cache.py, shared with the scanner): an engine is valid for one ONNX file
(sha256), TensorRT version, GPU name and compute capability, Jetson board, precision and build recipe;
`cache_key` hashes exactly those; the plan file is named from the key (`global.int8.<key16>.plan`), and
engines/index.json maps key -> {file, plan sha256, what it was built from and with, verification}. An entry
is reused while its plan exists and matches its sha256; an entry for the same ONNX/precision under another
key (other TensorRT, GPU, board or an older recipe) is stale: it is removed and rebuilt. Plans are plain
TensorRT serialisations (no header), loadable by any TensorRT runtime of that version.

How a plan is built is engine_cache.build_recipe (the key names it, build_plan applies it): int8 from the
TensorRT-flavour QDQ file (explicit quantisation, no calibrator: strongly typed on TensorRT >= 10, the INT8
flag alone on 8.x), fp16/fp32 from the FP32 graph (fp16 with the heatmap and box tail pinned FP32);
TF32 cleared at every precision. A file whose ONNX opset is newer than this TensorRT parses is refused.

Every new plan is checked (export/engine_check.py) against onnxruntime on the bundle's calibration frames
before it enters the index; a plan that fails the check, or whose check raises, is deleted.

tensorrt and the CUDA bindings are imported only when an engine is built or run; without them the caller
gets one BackendError line naming what to install. This module imports neither torch nor anything that
does: `mgfen-export BUNDLE --engine` runs where only the runtime is installed (Python 3.8 on JetPack 5).
"""

from __future__ import annotations

import dataclasses
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from edge_runtime import names
from edge_runtime.bundle.manifest import Bundle, load_bundle, sha256_file
from edge_runtime.errors import BackendError
from edge_runtime.inference import trt_buffers
from edge_runtime.inference.backends import TrtBackend, check_tensorrt, probe_device, tensorrt_required
from edge_runtime.inference.engine_cache import (BuildRecipe, DeviceInfo, build_recipe, cache_key, check_opset, lookup,
                                       onnx_for, plan_name, read_index, stale_entries, write_index)
from export.engine_check import check_line, compare_outputs, reference_outputs, sample_feeds

WHAT = "`mgfen-export --engine`"

BuildFn = Callable[[Path, BuildRecipe], bytes]  # (onnx path, recipe) -> serialised plan
VerifyFn = Callable[[Path, Path], dict]  # (plan path, onnx path) -> check report with "passed"
Feeds = List[Dict[str, np.ndarray]]


@dataclass
class EngineResult:
    """One engine of ensure_engine: its plan, its index entry (with the check report under "verify"),
    whether it came from the cache, and the one verification line for a ticket."""

    graph: str
    precision: str
    plan: Path
    entry: dict
    cached: bool
    line: str


def onnx_opset(onnx_path: Path) -> int:
    """The default-domain (ai.onnx) opset an ONNX file imports; 0 when it names none or does not parse
    (TensorRT's parser then says what is wrong with it)."""
    import onnx

    try:
        model = onnx.load(str(onnx_path), load_external_data=False)
    except Exception:  # onnx raises protobuf's DecodeError and others for a damaged file
        return 0
    return max((int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)


def ensure_engine(bundle: Bundle, graph: str, precision: str, device: DeviceInfo, build: BuildFn,
                  verify: Optional[VerifyFn] = None, log: Callable[[str], None] = lambda m: None) -> EngineResult:
    """A valid plan for (graph, precision) on `device`, building (and verifying) it if needed.

    build/verify are injected so the cache logic is testable without TensorRT; on the device they are
    build_plan and verify_plan_for. An ONNX opset newer than device.trt_version parses
    (engine_cache.MAX_OPSET) is refused before anything is built or removed. A plan that fails
    verification, or whose verification raises, is removed and the error raised (BackendError with the
    verification line).
    """
    engine_dir = bundle.root / names.ENGINE_DIR
    onnx_name = onnx_for(bundle, graph, precision)
    onnx_path = bundle.root / onnx_name
    recipe = build_recipe(precision, device.trt_version)
    key = cache_key(sha256_file(onnx_path), device, precision, recipe)
    cached = lookup(engine_dir, key)
    if cached is not None:
        cached_entry = read_index(engine_dir)[key.digest()]
        log(f"{graph} {precision}: cached engine {cached.name}")
        return EngineResult(graph, precision, cached, cached_entry, True,
                            check_line(graph, precision, device, cached_entry.get("verify"), cached=True))
    check_opset(onnx_name, onnx_opset(onnx_path), device.trt_version)  # before anything is removed
    index = read_index(engine_dir)
    for old in stale_entries(index, onnx_name, key):
        (engine_dir / index[old].get("file", "_")).unlink(missing_ok=True)
        log(f"{graph} {precision}: removing stale engine {index[old].get('file')}")
        del index[old]
    engine_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    plan_bytes = build(onnx_path, recipe)
    plan = engine_dir / plan_name(graph, key)
    tmp = plan.with_suffix(".tmp")
    tmp.write_bytes(plan_bytes)
    tmp.replace(plan)
    entry: Dict[str, Any] = {
        "file": plan.name, "plan_sha256": sha256_file(plan), "onnx": onnx_name, "graph": graph,
        "key": dataclasses.asdict(key), "recipe": dataclasses.asdict(recipe),
        "build_seconds": round(time.perf_counter() - t0, 2), "built_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
    line = check_line(graph, precision, device, None)
    if verify is not None:
        try:
            check = verify(plan, onnx_path)
        except BaseException:
            plan.unlink(missing_ok=True)  # never leave an unchecked plan where the scanner would find it
            raise
        entry["verify"] = check
        line = check_line(graph, precision, device, check)
        if not check.get("passed"):
            plan.unlink(missing_ok=True)
            raise BackendError(f"{line} (plan deleted)")
    index[key.digest()] = entry
    write_index(engine_dir, index)
    log(f"{graph} {precision}: built {plan.name} in {entry['build_seconds']} s")
    return EngineResult(graph, precision, plan, entry, False, line)


# ------------------------------------------------------------------------------ TensorRT (device only)


def _one_line(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def pin_fp32_tail(trt: Any, network: Any, outputs: Tuple[str, ...]) -> List[str]:
    """Pin to FP32 the layers producing `outputs` and every layer downstream of them (network layers are in
    the ONNX file's topological order): layer precision and the type of each float output. Layers with a
    non-float output (ArgMax indices, shapes) are left alone: their types are not FP32 to pin. Returns
    the pinned layer names. The builder obeys the pins only with OBEY_PRECISION_CONSTRAINTS (the recipe
    sets it); whether TensorRT then keeps every pin is for the device to show (docs/jetson.md)."""
    floats = (trt.DataType.FLOAT, trt.DataType.HALF)
    tainted = set(outputs)
    pinned: List[str] = []
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        ins = [layer.get_input(j) for j in range(layer.num_inputs)]
        outs = [layer.get_output(k) for k in range(layer.num_outputs)]
        if not any(t is not None and t.name in tainted for t in ins + outs):
            continue
        tainted.update(t.name for t in outs)
        if all(t.dtype in floats for t in outs):
            layer.precision = trt.DataType.FLOAT
            for k in range(layer.num_outputs):
                layer.set_output_type(k, trt.DataType.FLOAT)
            pinned.append(layer.name)
    return pinned


def build_plan(onnx_path: Path, recipe: BuildRecipe) -> bytes:
    """Parse an ONNX file and build a serialised engine (plain plan bytes) with `recipe`'s network flags,
    builder flags, cleared flags, workspace and FP32 tail (engine_cache.build_recipe says which and why).

    Raises BackendError (one line) when TensorRT is missing, lacks a flag the recipe needs (FP16 on
    TensorRT 11), cannot parse the file or returns no engine.
    """
    with tensorrt_required(WHAT):
        import tensorrt as trt
    version = check_tensorrt(trt)
    name = Path(onnx_path).name
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    for flag in recipe.network_flags:
        member = getattr(trt.NetworkDefinitionCreationFlag, flag, None)
        if member is None:
            raise BackendError(f"TensorRT {version} has no NetworkDefinitionCreationFlag.{flag}")
        flags |= 1 << int(member)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx_path).read_bytes()):
        errors = "; ".join(_one_line(str(parser.get_error(i))) for i in range(parser.num_errors))
        raise BackendError(f"{name}: TensorRT {version} cannot parse it: {errors or 'no reason given'}")
    if recipe.fp32_tail:
        pin_fp32_tail(trt, network, recipe.fp32_tail)
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, recipe.workspace)
    for flag in recipe.builder_flags:
        member = getattr(trt.BuilderFlag, flag, None)
        if member is None:
            hint = "; use --precision int8 (QDQ) or fp32" if flag == "FP16" else ""
            raise BackendError(f"TensorRT {version} has no {flag} builder flag{hint}")
        config.set_flag(member)
    for flag in recipe.cleared_flags:
        member = getattr(trt.BuilderFlag, flag, None)
        if member is not None:
            config.clear_flag(member)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise BackendError(f"{name}: TensorRT {version} failed to build a {recipe.precision} engine (see "
                           "TensorRT's messages above)")
    return bytes(serialized)


def run_plan(plan: Path, feeds: Feeds, cuda: Optional[trt_buffers.CudaApi] = None) -> Feeds:
    """Run a plan on host feeds through TrtBackend (name-based I/O API, buffers from trt_buffers: either
    CUDA binding, page-locked host memory, every return code checked); returns outputs per feed.
    cuda: a binding to use (not closed here); None loads one for this call."""
    with TrtBackend(plan, cuda=cuda) as backend:
        return [backend.infer(feed) for feed in feeds]


def verify_plan_for(bundle: Bundle, graph: str, precision: str,
                    cuda: Any = None) -> Callable[[Path, Path], dict]:
    """A verify function for ensure_engine: the plan (run with run_plan on `cuda`, a trt_buffers.CudaApi or
    None) against engine_check.reference_outputs on the bundle's calibration frames."""
    def verify(plan: Path, onnx_path: Path) -> dict:
        feeds = sample_feeds(bundle, graph)
        return compare_outputs(run_plan(plan, feeds, cuda), reference_outputs(onnx_path, precision, feeds),
                               precision)
    return verify


def ensure_engines(root: str | Path, precision: str = "int8",
                   log: Callable[[str], None] = lambda m: None) -> Dict[str, EngineResult]:
    """Build or reuse the global and parts engines of the bundle at `root` on this device, each checked
    against onnxruntime; one CUDA binding serves the device probe and every check.

    Raises BackendError (no TensorRT or CUDA binding, build or verification failure) or BundleError."""
    with tensorrt_required(WHAT):
        import tensorrt as trt
    version = check_tensorrt(trt)
    bundle = load_bundle(root)
    cuda = trt_buffers.load_cuda()
    try:
        device = probe_device(version, cuda)
        for note in cuda.skipped:
            log(f"CUDA binding skipped: {note}")
        log(f"TensorRT {version} on {device.label()} via {cuda.name}")
        out = {}
        for graph in names.GRAPHS:
            out[graph] = ensure_engine(bundle, graph, precision, device, build_plan,
                                       verify_plan_for(bundle, graph, precision, cuda), log)
        return out
    finally:
        cuda.close()
