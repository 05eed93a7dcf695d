"""ROI crops from the full-resolution frame and the heatmap-weighted vote: the maths shared by training
(torch tensors), export parity checks and the scanner (numpy arrays).

`box_weights` and `vote_logits` use only operators that numpy arrays and torch tensors share, so the
training model calls the very same functions on tensors (and gets gradients) that the runtime calls on
arrays. `crop_rois` is the numpy twin of torchvision.ops.roi_align(frames, boxes_px, output_size=R,
spatial_scale=1, sampling_ratio=1, aligned=True) with boxes_px = boxes * [W, H, W, H]; a test holds
them equal.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge_runtime.preprocess import square_crop_box

EPS = 1e-6


def box_weights(box_scores):
    """[..., K] non-negative box scores -> [..., K] weights summing to 1 (numpy or torch)."""
    return box_scores / (box_scores.sum(-1)[..., None] + EPS)


def vote_logits(global_logits, part_logits, box_scores, global_weight: float, use_parts: bool = True):
    """Final logits = global_weight * global_logits + sum_k w_k * part_logits_k.

    global_logits: [..., C]; part_logits: [..., K, C]; box_scores: [..., K] (mean heatmap response in
    each box); returns [..., C]. Works on numpy arrays and torch tensors alike. With use_parts False the
    global logits alone decide (the `--no-parts` baseline).
    """
    if not use_parts:
        return global_logits
    weighted = (box_weights(box_scores)[..., None] * part_logits).sum(-2)
    return global_weight * global_logits + weighted


def softmax(logits: np.ndarray) -> np.ndarray:
    """Numerically stable softmax over the last axis (float32 in, float32 out)."""
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)


@dataclass(frozen=True)
class Thresholds:
    """Decision on P(counterfeit): >= counterfeit_at -> counterfeit, <= genuine_at -> genuine,
    in between -> uncertain (the abstain band)."""

    genuine_at: float = 0.3
    counterfeit_at: float = 0.7

    def __post_init__(self) -> None:
        if not 0.0 <= self.genuine_at <= self.counterfeit_at <= 1.0:
            raise ValueError("thresholds need 0 <= genuine_at <= counterfeit_at <= 1")

    def decide(self, p_counterfeit: float) -> str:
        if p_counterfeit >= self.counterfeit_at:
            return "counterfeit"
        if p_counterfeit <= self.genuine_at:
            return "genuine"
        return "uncertain"


SNAP_PX = 1e-3  # crop_rois: a box this close to whole pixels is cut as a plain slice


def _sample_axis(start: float, length: float, size: int, limit: int):
    """Sample positions of one roi_align axis (sampling_ratio=1, aligned=True) with bilinear taps.

    Returns (low index, high index, weight of high, valid mask), each of shape [size].
    """
    pos = start - 0.5 + (np.arange(size, dtype=np.float64) + 0.5) * (length / size)
    valid = (pos >= -1.0) & (pos <= limit)
    pos = np.clip(pos, 0.0, None)
    low = np.floor(pos).astype(np.int64)
    at_edge = low >= limit - 1
    low = np.where(at_edge, limit - 1, low)
    high = np.where(at_edge, limit - 1, low + 1)
    frac = np.where(at_edge, 0.0, pos - low)
    return low, high, frac, valid


def crop_rois(frame: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
    """Bilinear crops of K boxes from one frame.

    frame: HxWx3 uint8 (scaled by 1/255) or float32 RGB; boxes: Kx4 float, normalised x1, y1, x2, y2
    in [0, 1] of that frame; size: output side R. Returns Kx3xRxR float32 (in [0, 1] for uint8 input).
    One sample per output pixel at the bin centre, zero outside the frame: roi_align(aligned=True,
    sampling_ratio=1) exactly, except that a box of side R lying within SNAP_PX of whole pixels (the
    model's snapped boxes after their float32 rounding) is cut as a plain slice: that differs from the
    bilinear taps by at most SNAP_PX of one pixel step.
    """
    img = np.asarray(frame)
    scale = np.float32(1.0 / 255.0) if img.dtype == np.uint8 else np.float32(1.0)
    h, w = img.shape[:2]
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    out = np.empty((boxes.shape[0], 3, size, size), dtype=np.float32)
    px = boxes * np.array([w, h, w, h], dtype=np.float64)
    whole = np.round(px)
    snapped = (np.abs(px - whole).max(axis=1) < SNAP_PX) & (whole[:, 2] - whole[:, 0] == size) \
        & (whole[:, 3] - whole[:, 1] == size) & (whole[:, 0] >= 0) & (whole[:, 1] >= 0) \
        & (whole[:, 2] <= w) & (whole[:, 3] <= h)
    for k, (x1, y1, x2, y2) in enumerate(boxes):
        if snapped[k]:
            xa, ya = int(whole[k, 0]), int(whole[k, 1])
            np.multiply(img[ya : ya + size, xa : xa + size].transpose(2, 0, 1), scale, out=out[k],
                        casting="unsafe")
            continue
        xl, xh, fx, vx = _sample_axis(x1 * w, (x2 - x1) * w, size, w)
        yl, yh, fy, vy = _sample_axis(y1 * h, (y2 - y1) * h, size, h)
        # Interpolate along y, then along x, inside the box's own window of the frame (a view).
        ya, yb = int(yl.min()), int(yh.max()) + 1
        xa, xb = int(xl.min()), int(xh.max()) + 1
        window = img[ya:yb, xa:xb]
        if vx.all() and vy.all() and not fx.any() and not fy.any():
            # Pixel-aligned box (the model snaps its boxes so): a plain slice, or a strided gather.
            if xh[-1] - xl[0] == size and yh[-1] - yl[0] == size:
                crop = img[yl[0] : yl[0] + size, xl[0] : xl[0] + size]
            else:
                crop = window[(yl - ya)[:, None], (xl - xa)[None, :]]
            np.multiply(crop.transpose(2, 0, 1), scale, out=out[k], casting="unsafe")
            continue
        # Interpolation as a + (b - a) * f: with rounding it never leaves [min(a, b), max(a, b)], so
        # uint8 input stays in [0, 1] (a * (1 - f) + b * f can give 255.00002).
        fy32 = fy.astype(np.float32)[:, None, None]
        fx32 = fx.astype(np.float32)[None, :, None]
        if _consecutive(yl - ya, yh - ya) and _consecutive(xl - xa, xh - xa):
            # Inside the frame (the usual case, e.g. boxes a float32 rounding off whole pixels): the
            # taps are neighbouring rows/columns, so views replace the gathers; same arithmetic.
            win = window.astype(np.float32)
            rows = win[1:] - win[:-1]
            rows *= fy32
            rows += win[:-1]
            crop = rows[:, 1:] - rows[:, :-1]
            crop *= fx32
            crop += rows[:, :-1]
        else:
            top = window[yl - ya].astype(np.float32)
            rows = top + (window[yh - ya].astype(np.float32) - top) * fy32
            il, ih = xl - xa, xh - xa
            left = rows[:, il]
            crop = left + (rows[:, ih] - left) * fx32
        if vy.all() and vx.all():
            np.multiply(crop.transpose(2, 0, 1), scale, out=out[k])
        else:
            crop *= ((vy[:, None] & vx[None, :])[:, :, None] * scale).astype(np.float32)
            out[k] = crop.transpose(2, 0, 1)
    return out


def _consecutive(low: np.ndarray, high: np.ndarray) -> bool:
    """True when low is 0, 1, 2, ... and high = low + 1: the taps are a plain run of pixels."""
    return bool(low[0] == 0 and (np.diff(low) == 1).all() and (high == low + 1).all())


def boxes_to_source_pixels(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
    """Kx4 boxes normalised to the square model frame -> Kx4 float32 x1, y1, x2, y2 in the pixels of
    the original HxW camera frame (undoing prepare_frame's centred square crop)."""
    x0, y0, side = square_crop_box(height, width)
    px = np.asarray(boxes, dtype=np.float32).reshape(-1, 4) * side
    return px + np.array([x0, y0, x0, y0], dtype=np.float32)
