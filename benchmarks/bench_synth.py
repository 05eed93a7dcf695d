"""Benchmark of the synthetic dataset: generation speed, and how resolvable the micro features are.

    python benchmarks/bench_synth.py [--n 60] [--size 1024] [--pairs 40] [--skip-speed]

Speed: frames/s of generate_dataset with 1 and 2 workers, side by side (same config, same bytes).
Resolvability: for matched pairs (same index, pose, background, lighting and noise; genuine vs counterfeit)
each micro-feature region is looked at two ways:
  crop224 - a 224x224 crop of the full-resolution frame centred on the region (what the ROI branch sees);
  g448    - the whole frame downscaled to 448 px (cv2.INTER_AREA), cropped to the same physical area.
Two numbers per view: a high-frequency statistic (share of spectral power above 0.25 cycles/px; Cohen's d
between classes) and a linear probe (ridge on the log radial power spectrum, 5-fold CV by pair; 0.5 = chance).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from train.data.synth import REGION_NAMES, generate_dataset, render_sample
from train.data.synth_config import SynthConfig
from train.enhance.backgrounds import BackgroundLibrary

_BINS = 16


def _spectrum_features(gray: np.ndarray) -> tuple[np.ndarray, float]:
    """(log radial power spectrum in _BINS bins, share of power above 0.25 cycles/px) of a square crop."""
    g = gray.astype(np.float64)
    g = g - g.mean()
    n = g.shape[0]
    win = np.outer(np.hanning(n), np.hanning(n))
    p = np.abs(np.fft.fftshift(np.fft.fft2(g * win))) ** 2
    fy, fx = np.meshgrid(np.fft.fftshift(np.fft.fftfreq(n)), np.fft.fftshift(np.fft.fftfreq(n)), indexing="ij")
    r = np.sqrt(fx**2 + fy**2)
    edges = np.linspace(0, 0.5, _BINS + 1)
    feats = np.array([np.log(p[(r >= a) & (r < b)].mean() + 1e-9) for a, b in zip(edges[:-1], edges[1:])])
    total = p[(r > 0) & (r <= 0.5)].sum()
    return feats, float(p[(r > 0.25) & (r <= 0.5)].sum() / (total + 1e-12))


def _crop(img: np.ndarray, cx: float, cy: float, side: int) -> np.ndarray:
    h, w = img.shape[:2]
    x0 = int(np.clip(round(cx - side / 2), 0, w - side))
    y0 = int(np.clip(round(cy - side / 2), 0, h - side))
    return img[y0 : y0 + side, x0 : x0 + side]


def _probe_accuracy(x: np.ndarray, y: np.ndarray, pair: np.ndarray, folds: int = 5, lam: float = 1.0) -> float:
    """Cross-validated accuracy of a ridge classifier; folds split by pair so a pair never straddles."""
    correct = 0
    for f in range(folds):
        test = pair % folds == f
        mu, sd = x[~test].mean(0), x[~test].std(0) + 1e-9
        a = np.c_[(x[~test] - mu) / sd, np.ones((~test).sum())]
        t = np.where(y[~test] == 1, 1.0, -1.0)
        w = np.linalg.solve(a.T @ a + lam * np.eye(a.shape[1]), a.T @ t)
        pred = np.c_[(x[test] - mu) / sd, np.ones(test.sum())] @ w > 0
        correct += int((pred == (y[test] == 1)).sum())
    return correct / len(y)


def resolvability(size: int, pairs: int, strength: float) -> dict[str, dict[str, float]]:
    """{region: {view_acc, view_d}} for view in crop224 / g448."""
    config = SynthConfig(n=300, size=size, strength=strength)
    lib = BackgroundLibrary(None, config.families)
    g_side = 448
    feats: dict[tuple[str, str], list[np.ndarray]] = {}
    hfs: dict[tuple[str, str], list[float]] = {}
    labels, pair_ids = [], []
    for i in range(pairs):
        bg, _ = lib.sample(np.random.default_rng(10_000 + i), size, size)
        for lab in (0, 1):
            img, _, info = render_sample(config, i, lab, bg)
            gray = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
            small = cv2.resize(gray, (g_side, g_side), interpolation=cv2.INTER_AREA)
            f = g_side / size
            side_small = max(16, int(round(224 * f)))
            for name in REGION_NAMES:
                cx, cy = np.array(info["regions"][name]).mean(0)
                for view, crop in (("crop224", _crop(gray, cx, cy, 224)), ("g448", _crop(small, cx * f, cy * f, side_small))):
                    fe, hf = _spectrum_features(crop)
                    feats.setdefault((name, view), []).append(fe)
                    hfs.setdefault((name, view), []).append(hf)
            labels.append(lab)
            pair_ids.append(i)
    y, pid = np.array(labels), np.array(pair_ids)
    out: dict[str, dict[str, float]] = {}
    for name in (*REGION_NAMES, "all"):
        row = {}
        for view in ("crop224", "g448"):
            names = REGION_NAMES if name == "all" else (name,)
            x = np.concatenate([np.array(feats[(n, view)]) for n in names], axis=1)
            row[f"{view}_acc"] = _probe_accuracy(x, y, pid)
            if name != "all":
                h = np.array(hfs[(name, view)])
                pooled = np.sqrt((h[y == 0].var() + h[y == 1].var()) / 2) + 1e-12
                row[f"{view}_d"] = float(abs(h[y == 1].mean() - h[y == 0].mean()) / pooled)
        out[name] = row
    return out


def speed(n: int, size: int) -> dict[int | str, float]:
    """frames/s of generate_dataset with 1 and 2 workers (wall clock), CPU seconds per frame of the in-process
    run (independent of other load on the machine); also checks the two outputs are byte-identical."""
    res: dict[int | str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for workers in (1, 2):
            out = Path(tmp) / f"w{workers}"
            t0, c0 = time.perf_counter(), time.process_time()
            generate_dataset(out, SynthConfig(n=n, size=size), workers=workers)
            res[workers] = n / (time.perf_counter() - t0)
            if workers == 1:
                res["cpu_s_per_frame"] = (time.process_time() - c0) / n
        same = all(
            (Path(tmp) / "w1" / p.relative_to(Path(tmp) / "w2")).read_bytes() == p.read_bytes()
            for p in (Path(tmp) / "w2").rglob("*.png")
        )
        print(f"outputs with 1 and 2 workers byte-identical: {same}")
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=60, help="frames per speed run")
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--pairs", type=int, default=40, help="genuine/counterfeit pairs for the resolvability probe")
    ap.add_argument("--strength", type=float, default=1.0)
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--skip-probe", action="store_true")
    args = ap.parse_args()
    cv2.setNumThreads(1)
    if not args.skip_speed:
        fps = speed(args.n, args.size)
        print(f"speed at {args.size}px, n={args.n}: 1 worker {fps[1]:.2f} frames/s, 2 workers {fps[2]:.2f} frames/s "
              f"(x{fps[2] / fps[1]:.2f}); 300 frames with 2 workers ~ {300 / fps[2]:.0f} s")
        cpu = fps["cpu_s_per_frame"]
        print(f"CPU time {cpu:.3f} s/frame => on two otherwise idle cores ~{2 / cpu:.1f} frames/s, "
              f"300 frames ~{300 * cpu / 2:.0f} s; load average now {os.getloadavg()[0]:.1f}")
    if args.skip_probe:
        return
    t0 = time.perf_counter()
    res = resolvability(args.size, args.pairs, args.strength)
    print(f"resolvability at {args.size}px, strength {args.strength}, {args.pairs} pairs ({time.perf_counter() - t0:.0f} s); "
          f"probe accuracy 0.5 = chance, d = Cohen's d of high-frequency power share")
    print(f"{'region':<10} {'crop224 acc':>11} {'g448 acc':>9} {'crop224 d':>10} {'g448 d':>7}")
    for name, row in res.items():
        d1 = f"{row['crop224_d']:10.2f}" if "crop224_d" in row else f"{'':>10}"
        d2 = f"{row['g448_d']:7.2f}" if "g448_d" in row else f"{'':>7}"
        print(f"{name:<10} {row['crop224_acc']:11.2f} {row['g448_acc']:9.2f} {d1} {d2}")


if __name__ == "__main__":
    main()
