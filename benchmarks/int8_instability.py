"""Where INT8's changed verdicts come from: the graphs' arithmetic, or the part boxes they pick?

On the real-data models the INT8 gate fails with |dP| up to 0.5-0.7 on a few frames (docs/results/
realdata_field.md), and no FP32 fallback of 1-16 nodes rescues it. This script splits one bundle's INT8
error on a labelled folder into its parts, per frame, each pipeline against FP32 (P = P(counterfeit)):

- `int8`: the flavour as the gate scores it (calibration.accuracy.flavour_pipeline);
- `int8, fp32 boxes`: the INT8 graphs, but the parts graph reads crops at FP32's boxes and the vote uses
  FP32's box scores: what is left is the arithmetic of the graphs;
- `fp32, int8 boxes`: FP32 throughout, but at the INT8 flavour's boxes: the box choice alone;
- `fp32, noise s`: FP32 on the frame plus Gaussian noise of s grey levels (seeded, rounded to uint8): how
  much a second capture of the same item would move P, for scale.

Per pipeline: verdicts equal FP32's at the bundle's thresholds (%), |dP| p50 / p90 / max, and for the
INT8 pipeline the frames whose boxes moved (best-match IoU < 0.5 for any box). Reads the bundle's own files;
trains nothing. Usage:

    python benchmarks/int8_instability.py --bundle B --data DIR/val --data DIR/test --out docs/results/x.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from _common import cpu_flags, write_results
from calibration.accuracy import OrtPipeline, bundle_pipelines, labelled_images
from calibration.verdict_gate import noisy
from edge_runtime.preprocess import load_frame

NOISE_LEVELS = (1.0, 2.0)  # grey levels (uint8 steps) of the "second capture" noise
MOVED_IOU = 0.5


def global_outputs(pipe: OrtPipeline, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(global logits [C], boxes [K,4], box scores [K]) of `pipe`'s global graph on an F x F x 3 uint8 frame."""
    logits, boxes, scores = pipe.run_global(frame)[:3]
    return logits[0], boxes[0], scores[0]


def vote(pipe: OrtPipeline, frame: np.ndarray, g_logits: np.ndarray, boxes: np.ndarray,
         scores: np.ndarray) -> float:
    """P(positive) of `pipe`'s vote at the given boxes (OrtPipeline.vote)."""
    return pipe.vote(frame, g_logits, boxes, scores)[1]


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[K] best-match IoU of each box of a [K,4] against the boxes of b [K,4] (normalised xyxy)."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area = lambda x: np.prod(np.clip(x[:, 2:] - x[:, :2], 0, None), axis=1)  # noqa: E731
    union = area(a)[:, None] + area(b)[None, :] - inter
    return (inter / np.maximum(union, 1e-12)).max(axis=1)


def frame_rows(pipes: dict[str, OrtPipeline], frame: np.ndarray, rng: np.random.Generator) -> dict:
    """P of every decomposition pipeline on one frame (module docstring) and the INT8 boxes' IoU."""
    fp32 = pipes["fp32"]
    g32, b32, s32 = global_outputs(fp32, frame)
    row: dict = {"fp32": vote(fp32, frame, g32, b32, s32)}
    for flavour in [k for k in pipes if k != "fp32"]:
        g8, b8, s8 = global_outputs(pipes[flavour], frame)
        row[f"{flavour}"] = vote(pipes[flavour], frame, g8, b8, s8)
        row[f"{flavour}, fp32 boxes"] = vote(pipes[flavour], frame, g8, b32, s32)
        row[f"fp32, {flavour} boxes"] = vote(fp32, frame, g32, b8, s8)
        row[f"{flavour} box iou"] = float(box_iou(b32, b8).min())
    for sigma in NOISE_LEVELS:
        shaken = noisy(frame, sigma, rng)
        row[f"fp32, noise {sigma:g}"] = vote(fp32, shaken, *global_outputs(fp32, shaken))
    return row


