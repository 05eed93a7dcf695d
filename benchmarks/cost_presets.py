"""The cost model (edge_runtime.cost) on the presets' graphs: MACs, activation bytes and the estimated ms
and frames/s on each target Jetson, per preset, written to docs/results/cost_model.md (+ .json).

    python benchmarks/cost_presets.py                       # edge and paper, about a minute on 2 cores

MACs do not depend on the weights, so each preset's model is built fresh (random init, no training) and
exported with the bundle's own graph export (export.onnx_export.export_graphs). The CPU stages are timed
on this host (edge_runtime.cost.estimate.measure_host_cpu_ms) and scaled as edge_runtime/cost/devices.py
states. Also counts torchvision's ResNet-50 at 224 px, the MAC figure the device rates are derived from.
Every device figure is an estimate, not measured on a device.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import onnx
import torch
import torchvision

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge_runtime.bench import synthetic_frame  # noqa: E402
from edge_runtime.cost.devices import (DEPTHWISE_PENALTY, DEPTHWISE_PENALTY_RANGE, DEVICES,  # noqa: E402
                                       ESTIMATE_LABEL, RESNET50_MACS, cpu_scale)
from edge_runtime.cost.estimate import estimate_bundle, format_estimate  # noqa: E402
from edge_runtime.cost.graph_cost import graph_cost  # noqa: E402
from edge_runtime.inference.device_info import cpu_ghz  # noqa: E402
from edge_runtime.preprocess import square_frame  # noqa: E402
from export.onnx_export import DEFAULT_OPSET, export_graphs, export_module  # noqa: E402
from _common import cpu_flags  # noqa: E402
from train.model.mgfen import PRESETS, ModelConfig, build_model  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MB = 1e6


# Not presets: what the levers the issue names would cost (another engineer decides the presets).
VARIANTS = ("edge:luma_space=ycrcb", "edge:global_size=384", "edge:ace=false,brightness_target=none")


def parse_variant(text: str) -> ModelConfig:
    """'PRESET:key=value,...' -> that preset with the fields replaced (preprocess fields or model fields;
    values int, float, true/false or none)."""
    name, _, spec = text.partition(":")
    if name not in PRESETS:
        raise SystemExit(f"--variant {text!r}: unknown preset {name!r}")
    cfg = PRESETS[name]
    pre, top = {}, {}
    for item in filter(None, spec.split(",")):
        key, _, raw = item.partition("=")
        low = raw.lower()
        value = {"true": True, "false": False, "none": None}.get(low, raw)
        if isinstance(value, str):
            try:
                value = float(raw) if "." in raw else int(raw)
            except ValueError:
                pass  # a word: the field's own validation judges it
        (pre if key in dataclasses.asdict(cfg.preprocess) else top)[key] = value
    return dataclasses.replace(cfg, preprocess=dataclasses.replace(cfg.preprocess, **pre), **top)


def preset_estimate(name: str, cfg: ModelConfig, tmp: Path, host_frames: int) -> dict:
    """Build model config `cfg` (random init), export its two graphs into tmp/name, estimate on every
    device."""
    torch.manual_seed(0)
    model = build_model(cfg, pretrained=None).eval()
    out = tmp / name.replace(":", "_").replace(",", "_").replace("=", "-")
    out.mkdir()
    export_graphs(model, out)
    return estimate_bundle(out, cfg.preprocess, cfg.k, cfg.use_parts, DEVICES.values(), host_frames)


# Camera frames the scanner may get (H, W), against the edge frame: 1080p (a non-integer 1.41:1 area
# resize), 2:1 and 4:3 modes, and a mode already at the frame's side.
CAMERA_SIZES = ((1080, 1920), (1536, 1536), (1536, 2048), (768, 1024))


def camera_resize_ms(frame_side: int, frames: int, threads: int) -> dict[str, float]:
    """{"HxW": ms}: square_frame (centre square + area resize to frame_side) on `threads` OpenCV threads,
    fastest of `frames` runs on a frame of each CAMERA_SIZES size. The cost model leaves it out (it
    assumes frames of side F), so this says what a camera mode larger than F adds."""
    cv2.setNumThreads(threads)
    out = {}
    for h, w in CAMERA_SIZES:
        img = np.ascontiguousarray(synthetic_frame(max(h, w))[:h, :w])  # mgfen-bench's frame, cut to the mode
        times = []
        for _ in range(frames):
            t0 = time.perf_counter()
            square_frame(img, frame_side)
            times.append((time.perf_counter() - t0) * 1e3)
        out[f"{h}x{w}"] = min(times)
    return out


def resnet50_macs(tmp: Path) -> int:
    """graph_cost of torchvision's ResNet-50 (v1.5) exported at 1x3x224x224."""
    net = torchvision.models.resnet50(weights=None).eval()
    path = tmp / "resnet50.onnx"
    export_module(net, torch.zeros(1, 3, 224, 224), path, "x", ("y",), DEFAULT_OPSET)
    return graph_cost(onnx.load(str(path))).macs["total"]


