"""The TensorRT engine cache beside a bundle: build recipes, keys, plan names and the index, shared by the
writer (export/engine.py builds engines on the device) and the reader (edge_runtime/inference/backends.py opens them).

An engine is tied to its ONNX file, the TensorRT version, the GPU (name, compute capability), the board it
sits on (Orin Nano, NX and AGX all report "Orin" and 8.7, but engines are tuned for one module), the
precision and the build recipe (network and builder flags, workspace, RECIPE_VERSION, toolkit version), so
a plan built before a fix of the recipe is rebuilt, never reused. The key names all of them.
BUNDLE/engines/index.json maps sha256(key) -> {file, plan_sha256, onnx, graph, key, ...}; plans are plain
TensorRT plans named <graph>.<precision>.<key16>.plan.
No TensorRT import here: this module is pure and tested without a GPU.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple

from edge_runtime import __version__ as TOOLKIT_VERSION
from edge_runtime import names
from edge_runtime.bundle.manifest import Bundle, sha256_file
from edge_runtime.errors import BackendError, BundleError

PRECISIONS = ("int8", "fp16", "fp32")
INDEX_FILE = "index.json"
# Bump when build_recipe or export.engine.build_plan changes what a plan is built with: every cached plan
# of an older recipe then gets another key and is rebuilt. 2: TF32 cleared; no FP16 in TensorRT 8.x int8.
# 3: fp16 keeps the heatmap and the box-picking tail FP32 (layer precisions, obeyed).
RECIPE_VERSION = 3
WORKSPACE_BYTES = 1 << 30


@dataclass(frozen=True)
class DeviceInfo:
    """What an engine is tied to besides its ONNX: TensorRT version, GPU name, compute capability, and on
    a Jetson the board (device_model: /proc/device-tree/model; device_id: the module part numbers from
    /proc/device-tree/compatible, e.g. 'nvidia,p3767-0005' for an Orin Nano 8GB). Empty off a Jetson."""

    trt_version: str
    gpu_name: str
    compute_capability: str  # "8.7"
    device_model: str = ""
    device_id: str = ""

    def label(self) -> str:
        """Short human name for one-line reports: 'Jetson AGX Orin Developer Kit (sm 8.7)'."""
        name = self.device_model or self.gpu_name
        if name.startswith("NVIDIA "):
            name = name[len("NVIDIA "):]
        return f"{name} (sm {self.compute_capability})"


def trt_major(trt_version: str) -> int:
    """Major version of a TensorRT version string ('10.3.0' -> 10); 0 when it does not parse."""
    head = str(trt_version).split(".")[0]
    return int(head) if head.isdigit() else 0


# Newest ONNX opset each TensorRT major's ONNX parser imports (onnx-tensorrt docs/operators.md of that
# release: 7.2 -> 13, 8.5/8.6 -> 17, 10.x -> 20; TensorRT 11's opset guide -> 25). Past it the importer may
# misread a node: from opset 18 ReduceMean/ReduceMax/... take `axes` as an input, which 8.x ignores, so the
# reduction runs over every axis. A major not listed (newer) is not limited here.
MAX_OPSET = {7: 13, 8: 17, 10: 20, 11: 25}


def max_opset(trt_version: str) -> Optional[int]:
    """Newest ONNX opset TensorRT `trt_version` parses (MAX_OPSET), None when not known to be limited."""
    return MAX_OPSET.get(trt_major(trt_version))


def check_opset(onnx_name: str, opset: int, trt_version: str) -> None:
    """BackendError (one line) when `opset` (the file's default-domain opset) is newer than TensorRT
    `trt_version` parses."""
    limit = max_opset(trt_version)
    if limit is not None and opset > limit:
        why = "; from opset 18 ReduceMean takes its axes as an input, which it ignores" if limit == 17 else ""
        raise BackendError(f"{onnx_name}: ONNX opset {opset} is newer than TensorRT {trt_version} parses (<= "
                           f"{limit}{why}); re-export the bundle with --opset {limit}")


@dataclass(frozen=True)
class BuildRecipe:
    """How export.engine.build_plan builds one plan (flag names as in tensorrt's enums).

    network_flags: NetworkDefinitionCreationFlag names; builder_flags: BuilderFlag names set;
    cleared_flags: BuilderFlag names cleared (TF32 is on by default in TensorRT and Orin runs it: cleared,
    so FP32 layers compute in FP32 at every precision); workspace: bytes of the WORKSPACE pool;
    fp32_tail: output tensor names whose producing layer and every layer downstream of it are pinned to
    FP32 (layer precision and output types, with OBEY_PRECISION_CONSTRAINTS among the builder flags).
    """

    precision: str
    network_flags: Tuple[str, ...]
    builder_flags: Tuple[str, ...]
    cleared_flags: Tuple[str, ...]
    workspace: int
    fp32_tail: Tuple[str, ...] = ()
    version: int = RECIPE_VERSION
    toolkit: str = TOOLKIT_VERSION

    def fingerprint(self) -> str:
        """First 16 hex of sha256 over the canonical JSON of every field."""
        blob = json.dumps(dataclasses.asdict(self), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def build_recipe(precision: str, trt_version: str, workspace: int = WORKSPACE_BYTES) -> BuildRecipe:
    """The one recipe per (precision, TensorRT major version); the writer builds with it, the key names it.

    int8 (from the TensorRT-flavour QDQ file: explicit quantisation, no calibrator):
      TensorRT >= 10: a strongly typed network, whose precisions come from the Q/DQ nodes (no INT8/FP16
        flags: a strongly typed network refuses them); the layers Q/DQ leaves float run in FP32.
      TensorRT 8.x: an explicit-batch network with the INT8 flag only. FP16 is NOT set: it would let
        TensorRT run the layers that quantisation keeps FP32 on purpose (the stem, the heatmap and the
        box-picking tail after it) in FP16, and move boxes. This matches TensorRT 10's strongly typed
        build and the Q/DQ simulation export scores the file with.
    fp16: the FP32 graph with the FP16 flag (TensorRT 11 removed it: build_plan refuses then), the heatmap
      and the box-picking tail after it pinned to FP32 -- as the int8 files keep them: FP16's step near 1.0
      (~5e-4) ties neighbouring window means, moving a box by a cell where the check wants boxes equal.
    fp32: the FP32 graph, no precision flag. Every precision clears TF32.
    """
    if precision not in PRECISIONS:
        raise BackendError(f"unknown engine precision {precision!r}; expected one of {', '.join(PRECISIONS)}")
    major = trt_major(trt_version)
    network: Tuple[str, ...] = ("EXPLICIT_BATCH",) if major < 10 else ()
    builder: Tuple[str, ...] = ()
    if precision == "int8":
        if major >= 10:
            network = ("STRONGLY_TYPED",)
        else:
            builder = ("INT8",)
    tail: Tuple[str, ...] = ()
    if precision == "fp16":
        builder, tail = ("FP16", "OBEY_PRECISION_CONSTRAINTS"), (names.HEATMAP,)
    return BuildRecipe(precision, network, builder, ("TF32",), int(workspace), tail)


@dataclass(frozen=True)
class EngineKey:
    """Everything that invalidates an engine."""

    onnx_sha256: str
    trt_version: str
    gpu_name: str
    compute_capability: str
    device_model: str
    device_id: str
    precision: str
    recipe: str  # BuildRecipe.fingerprint()

    def digest(self) -> str:
        """sha256 hex of the canonical JSON of the fields (stable across runs and machines)."""
        blob = json.dumps(dataclasses.asdict(self), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()


def cache_key(onnx_sha256: str, device: DeviceInfo, precision: str,
              recipe: Optional[BuildRecipe] = None) -> EngineKey:
    """The key of the engine for one ONNX file on one device at one precision (pure function); recipe:
    build_recipe(precision, device.trt_version) unless given."""
    if recipe is None:
        recipe = build_recipe(precision, device.trt_version)
    if recipe.precision != precision:
        raise BackendError(f"recipe for {recipe.precision} used for a {precision} engine")
    return EngineKey(onnx_sha256, device.trt_version, device.gpu_name, device.compute_capability,
                     device.device_model, device.device_id, precision, recipe.fingerprint())


def plan_name(graph: str, key: EngineKey) -> str:
    """File name of an engine: <graph>.<precision>.<first 16 hex of the key>.plan."""
    return f"{graph}.{key.precision}.{key.digest()[:16]}.plan"


def onnx_for(bundle: Bundle, graph: str, precision: str) -> str:
    """Bundle file an engine of `precision` is built from (int8: the TensorRT-flavour QDQ file)."""
    man = bundle.manifest
    name = man.file_for(graph, "int8", "trt") if precision == "int8" else man.file_for(graph, "fp32")
    if name is None:
        hint = " (export with --int8 first)" if precision == "int8" else ""
        raise BundleError(f"{bundle.root}: no ONNX file for {graph} at {precision}{hint}")
    return name


# ------------------------------------------------------------------------------------------------ index


def read_index(engine_dir: Path) -> dict:
    """engines/index.json as a dict (empty when missing or unreadable: the cache is then rebuilt)."""
    try:
        data = json.loads((engine_dir / INDEX_FILE).read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def write_index(engine_dir: Path, index: dict) -> None:
    engine_dir.mkdir(parents=True, exist_ok=True)
    tmp = engine_dir / (INDEX_FILE + ".tmp")
    tmp.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    tmp.replace(engine_dir / INDEX_FILE)


def lookup(engine_dir: Path, key: EngineKey) -> Path | None:
    """The cached plan for `key` when its index entry exists and the plan still matches its sha256."""
    entry = read_index(engine_dir).get(key.digest())
    if not entry:
        return None
    plan = engine_dir / entry.get("file", "")
    if plan.is_file() and sha256_file(plan) == entry.get("plan_sha256"):
        return plan
    return None


def stale_entries(index: dict, onnx_name: str, key: EngineKey) -> list[str]:
    """Index keys built from the same ONNX file name at the same precision under another key (another
    TensorRT, GPU, board or recipe)."""
    return [k for k, e in index.items()
            if e.get("onnx") == onnx_name and e.get("key", {}).get("precision") == key.precision
            and k != key.digest()]
