"""Fit the frame side F to the photos, so part crops are never magnified.

The runtime crops each photo's centred square and resizes it to F x F; part crops are R x R pixels of that
frame. A preset's F (edge: 768) suits macro photos larger than it. For smaller photos (scans of 1000 x 290 px
signatures, 640 px web photos) the frame is an upsampled copy: an R px crop then spans R * side / F photo
pixels, magnified, which holds no detail the photo lacks and narrows what each crop sees. Fitting F to the
photos' median square side keeps the crops at the photo's own pixels and leaves the global view unchanged
(it is resized from the frame to S either way). Measured on the real sets: docs/results/realdata_reading.md.

    side = median_square_side(root, train_samples)          # from the image headers, float
    fit_frame_size(side, frame_size=768, global_size=128, crop_size=96)   # 279.0 -> 256
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from edge_runtime.errors import ImageError
from edge_runtime.preprocess import read_image
from train.data.folders import Sample
from train.errors import DataError

FRAME_STEP = 32  # fitted frame sides are multiples of this (the backbone's stride)


def median_square_side(root: Path, samples: Sequence[Sample]) -> float:
    """Median over `samples` of min(width, height) in pixels, read from the file headers (PIL, lazy). A file
    PIL cannot open is decoded by the runtime's reader instead, whose DataError names the file and what is
    wrong with it, as training would."""
    from PIL import Image

    if not samples:
        raise DataError(f"{root}: no images to fit the frame to")
    sides = []
    for s in samples:
        path = Path(root) / s.path
        try:
            with Image.open(path) as im:
                sides.append(min(im.size))
        except Exception:  # noqa: BLE001 - PIL raises many types; the runtime's reader gives the message
            try:
                sides.append(min(read_image(path).shape[:2]))
            except ImageError as exc:
                raise DataError(str(exc)) from None
    return float(np.median(sides))


def fit_frame_size(square_side: float, frame_size: int, global_size: int, crop_size: int) -> int:
    """The frame side for photos whose centred square is `square_side` px: the preset's `frame_size` when the
    photos are at least that large, else the largest multiple of FRAME_STEP not above `square_side` (a
    slight downscale, never a magnification), and never below the global or crop side (a frame may not be
    smaller than either)."""
    if square_side >= frame_size:
        return frame_size
    return max(global_size, crop_size, int(square_side) // FRAME_STEP * FRAME_STEP)
