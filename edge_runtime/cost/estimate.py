"""A bundle's cost per frame on the target Jetsons: graph costs from its FP32 ONNX files, the CPU stages
measured on this host and scaled, one estimate per device (edge_runtime.cost.devices says how, and that
every figure is an estimate, not measured on a device). Used by `mgfen-bench --estimate` and the export
report's `cost` section.

    est = estimate_bundle(bundle_dir, manifest.preprocess, manifest.k, manifest.use_parts, DEVICES.values())
    print(format_estimate(est))
"""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path
from typing import Dict, Iterable

import cv2
import numpy as np
import onnx

from edge_runtime import names
from edge_runtime.bench import synthetic_frame
from edge_runtime.cost.devices import (DEPTHWISE_PENALTY, DEPTHWISE_PENALTY_RANGE, ESTIMATE_LABEL, DeviceSpec,
                                       frame_estimate, opencv_threads)
from edge_runtime.cost.graph_cost import GraphCost, graph_cost
from edge_runtime.errors import BundleError
from edge_runtime.inference.device_info import cpu_ghz, cpu_model
from edge_runtime.preprocess import PreprocessConfig, global_input, prepare_frame
from edge_runtime.roi import crop_rois

HOST_FRAMES = 20  # timed frames of the CPU stages (about 0.3 s for the edge preset on the development CPU)
HOST_WARMUP = 3
MB = 1e6


