"""The INT8 gate record a bundle carries: did each INT8 flavour keep FP32's verdicts at export?

Export (calibration/verdict_gate.py) runs FP32 and every INT8 flavour on the labelled val images and
writes the manifest's `int8_gate`:

    {"criteria": {"min_agreement": 0.99, "max_drop_points": 0.5},
     "images": {"folder": "data/val", "n": 64, "sha256": "<digest of the sorted per-image sha256 + path lines>",
                "paths": ["counterfeit/a.png", ...]} or null,
     "flavours": {"cpu": {"status": "passed" | "failed-forced" | "unverified", "agreement": ..., ...},
                  "trt": {...}}}

Statuses: `passed` (the gate held), `failed-forced` (it did not; kept with --force), `unverified` (no
labelled val images). A manifest without the record (written before it existed) or a flavour the record
does not name is `unverified`. The runtime's `auto` precision runs an INT8 file only when `passed`.
"""

from __future__ import annotations

from typing import Optional, Protocol


class Manifest(Protocol):
    """What the gate reads of edge_runtime.bundle.manifest.Manifest (which imports this module, so it is named by
    shape here rather than imported)."""

    @property
    def int8_gate(self) -> Optional[dict]: ...

    def file_for(self, graph: str, precision: str = ..., flavour: Optional[str] = ...) -> Optional[str]: ...

    def int8_status(self, flavour: str) -> str: ...

# the default gate (export's --min-int8-agreement and --max-int8-drop; calibration/verdict_gate.py applies it)
MIN_AGREEMENT = 0.99  # fraction of val images whose INT8 verdict equals FP32's
MAX_DROP_POINTS = 0.5  # accuracy points (verdicts, uncertain counted wrong) INT8 may lose against FP32

PASSED, FAILED_FORCED, UNVERIFIED = "passed", "failed-forced", "unverified"
STATUSES = (PASSED, FAILED_FORCED, UNVERIFIED)
RECORD_KEYS = ("criteria", "images", "flavours")


def parse_record(data: object) -> dict | None:
    """Check a manifest's `int8_gate` value (None passes through); ValueError with one line otherwise."""
    if data is None:
        return None
    if not isinstance(data, dict) or set(data) != set(RECORD_KEYS):
        raise ValueError(f"int8_gate must be an object with keys {', '.join(RECORD_KEYS)}")
    flavours = data["flavours"]
    if not isinstance(flavours, dict):
        raise ValueError("int8_gate.flavours must be an object")
    for flavour, entry in flavours.items():
        if not isinstance(entry, dict) or entry.get("status") not in STATUSES:
            raise ValueError(f"int8_gate.flavours.{flavour}: status must be one of {', '.join(STATUSES)}")
    return dict(data)


def flavour_status(record: dict | None, flavour: str) -> str:
    """The gate status of one INT8 flavour ("cpu" | "trt"); `unverified` when the record lacks it."""
    if record is None:
        return UNVERIFIED
    entry = record["flavours"].get(flavour)
    return UNVERIFIED if entry is None else str(entry["status"])


def status_reason(record: dict | None, flavour: str) -> str:
    """The status of a flavour with a few words on why, e.g. "unverified (no labelled val split ...)"."""
    status = flavour_status(record, flavour)
    if record is None:
        return "unverified (the bundle records no INT8 gate: exported before it existed)"
    entry = record["flavours"].get(flavour) or {}
    if status == FAILED_FORCED:
        return f"failed-forced (their export gate failed: {entry.get('reason', 'see report.json')}; --force kept them)"
    if status == UNVERIFIED:
        return f"unverified ({entry.get('reason', 'the gate does not name this flavour')})"
    return status


def target_flavour(target: str) -> str:
    """The INT8 flavour a backend target runs: "cpu" on onnxruntime's CPU provider, "trt" on TensorRT."""
    return "cpu" if target == "cpu" else "trt"


def auto_int8(manifest: Manifest, graph: str, target: str) -> bool:
    """Whether `auto` precision runs INT8 for `graph` on `target` ("cpu" | "cuda" | "trt"): the bundle has
    the target's flavour and that flavour passed its export gate (never on the CUDA provider)."""
    return has_int8(manifest, graph, target) and manifest.int8_status(target_flavour(target)) == PASSED


def has_int8(manifest: Manifest, graph: str, target: str) -> bool:
    """Whether the bundle has an INT8 file `target` can run for `graph` (none on the CUDA provider)."""
    return target != "cuda" and manifest.file_for(graph, "int8", target_flavour(target)) is not None


def run_label(manifest: Manifest, precision: str, target: str) -> str:
    """"" unless an INT8 file that did not pass its gate runs: then "int8-<flavour>-<status>"
    (e.g. int8-cpu-failed-forced), which the scanner appends to every event's `model`."""
    flavour = target_flavour(target)
    status = manifest.int8_status(flavour)
    return "" if precision != "int8" or status == PASSED else f"int8-{flavour}-{status}"


def precision_note(manifest: Manifest, graph: str, requested: str | None, precision: str, target: str) -> str:
    """One line for the user when the INT8 gate decided or was overridden, else "": `auto` (requested
    None) fell back to fp32 because the target's INT8 file did not pass, or int8 was asked for and runs
    a file that did not pass."""
    flavour = target_flavour(target)
    if manifest.int8_status(flavour) == PASSED or not has_int8(manifest, graph, target):
        return ""
    reason = status_reason(manifest.int8_gate, flavour)
    if requested is None and precision == "fp32":
        return (f"auto precision runs fp32, not the {flavour}-flavour INT8 files: they are {reason} "
                "(--precision int8 runs them anyway)")
    if precision == "int8":
        return f"--precision int8 runs the {flavour}-flavour INT8 files although they are {reason}"
    return ""
