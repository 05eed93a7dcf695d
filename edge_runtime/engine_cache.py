"""The TensorRT engine cache beside a bundle: keys, plan names and the index, shared by the writer
(export/engine.py builds engines on the device) and the reader (edge_runtime/backends.py opens them).

An engine is tied to its ONNX file, the TensorRT version, the GPU and its compute capability, and the
precision; the key names all five. BUNDLE/engines/index.json maps sha256(key) -> {file, plan_sha256,
onnx, graph, key, ...}; plans are plain TensorRT plans named <graph>.<precision>.<key16>.plan.
No TensorRT import here: this module is pure and tested without a GPU.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from edge_runtime.errors import BackendError, BundleError
from edge_runtime.manifest import Bundle, sha256_file

PRECISIONS = ("int8", "fp16", "fp32")
INDEX_FILE = "index.json"


@dataclass(frozen=True)
class DeviceInfo:
    """What an engine is tied to besides its ONNX: TensorRT version, GPU name, compute capability."""

    trt_version: str
    gpu_name: str
    compute_capability: str  # "8.7"


@dataclass(frozen=True)
class EngineKey:
    """Everything that invalidates an engine."""

    onnx_sha256: str
    trt_version: str
    gpu_name: str
    compute_capability: str
    precision: str

    def digest(self) -> str:
        """sha256 hex of the canonical JSON of the fields (stable across runs and machines)."""
        blob = json.dumps(dataclasses.asdict(self), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()


def cache_key(onnx_sha256: str, device: DeviceInfo, precision: str) -> EngineKey:
    """The key of the engine for one ONNX file on one device at one precision (pure function)."""
    if precision not in PRECISIONS:
        raise BackendError(f"unknown engine precision {precision!r}; expected one of {', '.join(PRECISIONS)}")
    return EngineKey(onnx_sha256, device.trt_version, device.gpu_name, device.compute_capability, precision)


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
    """Index keys built from the same ONNX file name at the same precision under another key."""
    return [k for k, e in index.items()
            if e.get("onnx") == onnx_name and e.get("key", {}).get("precision") == key.precision
            and k != key.digest()]
