"""Preprocessing speed: the reference implementation (edge_runtime.preprocess as it was before issue 7,
copied below as `ref_*`) against the current edge_runtime.preprocess, side by side in one run.

    python benchmarks/bench_preprocess.py                              # edge preset, 4 source sizes
    python benchmarks/bench_preprocess.py --threads 1,2 --rounds 40 --data /tmp/mgfen/synth
    python benchmarks/bench_preprocess.py --bundle runs/demo/bundle    # + whole-pipeline thread settings

What it prints (all times are medians over --rounds rounds; reference and current run alternately in
every round, the order flipped each round, so machine load hits both alike):
1. exactness: max |reference - current| of prepare_frame, global_input and crop_rois (must be 0);
2. per step (decode excluded: the input is an HxWx3 uint8 BGR array), for every source size and
   cv2.setNumThreads value: square crop + resize, BGR->LAB, CLAHE on L, brightness gain, LAB->RGB,
   global resize, NCHW float32, and crop_rois (K boxes, the same function on both sides), plus the
   real functions end to end and the ratio reference / current;
3. options that CHANGE what the model sees (YCrCb is luma_space "ycrcb", which no preset uses; the others
   are not implemented in edge_runtime):
   their cost beside the current path and their difference from its output, in grey levels;
4. with --bundle: the whole per-frame pipeline (preprocess, global graph, crops, parts graph) for
   cv2 threads x onnxruntime intra-op threads, run sequentially, and with the next frame's
   preprocessing overlapped with the current frame's graphs (one worker thread): ms per frame, ms inside
   the graphs, overhead share, FPS.
The machine's load average is printed before and after: on a shared machine say it beside any number.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from edge_runtime import names
from edge_runtime.preprocess import (PreprocessConfig, _clahe, _enhance_luma, evenly_spaced, global_input,
                                     list_images, prepare_frame, read_image, resize, square_frame, to_nchw)
from edge_runtime.roi import _sample_axis, crop_rois

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import run_rounds  # noqa: E402

EDGE = PreprocessConfig(frame_size=768, global_size=128, crop_size=96)  # train.model.mgfen.PRESETS["edge"]
SOURCES = ((1024, 1024), (960, 1280), (768, 768), (1080, 1920))  # (H, W)


# ------------------------------------------------------------------------ reference (before issue 7)


def ref_enhance(bgr: np.ndarray, cfg: PreprocessConfig) -> np.ndarray:
    """REFERENCE copy of edge_runtime.preprocess.enhance before issue 7: HxWx3 uint8 BGR -> BGR."""
    if not cfg.ace and cfg.brightness_target is None:
        return bgr
    lab = cv2.cvtColor(bgr, cv2.COLOR_BGR2LAB)
    lum = lab[:, :, 0]
    if cfg.ace:
        lum = _clahe(float(cfg.clahe_clip), int(cfg.clahe_grid)).apply(lum)
    if cfg.brightness_target is not None:
        mean = float(lum.mean())
        gain = cfg.brightness_target * 255.0 / max(mean, 1.0)
        lum = cv2.convertScaleAbs(lum, alpha=gain)
    lab[:, :, 0] = lum
    return cv2.cvtColor(lab, cv2.COLOR_LAB2BGR)


def ref_prepare_frame(bgr: np.ndarray, cfg: PreprocessConfig) -> np.ndarray:
    """REFERENCE copy of prepare_frame before issue 7: HxWx3 uint8 BGR -> F x F x 3 uint8 RGB."""
    return cv2.cvtColor(ref_enhance(square_frame(bgr, cfg.frame_size), cfg), cv2.COLOR_BGR2RGB)


def ref_to_nchw(rgb: np.ndarray) -> np.ndarray:
    """REFERENCE copy of to_nchw before issue 7."""
    batch = rgb[None] if rgb.ndim == 3 else rgb
    out = np.ascontiguousarray(batch.transpose(0, 3, 1, 2), dtype=np.float32)
    out *= 1.0 / 255.0
    return out


def ref_global_input(frame: np.ndarray, cfg: PreprocessConfig) -> np.ndarray:
    """REFERENCE copy of global_input before issue 7: F x F x 3 uint8 RGB -> 1x3xSxS float32."""
    return ref_to_nchw(resize(frame, cfg.global_size))


def ref_crop_rois(frame: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
    """REFERENCE copy of edge_runtime.roi.crop_rois before issue 7 (gathers on every fractional box)."""
    img = np.asarray(frame)
    scale = np.float32(1.0 / 255.0) if img.dtype == np.uint8 else np.float32(1.0)
    h, w = img.shape[:2]
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    out = np.empty((boxes.shape[0], 3, size, size), dtype=np.float32)
    for k, (x1, y1, x2, y2) in enumerate(boxes):
        xl, xh, fx, vx = _sample_axis(x1 * w, (x2 - x1) * w, size, w)
        yl, yh, fy, vy = _sample_axis(y1 * h, (y2 - y1) * h, size, h)
        ya, yb = int(yl.min()), int(yh.max()) + 1
        xa, xb = int(xl.min()), int(xh.max()) + 1
        window = img[ya:yb, xa:xb]
        if vx.all() and vy.all() and not fx.any() and not fy.any():
            if xh[-1] - xl[0] == size and yh[-1] - yl[0] == size:
                crop = img[yl[0] : yl[0] + size, xl[0] : xl[0] + size]
            else:
                crop = window[(yl - ya)[:, None], (xl - xa)[None, :]]
            np.multiply(crop.transpose(2, 0, 1), scale, out=out[k], casting="unsafe")
            continue
        fy32 = fy.astype(np.float32)[:, None, None]
        top = window[yl - ya].astype(np.float32)
        rows = top + (window[yh - ya].astype(np.float32) - top) * fy32
        il, ih = xl - xa, xh - xa
        fx32 = fx.astype(np.float32)[None, :, None]
        left = rows[:, il]
        crop = left + (rows[:, ih] - left) * fx32
        crop *= ((vy[:, None] & vx[None, :])[:, :, None] * scale).astype(np.float32)
        out[k] = crop.transpose(2, 0, 1)
    return out


# ------------------------------------------------------------------------------------ the steps

Steps = list[tuple[str, Callable[[dict], None]]]


def _ref_clahe(s: dict) -> None:
    s["lum"] = _clahe(float(s["cfg"].clahe_clip), int(s["cfg"].clahe_grid)).apply(s["lab"][:, :, 0])


def _ref_gain(s: dict) -> None:
    lum, cfg = s["lum"], s["cfg"]
    gain = cfg.brightness_target * 255.0 / max(float(lum.mean()), 1.0)
    s["lab"][:, :, 0] = cv2.convertScaleAbs(lum, alpha=gain)


def _new_clahe(s: dict) -> None:
    lum = np.ascontiguousarray(s["lab"][:, :, 0])
    s["lum"] = _clahe(float(s["cfg"].clahe_clip), int(s["cfg"].clahe_grid)).apply(lum, dst=lum)


def _new_gain(s: dict) -> None:
    lum, cfg = s["lum"], s["cfg"]
    gain = cfg.brightness_target * 255.0 / max(cv2.sumElems(lum)[0] / lum.size, 1.0)
    cv2.convertScaleAbs(lum, dst=lum, alpha=gain)
    s["lab"][:, :, 0] = lum


def _square(s: dict) -> None:
    s["sq"] = square_frame(s["bgr"], s["cfg"].frame_size)


def _bgr2lab(s: dict) -> None:
    s["lab"] = cv2.cvtColor(s["sq"], cv2.COLOR_BGR2LAB)


def _ref_crop(s: dict) -> None:
    s["crops"] = ref_crop_rois(s["rgb"], s["boxes"], s["cfg"].crop_size)


def _crop(s: dict) -> None:
    s["crops"] = crop_rois(s["rgb"], s["boxes"], s["cfg"].crop_size)


REF_STEPS: Steps = [
    ("square+resize", _square),
    ("BGR->LAB", _bgr2lab),
    ("CLAHE on L", _ref_clahe),
    ("brightness gain", _ref_gain),
    ("LAB->RGB", lambda s: s.update(rgb=cv2.cvtColor(cv2.cvtColor(s["lab"], cv2.COLOR_LAB2BGR),
                                                     cv2.COLOR_BGR2RGB))),
    ("global resize", lambda s: s.update(small=resize(s["rgb"], s["cfg"].global_size))),
    ("NCHW float32", lambda s: s.update(x=ref_to_nchw(s["small"]))),
    ("crop_rois", _ref_crop),
]
NEW_STEPS: Steps = [
    ("square+resize", _square),
    ("BGR->LAB", _bgr2lab),
    ("CLAHE on L", _new_clahe),
    ("brightness gain", _new_gain),
    ("LAB->RGB", lambda s: s.update(rgb=cv2.cvtColor(s["lab"], cv2.COLOR_LAB2RGB, dst=s["lab"]))),
    ("global resize", lambda s: s.update(small=resize(s["rgb"], s["cfg"].global_size))),
    ("NCHW float32", lambda s: s.update(x=to_nchw(s["small"]))),
    ("crop_rois", _crop),
]


def run_steps(steps: Steps, bgr: np.ndarray, cfg: PreprocessConfig, boxes: np.ndarray) -> dict:
    """Run the steps once on one frame; {step: ms}."""
    state = {"bgr": bgr, "cfg": cfg, "boxes": boxes}
    out = {}
    for name, fn in steps:
        t0 = time.perf_counter()
        fn(state)
        out[name] = (time.perf_counter() - t0) * 1e3
    return out


# --------------------------------------------------------------- options that change the model input


def _lab_path(square: np.ndarray, cfg: PreprocessConfig) -> np.ndarray:
    lab = cv2.cvtColor(square, cv2.COLOR_BGR2LAB)
    _enhance_luma(lab, cfg)
    return cv2.cvtColor(lab, cv2.COLOR_LAB2RGB, dst=lab)


def _linear_square(bgr: np.ndarray, size: int) -> np.ndarray:
    h, w = bgr.shape[:2]
    side = min(h, w)
    sq = bgr[(h - side) // 2: (h - side) // 2 + side, (w - side) // 2: (w - side) // 2 + side]
    return sq if side == size else cv2.resize(sq, (size, size), interpolation=cv2.INTER_LINEAR)


def opt_ycrcb(bgr: np.ndarray, cfg: PreprocessConfig) -> np.ndarray:
    """CLAHE + gain on Y of YCrCb instead of L of LAB (luma_space "ycrcb")."""
    return prepare_frame(bgr, dataclasses.replace(cfg, luma_space="ycrcb"))


def opt_linear_resize(bgr: np.ndarray, cfg: PreprocessConfig) -> np.ndarray:
    return _lab_path(_linear_square(bgr, cfg.frame_size), cfg)


def opt_half_res_clahe(bgr: np.ndarray, cfg: PreprocessConfig) -> np.ndarray:
    """CLAHE computed on L at half resolution; its change (CLAHE(L/2) - L/2) is upsampled and added to
    full-resolution L, so micro detail is kept and CLAHE costs a quarter."""
    lab = cv2.cvtColor(square_frame(bgr, cfg.frame_size), cv2.COLOR_BGR2LAB)
    lum = np.ascontiguousarray(lab[:, :, 0])
    f = cfg.frame_size
    small = cv2.resize(lum, (f // 2, f // 2), interpolation=cv2.INTER_AREA)
    delta = cv2.subtract(_clahe(float(cfg.clahe_clip), int(cfg.clahe_grid)).apply(small), small, dtype=cv2.CV_16S)
    lum = cv2.add(lum, cv2.resize(delta, (f, f), interpolation=cv2.INTER_LINEAR), dtype=cv2.CV_8U)
    gain = cfg.brightness_target * 255.0 / max(cv2.sumElems(lum)[0] / lum.size, 1.0)
    lab[:, :, 0] = cv2.convertScaleAbs(lum, alpha=gain)
    return cv2.cvtColor(lab, cv2.COLOR_LAB2RGB, dst=lab)


def opt_ycrcb_linear(bgr: np.ndarray, cfg: PreprocessConfig) -> np.ndarray:
    return opt_ycrcb(_linear_square(bgr, cfg.frame_size), cfg)


OPTIONS = {"YCrCb instead of LAB": opt_ycrcb, "INTER_LINEAR frame resize": opt_linear_resize,
           "CLAHE at half resolution": opt_half_res_clahe, "YCrCb + INTER_LINEAR": opt_ycrcb_linear}


# ------------------------------------------------------------------------------------------ inputs


def load_frames(data: str | None, count: int) -> list[np.ndarray]:
    """`count` BGR frames: images from `data` (evenly spread), else textured synthetic ones."""
    if data:
        paths = list_images(data)
        if not paths:
            raise SystemExit(f"{data}: no images")
        return [read_image(p) for p in evenly_spaced(paths, count)]
    rng = np.random.default_rng(0)
    frames = []
    for _ in range(count):
        img = cv2.GaussianBlur(rng.integers(0, 256, (1024, 1024, 3), dtype=np.uint8), (0, 0), 2.0)
        cv2.circle(img, (512, 512), 300, tuple(int(v) for v in rng.integers(0, 256, 3)), -1)
        frames.append(cv2.add(img, rng.integers(0, 12, img.shape, dtype=np.uint8)))
    return frames


def to_source(img: np.ndarray, h: int, w: int) -> np.ndarray:
    """The frame as an H x W camera frame (bilinear; the content does not matter for the timings)."""
    return img if img.shape[:2] == (h, w) else cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)


def snapped_boxes(cfg: PreprocessConfig, k: int, rng: np.random.Generator) -> np.ndarray:
    """K float32 boxes of crop_size frame pixels snapped to whole pixels, as the model emits them."""
    f, r = cfg.frame_size, cfg.crop_size
    xy = rng.integers(0, f - r + 1, size=(k, 2))
    return (np.concatenate([xy, xy + r], 1) / f).astype(np.float32)


def med(samples: list[dict], key: str) -> float:
    return statistics.median(s[key] for s in samples)


def load_line() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} CPUs"


# ------------------------------------------------------------------------------------------ sections


def check_exact(frames: list[np.ndarray], cfg: PreprocessConfig) -> int:
    worst, crop_diff = 0, 0.0
    rng = np.random.default_rng(2)
    for img in frames:
        for h, w in SOURCES:
            bgr = to_source(img, h, w)
            a, b = ref_prepare_frame(bgr, cfg), prepare_frame(bgr, cfg)
            ga, gb = ref_global_input(a, cfg), global_input(b, cfg)
            worst = max(worst, int(np.abs(a.astype(np.int16) - b).max()), int(np.abs(ga - gb).max() * 255 + 0.5))
            boxes = snapped_boxes(cfg, 4, rng)
            crop_diff = max(crop_diff, float(np.abs(ref_crop_rois(b, boxes, cfg.crop_size)
                                                    - crop_rois(b, boxes, cfg.crop_size)).max()))
    print(f"exactness: max |reference - current| over {len(frames)} frames x {len(SOURCES)} sources: "
          f"prepare_frame + global_input = {worst} grey levels; crop_rois = {crop_diff:g}")
    return worst + int(crop_diff > 0)


def bench_steps(frames: list[np.ndarray], cfg: PreprocessConfig, threads: list[int], rounds: int, warmup: int,
                k: int) -> None:
    rng = np.random.default_rng(1)
    for t in threads:
        cv2.setNumThreads(t)
        for h, w in SOURCES:
            srcs = [to_source(img, h, w) for img in frames]
            boxes = [snapped_boxes(cfg, k, rng) for _ in srcs]

            def variant(steps: Steps, prep, ginput) -> Callable[[int], dict]:
                def fn(r: int) -> dict:
                    i = r % len(srcs)
                    out = run_steps(steps, srcs[i], cfg, boxes[i])
                    t0 = time.perf_counter()
                    ginput(prep(srcs[i], cfg), cfg)
                    out["prepare_frame+global_input"] = (time.perf_counter() - t0) * 1e3
                    return out
                return fn

            samples = run_rounds({"reference": variant(REF_STEPS, ref_prepare_frame, ref_global_input),
                                  "current": variant(NEW_STEPS, prepare_frame, global_input)}, rounds, warmup)
            print(f"\ncv2 threads {t}, source {w}x{h} -> frame {cfg.frame_size}, global {cfg.global_size}, "
                  f"K {k} crops of {cfg.crop_size}  ({load_line()})")
            print(f"  {'step':28s} {'reference ms':>12s} {'current ms':>11s} {'ratio':>7s}")
            keys = [n for n, _ in REF_STEPS] + ["sum of steps", "prepare_frame+global_input"]
            for key in keys:
                if key == "sum of steps":
                    a = sum(med(samples["reference"], n) for n, _ in REF_STEPS)
                    b = sum(med(samples["current"], n) for n, _ in NEW_STEPS)
                else:
                    a, b = med(samples["reference"], key), med(samples["current"], key)
                print(f"  {key:28s} {a:12.3f} {b:11.3f} {a / max(b, 1e-9):7.2f}")


def bench_options(frames: list[np.ndarray], cfg: PreprocessConfig, threads: list[int], rounds: int,
                  warmup: int) -> None:
    print("\nOptions that CHANGE the model input (YCrCb is luma_space 'ycrcb', not a preset's; the others "
          "are not implemented in edge_runtime), prepare_frame only; "
          "difference from the current output over all frames:")
    for t in threads:
        cv2.setNumThreads(t)
        for h, w in ((1024, 1024), (768, 768), (1080, 1920)):
            srcs = [to_source(img, h, w) for img in frames]
            variants = {"current": prepare_frame, **OPTIONS}

            def timed(fn) -> Callable[[int], dict]:
                def run(r: int) -> dict:
                    t0 = time.perf_counter()
                    fn(srcs[r % len(srcs)], cfg)
                    return {"ms": (time.perf_counter() - t0) * 1e3}
                return run

            samples = run_rounds({n: timed(f) for n, f in variants.items()}, rounds, warmup)
            base = med(samples["current"], "ms")
            print(f"\n  cv2 threads {t}, source {w}x{h}  ({load_line()})")
            print(f"  {'variant':28s} {'ms':>8s} {'speed-up':>8s} {'max diff':>8s} {'mean diff':>9s} {'>1 level':>8s}")
            for name, fn in variants.items():
                diffs = [np.abs(fn(s, cfg).astype(np.int16) - prepare_frame(s, cfg)) for s in srcs]
                d = np.stack(diffs)
                ms = med(samples[name], "ms")
                print(f"  {name:28s} {ms:8.2f} {base / ms:8.2f} {int(d.max()):8d} {float(d.mean()):9.3f} "
                      f"{float((d > 1).mean()) * 100:7.2f}%")


def bench_pipeline(bundle: Path, frames: list[np.ndarray], cfg_threads: list[int], ort_threads: list[int],
                   count: int) -> None:
    """The scanner's per-frame work on the bundle's INT8 CPU graphs (FP32 when absent)."""
    import json

    import onnxruntime as ort

    manifest = json.loads((bundle / names.MANIFEST_FILE).read_text())
    cfg = PreprocessConfig.from_dict(manifest["preprocess"])

    def graph(kind: str) -> Path:
        for name in (f"{kind}.int8.cpu.onnx", f"{kind}.onnx"):
            if (bundle / name).is_file():
                return bundle / name
        raise SystemExit(f"{bundle}: no {kind} graph")

    srcs = [to_source(img, 1024, 1024) for img in frames]
    print(f"\nWhole pipeline on {bundle} ({graph('global').name}, {graph('parts').name}), source 1024x1024, "
          f"frame {cfg.frame_size}, {count} frames per row:")
    print(f"  {'cv2 thr':>7s} {'ort thr':>7s} {'mode':>10s} {'ms/frame':>9s} {'graphs ms':>9s} {'overhead':>8s} "
          f"{'FPS':>6s}  load")
    for ot in ort_threads:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = ot
        g = ort.InferenceSession(str(graph("global")), opts, providers=["CPUExecutionProvider"])
        p = ort.InferenceSession(str(graph("parts")), opts, providers=["CPUExecutionProvider"])

        def graphs(frame: np.ndarray, x: np.ndarray) -> float:
            t0 = time.perf_counter()
            out = g.run([names.BOXES], {names.GLOBAL_INPUT: x})
            t1 = time.perf_counter()
            crops = crop_rois(frame, out[0][0], cfg.crop_size)
            t2 = time.perf_counter()
            p.run(None, {names.PARTS_INPUT: crops})
            return (t1 - t0 + time.perf_counter() - t2) * 1e3

        def prep(i: int) -> tuple[np.ndarray, np.ndarray]:
            frame = prepare_frame(srcs[i % len(srcs)], cfg)
            return frame, global_input(frame, cfg)

        for ct in cfg_threads:
            cv2.setNumThreads(ct)
            for _ in range(5):
                graphs(*prep(0))
            t0 = time.perf_counter()
            inside = sum(graphs(*prep(i)) for i in range(count))
            wall = (time.perf_counter() - t0) * 1e3
            print(f"  {ct:7d} {ot:7d} {'sequential':>10s} {wall / count:9.2f} {inside / count:9.2f} "
                  f"{(wall - inside) / wall * 100:7.1f}% {1e3 * count / wall:6.1f}  {os.getloadavg()[0]:.2f}")
            with ThreadPoolExecutor(1) as pool:
                nxt = pool.submit(prep, 0)
                t0 = time.perf_counter()
                inside = 0.0
                for i in range(count):
                    frame, x = nxt.result()
                    nxt = pool.submit(prep, i + 1)
                    inside += graphs(frame, x)
                wall = (time.perf_counter() - t0) * 1e3
                nxt.result()
            print(f"  {ct:7d} {ot:7d} {'overlapped':>10s} {wall / count:9.2f} {inside / count:9.2f} "
                  f"{(wall - inside) / wall * 100:7.1f}% {1e3 * count / wall:6.1f}  {os.getloadavg()[0]:.2f}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", help="folder of images to take frames from (default: synthetic textures)")
    ap.add_argument("--frames", type=int, default=4, help="distinct frames cycled through")
    ap.add_argument("--rounds", type=int, default=30, help="timed rounds per table")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", default="1,2", help="cv2.setNumThreads values, comma separated")
    ap.add_argument("--k", type=int, default=4, help="ROI crops per frame")
    ap.add_argument("--no-options", action="store_true", help="skip the model-input-changing options")
    ap.add_argument("--bundle", help="a bundle folder: also time the whole pipeline per thread setting")
    ap.add_argument("--ort-threads", default="1,2", help="onnxruntime intra-op threads for --bundle")
    ap.add_argument("--pipeline-frames", type=int, default=60)
    args = ap.parse_args(argv)
    threads = [int(t) for t in args.threads.split(",")]
    print(f"bench_preprocess: OpenCV {cv2.__version__}, numpy {np.__version__}; {load_line()}")
    frames = load_frames(args.data, args.frames)
    worst = check_exact(frames, EDGE)
    bench_steps(frames, EDGE, threads, args.rounds, args.warmup, args.k)
    if not args.no_options:
        bench_options(frames, EDGE, threads, args.rounds, args.warmup)
    if args.bundle:
        bench_pipeline(Path(args.bundle), frames, threads, [int(t) for t in args.ort_threads.split(",")],
                       args.pipeline_frames)
    print(f"\nend: {load_line()}")
    if worst:
        raise SystemExit(f"reference and current preprocessing differ by up to {worst} grey levels")


if __name__ == "__main__":
    main()
