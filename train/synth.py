"""The embedded default dataset: procedural macro-lens photos of one printed tag, genuine or counterfeit.

Every frame shows the same tag template (header, logo, colour blocks, barcode, layout) at a random pose on
a random background, with a lighting gradient and sensor noise. Genuine and counterfeit differ only in three
micro features, each driven by `k = strength * label` (label 1 = counterfeit) so that at strength 0 both
classes run exactly the same code with the same random numbers:

- halftone patch: dot position jitter, irregular dot gain, ragged dot edges, dots that fail to adhere;
- foil-stamped emblem: edge blur and leakage specks just outside the edge;
- micro-text: thickened and broken strokes.

Micro sizes are in frame pixels (dot pitch about 4 px at scale 1), so at 1024 px they survive in a 224 px
crop of the full frame and mostly vanish when the whole frame is downscaled to 448 px.

Randomness: the item's print (per group) comes from SeedSequence([seed, 1, group]); pose, background,
lighting and noise of one shot from SeedSequence([seed, 2, index]); background choice from
SeedSequence([seed, 3, index]); the plan (groups, splits, background halves) from SeedSequence([seed, 0]).
The number of worker processes therefore never changes a byte.
"""

from __future__ import annotations

import csv
import json
import multiprocessing as mp
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import cv2
import numpy as np

from edge_runtime.errors import MgfenError
from edge_runtime.names import CLASS_NAMES
from train.backgrounds import FAMILIES, BackgroundLibrary

GENERATOR = "mgfen-synth"
GENERATOR_VERSION = "1.0"
SPLITS = ("train", "val", "test")
REGION_NAMES = ("halftone", "foil", "microtext")
MANIFEST_COLUMNS = ("path", "split", "label", "group", "background")
MIN_IMAGES = 20
SHOTS = (2, 3)  # photos per item
_SS = 4  # supersampling factor for shapes drawn with OpenCV

# Tag layout in fractions of the tag's width (u) and height (v): (u0, v0, u1, v1).
_TAG_ASPECT = 0.62
_BOX_HALFTONE = (0.05, 0.29, 0.42, 0.66)
_BOX_TEXT = (0.05, 0.71, 0.70, 0.93)
_FOIL_CENTRE = (0.60, 0.475)
_FOIL_RADIUS = 0.18  # of the tag height
_MICRO_TEXT = "AUTHENTIC MGFEN ORIGINAL - LOT 4821-AX - SERIAL 00917354 - VERIFIED PRINT - "


class SynthError(MgfenError):
    """Bad synthetic-dataset parameters or an output folder that cannot be used."""


@dataclass(frozen=True)
class MicroSpec:
    """Micro-feature parameters. Sizes in frame pixels at pose scale 1; a counterfeit adds k * *_delta."""

    dot_jitter: float = 0.02  # sd of dot position, fraction of the pitch
    dot_jitter_delta: float = 0.18
    dot_gain_sd: float = 0.03  # sd of relative dot radius
    dot_gain_delta: float = 0.08
    dot_ragged: float = 0.02  # amplitude of dot-edge raggedness, fraction of the radius
    dot_ragged_delta: float = 0.35
    dot_drop_delta: float = 0.02  # probability that a dot fails to adhere
    foil_blur: float = 0.35  # edge blur sigma, px
    foil_blur_delta: float = 0.7
    foil_speck_delta: float = 0.9  # leakage speck radius, px (times a per-speck factor in [0.4, 1.2])
    text_thicken_delta: float = 0.15  # threshold drop on the blurred supersampled strokes
    text_break_delta: float = 1.1  # radius of stroke breaks, px (times a per-break factor in [0.5, 1])


@dataclass(frozen=True)
class SynthConfig:
    """Everything that determines a synthetic dataset. Same config => byte-identical files."""

    n: int = 300
    size: int = 1024  # square frames, px
    bias: float = 0.9  # train split: P(background from the own class's half)
    strength: float = 1.0  # scales every micro difference; 0 => classes identically distributed
    seed: int = 0
    backgrounds: str | None = None  # photo folder; None => procedural families
    families: tuple[str, ...] = FAMILIES
    dot_pitch: float = 3.5  # halftone pitch at pose scale 1, frame px (3.0-4.0 px over the scale range)
    micro_text_px: float = 7.0  # micro-text cap height at pose scale 1, frame px
    tag_frac: float = 0.6  # tag width / frame size at pose scale 1
    scale_range: tuple[float, float] = (0.85, 1.15)
    max_rotation: float = 35.0  # degrees
    noise_sigma: float = 2.0  # sensor noise sd in 8-bit levels at mid grey
    lens_blur: float = 0.5  # optical blur sigma over the whole frame, px
    split: tuple[float, float, float] = (0.7, 0.2, 0.1)
    micro: MicroSpec = field(default_factory=MicroSpec)

    def __post_init__(self) -> None:
        if not (isinstance(self.n, int) and self.n >= MIN_IMAGES):
            raise SynthError(f"--n must be an integer >= {MIN_IMAGES} so every split holds both classes, got {self.n}")
        if not (isinstance(self.size, int) and 128 <= self.size <= 8192):
            raise SynthError(f"--size must be an integer in [128, 8192], got {self.size}")
        if not 0.0 <= self.bias <= 1.0:
            raise SynthError(f"--bias must be in [0, 1], got {self.bias}")
        if not 0.0 <= self.strength <= 5.0:
            raise SynthError(f"--strength must be in [0, 5], got {self.strength}")
        if self.seed < 0:
            raise SynthError(f"--seed must be >= 0, got {self.seed}")
        if not 1.5 <= self.dot_pitch <= 32:
            raise SynthError(f"dot_pitch must be in [1.5, 32] px, got {self.dot_pitch}")
        if self.backgrounds is None and len(self.families) < 2:
            raise SynthError("at least two background families are needed (one half per class)")
        if abs(sum(self.split) - 1.0) > 1e-6 or min(self.split) <= 0:
            raise SynthError(f"split fractions must be positive and sum to 1, got {self.split}")


