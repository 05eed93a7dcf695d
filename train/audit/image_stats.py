"""Pixel statistics that need no model: global colour statistics (the colour shortcut baseline) and a
256-bit perceptual hash for near-duplicate search.

    stats = colour_stats(bgr)                       # [len(COLOUR_COLUMNS)] float64
    h = phash(bgr)                                  # [32] uint8, HASH_BITS bits packed
    pairs = near_duplicate_pairs(np.stack(hashes))  # [(i, j, distance)], i < j
"""

from __future__ import annotations

import cv2
import numpy as np

STATS_SIDE = 64  # colour statistics are taken on a downscale whose longer side is this many pixels
COLOUR_COLUMNS = ("r_mean", "g_mean", "b_mean", "r_std", "g_std", "b_std",
                  "brightness", "contrast", "saturation_mean", "saturation_std", "colourfulness")
HASH_SIDE = 64  # pHash: grey image area-resized to HASH_SIDE^2, 2-D DCT, ...
HASH_BLOCK = 16  # ... the HASH_BLOCK x HASH_BLOCK lowest frequencies, one bit each
HASH_BITS = HASH_BLOCK * HASH_BLOCK
# Hamming distance up to which two images count as near-duplicates. Measured on 128 px synthetic frames:
# resized, recompressed (JPEG 50), brightened or gamma-changed copies differ in <= 6 of 256 bits;
# different items of one product in a similar pose in >= 40 (a 64-bit 8 x 8 hash put some of those at 4).
DUPLICATE_DISTANCE = 20

_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], np.uint8)


def _downscale(bgr: np.ndarray, side: int) -> np.ndarray:
    h, w = bgr.shape[:2]
    f = side / max(h, w)
    if f >= 1.0:
        return bgr
    return cv2.resize(bgr, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)


def colour_stats(bgr: np.ndarray) -> np.ndarray:
    """Global colour statistics of HxWx3 uint8 BGR -> [11] float64 (names: COLOUR_COLUMNS).

    On a STATS_SIDE downscale of the whole image: mean and standard deviation of R, G, B in [0, 1];
    brightness and contrast = mean and sd of CIE L* / 100; mean and sd of HSV saturation in [0, 1];
    colourfulness (Hasler and Suesstrunk's opponent-channel measure, on [0, 1] values).
    """
    small = _downscale(bgr, STATS_SIDE).astype(np.float32) / 255.0
    rgb = small[:, :, ::-1].reshape(-1, 3)
    lum = cv2.cvtColor(small, cv2.COLOR_BGR2LAB)[:, :, 0].ravel() / 100.0
    sat = cv2.cvtColor(small, cv2.COLOR_BGR2HSV)[:, :, 1].ravel()
    rg = rgb[:, 0] - rgb[:, 1]
    yb = 0.5 * (rgb[:, 0] + rgb[:, 1]) - rgb[:, 2]
    colourfulness = np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean())
    return np.array([*rgb.mean(0), *rgb.std(0), lum.mean(), lum.std(), sat.mean(), sat.std(), colourfulness],
                    np.float64)


def phash(bgr: np.ndarray) -> np.ndarray:
    """DCT perceptual hash of HxWx3 uint8 BGR (the whole image, aspect ignored) -> [HASH_BITS / 8] uint8.

    Grey, area-resized to HASH_SIDE x HASH_SIDE, 2-D DCT; bit i (row-major over the HASH_BLOCK x
    HASH_BLOCK lowest frequencies) is set when that coefficient exceeds the median of the non-DC ones.
    """
    grey = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY).astype(np.float32)
    small = cv2.resize(grey, (HASH_SIDE, HASH_SIDE), interpolation=cv2.INTER_AREA)
    block = cv2.dct(small)[:HASH_BLOCK, :HASH_BLOCK].ravel()
    return np.packbits(block > np.median(block[1:]))


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise Hamming distances of packed hashes: a [N, B] uint8, b [M, B] uint8 -> [N, M] int64."""
    x = np.asarray(a, np.uint8)[:, None, :] ^ np.asarray(b, np.uint8)[None, :, :]
    return _POPCOUNT[x].sum(-1, dtype=np.int64)


def near_duplicate_pairs(hashes: np.ndarray, max_distance: int = DUPLICATE_DISTANCE,
                         chunk: int = 128) -> list[tuple[int, int, int]]:
    """All pairs (i, j, distance), i < j, of [N, B] uint8 packed hashes within `max_distance` bits, sorted
    by (distance, i, j). Rows are compared in chunks so memory stays O(chunk * N * B)."""
    h = np.asarray(hashes, np.uint8)
    pairs: list[tuple[int, int, int]] = []
    for start in range(0, len(h), chunk):
        d = hamming(h[start:start + chunk], h)
        rows, cols = np.nonzero(d <= max_distance)
        keep = cols > rows + start
        pairs += [(int(r + start), int(c), int(d[r, c])) for r, c in zip(rows[keep], cols[keep])]
    return sorted(pairs, key=lambda p: (p[2], p[0], p[1]))
