"""The check every new TensorRT engine passes before it is cached: engine outputs against a reference run
of the same ONNX file on the bundle's calibration frames, gated on every output the scanner uses.

Reference: fp32/fp16 engines are compared with onnxruntime on the FP32 graph; int8 engines with the Q/DQ
simulation of the TensorRT-flavour file (calibration.accuracy.make_session(simulate_qdq=True): graph
optimisations off, so every Conv/MatMul runs in FP32 on the dequantised int8 values -- what TensorRT
computes, and what export scored the file with), not onnxruntime's fused int8 kernels.

Gates (TOLERANCES), all at every precision:
  probabilities  max |softmax(engine) - softmax(reference)| over the global and part logits
  classes        argmax equal on every row (every frame; every crop for the parts graph), except a row
                 whose reference is a tie within the probability tolerance (top two within 2 x tol):
                 such a flip is counted as agreeing and reported as a tie
  heatmap        max abs error (the heatmap is in [0, 1])
  boxes          fp32/fp16: equal (to 1e-6 of the frame); int8: each box within one heatmap cell, the
                 tolerance export's own parity check uses for a near-tie (1.5 / heatmap side, normalised)

check_line renders a report as the one line `mgfen-export BUNDLE --engine` prints per engine.
No TensorRT import here: the comparison runs on plain arrays.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from edge_runtime import names
from edge_runtime.bundle.manifest import Bundle, sha256_file
from edge_runtime.errors import BundleError
from edge_runtime.inference.engine_cache import DeviceInfo
from edge_runtime.roi import softmax

Outputs = List[Dict[str, np.ndarray]]
BOX_EQUAL = 1e-6  # normalised coordinates; a pixel of a 1024 px frame is ~1e-3
CELL = 1.5  # one heatmap cell, in units of 1 / heatmap side (as export.parity.is_tie)


@dataclass(frozen=True)
class Tolerance:
    prob: float  # max |dp| of the softmax probabilities
    heatmap: float  # max abs error of the heatmap
    box_cells: int  # 0: boxes equal; 1: within one heatmap cell


TOLERANCES = {"fp32": Tolerance(1e-3, 1e-3, 0), "fp16": Tolerance(2e-2, 2e-2, 0),
              "int8": Tolerance(5e-2, 5e-2, 1)}


def _max_abs(a: np.ndarray, b: np.ndarray) -> float:
    """Worst abs difference; inf when either side has a NaN or inf (never silently 'close')."""
    diff = np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))
    if not diff.size:
        return 0.0
    return float(diff.max()) if np.isfinite(diff).all() else float("inf")


def compare_outputs(engine_outs: Outputs, ref_outs: Outputs, precision: str) -> dict:
    """Engine vs reference outputs on the same feeds (one dict per frame). Returns the report: passed,
    reason (every failed gate), max_abs per output, max_prob_error, classes "agree/total", boxes
    "within/frames" (None without a boxes output), box_rule, heatmap_error (None without a heatmap),
    tolerance, frames."""
    tol = TOLERANCES[precision]
    worst: Dict[str, float] = {}
    prob_err, agree, ties, total = 0.0, 0, 0, 0
    box_ok, box_frames = 0, 0
    inf = float("inf")
    for eng, ref in zip(engine_outs, ref_outs):
        for name, r in ref.items():
            e = eng.get(name)
            if e is None or np.shape(e) != np.shape(r):  # missing or misshapen: fails below
                worst[name] = inf
                continue
            worst[name] = max(worst.get(name, 0.0), _max_abs(e, r))
            if name in (names.GLOBAL_LOGITS, names.PART_LOGITS):
                pe, pr = softmax(np.asarray(e, np.float32)), softmax(np.asarray(r, np.float32))
                same = np.argmax(e, -1) == np.argmax(r, -1)
                top2 = np.sort(pr, -1)[..., -2:]
                tie = top2[..., 1] - top2[..., 0] <= 2 * tol.prob  # a flip the allowed error explains
                agree += int((same | tie).sum())
                ties += int((~same & tie).sum())
                total += int(np.prod(np.shape(r)[:-1]))
                prob_err = max(prob_err, _max_abs(pe, pr))
        if names.BOXES in ref:
            box_frames += 1
            side = np.shape(ref[names.HEATMAP])[-1] if names.HEATMAP in ref else None
            limit = BOX_EQUAL if tol.box_cells == 0 or side is None else tol.box_cells * CELL / side
            e_boxes = eng.get(names.BOXES)
            box_ok += int(e_boxes is not None and np.shape(e_boxes) == np.shape(ref[names.BOXES])
                          and _max_abs(e_boxes, ref[names.BOXES]) <= limit)
    heat = worst.get(names.HEATMAP)
    failures = [] if len(engine_outs) == len(ref_outs) else [f"{len(engine_outs)} engine runs for {len(ref_outs)} frames"]
    if not prob_err <= tol.prob:
        failures.append(f"probability error {prob_err:.3g} > {tol.prob:g}")
    if agree != total:
        failures.append(f"class agreement {agree}/{total}")
    if heat is not None and not heat <= tol.heatmap:
        failures.append(f"heatmap error {heat:.3g} > {tol.heatmap:g}")
    if box_frames and box_ok != box_frames:
        failures.append(f"boxes {'equal' if tol.box_cells == 0 else 'within one cell'} on {box_ok}/{box_frames} frames")
    bad = sorted(k for k, v in worst.items() if v == inf)
    if bad:
        failures.append(f"non-finite or misshapen outputs {bad}")
    return {"passed": not failures, "reason": "; ".join(failures) or None, "frames": len(ref_outs),
            "max_abs": worst, "max_prob_error": prob_err, "classes": f"{agree}/{total}", "class_ties": ties,
            "boxes": f"{box_ok}/{box_frames}" if box_frames else None,
            "box_rule": ("equal" if tol.box_cells == 0 else "<=1 cell") if box_frames else None,
            "heatmap_error": heat, "tolerance": vars(tol)}


def check_line(graph: str, precision: str, device: DeviceInfo, report: Optional[dict],
               cached: bool = False) -> str:
    """The one line per engine a technician pastes into a ticket, e.g.
    `engine global int8: TensorRT 10.3.0, Jetson AGX Orin Developer Kit (sm 8.7), max |dp| 0.0021,
    classes 64/64, boxes 64/64 (<=1 cell), heatmap 0.004 -> PASS`."""
    head = f"engine {graph} {precision}: TensorRT {device.trt_version}, {device.label()}"
    if not report:
        return f"{head}, not checked" + (" (cached)" if cached else "")
    ties = f" ({report['class_ties']} tie{'s' if report['class_ties'] > 1 else ''})" if report.get("class_ties") else ""
    parts = [head, f"max |dp| {report['max_prob_error']:.2g}", f"classes {report['classes']}{ties}"]
    if report.get("boxes"):
        parts.append(f"boxes {report['boxes']} ({report['box_rule']})")
    if report.get("heatmap_error") is not None:
        parts.append(f"heatmap {report['heatmap_error']:.2g}")
    verdict = "PASS" if report.get("passed") else f"FAIL: {report.get('reason')}"
    return ", ".join(parts) + f" -> {verdict}" + (" (cached)" if cached else "")


def sample_feeds(bundle: Bundle, graph: str) -> Outputs:
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
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise BundleError(f"{path}: calibration sample is not a readable image")
        frames.append(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
    cfg = man.preprocess
    if graph == "global":
        return [{names.GLOBAL_INPUT: global_input(f, cfg)} for f in frames]
    global_file = man.file_for("global", "fp32")
    if global_file is None:
        raise BundleError(f"{bundle.root}: no fp32 global graph to crop the parts check's frames with")
    g = make_session(bundle.root / global_file)
    feeds = []
    for f in frames:
        (boxes,) = g.run([names.BOXES], {names.GLOBAL_INPUT: global_input(f, cfg)})
        feeds.append({names.PARTS_INPUT: crop_rois(f, boxes[0], cfg.crop_size)})
    return feeds


def reference_outputs(onnx_path: Path, precision: str, feeds: Outputs) -> Outputs:
    """The reference run: int8 -> the Q/DQ simulation (graph optimisations off), else onnxruntime."""
    from calibration.accuracy import make_session

    sess = make_session(onnx_path, simulate_qdq=precision == "int8")
    outs = [o.name for o in sess.get_outputs()]
    return [dict(zip(outs, sess.run(outs, feed))) for feed in feeds]