@dataclass(frozen=True)
class PlannedImage:
    """One frame of the plan: where it goes and what it shows."""

    index: int
    group: int
    shot: int
    label: int  # index into CLASS_NAMES
    split: str
    background: str

    @property
    def path(self) -> str:
        return f"{self.split}/{CLASS_NAMES[self.label]}/item{self.group:04d}_{self.shot}.png"


# ------------------------------------------------------------------------------------------ random streams
def _rng(seed: int, stream: int, key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, stream, key]))


def _spawn(seed: int, stream: int, key: int, n: int) -> list[np.random.Generator]:
    return [np.random.default_rng(s) for s in np.random.SeedSequence([seed, stream, key]).spawn(n)]


# -------------------------------------------------------------------------------------------- tag drawing
def _box_px(box: tuple[float, float, float, float], wt: int, ht: int) -> tuple[int, int, int, int]:
    """Fractional (u0, v0, u1, v1) -> integer pixel (x0, y0, x1, y1) inside a wt x ht tag."""
    return int(round(box[0] * wt)), int(round(box[1] * ht)), int(round(box[2] * wt)), int(round(box[3] * ht))


def _rounded_rect(w: float, h: float, r: float) -> np.ndarray:
    """Polygon (Nx2 float) of a rounded rectangle [0,w]x[0,h] with corner radius r."""
    pts = []
    for cx, cy, a0 in ((w - r, r, 270), (w - r, h - r, 0), (r, h - r, 90), (r, r, 180)):
        for a in np.linspace(a0, a0 + 90, 12):
            pts.append((cx + r * np.cos(np.radians(a)), cy + r * np.sin(np.radians(a))))
    return np.array(pts, np.float64)


