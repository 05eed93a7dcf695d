"""How the photos' pixel size meets a preset's frame (part of `mgfen-data audit`).

The runtime crops the centred square of every photo and resizes it to the F x F frame; part crops are R x R
pixels of that frame. When the photo's square is smaller than the preset's F, the frame would be an
upsampled copy and a part crop a magnified window of R / upsampling photo pixels, so mgfen-train fits F to
the photos (train.data.frame_fit); the audit says so and by how much. When the photo is much wider than tall,
the square keeps only its middle.

    res = resolution_report([(1000, 290), ...], frame_size=768, global_size=128, crop_size=96)
    resolution_verdict(res)   # [{"level": "NOTE", "text": ...}]
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from train.data.frame_fit import fit_frame_size

UPSAMPLED = 1.25  # frame side / photo square side above which the frame holds interpolated pixels
KEPT = 2 / 3  # share of the long side the centre square keeps, below which the crop is named


def resolution_report(sizes: Sequence[tuple[int, int]], frame_size: int, global_size: int, crop_size: int) -> dict:
    """sizes: (width, height) per photo. Returns medians of the square side (min(w, h)), the upsampling to
    the frame (frame_size / side; below 1 the frame is a downscale) and the kept share of the long side
    (side / max(w, h)), and the photo pixels one crop spans at the median upsampling."""
    wh = np.asarray(sizes, np.float64).reshape(-1, 2)
    if len(wh) == 0:
        raise ValueError("resolution_report needs at least one image size")
    side = wh.min(1)
    upsampling = float(np.median(frame_size / side))
    return {"frame_size": int(frame_size), "global_size": int(global_size), "crop_size": int(crop_size),
            "square_side": float(np.median(side)), "upsampling": upsampling, "kept_long_side": float(np.median(side / wh.max(1))),
            "crop_covers_photo_px": float(crop_size / upsampling)}


def resolution_verdict(res: dict) -> list[dict]:
    """NOTE lines for photos smaller than the frame and for photos whose long side the square cuts."""
    out = []
    if res["upsampling"] > UPSAMPLED:
        frame = fit_frame_size(res["square_side"], res["frame_size"], res["global_size"], res["crop_size"])
        fitted_px = res["crop_size"] * res["square_side"] / frame
        out.append({"level": "NOTE", "text": (
            f"photos are smaller than the {res['frame_size']} px frame (median centre square {res['square_side']:.0f} px): "
            f"mgfen-train fits its frame to about {frame} px, where a {res['crop_size']} px part crop spans "
            f"{fitted_px:.0f} photo pixels; at the preset frame (--preset-frame) it would span "
            f"{res['crop_covers_photo_px']:.0f}, magnified x{res['upsampling']:.1f}; finer detail needs closer or "
            f"sharper shots")})
    if res["kept_long_side"] < KEPT:
        out.append({"level": "NOTE", "text": (
            f"the square frame keeps the middle {100 * res['kept_long_side']:.0f}% of the long side (median): "
            f"detail towards the ends is never seen; frame the item so it fills a square")})
    return out