def summarise(rows: list[dict], decide, labels: np.ndarray, positive: int) -> dict:
    """Per pipeline: verdict agreement with FP32 (%), accuracy (%), |dP| p50 / p90 / max; per INT8 flavour
    the frames whose boxes moved and how many of its changed verdicts they hold."""
    ref = np.array([r["fp32"] for r in rows])
    v_ref = np.array([decide(p) for p in ref], dtype=object)
    truth = np.where(labels == positive, "counterfeit", "genuine")
    out: dict = {}
    for key in [k for k in rows[0] if not k.endswith("box iou")]:
        p = np.array([r[key] for r in rows])
        v = np.array([decide(x) for x in p], dtype=object)
        d = np.abs(p - ref)
        out[key] = {"agreement_pct": round(100 * float(np.mean(v == v_ref)), 1),
                    "accuracy_pct": round(100 * float(np.mean(v == truth)), 1),
                    "dp_p50": round(float(np.percentile(d, 50)), 4), "dp_p90": round(float(np.percentile(d, 90)), 4),
                    "dp_max": round(float(d.max()), 4)}
        if f"{key} box iou" in rows[0]:
            moved = np.array([r[f"{key} box iou"] < MOVED_IOU for r in rows])
            changed = v != v_ref
            out[key].update({"boxes_moved": int(moved.sum()), "changed": int(changed.sum()),
                             "changed_with_moved_boxes": int((changed & moved).sum())})
    return out


def markdown(header: str, results: dict) -> str:
    lines = [header, ""]
    for folder, res in results.items():
        lines += [f"### {folder} ({res['n']} images; thresholds {res['thresholds']})", "",
                  "| pipeline | verdicts equal FP32's % | accuracy % | \\|dP\\| p50 | p90 | max | boxes moved "
                  "(changed verdicts among them) |", "|---|---|---|---|---|---|---|"]
        for key, s in res["pipelines"].items():
            moved = (f"{s['boxes_moved']} ({s['changed_with_moved_boxes']} of {s['changed']})"
                     if "boxes_moved" in s else "")
            lines.append(f"| {key} | {s['agreement_pct']} | {s['accuracy_pct']} | {s['dp_p50']} | {s['dp_p90']} | "
                         f"{s['dp_max']} | {moved} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bundle", required=True, type=Path)
    ap.add_argument("--data", action="append", required=True, type=Path, help="a labelled folder (repeatable)")
    ap.add_argument("--out", required=True, type=Path, help="JSON file; the markdown goes beside it (.md)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if not (args.bundle / "manifest.json").is_file():
        print(f"error: {args.bundle}: no manifest.json (not a bundle folder)", file=sys.stderr)
        return 2
    man, params, pipes = bundle_pipelines(args.bundle, args.threads)
    decide = man.thresholds.decide
    header = (f"INT8 instability ({time.strftime('%Y-%m-%d')}; {cpu_flags()}); bundle {args.bundle}, "
              f"flavours {', '.join(k for k in pipes if k != 'fp32')}. Made by `python benchmarks/int8_instability.py "
              f"--bundle {args.bundle} " + " ".join(f"--data {d}" for d in args.data) + f" --out {args.out}`.")
    print(header)
    rng = np.random.default_rng(args.seed)
    results: dict = {}
    for folder in args.data:
        items = labelled_images(folder)
        rows = [frame_rows(pipes, load_frame(path, params.preprocess), rng) for path, _ in items]
        labels = np.array([label for _, label in items])
        results[str(folder)] = {"n": len(items), "thresholds": f"{man.thresholds.genuine_at:g} / "
                                f"{man.thresholds.counterfeit_at:g}",
                                "pipelines": summarise(rows, decide, labels, params.positive_index),
                                "frames": [{"path": p.relative_to(folder).as_posix(), **r}
                                           for (p, _), r in zip(items, rows)]}
        print(markdown("", {str(folder): results[str(folder)]}))
    write_results(args.out, header, results, markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
