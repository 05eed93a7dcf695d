"""Torch eager latency of the whole MGFEN model per frame, side by side with a plain ResNet-50 at 448 px.

    python benchmarks/bench_torch.py [--presets paper edge] [--device cpu|cuda|all] [--frames 20]

For each preset (random init: latency does not depend on the weights) one frame runs the full path at
batch 1: global_forward -> roi_align crops from the full-resolution frame -> parts_forward -> vote. On
CUDA it runs under autocast float16 (the torch CUDA FP16 path); on the CPU in float32. The reference
row is torchvision's resnet50 classifier on one 448 x 448 image. Prints ms per frame (median) and the
ratio of each row to the reference measured in the same run on the same device.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torchvision

from train.model.mgfen import build_model, preset


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn, device: torch.device, frames: int, warmup: int = 3) -> float:
    """Median wall time of fn() in ms over `frames` calls after `warmup` calls."""
    with torch.inference_mode(), torch.autocast(device.type, dtype=torch.float16, enabled=device.type == "cuda"):
        for _ in range(warmup):
            fn()
        _sync(device)
        times = []
        for _ in range(frames):
            t0 = time.perf_counter()
            fn()
            _sync(device)
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def mgfen_frame_fn(name: str, device: torch.device):
    """A closure running one frame of preset `name` at batch 1."""
    cfg = preset(name)
    model = build_model(cfg, pretrained=None).eval().to(device)
    p = cfg.preprocess
    image = torch.rand(1, 3, p.global_size, p.global_size, device=device)
    frame = torch.rand(1, 3, p.frame_size, p.frame_size, device=device)

    def run():
        return model(image, frame)["logits"]

    return run


def resnet50_fn(device: torch.device):
    net = torchvision.models.resnet50(weights=None).eval().to(device)
    x = torch.rand(1, 3, 448, 448, device=device)
    return lambda: net(x)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", nargs="+", default=["paper", "edge"])
    ap.add_argument("--device", choices=["cpu", "cuda", "all"], default="all")
    ap.add_argument("--frames", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    if "cuda" in devices and not torch.cuda.is_available():
        print("cuda: not available on this machine, skipped")
        devices.remove("cuda")
    for dev_name in devices:
        device = torch.device(dev_name)
        label = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {args.threads} threads"
        precision = "fp16 autocast" if device.type == "cuda" else "fp32"
        ref = time_call(resnet50_fn(device), device, args.frames)
        print(f"\n{dev_name} ({label}), torch {torch.__version__}, {precision}, batch 1, median of {args.frames}")
        print(f"  {'model':<28} {'ms/frame':>9} {'x resnet50@448':>15}")
        print(f"  {'resnet50 @448 (reference)':<28} {ref:>9.2f} {1.0:>15.2f}")
        for name in args.presets:
            ms = time_call(mgfen_frame_fn(name, device), device, args.frames)
            print(f"  {'MGFEN ' + name:<28} {ms:>9.2f} {ms / ref:>15.2f}")


if __name__ == "__main__":
    main()
