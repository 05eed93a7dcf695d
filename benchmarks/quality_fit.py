"""The retake gate fitted on the train photos (edge_runtime.quality_fit) against the default gate, per dataset
and seeded group split: how many test photos each sends for a retake, and whether blank frames and defocused
copies of the test photos are still refused. No model is involved: the gate runs before it.

    python benchmarks/quality_fit.py --data runs/real/signatures_sigcomp2011 --data runs/real/sneakers_aj1 \
        --data runs/real/signatures_bhsig260_bengali --data runs/demo_data --splits 3 \
        --out docs/results/quality_fit.json

Prints a markdown table; --out also writes the rows as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import cpu_flags  # noqa: E402
from realdata_field import BLANK_LEVELS, BLUR_SIGMA  # noqa: E402

from edge_runtime.preprocess import read_image  # noqa: E402
from edge_runtime.quality import QualityConfig, check_frame  # noqa: E402
from edge_runtime.quality_fit import GateMeasures, fit_gate, refused  # noqa: E402
from train.data.folders import index_folder  # noqa: E402
from train.fit.gate_fit import measure_photos  # noqa: E402


def defocused_measures(root: Path, samples: list, sigma: float = BLUR_SIGMA) -> GateMeasures:
    """The gate's measurements of Gaussian-blurred (sigma px) copies of the photos."""
    import cv2

    cfg = QualityConfig(enabled=False)
    return GateMeasures.of([check_frame(cv2.GaussianBlur(read_image(root / s.path), (0, 0), sigma), cfg)
                            for s in samples])


def blank_measures(size: tuple[int, int] = (480, 640)) -> GateMeasures:
    """The gate's measurements of flat frames (BLANK_LEVELS, as benchmarks/realdata_field.py scans them)."""
    cfg = QualityConfig(enabled=False)
    return GateMeasures.of([check_frame(np.full((*size, 3), level, np.uint8), cfg) for level in BLANK_LEVELS])


def one_split(root: Path, seed: int) -> dict:
    """Fit on the train split of `seed`; count retakes of both gates on test, defocused test and blank frames."""
    index = index_folder(root, seed=seed)
    train, test = index.split("train"), index.split("test")
    t0 = time.perf_counter()
    fitted, record = fit_gate(measure_photos(root, train))
    fit_s = time.perf_counter() - t0
    base = QualityConfig()
    sets = {"test": measure_photos(root, test, limit=len(test)), "defocused": defocused_measures(root, test),
            "blank": blank_measures()}
    row = {"dataset": root.name, "seed": seed, "n_train": len(train), "fit_seconds": round(fit_s, 2),
           "thresholds": record["thresholds"], "train_refused_default": record["refused_by_default"],
           "train_refused_fitted": record["refused_after"], "n_measured": record["n"]}
    for name, m in sets.items():
        row[f"n_{name}"] = len(m.focus)
        row[f"{name}_refused_default"] = refused(base, m)
        row[f"{name}_refused_fitted"] = refused(fitted, m)
    return row


def table(rows: list[dict]) -> str:
    """Markdown: per dataset and split, the fitted thresholds and refused counts (default -> fitted)."""
    head = ("| dataset | split | fitted focus / brightness / clipped | train refused | test refused | "
            "defocused refused | blank refused |")
    lines = [head, "|---" * 7 + "|"]
    for r in rows:
        t = r["thresholds"]
        cell = lambda k: f"{r[k + '_refused_default']} -> {r[k + '_refused_fitted']} of {r['n_' + k]}"  # noqa: E731
        lines.append(f"| {r['dataset']} | {r['seed']} | >= {t['min_focus']:g} / {t['min_brightness']:g}.."
                     f"{t['max_brightness']:g} / <= {t['max_clipped']:.0%} | {r['train_refused_default']} -> "
                     f"{r['train_refused_fitted']} of {r['n_measured']} | {cell('test')} | {cell('defocused')} | "
                     f"{cell('blank')} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", action="append", required=True, type=Path, help="dataset folder (repeatable)")
    ap.add_argument("--splits", type=int, default=3, help="seeded group splits 0..N-1")
    ap.add_argument("--out", type=Path, default=None, help="JSON file for the rows")
    args = ap.parse_args(argv)
    print(cpu_flags())
    rows = [one_split(root, seed) for root in args.data for seed in range(args.splits)]
    print(table(rows))
    if args.out is not None:
        args.out.write_text(json.dumps({"cpu": cpu_flags(), "blur_sigma": BLUR_SIGMA, "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