def bundle_graph_costs(root: Path, use_parts: bool = True) -> Dict[str, GraphCost]:
    """graph_cost of the FP32 files of bundle folder `root` a frame runs: global, and parts with use_parts.
    A graph that cannot be counted (no fixed input shapes, a broken file) raises BundleError."""
    graphs = names.GRAPHS if use_parts else names.GRAPHS[:1]
    out = {}
    for g in graphs:
        path = Path(root) / names.model_file(g)
        try:
            out[g] = graph_cost(onnx.load(str(path)))
        except (ValueError, onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
            raise BundleError(f"{path}: cannot count its cost: {exc}") from None
    return out


def snapped_boxes(cfg: PreprocessConfig, k: int) -> np.ndarray:
    """[K,4] float32 normalised boxes of side crop_size on whole frame pixels along the diagonal (what
    the model's snapped boxes look like to crop_rois)."""
    step = (cfg.frame_size - cfg.crop_size) // max(k - 1, 1)
    px = np.array([[i * step, i * step, i * step + cfg.crop_size, i * step + cfg.crop_size] for i in range(k)],
                  dtype=np.float32)
    return px / np.float32(cfg.frame_size)


def measure_host_cpu_ms(cfg: PreprocessConfig, k: int, use_parts: bool = True, frames: int = HOST_FRAMES,
                        warmup: int = HOST_WARMUP, threads: int = 1) -> dict:
    """The CPU stages of one frame on this host with `threads` OpenCV threads (restored afterwards), on
    the fixed synthetic frame of side cfg.frame_size that mgfen-bench uses without --source: prepare_frame +
    global_input ("preprocess_ms") and crop_rois of K boxes ("crop_ms", 0 without parts), the fastest of
    `frames` in ms (the work itself, not what other processes on a shared host add; "median_ms": the
    median of their sum), "total_ms" their sum. A camera frame larger than F costs more in the resize."""
    frame_bgr = synthetic_frame(cfg.frame_size)
    boxes = snapped_boxes(cfg, k)
    pre, crop = [], []
    before = cv2.getNumThreads()
    cv2.setNumThreads(threads)
    try:
        for i in range(warmup + frames):
            t0 = time.perf_counter()
            frame = prepare_frame(frame_bgr, cfg)
            global_input(frame, cfg)
            t1 = time.perf_counter()
            if use_parts:
                crop_rois(frame, boxes, cfg.crop_size)
            t2 = time.perf_counter()
            if i >= warmup:
                pre.append((t1 - t0) * 1e3)
                crop.append((t2 - t1) * 1e3)
    finally:
        cv2.setNumThreads(before)
    p, c = min(pre), min(crop) if use_parts else 0.0
    return {"preprocess_ms": round(p, 3), "crop_ms": round(c, 3), "total_ms": round(p + c, 3),
            "median_ms": round(float(np.median(np.add(pre, crop))), 3),
            "frames": frames, "opencv_threads": threads, "frame_side": cfg.frame_size}


def host_cores() -> int:
    """CPU cores this process may run on (its affinity where the platform says, else os.cpu_count())."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def estimate_bundle(root: Path, cfg: PreprocessConfig, k: int, use_parts: bool, devices: Iterable[DeviceSpec],
                    host_frames: int = HOST_FRAMES) -> dict:
    """Graph costs, the host's CPU stages and one frame_estimate per device, as a JSON-ready dict:
    {"label", "graphs": {graph: GraphCost.to_dict()}, "host": {...} (one OpenCV thread),
    "host_threads": {str(threads): {...}} (every thread count a device is charged with,
    devices.opencv_threads), "devices": {key: spec}, "estimates": {key: frame_estimate},
    "depthwise_penalty", "sensitivity": {key: {penalty: total_ms}}}."""
    costs = bundle_graph_costs(root, use_parts)
    host = measure_host_cpu_ms(cfg, k, use_parts, host_frames)
    ghz = cpu_ghz()
    host.update({"cpu": cpu_model(), "machine": platform.machine(), "ghz": ghz})
    macs = {g: (float(c.dense_macs), float(c.depthwise_macs)) for g, c in costs.items()}
    devices = list(devices)
    threads = {d.key: opencv_threads(d, host_cores()) for d in devices}
    timed = {1: host}
    for n in sorted(set(threads.values()) - {1}):
        timed[n] = measure_host_cpu_ms(cfg, k, use_parts, host_frames, threads=n)

    def one(d: DeviceSpec, penalty: float = DEPTHWISE_PENALTY) -> dict:
        n = threads[d.key]
        return frame_estimate(macs, timed[n]["total_ms"], d, ghz, depthwise_penalty=penalty, threads=n,
                              host_one_core_ms=host["total_ms"])

    estimates = {d.key: one(d) for d in devices}
    sensitivity = {d.key: {str(p): one(d, p)["total_ms"] for p in DEPTHWISE_PENALTY_RANGE} for d in devices}
    return {"label": ESTIMATE_LABEL, "graphs": {g: c.to_dict() for g, c in costs.items()}, "host": host,
            "host_threads": {str(n): t for n, t in timed.items()},
            "devices": {d.key: d.to_dict() for d in devices}, "estimates": estimates,
            "depthwise_penalty": DEPTHWISE_PENALTY, "sensitivity": sensitivity}


def format_estimate(est: dict) -> str:
    """The estimate as text: a graph table (MACs, depthwise share, params, activations) and a device table
    (ms per graph, CPU, total, frames/s), each line block labelled as an estimate."""
    lines = [f"cost per frame ({est['label']})",
             f"{'graph':<7} {'GMAC':>7} {'dw GMAC':>8} {'params MB':>9} {'act MB':>7} {'largest act MB':>14} "
             f"{'nodes':>6}"]
    for g, c in est["graphs"].items():
        lines.append(f"{g:<7} {c['macs']['total'] / 1e9:>7.3f} {c['depthwise_macs'] / 1e9:>8.3f} "
                     f"{c['param_bytes'] / MB:>9.2f} {c['activation_bytes'] / MB:>7.1f} "
                     f"{c['largest_activation']['bytes'] / MB:>14.2f} {c['nodes']:>6}")
    h = est["host"]
    ghz = f"{h['ghz']:.2f} GHz" if h["ghz"] else "clock unknown: unscaled"
    for n, t in est["host_threads"].items():
        lines.append(f"host CPU stages, {n} OpenCV thread(s), {t['frame_side']} px frame, fastest of "
                     f"{t['frames']}: preprocess {t['preprocess_ms']:.2f} ms + crop {t['crop_ms']:.2f} ms "
                     f"(median {t['median_ms']:.2f}) on {h['cpu']} ({h['machine']}, {ghz})")
    graphs = list(est["graphs"])
    lines.append(f"{'device':<10} " + " ".join(f"{g + ' ms':>10}" for g in graphs)
                 + f" {'threads':>7} {'CPU ms':>7} {'total ms':>8} {'frames/s':>8} {'overlapped':>10}"
                 + f" {'1-core CPU ms':>13} {'1-core frames/s':>15}")
    for key, e in est["estimates"].items():
        lines.append(f"{key:<10} " + " ".join(f"{e['graphs_ms'][g]:>10.3f}" for g in graphs)
                     + f" {e['opencv_threads']:>7} {e['cpu_ms']:>7.2f} {e['total_ms']:>8.2f} {e['fps']:>8.1f}"
                     + f" {e['fps_overlapped']:>10.1f} {e['cpu_ms_one_core']:>13.2f} {e['fps_one_core']:>15.1f}")
    lo, hi = DEPTHWISE_PENALTY_RANGE
    lines.append(f"depthwise MAC = {est['depthwise_penalty']:g} dense MACs (total ms at {lo:g} / {hi:g}: "
                 + ", ".join(f"{k} {v[str(lo)]:.2f} / {v[str(hi)]:.2f}" for k, v in est["sensitivity"].items())
                 + ")")
    lines.append("frames/s: CPU stages (on `threads` OpenCV threads) then graphs; overlapped: the next frame's CPU "
                 "stages beside the graphs; 1-core: CPU stages on one core. Source and assumptions: "
                 "edge_runtime/cost/devices.py")
    return "\n".join(lines)


def summary_line(est: dict) -> str:
    """One line for a log: MACs per graph and frames/s per device."""
    graphs = ", ".join(f"{g} {c['macs']['total'] / 1e9:.3f} GMAC" for g, c in est["graphs"].items())
    fps = ", ".join(f"{k} {e['total_ms']:.1f} ms / {e['fps']:.0f} frames/s" for k, e in est["estimates"].items())
    return f"cost ({est['label']}): {graphs}; {fps}"
