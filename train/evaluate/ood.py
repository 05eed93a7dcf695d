"""`mgfen-eval --ood DIR`: how often the checkpoint's novelty table refuses a folder of images that are
not what it was trained on, and how often it refuses its own split (false refusal), with 95% Wilson
intervals; with `out`, also the histogram picture of both sets' scores (train.evaluate.ood_histogram).

    report = ood_report(Path("RUN/best.pt"), Path("data"), Path("textures"), split="test", out=Path("eval"))
    # {"threshold": ..., "ood": {"n", "refused", "rate", "ci95"}, "in_domain": {...}, "novelty": {...},
    #  "histogram": {"file": "eval/ood_histogram.png", "edges": [...], "in_domain": [...], "ood": [...]}}

Frames are prepared exactly as the scanner prepares them (edge_runtime.preprocess) and scored from the
same pooled features the exported graph outputs (MGFEN.global_forward_features). The quality gate is not
applied here: this measures the score alone.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from edge_runtime.errors import ImageError
from edge_runtime.preprocess import PreprocessConfig, global_input, list_images, prepare_frame, read_image
from train.data.folders import select_split
from train.errors import DataError
from train.evaluate import ood_histogram
from train.fit.novelty_fit import table_from_state
from train.model.checkpoint import load_checkpoint

Z95 = 1.959964


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """95% Wilson score interval of a rate k / n (0, 1 for n = 0)."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


@torch.no_grad()
def _scores(model, table, paths: list[Path], cfg: PreprocessConfig, batch: int) -> np.ndarray:
    """Novelty scores [N] float64 of image files (ImageError names a file that does not decode)."""
    out = []
    for i in range(0, len(paths), batch):
        x = np.concatenate([global_input(prepare_frame(read_image(p), cfg), cfg) for p in paths[i:i + batch]])
        out.append(table.score(model.global_forward_features(torch.from_numpy(x))[4].numpy()))
    return np.concatenate(out) if out else np.zeros(0)


def _rate(scores: np.ndarray, threshold: float) -> dict:
    k, n = int(np.sum(scores > threshold)), int(scores.shape[0])
    lo, hi = wilson(k, n)
    return {"n": n, "refused": k, "rate": round(k / n, 4) if n else None, "ci95": [round(lo, 4), round(hi, 4)],
            "median_score": round(float(np.median(scores)), 4) if n else None}


def ood_images(ood: Path) -> list[Path]:
    """The images of an --ood folder; DataError (one line) for a missing or empty one."""
    if not Path(ood).is_dir():
        raise DataError(f"--ood {ood}: no such folder")
    paths = list_images(ood)
    if not paths:
        raise DataError(f"--ood {ood}: no images")
    return paths


def ood_report(ckpt: Path, data: Path, ood: Path, split: str = "test", batch: int = 8, seed: int = 0,
               out: Path | None = None) -> dict:
    """Refusal rate on every image under `ood` and false refusal on `split` of `data`; with `out` (a
    folder, created) the score histogram is written to out / ood_histogram.HISTOGRAM_FILE and named in
    the report's "histogram" (None without `out`). DataError for a checkpoint without a novelty table,
    an empty folder or an image that does not decode; OSError when the picture cannot be written."""
    model, info = load_checkpoint(ckpt)
    if not info.get("novelty"):
        raise DataError(f"{ckpt}: checkpoint has no novelty table (trained before the `unknown` answer); retrain")
    table = table_from_state(info["novelty"])
    ood_paths = ood_images(ood)
    index, samples = select_split(data, split, list(info["classes"]), seed)
    own = [Path(index.root) / s.path for s in samples]
    cfg = model.cfg.preprocess
    try:
        ood_scores, own_scores = _scores(model, table, ood_paths, cfg, batch), _scores(model, table, own, cfg, batch)
    except ImageError as exc:
        raise DataError(str(exc)) from None
    report = {"threshold": table.threshold, "novelty": table.to_dict(), "split": split,
              "ood": {"folder": str(ood), **_rate(ood_scores, table.threshold)},
              "in_domain": _rate(own_scores, table.threshold), "histogram": None}
    if out is not None:
        hist = ood_histogram.histogram(own_scores, ood_scores, table.threshold)
        path = Path(out) / ood_histogram.HISTOGRAM_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        labels = (f"{split} (n {len(own_scores)}, refused {report['in_domain']['refused']})",
                  f"{Path(ood).name} (n {len(ood_scores)}, refused {report['ood']['refused']})")
        ood_histogram.draw(hist, table.threshold, path, labels)
        report["histogram"] = {"file": str(path), **hist}
    return report


def format_ood(report: dict) -> str:
    """Two lines for the terminal (three with the histogram picture)."""
    def line(name: str, r: dict) -> str:
        rate = "-" if r["rate"] is None else f"{100 * r['rate']:.1f}%"
        return (f"{name}: refused {r['refused']}/{r['n']} = {rate} (95% CI {100 * r['ci95'][0]:.1f}-"
                f"{100 * r['ci95'][1]:.1f}%), median score {r['median_score']}")
    return "\n".join([line(f"unknown on {report['ood']['folder']}", report["ood"]),
                      line(f"false refusal on {report['split']}", report["in_domain"])
                      + f"  (threshold {report['threshold']:.4g}, target {report['novelty']['target_rate']:.0%})"]
                     + ([f"novelty score histogram -> {report['histogram']['file']}"] if report.get("histogram")
                        else []))
