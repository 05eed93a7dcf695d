"""What the luminance space of the contrast enhancement (PreprocessConfig.luma_space: L of LAB or Y of
YCrCb) does to real photos, and what it costs, side by side in one run. No model is trained.

    python benchmarks/luma_space.py --data runs/real/signatures_bhsig260_bengali --data runs/real/sneakers_aj1 \
        --data runs/real/signatures_sigcomp2011 --data runs/demo/data

For every folder, up to --images photos spread evenly over its sorted list, each prepared with the edge
preset's preprocessing (its frame side shrunk to the photos' median square side, as mgfen-train's frame fit
does) in both spaces:
    clipped high / low   fraction of pixels with a channel at 255 / at 0 (detail the enhancement destroyed)
    detail               std of grey minus its 5 x 5 box mean (the fine texture left for the crops)
    |lab - ycrcb|        mean absolute difference of the two outputs, grey levels
    ms                   prepare_frame, fastest of --rounds runs on one OpenCV thread (both spaces alternate)
Writes docs/results/luma_space.md and .json (or --out).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import cpu_flags  # noqa: E402
from edge_runtime.preprocess import (LUMA_SPACES, PreprocessConfig, evenly_spaced, list_images,  # noqa: E402
                                     prepare_frame, read_image, square_crop_box)
from train.data.frame_fit import fit_frame_size  # noqa: E402
from train.model.mgfen import PRESETS  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def frame_config(images: list[np.ndarray]) -> PreprocessConfig:
    """The edge preset's preprocessing with its frame fitted to these photos' median square side."""
    base = PRESETS["edge"].preprocess
    side = float(np.median([square_crop_box(*img.shape[:2])[2] for img in images]))
    frame = min(base.frame_size, fit_frame_size(side, base.frame_size, base.global_size, base.crop_size))
    return dataclasses.replace(base, frame_size=frame)


def frame_stats(rgb: np.ndarray) -> dict[str, float]:
    """F x F x 3 uint8 RGB -> clipped-high/low fractions and the fine-detail std (grey levels)."""
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)
    return {"clipped_high": float((rgb == 255).any(-1).mean()), "clipped_low": float((rgb == 0).any(-1).mean()),
            "detail": float((grey - cv2.blur(grey, (5, 5))).std())}


def measure(folder: Path, count: int, rounds: int) -> dict:
    paths = list_images(folder)
    if not paths:
        raise SystemExit(f"{folder}: no images")
    images = [read_image(p) for p in evenly_spaced(paths, count)]
    cfg = frame_config(images)
    configs = {space: dataclasses.replace(cfg, luma_space=space) for space in LUMA_SPACES}
    out: dict = {"dataset": str(folder), "images": len(images), "frame_size": cfg.frame_size, "spaces": {}}
    frames = {space: [prepare_frame(img, c) for img in images] for space, c in configs.items()}
    for space, fs in frames.items():
        stats = [frame_stats(f) for f in fs]
        out["spaces"][space] = {k: float(np.mean([s[k] for s in stats])) for k in stats[0]}
    a, b = frames["lab"], frames["ycrcb"]
    out["abs_diff"] = float(np.mean([np.abs(x.astype(np.int16) - y.astype(np.int16)).mean() for x, y in zip(a, b)]))
    best = {space: float("inf") for space in LUMA_SPACES}
    for r in range(rounds):
        img = images[r % len(images)]
        for space in (LUMA_SPACES if r % 2 == 0 else reversed(list(LUMA_SPACES))):
            t0 = time.perf_counter()
            prepare_frame(img, configs[space])
            best[space] = min(best[space], (time.perf_counter() - t0) * 1e3)
    for space in LUMA_SPACES:
        out["spaces"][space]["ms"] = best[space]
    return out


def markdown(rows: list[dict], command: str, flags: str) -> str:
    lines = ["# Luminance space of the contrast enhancement: L of LAB against Y of YCrCb", "",
             f"Made by `{command}` ({time.strftime('%Y-%m-%d')}; {flags}; load average {os.getloadavg()[0]:.1f} "
             "at the end). Edge preset preprocessing (CLAHE clip 2, 8 x 8 tiles, gain to mean 0.5), frame "
             "fitted to each set's median square side; no model involved.", "",
             "| dataset | images | F | clipped high LAB / YCrCb | clipped low LAB / YCrCb | detail LAB / YCrCb | "
             "mean abs difference | prepare_frame ms LAB / YCrCb | ratio |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lab, ycc = r["spaces"]["lab"], r["spaces"]["ycrcb"]
        lines.append(f"| {r['dataset']} | {r['images']} | {r['frame_size']} | "
                     f"{100 * lab['clipped_high']:.2f}% / {100 * ycc['clipped_high']:.2f}% | "
                     f"{100 * lab['clipped_low']:.2f}% / {100 * ycc['clipped_low']:.2f}% | "
                     f"{lab['detail']:.2f} / {ycc['detail']:.2f} | {r['abs_diff']:.2f} | "
                     f"{lab['ms']:.2f} / {ycc['ms']:.2f} | {lab['ms'] / max(ycc['ms'], 1e-9):.2f} |")
    lines += ["", "clipped: pixels with a channel at 255 (high) or 0 (low) after preprocessing; detail: std of grey "
              "minus its 5 x 5 box mean, grey levels; ms: fastest of the timed runs on one OpenCV thread.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", action="append", required=True, type=Path, help="an image folder (repeatable)")
    ap.add_argument("--images", type=int, default=60)
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "results" / "luma_space.md")
    args = ap.parse_args(argv)
    cv2.setNumThreads(1)
    flags = cpu_flags()
    print(f"host: {flags}", flush=True)
    rows = []
    for folder in args.data:
        rows.append(measure(folder, args.images, args.rounds))
        print(json.dumps(rows[-1]), flush=True)
    command = "python benchmarks/luma_space.py " + " ".join(argv if argv is not None else sys.argv[1:])
    args.out.write_text(markdown(rows, command.strip(), flags))
    args.out.with_suffix(".json").write_text(json.dumps({"host_flags": flags, "datasets": rows}, indent=2) + "\n")
    print(f"wrote {args.out} and {args.out.with_suffix('.json')}")


if __name__ == "__main__":
    main()
