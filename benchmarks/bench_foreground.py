"""Benchmark: one-shot foreground masks from ONE reference against the synthetic dataset's exact masks.

    python benchmarks/bench_foreground.py                      # makes the default dataset (n 300, 1024 px) first
    python benchmarks/bench_foreground.py --data DIR --limit 60

Prints the mean / min / 10th-percentile IoU, the seconds per image (features, GrabCut, total), the
correlation between the reported confidence and the IoU, and a JSON line. The reference is the first
train image (sorted by path); every other image of the chosen splits is segmented.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, help="a synthetic dataset (default: generate the default one in a temp folder)")
    ap.add_argument("--splits", default="train,val,test")
    ap.add_argument("--limit", type=int, default=0, help="segment at most this many images (0 = all)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    from edge_runtime.preprocess import list_images, read_image
    from train.enhance.foreground import ForegroundConfig, ForegroundExtractor, mask_iou, read_mask

    tmp = None
    data = args.data
    if data is None:
        from train.data.synth import generate_dataset
        from train.data.synth_config import SynthConfig

        tmp = tempfile.TemporaryDirectory(prefix="mgfen-bench-fg-")
        data = Path(tmp.name) / "synth"
        t0 = time.perf_counter()
        generate_dataset(data, SynthConfig(), workers=2)
        print(f"generated the default synthetic dataset in {time.perf_counter() - t0:.1f} s")

    images = [p for s in args.splits.split(",") for p in list_images(data / s)]
    ref = list_images(data / "train")[0]
    images = [p for p in images if p != ref]
    if args.limit:
        step = max(1, len(images) // args.limit)
        images = images[::step][: args.limit]

    t0 = time.perf_counter()
    fg = ForegroundExtractor(ForegroundConfig())
    t_load = time.perf_counter() - t0
    fg.fit([(read_image(ref), read_mask(data / "masks" / ref.relative_to(data)))])
    print(f"reference {ref.relative_to(data)}: fitted z threshold {fg.z_threshold:.2f}, IoU on itself (grid) {fg.reference_iou:.3f}")

    ious, confs, t_feat, t_total = [], [], [], []
    for p in images:
        img = read_image(p)
        gt = read_mask(data / "masks" / p.relative_to(data))
        t1 = time.perf_counter()
        fg.probability(img)
        t2 = time.perf_counter()
        res = fg.segment(img)  # computes features again: time the whole call on its own
        t3 = time.perf_counter()
        t_feat.append(t2 - t1)
        t_total.append(t3 - t2)
        ious.append(mask_iou(res.mask, gt))
        confs.append(res.confidence)
    ious_a, confs_a = np.array(ious), np.array(confs)
    corr = float(np.corrcoef(ious_a, confs_a)[0, 1]) if len(ious) > 2 and ious_a.std() > 0 else float("nan")
    worst = sorted(zip(ious, [str(p.relative_to(data)) for p in images]))[:5]
    print(f"images segmented:        {len(ious)}")
    print(f"mean IoU (one ref):      {ious_a.mean():.4f}")
    print(f"median / p10 / min IoU:  {np.median(ious_a):.4f} / {np.percentile(ious_a, 10):.4f} / {ious_a.min():.4f}")
    print(f"images with IoU >= 0.9:  {np.mean(ious_a >= 0.9) * 100:.1f}%")
    print(f"confidence vs IoU corr:  {corr:.3f}")
    print(f"s per image: features {np.mean(t_feat):.3f}, segment total {np.mean(t_total):.3f} "
          f"(grabcut+rest {np.mean(t_total) - np.mean(t_feat):.3f}); backbone load {t_load:.2f} s")
    print("worst:", ", ".join(f"{n} {v:.3f}" for v, n in worst))
    print(json.dumps({"mean_iou": round(float(ious_a.mean()), 4), "min_iou": round(float(ious_a.min()), 4),
                      "n": len(ious), "s_per_image": round(float(np.mean(t_total)), 4),
                      "confidence_iou_corr": round(corr, 3)}))
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