def _tag_alpha(wt: int, ht: int) -> np.ndarray:
    """HtxWt float32 coverage of the tag body (rounded corners, punched hole), antialiased by supersampling."""
    canvas = np.zeros((ht * _SS, wt * _SS), np.uint8)
    poly = _rounded_rect(wt * _SS, ht * _SS, 0.06 * ht * _SS)
    cv2.fillPoly(canvas, [np.round(poly).astype(np.int32)], 255)
    cv2.circle(canvas, (int(0.945 * wt * _SS), int(0.1 * ht * _SS)), int(0.045 * ht * _SS), 0, -1)
    return cv2.resize(canvas, (wt, ht), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0


def _template(wt: int, ht: int) -> np.ndarray:
    """HtxWtx3 uint8 BGR macro artwork of the tag: identical for every item and both classes."""
    img = np.empty((ht, wt, 3), np.uint8)
    img[:] = (228, 234, 238)
    aa = cv2.LINE_AA
    cv2.rectangle(img, (0, 0), (wt, int(0.2 * ht)), (95, 45, 25), -1)
    hscale = 0.09 * ht / 22.0
    cv2.putText(img, "MGFEN", (int(0.05 * wt), int(0.145 * ht)), cv2.FONT_HERSHEY_DUPLEX, hscale, (245, 245, 245), max(1, int(hscale * 2)), aa)
    lc = (int(0.80 * wt), int(0.1 * ht))
    lr = max(3, int(0.065 * ht))
    cv2.circle(img, lc, lr, (245, 245, 245), max(1, lr // 5), aa)
    tri = np.array([[lc[0], lc[1] - lr * 0.55], [lc[0] + lr * 0.5, lc[1] + lr * 0.4], [lc[0] - lr * 0.5, lc[1] + lr * 0.4]])
    cv2.fillPoly(img, [np.round(tri).astype(np.int32)], (40, 140, 235), aa)
    sscale = 0.033 * ht / 22.0
    cv2.putText(img, "ORIGINAL SERIES", (int(0.05 * wt), int(0.26 * ht)), cv2.FONT_HERSHEY_SIMPLEX, sscale, (80, 60, 50), max(1, int(sscale * 2)), aa)
    # colour blocks, 2x2
    bx0, by0, bx1, by1 = _box_px((0.78, 0.30, 0.95, 0.66), wt, ht)
    colours = [(40, 40, 200), (40, 200, 230), (80, 160, 60), (170, 90, 30)]
    for i, col in enumerate(colours):
        r, c = divmod(i, 2)
        x0 = bx0 + c * (bx1 - bx0) // 2
        y0 = by0 + r * (by1 - by0) // 2
        cv2.rectangle(img, (x0 + 1, y0 + 1), (x0 + (bx1 - bx0) // 2 - 1, y0 + (by1 - by0) // 2 - 1), col, -1)
    # barcode from a fixed template stream (not the dataset seed: the artwork never changes)
    gx0, gy0, gx1, gy1 = _box_px((0.74, 0.72, 0.95, 0.93), wt, ht)
    bars = np.random.default_rng(20240601).integers(1, 4, 40)
    unit = (gx1 - gx0) / float(bars.sum())
    x = float(gx0)
    for j, b in enumerate(bars):
        if j % 2 == 0:
            cv2.rectangle(img, (int(round(x)), gy0), (max(int(round(x)), int(round(x + b * unit)) - 1), gy1), (30, 30, 30), -1)
        x += b * unit
    inset = max(1, int(0.025 * ht))
    border = _rounded_rect(wt - 2 * inset, ht - 2 * inset, 0.04 * ht) + inset
    cv2.polylines(img, [np.round(border).astype(np.int32)], True, (150, 150, 150), 1, aa)
    return img


def _halftone(rng: np.random.Generator, pw: int, ph: int, pitch: float, k: float, ms: MicroSpec) -> np.ndarray:
    """phxpwx3 float32 multiplicative ink factor of a two-ink halftone patch (1 = bare paper).

    Each dot is an antialiased disc; a pixel takes the max coverage over the dots of its 3x3 nearest cells.
    All random arrays are drawn whatever k is, so k only rescales them.
    """
    y, x = np.mgrid[0:ph, 0:pw].astype(np.float32) + 0.5
    jsd = ms.dot_jitter + k * ms.dot_jitter_delta
    gsd = ms.dot_gain_sd + k * ms.dot_gain_delta
    amp = ms.dot_ragged + k * ms.dot_ragged_delta
    pdrop = min(0.5, k * ms.dot_drop_delta)
    # keep the mean inked area independent of k, so the patch's tone at macro scale does not tell the class
    area_norm = 1.0 / np.sqrt((1.0 + gsd**2) * (1.0 + amp**2 / 2.0) * (1.0 - pdrop))
    factor = np.ones((ph, pw, 3), np.float32)
    inks = (
        (np.radians(15.0), np.array([0.95, 0.72, 0.12], np.float32), lambda a, b: 0.12 + 0.45 * a),
        (np.radians(75.0), np.array([0.58, 0.18, 0.92], np.float32), lambda a, b: 0.10 + 0.40 * (0.5 + 0.5 * np.cos(2 * np.pi * (1.1 * b + 0.4 * a)))),
    )
    for angle, ink, tone in inks:
        ca, sa = np.float32(np.cos(angle)), np.float32(np.sin(angle))
        u = (x * ca + y * sa) / pitch
        v = (-x * sa + y * ca) / pitch
        u0, v0 = int(np.floor(u.min())) - 2, int(np.floor(v.min())) - 2
        nu, nv = int(np.ceil(u.max())) + 3 - u0, int(np.ceil(v.max())) + 3 - v0
        jit = rng.standard_normal((nv, nu, 2)).astype(np.float32) * np.float32(jsd)
        gain = rng.standard_normal((nv, nu)).astype(np.float32)
        rag_a = rng.standard_normal((nv, nu, 3)).astype(np.float32)
        rag_p = rng.uniform(0, 2 * np.pi, (nv, nu, 3)).astype(np.float32)
        drop = rng.random((nv, nu)).astype(np.float32)
        # per-dot complex harmonics: rag(theta) = 1 + amp * Re(sum_m c_m e^{i m theta}) / sqrt(3), m = 2, 3, 5
        coef = (rag_a * np.exp(1j * rag_p) * (amp / np.sqrt(3.0))).astype(np.complex64)
        cu_all = np.arange(u0, u0 + nu, dtype=np.float32)[None, :] + jit[..., 0]
        cv_all = np.arange(v0, v0 + nv, dtype=np.float32)[:, None] + jit[..., 1]
        f_all = np.clip(tone((cu_all * ca - cv_all * sa) * pitch / pw, (cu_all * sa + cv_all * ca) * pitch / ph), 0.0, 0.9)
        r_all = np.clip(pitch * np.sqrt(f_all / np.pi) * (1.0 + gsd * gain) * area_norm, 0.0, 0.75 * pitch)
        r_all = (r_all * (drop >= pdrop)).astype(np.float32)
        ru, rv = np.rint(u).astype(np.int32) - u0, np.rint(v).astype(np.int32) - v0
        cov = np.zeros((ph, pw), np.float32)
        for di in (-1, 0, 1):
            for dj in (-1, 0, 1):
                iu, iv = ru + di, rv + dj
                du = (u - cu_all[iv, iu]) * pitch
                dv = (v - cv_all[iv, iu]) * pitch
                d = np.sqrt(du * du + dv * dv) + np.float32(1e-6)
                z = (du + 1j * dv).astype(np.complex64) / d  # e^{i theta}
                z2 = z * z
                z3 = z2 * z
                c = coef[iv, iu]
                rag = 1.0 + (c[..., 0] * z2 + c[..., 1] * z3 + c[..., 2] * (z3 * z2)).real
                r = r_all[iv, iu] * np.maximum(rag, 0.2)
                np.maximum(cov, np.clip(r - d + 0.5, 0.0, 1.0) * (r > 0), out=cov)
        factor *= 1.0 - cov[..., None] * (1.0 - ink)
    return factor


def _star(cx: float, cy: float, r_out: float, r_in: float, points: int = 12) -> np.ndarray:
    a = np.arange(2 * points) * np.pi / points - np.pi / 2
    r = np.where(np.arange(2 * points) % 2 == 0, r_out, r_in)
    return np.stack([cx + r * np.cos(a), cy + r * np.sin(a)], 1)


def _foil(rng: np.random.Generator, bw: int, bh: int, radius: float, scale: float, k: float, ms: MicroSpec) -> tuple[np.ndarray, np.ndarray]:
    """A foil-stamped emblem in a bh x bw box: (alpha bhxbw float32 in [0,1], colour bhxbwx3 float32 BGR)."""
    cx, cy = bw / 2.0, bh / 2.0
    canvas = np.zeros((bh * _SS, bw * _SS), np.uint8)
    outer = _star(cx, cy, radius, radius * 0.74) * _SS
    cv2.fillPoly(canvas, [np.round(outer).astype(np.int32)], 255)
    cv2.circle(canvas, (int(cx * _SS), int(cy * _SS)), int(radius * 0.42 * _SS), 0, max(1, int(radius * 0.06 * _SS)))
    shape = cv2.resize(canvas, (bw, bh), interpolation=cv2.INTER_AREA)
    outside = np.where(shape >= 128, 0, 255).astype(np.uint8)
    dist = cv2.distanceTransform(outside, cv2.DIST_L2, 3)
    # leakage specks: candidates drawn for both classes; their radius is 0 for a genuine print
    n_cand = 220
    pos = rng.uniform((0, 0), (bw - 1, bh - 1), (n_cand, 2))
    size_f = rng.uniform(0.4, 1.2, n_cand)
    band = 6.0 * scale
    for (px, py), sf in zip(pos, size_f):
        dd = dist[int(py), int(px)]
        rr = k * ms.foil_speck_delta * scale * sf
        if 1.0 <= dd <= band and int(round(rr * _SS)) >= 1:
            cv2.circle(canvas, (int(px * _SS), int(py * _SS)), int(round(rr * _SS)), 255, -1)
    alpha = cv2.resize(canvas, (bw, bh), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
    sigma = (ms.foil_blur + k * ms.foil_blur_delta) * scale
    alpha = cv2.GaussianBlur(alpha, (0, 0), sigmaX=sigma, borderType=cv2.BORDER_CONSTANT)
    # metallic sheen: a broad specular band at a random angle
    phi = rng.uniform(0, np.pi)
    yy, xx = np.mgrid[0:bh, 0:bw].astype(np.float32)
    t = ((xx - cx) * np.cos(phi) + (yy - cy) * np.sin(phi)) / max(radius, 1.0)
    sheen = 0.62 + 0.5 * np.exp(-((t - rng.uniform(-0.5, 0.5)) ** 2) / 0.18)
    gold = np.array([55, 165, 215], np.float32)
    colour = np.clip(gold[None, None, :] * sheen[..., None], 0, 255)
    return alpha, colour


def _microtext(rng: np.random.Generator, bw: int, bh: int, text_px: float, scale: float, k: float, ms: MicroSpec) -> np.ndarray:
    """bhxbw float32 ink coverage of tiny text lines; counterfeit strokes are thickened and broken."""
    sw, sh = bw * _SS, bh * _SS
    canvas = np.zeros((sh, sw), np.uint8)
    fscale = text_px * _SS / 21.0  # Hershey simplex caps are about 21 px tall at scale 1
    thick = max(1, int(round(_SS * text_px / 7.0)))
    spacing = 1.75 * text_px
    lines = int(np.clip(bh // spacing, 1, 3))
    text = _MICRO_TEXT * 8
    for i in range(lines):
        base = (i + 1) * spacing - 0.5 * text_px
        shift = int(i * 11)
        cv2.putText(canvas, text[shift:], (int(1 * _SS), int(base * _SS)), cv2.FONT_HERSHEY_SIMPLEX, fscale, 255, thick, cv2.LINE_8)
    m = cv2.GaussianBlur(canvas.astype(np.float32) / 255.0, (0, 0), sigmaX=0.45 * _SS * scale)
    ink = (m > (0.5 - k * ms.text_thicken_delta)).astype(np.uint8) * 255
    n_breaks = max(1, int(bw * bh / (text_px * text_px) * 3.0))
    pos = rng.uniform((0, 0), (bw, bh), (n_breaks, 2))
    size_f = rng.uniform(0.5, 1.0, n_breaks)
    for (px, py), sf in zip(pos, size_f):
        rr = int(round(k * ms.text_break_delta * scale * sf * _SS))
        if rr >= 1:
            cv2.circle(ink, (int(px * _SS), int(py * _SS)), rr, 0, -1)
    return cv2.resize(ink, (bw, bh), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0


def _draw_tag(config: SynthConfig, group: int, k: float, scale: float) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """The tag at its final pixel scale: (HtxWtx3 float32 BGR, HtxWt float32 alpha, regions in tag px).

    Regions are 4x2 corner arrays (x, y) of the micro-feature boxes.
    """
    wt = max(32, int(round(config.tag_frac * config.size * scale)))
    ht = max(20, int(round(wt * _TAG_ASPECT)))
    r_paper, r_half, r_foil, r_text = _spawn(config.seed, 1, group, 4)
    img = _template(wt, ht).astype(np.float32)
    img += (cv2.resize(r_paper.standard_normal((ht // 4 + 2, wt // 4 + 2)).astype(np.float32), (wt, ht), interpolation=cv2.INTER_LINEAR) * 2.5)[..., None]
    ms = config.micro
    regions: dict[str, np.ndarray] = {}

    x0, y0, x1, y1 = _box_px(_BOX_HALFTONE, wt, ht)
    img[y0:y1, x0:x1] *= _halftone(r_half, x1 - x0, y1 - y0, config.dot_pitch * scale, k, ms)
    regions["halftone"] = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.float64)

    radius = _FOIL_RADIUS * ht
    margin = int(np.ceil(8.0 * scale + 3.0 * (ms.foil_blur + ms.foil_blur_delta * max(1.0, config.strength)) * scale)) + 1
    fcx, fcy = _FOIL_CENTRE[0] * wt, _FOIL_CENTRE[1] * ht
    fx0, fy0 = int(np.floor(fcx - radius)) - margin, int(np.floor(fcy - radius)) - margin
    fx1, fy1 = int(np.ceil(fcx + radius)) + margin, int(np.ceil(fcy + radius)) + margin
    fx0, fy0, fx1, fy1 = max(fx0, 0), max(fy0, 0), min(fx1, wt), min(fy1, ht)
    alpha, colour = _foil(r_foil, fx1 - fx0, fy1 - fy0, radius, scale, k, ms)
    a = alpha[..., None]
    img[fy0:fy1, fx0:fx1] = img[fy0:fy1, fx0:fx1] * (1.0 - a) + colour * a
    regions["foil"] = np.array([[fx0, fy0], [fx1, fy0], [fx1, fy1], [fx0, fy1]], np.float64)

    tx0, ty0, tx1, ty1 = _box_px(_BOX_TEXT, wt, ht)
    cov = _microtext(r_text, tx1 - tx0, ty1 - ty0, config.micro_text_px * scale, scale, k, ms)[..., None] * 0.92
    img[ty0:ty1, tx0:tx1] = img[ty0:ty1, tx0:tx1] * (1.0 - cov) + np.array([40, 35, 30], np.float32) * cov
    regions["microtext"] = np.array([[tx0, ty0], [tx1, ty0], [tx1, ty1], [tx0, ty1]], np.float64)
    return img, _tag_alpha(wt, ht), regions


# ------------------------------------------------------------------------------------------- one frame
def _label_index(label: int | str) -> int:
    if isinstance(label, str):
        if label not in CLASS_NAMES:
            raise SynthError(f"unknown label {label!r}; expected one of {CLASS_NAMES}")
        return CLASS_NAMES.index(label)
    if label not in (0, 1):
        raise SynthError(f"label must be 0 (genuine) or 1 (counterfeit), got {label}")
    return int(label)


def render_sample(
    config: SynthConfig,
    index: int,
    label: int | str,
    background: np.ndarray | str | None = None,
    *,
    group: int | None = None,
    library: BackgroundLibrary | None = None,
    draw_tag: bool = True,
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Render frame `index` of item `group` (default: index) with class `label`.

    background: an SxSx3 uint8 BGR array, a library name, or None (a random library background).
    draw_tag=False renders the same frame without the tag (same background, lighting and noise).
    Returns (image SxSx3 uint8 BGR, mask SxS uint8 with 255 = tag, info dict with pose, background name and
    `regions`: {halftone|foil|microtext: 4x2 list of (x, y) frame-pixel corners}).
    """
    lab = _label_index(label)
    grp = index if group is None else group
    s = config.size
    r_pose, r_bg, r_light, r_noise = _spawn(config.seed, 2, index, 4)
    scale = float(r_pose.uniform(*config.scale_range))
    angle = float(r_pose.uniform(-config.max_rotation, config.max_rotation))
    k = config.strength * lab

    if isinstance(background, np.ndarray):
        if background.shape != (s, s, 3) or background.dtype != np.uint8:
            raise SynthError(f"background must be {s}x{s}x3 uint8, got {background.shape} {background.dtype}")
        bg, bg_name = background, "array"
    else:
        lib = library if library is not None else BackgroundLibrary(config.backgrounds, () if config.backgrounds else config.families)
        if background is None:
            bg, bg_name = lib.sample(r_bg, s, s)
        else:
            bg, bg_name = lib.render(background, r_bg, s, s), background
    frame = bg.astype(np.float32)

    tag, alpha, regions_t = _draw_tag(config, grp, k, scale)
    ht, wt = alpha.shape
    m = cv2.getRotationMatrix2D((wt / 2.0, ht / 2.0), angle, 1.0)
    # bounding box of the rotated tag, then a random position that keeps it inside the frame
    corners = np.array([[0, 0], [wt, 0], [wt, ht], [0, ht]], np.float64)
    rc = corners @ m[:, :2].T
    half_w = (rc[:, 0].max() - rc[:, 0].min()) / 2.0
    half_h = (rc[:, 1].max() - rc[:, 1].min()) / 2.0
    pad = 0.02 * s
    lo_x, hi_x = half_w + pad, s - half_w - pad
    lo_y, hi_y = half_h + pad, s - half_h - pad
    cx = float(r_pose.uniform(lo_x, hi_x)) if hi_x > lo_x else s / 2.0
    cy = float(r_pose.uniform(lo_y, hi_y)) if hi_y > lo_y else s / 2.0
    m[:, 2] += (cx - wt / 2.0, cy - ht / 2.0)

    if draw_tag:
        # warp only into the tag's bounding box: same pixels as a full-frame warp, far less work
        bx0, by0 = max(0, int(np.floor(cx - half_w)) - 2), max(0, int(np.floor(cy - half_h)) - 2)
        bx1, by1 = min(s, int(np.ceil(cx + half_w)) + 2), min(s, int(np.ceil(cy + half_h)) + 2)
        mb = m.copy()
        mb[:, 2] -= (bx0, by0)
        rgba = np.concatenate([tag * alpha[..., None], alpha[..., None]], axis=2)
        warped = cv2.warpAffine(rgba, mb, (bx1 - bx0, by1 - by0), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        a = warped[..., 3:4]
        frame[by0:by1, bx0:bx1] = frame[by0:by1, bx0:bx1] * (1.0 - a) + warped[..., :3]
        mask = np.zeros((s, s), np.uint8)
        mask[by0:by1, bx0:bx1] = np.where(warped[..., 3] >= 0.5, 255, 0).astype(np.uint8)
    else:
        mask = np.zeros((s, s), np.uint8)

    # lighting: a linear gradient, a vignette and a white-balance tint, smooth so computed coarse
    g = 32
    yy, xx = np.mgrid[0:g, 0:g].astype(np.float32) / (g - 1) - 0.5
    ga = r_light.uniform(0, 2 * np.pi)
    strength_grad = r_light.uniform(0.1, 0.35)
    vig = r_light.uniform(0.0, 0.5)
    light = r_light.uniform(0.85, 1.1) * (1.0 + strength_grad * (xx * np.cos(ga) + yy * np.sin(ga))) * (1.0 - vig * (xx**2 + yy**2))
    light = cv2.resize(light.astype(np.float32), (s, s), interpolation=cv2.INTER_LINEAR)
    tint = r_light.uniform(0.94, 1.06, 3).astype(np.float32)
    frame *= light[..., None] * tint
    if config.lens_blur > 0:
        frame = cv2.GaussianBlur(frame, (0, 0), sigmaX=config.lens_blur)
    # sensor noise: read noise plus a shot-noise term growing with the signal
    sd = np.clip(frame, 0, 255)
    sd *= np.float32(1.0 / 255.0)
    sd += np.float32(0.5)
    np.sqrt(sd, out=sd)
    sd *= r_noise.standard_normal((s, s, 3), dtype=np.float32)
    sd *= np.float32(config.noise_sigma)
    frame += sd
    frame += np.float32(0.5)
    image = np.clip(frame, 0, 255).astype(np.uint8)

    regions = {name: (np.c_[box, np.ones(4)] @ m.T).round(2).tolist() for name, box in regions_t.items()}
    info = {
        "index": index,
        "group": grp,
        "label": CLASS_NAMES[lab],
        "background": bg_name,
        "scale": round(scale, 4),
        "angle": round(angle, 3),
        "center": [round(cx, 2), round(cy, 2)],
        "regions": regions,
    }
    return image, mask, info


def region_mask(info: dict, size: int, names: Sequence[str] = REGION_NAMES, grow: int = 0) -> np.ndarray:
    """SxS uint8 mask (255 inside) of the micro-feature regions in `info`, dilated by `grow` px."""
    out = np.zeros((size, size), np.uint8)
    for name in names:
        cv2.fillPoly(out, [np.round(np.array(info["regions"][name])).astype(np.int32)], 255)
    if grow > 0:
        out = cv2.dilate(out, np.ones((2 * grow + 1, 2 * grow + 1), np.uint8))
    return out


# -------------------------------------------------------------------------------------------- the plan
def _group_sizes(rng: np.random.Generator, n: int) -> list[int]:
    """Split n images into items of 2 or 3 shots each."""
    sizes: list[int] = []
    rem = n
    while rem > 0:
        if rem in SHOTS:
            sizes.append(rem)
            break
        if rem == 1:  # fold the last one into the previous item, keeping 2..3 shots
            if sizes[-1] == 3:
                sizes[-1] = 2
                sizes.append(2)
            else:
                sizes[-1] = 3
            break
        k = int(rng.integers(SHOTS[0], SHOTS[1] + 1))
        sizes.append(k)
        rem -= k
    return sizes


def background_halves(config: SynthConfig, names: Sequence[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The background names of each class's half (genuine, counterfeit), a seeded split of `names`."""
    if len(names) < 2:
        raise SynthError("at least two backgrounds (families or photos) are needed, one half per class")
    perm = _rng(config.seed, 0, 1).permutation(len(names))
    half = len(names) // 2
    return tuple(sorted(names[i] for i in perm[:half])), tuple(sorted(names[i] for i in perm[half:]))


def plan_dataset(config: SynthConfig, background_names: Sequence[str]) -> tuple[list[PlannedImage], tuple[tuple[str, ...], tuple[str, ...]]]:
    """Items, shots, labels, splits and backgrounds of every frame, without rendering anything.

    Labels are balanced by image (n // 2 genuine); items are split 7:2:1 per class, so no item crosses splits.
    The train split draws its background from its class's half with probability bias; val and test with 0.5.
    """
    rng = _rng(config.seed, 0, 0)
    halves = background_halves(config, background_names)
    items: list[tuple[int, int]] = []  # (label, shots)
    for lab, n_lab in enumerate((config.n // 2, config.n - config.n // 2)):
        items += [(lab, k) for k in _group_sizes(rng, n_lab)]
    order = rng.permutation(len(items))  # item ids carry no class information
    split_of: dict[int, str] = {}
    for lab in (0, 1):
        ids = [int(g) for g in np.flatnonzero([items[o][0] == lab for o in order])]
        ids = [ids[i] for i in rng.permutation(len(ids))]
        n_test = max(1, int(round(config.split[2] * len(ids))))
        n_val = max(1, int(round(config.split[1] * len(ids))))
        if len(ids) - n_test - n_val < 1:
            raise SynthError(f"--n {config.n} is too small to fill train, val and test with both classes")
        for j, g in enumerate(ids):
            split_of[g] = "train" if j < len(ids) - n_val - n_test else ("val" if j < len(ids) - n_test else "test")
    plan: list[PlannedImage] = []
    for g, o in enumerate(order):
        lab, shots = items[o]
        split = split_of[g]
        for shot in range(shots):
            idx = len(plan)
            r = _rng(config.seed, 3, idx)
            own = r.random() < (config.bias if split == "train" else 0.5)
            half = halves[lab] if own else halves[1 - lab]
            plan.append(PlannedImage(idx, g, shot, lab, split, half[int(r.integers(len(half)))]))
    return plan, halves


def measured_bias(plan: Sequence[PlannedImage], halves: tuple[tuple[str, ...], tuple[str, ...]], split: str) -> float:
    """Fraction of the split's frames whose background is in their own class's half."""
    rows = [p for p in plan if p.split == split]
    if not rows:
        return float("nan")
    return sum(p.background in halves[p.label] for p in rows) / len(rows)


# ------------------------------------------------------------------------------------------ generation
_WORKER: dict = {}


def _init_worker(config: SynthConfig, out: str) -> None:
    cv2.setNumThreads(1)
    _WORKER["config"] = config
    _WORKER["out"] = Path(out)
    _WORKER["library"] = BackgroundLibrary(config.backgrounds, () if config.backgrounds else config.families)


def _png(img: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", img, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise SynthError("PNG encoding failed")
    return buf.tobytes()


def _render_and_write(p: PlannedImage) -> tuple[str, dict]:
    config: SynthConfig = _WORKER["config"]
    out: Path = _WORKER["out"]
    image, mask, info = render_sample(config, p.index, p.label, p.background, group=p.group, library=_WORKER["library"])
    (out / p.path).write_bytes(_png(image))
    (out / "masks" / p.path).write_bytes(_png(mask))
    return p.path, info["regions"]


def _prepare_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise SynthError(f"--out {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise SynthError(f"--out {out} is not empty; pass --overwrite to replace an earlier synth output there")
        card = out / "card.json"
        try:
            ok = json.loads(card.read_text()).get("generator") == GENERATOR
        except (OSError, ValueError, AttributeError):
            ok = False
        if not ok:
            raise SynthError(f"refusing to overwrite {out}: it is not an mgfen-data synth output (no card.json from {GENERATOR})")
        for sub in (*SPLITS, "masks"):
            shutil.rmtree(out / sub, ignore_errors=True)
        for name in ("manifest.csv", "card.json", "regions.json"):
            (out / name).unlink(missing_ok=True)
    for split in SPLITS:
        for cls in CLASS_NAMES:
            (out / split / cls).mkdir(parents=True, exist_ok=True)
            (out / "masks" / split / cls).mkdir(parents=True, exist_ok=True)


def generate_dataset(
    out: Path,
    config: SynthConfig,
    *,
    workers: int = 2,
    overwrite: bool = False,
    progress: Callable[[int], None] | None = None,
) -> dict:
    """Write the dataset to `out` (layout in design.md) and return a JSON-able summary.

    Files: {split}/{class}/itemGGGG_S.png (SxSx3 BGR PNG), masks/<same path> (SxS uint8 PNG, 255 = tag),
    manifest.csv (path,split,label,group,background; sorted by path), card.json (every parameter, the
    generator version, background halves, counts), regions.json (path -> micro-feature corners in px).
    `progress(n_done)` is called after each frame.
    """
    out = Path(out)
    if workers < 1:
        raise SynthError(f"--workers must be >= 1, got {workers}")
    library = BackgroundLibrary(config.backgrounds, () if config.backgrounds else config.families)
    plan, halves = plan_dataset(config, library.names)
    _prepare_out(out, overwrite)
    t0 = time.perf_counter()
    regions: dict[str, dict] = {}
    if workers == 1:
        _init_worker(config, str(out))
        _WORKER["library"] = library
        results: Iterator[tuple[str, dict]] = map(_render_and_write, plan)
        for path, reg in results:
            regions[path] = reg
            if progress:
                progress(1)
        _WORKER.clear()
    else:
        ctx = mp.get_context("spawn")  # safe even when the caller has torch threads running
        with ctx.Pool(workers, initializer=_init_worker, initargs=(config, str(out))) as pool:
            for path, reg in pool.imap(_render_and_write, plan, chunksize=2):
                regions[path] = reg
                if progress:
                    progress(1)
    seconds = time.perf_counter() - t0

    rows = sorted(plan, key=lambda p: p.path)
    with open(out / "manifest.csv", "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(MANIFEST_COLUMNS)
        for p in rows:
            w.writerow([p.path, p.split, CLASS_NAMES[p.label], f"item{p.group:04d}", p.background])
    counts = {sp: {c: sum(1 for p in plan if p.split == sp and CLASS_NAMES[p.label] == c) for c in CLASS_NAMES} for sp in SPLITS}
    bias = {sp: round(measured_bias(plan, halves, sp), 4) for sp in SPLITS}
    card = {
        "generator": GENERATOR,
        "generator_version": GENERATOR_VERSION,
        "classes": list(CLASS_NAMES),
        "config": asdict(config),
        "background_halves": {CLASS_NAMES[0]: list(halves[0]), CLASS_NAMES[1]: list(halves[1])},
        "images": len(plan),
        "groups": len({p.group for p in plan}),
        "counts": counts,
        "measured_bias": bias,
        "random_streams": "plan SeedSequence([seed,0,*]); item print [seed,1,group]; shot [seed,2,index]; background choice [seed,3,index]",
    }
    (out / "card.json").write_text(json.dumps(card, indent=2, sort_keys=True) + "\n")
    (out / "regions.json").write_text(json.dumps({k: regions[k] for k in sorted(regions)}, sort_keys=True) + "\n")
    return {
        "out": str(out),
        "images": len(plan),
        "groups": card["groups"],
        "counts": counts,
        "measured_bias": bias,
        "seconds": round(seconds, 3),
        "frames_per_s": round(len(plan) / seconds, 2) if seconds > 0 else None,
    }
