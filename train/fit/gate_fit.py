"""Fit the scanner's quality gate to the train photos at the end of training (edge_runtime.quality_fit).

    record = fit_quality(index.root, train_samples)
    best_state["quality"] = record          # in best.pt; export writes it into the manifest

The photos are measured as files, at their own resolution, as the scanner's gate would measure a camera
frame of that size (check_frame on the raw BGR image, not on the model's resized view).
"""

from __future__ import annotations

from pathlib import Path

from edge_runtime.preprocess import evenly_spaced, read_image
from edge_runtime.quality import QualityConfig, check_frame
from edge_runtime.quality_fit import FIT_REJECT_RATE, GateMeasures, fit_gate
from train.data.folders import Sample

MAX_QUALITY_PHOTOS = 2000  # evenly spaced over the split beyond this: ~5-10 ms per photo on this CPU


def measure_photos(root: Path, samples: list[Sample], limit: int = MAX_QUALITY_PHOTOS) -> GateMeasures:
    """The gate's focus / brightness / clipped of up to `limit` photos (evenly spaced over `samples`)."""
    if not samples:
        raise ValueError("quality fit: no train photos")
    cfg = QualityConfig(enabled=False)  # measure only
    return GateMeasures.of([check_frame(read_image(Path(root) / s.path), cfg) for s in evenly_spaced(samples, limit)])


def fit_quality(root: Path, samples: list[Sample], reject_rate: float = FIT_REJECT_RATE) -> dict:
    """The manifest record of the gate fitted on `samples` (edge_runtime.quality_fit.fit_gate)."""
    _, record = fit_gate(measure_photos(root, samples), QualityConfig(), reject_rate)
    return record