def markdown(results: dict, resnet: int, command: str, flags: str, camera: dict) -> str:
    lo, hi = DEPTHWISE_PENALTY_RANGE
    lines = [f"# Cost model: the presets on the target Jetsons ({ESTIMATE_LABEL})", "",
             f"Made by `{command}` ({time.strftime('%Y-%m-%d')}; host {flags}; load average "
             f"{os.getloadavg()[0]:.1f} at the end). Graphs: each preset's model, "
             "random init (MACs do not depend on the weights), exported by export.onnx_export.export_graphs; "
             "MACs and bytes by edge_runtime/cost/graph_cost.py. Device rates, the depthwise penalty and the "
             "CPU scaling: edge_runtime/cost/devices.py (sources and assumptions stated there).", "",
             f"Check of the rate's basis: torchvision ResNet-50 at 224 px counts {resnet / 1e9:.3f} GMAC here "
             f"(the table uses {RESNET50_MACS / 1e9:.1f}).", "",
             "## Graphs (FP32 ONNX, one frame)", "",
             "| preset | graph | input | GMAC | of which depthwise | params MB | activations MB (sum) | "
             "largest activation MB | nodes |", "|---|---|---|---|---|---|---|---|---|"]
    for name, est in results.items():
        for g, c in est["graphs"].items():
            shape = "x".join(str(d) for d in next(iter(c["inputs"].values())))
            lines.append(f"| {name} | {g} | {shape} | {c['macs']['total'] / 1e9:.3f} | "
                         f"{c['depthwise_macs'] / 1e9:.3f} | {c['param_bytes'] / MB:.1f} | "
                         f"{c['activation_bytes'] / MB:.1f} | {c['largest_activation']['bytes'] / MB:.2f} | "
                         f"{c['nodes']} |")
    lines += ["", "## CPU stages measured on this host (synthetic frame of side F)", "",
              "Fastest of the timed frames (what is scaled), and the median of the sum beside it: the host is "
              "shared, and the gap is what other processes added. Each device is charged the row with its "
              "thread count (devices.opencv_threads: its cores less 2, at most this host's); the 1-thread row "
              "gives the one-core bound.", "",
              "| preset | F | OpenCV threads | preprocess ms | crop ms | sum ms | median of the sum ms |",
              "|---|---|---|---|---|---|---|"]
    for name, est in results.items():
        for n, h in est["host_threads"].items():
            lines.append(f"| {name} | {h['frame_side']} | {n} | {h['preprocess_ms']:.2f} | {h['crop_ms']:.2f} | "
                         f"{h['total_ms']:.2f} | {h['median_ms']:.2f} |")
    lines += ["", f"## Estimated per frame (INT8 graphs; depthwise MAC = {DEPTHWISE_PENALTY:g} dense MACs)", "",
              "| preset | device | graphs ms | OpenCV threads | CPU ms (scaled) | total ms | frames/s | "
              f"frames/s overlapped | total ms at depthwise {lo:g} / {hi:g} | one core: CPU ms / frames/s |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for name, est in results.items():
        for key, e in est["estimates"].items():
            s = est["sensitivity"][key]
            lines.append(f"| {name} | {key} | {e['gpu_ms']:.2f} | {e['opencv_threads']} | {e['cpu_ms']:.2f} | "
                         f"{e['total_ms']:.2f} | {e['fps']:.1f} | {e['fps_overlapped']:.1f} | "
                         f"{s[str(lo)]:.2f} / {s[str(hi)]:.2f} | {e['cpu_ms_one_core']:.2f} / "
                         f"{e['fps_one_core']:.1f} |")
    side = camera["frame_side"]
    lines += ["", f"## Camera frames larger than F ({side} px): square_frame, not in the table above", "",
              "| camera frame | OpenCV threads | host ms | " + " | ".join(f"{k} ms (scaled)" for k in camera["scale"])
              + " |", "|---|---|---|" + "---|" * len(camera["scale"])]
    for n, sizes in camera["ms"].items():
        for size, ms in sizes.items():
            lines.append(f"| {size} | {n} | {ms:.2f} | "
                         + " | ".join(f"{ms * f:.2f}" for f in camera["scale"].values()) + " |")
    lines += ["", "A 2:1 or integer-ratio mode costs little; a non-integer area resize (1080p to 768 px) costs more "
              "than the whole preprocessing of the frame. Pick a camera mode of F or 2F (`csi://0?size=WxH`), or "
              "let the camera pipeline scale."]
    lines += ["", "frames/s: the CPU stages then the graphs, one frame at a time; overlapped: the next frame's CPU "
              "stages beside the graphs (mgfen-scan's prefetch), 1000 / max(CPU, graphs). Not modelled: kernel "
              "launch overhead per layer (the graphs' estimate is optimistic for small graphs), memory "
              "bandwidth (the threads' speed-up is the host's), camera frames larger than F (the section "
              "above).", "",
              "Same numbers for any bundle: `mgfen-bench --bundle B --estimate all` (text) or "
              "`--estimate all --json -`; the export report's `cost` section holds them for every device.", ""]
    if any(name not in PRESETS for name in results):
        lines += ["Rows named PRESET:key=value are variants, not presets: that preset with those fields changed "
                  "(benchmarks/cost_presets.py --variant), for choosing presets against the estimate.", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", nargs="+", default=["edge", "paper"], choices=sorted(PRESETS))
    ap.add_argument("--variant", nargs="*", default=list(VARIANTS),
                    help="PRESET:key=value,... rows beside the presets (not presets; none: --variant)")
    ap.add_argument("--host-frames", type=int, default=60,
                    help="timed frames of the CPU stages (the fastest is scaled; more resist a busy host)")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "results" / "cost_model.md")
    args = ap.parse_args()
    torch.set_num_threads(2)
    flags = cpu_flags()
    print(f"host: {flags}", flush=True)
    with tempfile.TemporaryDirectory(prefix="mgfen-cost-") as tmp:
        results = {}
        todo = [(n, PRESETS[n]) for n in args.presets] + [(v, parse_variant(v)) for v in args.variant]
        for name, cfg in todo:
            results[name] = preset_estimate(name, cfg, Path(tmp), args.host_frames)
            print(f"== {name}\n{format_estimate(results[name])}", flush=True)
        resnet = resnet50_macs(Path(tmp))
    side = PRESETS["edge"].preprocess.frame_size
    thread_counts = sorted({int(n) for est in results.values() for n in est["host_threads"]})
    camera = {"frame_side": side, "ms": {str(n): camera_resize_ms(side, args.host_frames, n) for n in thread_counts},
              "scale": {k: cpu_scale(d, cpu_ghz()) for k, d in DEVICES.items()}}
    print(f"camera frame -> {side} px, host ms: {camera['ms']}", flush=True)
    command = "python benchmarks/cost_presets.py" + ("" if len(sys.argv) == 1 else " " + " ".join(sys.argv[1:]))
    args.out.write_text(markdown(results, resnet, command, flags, camera))
    args.out.with_suffix(".json").write_text(json.dumps({"host_flags": flags, "resnet50_224_macs": resnet,
                                                        "presets": results, "camera_resize": camera}, indent=2)
                                             + "\n")
    print(f"wrote {args.out} and {args.out.with_suffix('.json')}")


if __name__ == "__main__":
    main()
