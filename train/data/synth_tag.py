"""The tag of the synthetic dataset (train/data/synth.py) and its three micro features, drawn at pixel scale.

One printed tag per item: header, logo, colour blocks, barcode (the template), a halftone patch, a
foil-stamped emblem and micro-text. A counterfeit changes only the micro features, by `k = strength *
label` times the *_delta fields of MicroSpec, so at strength 0 both classes draw exactly the same thing.
Random streams are SeedSequence([seed, stream, key]) children (see train/data/synth.py for which stream is which).
"""

from __future__ import annotations

import cv2
import numpy as np

from train.data.synth_config import MicroSpec, SynthConfig

_SS = 4  # supersampling factor for shapes drawn with OpenCV

# Tag layout in fractions of the tag's width (u) and height (v): (u0, v0, u1, v1).
_TAG_ASPECT = 0.62
_BOX_HALFTONE = (0.05, 0.29, 0.42, 0.66)
_BOX_TEXT = (0.05, 0.71, 0.70, 0.93)
_FOIL_CENTRE = (0.60, 0.475)
_FOIL_RADIUS = 0.18  # of the tag height
_MICRO_TEXT = "AUTHENTIC MGFEN ORIGINAL - LOT 4821-AX - SERIAL 00917354 - VERIFIED PRINT - "


# ------------------------------------------------------------------------------------------ random streams
def stream_rng(seed: int, stream: int, key: int) -> np.random.Generator:
    """The generator of SeedSequence([seed, stream, key])."""
    return np.random.default_rng(np.random.SeedSequence([seed, stream, key]))


def spawn_streams(seed: int, stream: int, key: int, n: int) -> list[np.random.Generator]:
    """`n` independent generators spawned from SeedSequence([seed, stream, key])."""
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


def render_tag(config: SynthConfig, group: int, k: float, scale: float) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """The tag at its final pixel scale: (HtxWtx3 float32 BGR, HtxWt float32 alpha, regions in tag px).

    Regions are 4x2 corner arrays (x, y) of the micro-feature boxes.
    """
    wt = max(32, int(round(config.tag_frac * config.size * scale)))
    ht = max(20, int(round(wt * _TAG_ASPECT)))
    r_paper, r_half, r_foil, r_text = spawn_streams(config.seed, 1, group, 4)
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
