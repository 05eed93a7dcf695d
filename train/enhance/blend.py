"""Background replacement: paste a masked foreground onto a new background.

Modes (BLEND_MODES):
- "alpha" (default): feathered alpha paste. The hard mask is blurred into an alpha ramp a few pixels wide
  so the seam carries no sharp cut; foreground colours are kept exactly where alpha is 1 (colour can be an
  authentication cue).
- "poisson": cv2.seamlessClone NORMAL_CLONE (the paper's option). Keeps the foreground's gradients, not its
  colours: the object takes on the background's colour cast.
- "poisson_mixed": cv2.seamlessClone MIXED_CLONE (per pixel the stronger gradient of source and target).
- "hard": plain copy through the binary mask (the compositing of the background-reliance benchmarks).

All images are HxWx3 uint8 BGR; masks HxW uint8 (nonzero = foreground).

    out = replace_background(frame, mask, background, "alpha")
    transform = BackgroundReplacer(BackgroundLibrary(None), p=0.5, mode="alpha")
    frame = transform(frame, mask, rng)        # the training dataset's per-sample hook
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from edge_runtime.errors import MgfenError
from train.enhance.backgrounds import make_library

BLEND_MODES = ("alpha", "poisson", "poisson_mixed", "hard")


class BlendError(MgfenError):
    """A mask of another size than its frame, an empty mask, an unknown blend mode or a bad array."""


def _check(frame: np.ndarray, mask: np.ndarray, background: np.ndarray | None = None) -> np.ndarray:
    """Validate the arrays; return the HxW bool foreground."""
    if not isinstance(frame, np.ndarray) or frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise BlendError("frame must be an HxWx3 uint8 BGR array")
    if not isinstance(mask, np.ndarray) or mask.dtype not in (np.uint8, np.bool_):
        raise BlendError("mask must be an HxW uint8 or bool array")
    if mask.ndim == 3:
        mask = mask[:, :, 0]
    if mask.shape != frame.shape[:2]:
        raise BlendError(
            f"mask is {mask.shape[1] if mask.ndim > 1 else '?'}x{mask.shape[0]} but the frame is "
            f"{frame.shape[1]}x{frame.shape[0]}; they must match"
        )
    if background is not None and (background.ndim != 3 or background.shape[2] != 3 or background.dtype != np.uint8):
        raise BlendError("background must be an HxWx3 uint8 BGR array")
    fg = mask > 0
    if not fg.any():
        raise BlendError("mask is empty: no foreground to paste")
    return fg


def fit_background(background: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize-and-centre-crop a background (any size) to cover height x width. HxWx3 uint8 out."""
    bh, bw = background.shape[:2]
    if (bh, bw) == (height, width):
        return background
    scale = max(height / bh, width / bw)
    nh, nw = max(height, int(round(bh * scale))), max(width, int(round(bw * scale)))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    big = cv2.resize(background, (nw, nh), interpolation=interp)
    y0, x0 = (nh - height) // 2, (nw - width) // 2
    return np.ascontiguousarray(big[y0 : y0 + height, x0 : x0 + width])


def feather_alpha(mask: np.ndarray, radius: float | None = None) -> np.ndarray:
    """HxW mask -> HxW float32 alpha in [0, 1]: the mask blurred by a Gaussian of sigma `radius` / 2.

    radius None: 0.4% of the frame's shorter side (4 px at 1024), at least 1 px. The ramp is centred on the
    mask's edge: alpha is 0.5 on the boundary, 1 deep inside, 0 well outside.
    """
    m = (mask > 0).astype(np.float32)
    if radius is None:
        radius = max(1.0, 0.004 * min(mask.shape[:2]))
    if radius <= 0:
        return m
    sigma = radius / 2.0
    k = int(2 * round(3 * sigma) + 1)
    return cv2.GaussianBlur(m, (k, k), sigma)


def alpha_paste(frame: np.ndarray, mask: np.ndarray, background: np.ndarray, radius: float | None = None) -> np.ndarray:
    """Feathered alpha composite of frame's foreground over background (same HxW). HxWx3 uint8 BGR out."""
    alpha = feather_alpha(mask, radius)[..., None]
    out = frame.astype(np.float32) * alpha + background.astype(np.float32) * (1.0 - alpha)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def hard_paste(frame: np.ndarray, mask: np.ndarray, background: np.ndarray) -> np.ndarray:
    """Copy frame pixels where mask is nonzero onto background (same HxW). HxWx3 uint8 BGR out."""
    return np.where((mask > 0)[..., None], frame, background).astype(np.uint8)


def poisson_paste(frame: np.ndarray, mask: np.ndarray, background: np.ndarray, mixed: bool = False) -> np.ndarray:
    """cv2.seamlessClone of frame's foreground onto background in place (same HxW). HxWx3 uint8 BGR out.

    seamlessClone needs the mask's bounding box strictly inside the destination, so both images are padded
    with a reflected border first and the result cropped back; the clone centre is chosen so the object
    stays exactly where it was.
    """
    h, w = mask.shape[:2]
    pad = 4
    src = cv2.copyMakeBorder(frame, pad, pad, pad, pad, cv2.BORDER_REFLECT)
    dst = cv2.copyMakeBorder(background, pad, pad, pad, pad, cv2.BORDER_REFLECT)
    m = np.zeros((h + 2 * pad, w + 2 * pad), np.uint8)
    m[pad : pad + h, pad : pad + w] = np.where(mask > 0, 255, 0).astype(np.uint8)
    x, y, bw, bh = cv2.boundingRect(m)
    # OpenCV places the mask's bounding box centred at `center`, computed with integer halves
    center = (x + bw // 2, y + bh // 2)
    flag = cv2.MIXED_CLONE if mixed else cv2.NORMAL_CLONE
    out = cv2.seamlessClone(src, dst, m, center, flag)
    return np.ascontiguousarray(out[pad : pad + h, pad : pad + w])


def replace_background(frame_bgr: np.ndarray, mask: np.ndarray, background_bgr: np.ndarray, mode: str = "alpha") -> np.ndarray:
    """Put frame_bgr's foreground (mask nonzero) on background_bgr.

    frame_bgr: HxWx3 uint8 BGR; mask: HxW uint8/bool of the same size; background_bgr: any size HxWx3 uint8
    BGR (resized and centre-cropped to cover the frame); mode: one of BLEND_MODES. Returns HxWx3 uint8 BGR.
    """
    if mode not in BLEND_MODES:
        raise BlendError(f"unknown blend mode {mode!r}; expected one of {', '.join(BLEND_MODES)}")
    fg = _check(frame_bgr, mask, background_bgr)
    h, w = frame_bgr.shape[:2]
    background = fit_background(background_bgr, h, w)
    if mode == "alpha":
        return alpha_paste(frame_bgr, fg, background)
    if mode == "hard":
        return hard_paste(frame_bgr, fg, background)
    return poisson_paste(frame_bgr, fg, background, mixed=mode == "poisson_mixed")


class BackgroundReplacer:
    """Training transform: with probability p, replace the frame's background by one from `library`.

    __call__(frame_bgr HxWx3 uint8 BGR, mask HxW uint8 or None, rng numpy Generator) -> HxWx3 uint8 BGR.
    library: anything with .sample(rng, h, w) -> (HxWx3 uint8 BGR, name), e.g.
    train.enhance.backgrounds.BackgroundLibrary (procedural families and/or a photo folder; random crops, scales and
    flips come from it). A missing or empty mask leaves the frame unchanged (nothing to cut out). All
    randomness comes from `rng`, so a seeded generator reproduces the same frames.
    """

    def __init__(self, library, p: float = 0.5, mode: str = "alpha") -> None:
        if not 0.0 <= p <= 1.0:
            raise BlendError(f"background replacement probability must be in [0, 1], got {p}")
        if mode not in BLEND_MODES:
            raise BlendError(f"unknown blend mode {mode!r}; expected one of {', '.join(BLEND_MODES)}")
        self.library, self.p, self.mode = library, float(p), mode
        self.last_name: str | None = None  # name of the last background used (None: frame kept)

    def __call__(self, frame_bgr: np.ndarray, mask: np.ndarray | None, rng: np.random.Generator) -> np.ndarray:
        self.last_name = None
        if self.p <= 0.0 or rng.random() >= self.p:
            return frame_bgr
        if mask is None or not np.any(mask):
            return frame_bgr
        h, w = frame_bgr.shape[:2]
        background, name = self.library.sample(rng, h, w)
        self.last_name = name
        return replace_background(frame_bgr, mask, background, self.mode)

    def __repr__(self) -> str:
        return f"BackgroundReplacer(p={self.p}, mode={self.mode!r})"


def background_replacer(p: float, backgrounds: str | Path | None, blend: str, families: bool | None = None):
    """The training transform for `mgfen-train --bg-replace P --backgrounds DIR --blend MODE` (None when p == 0).
    An empty or missing background folder raises BackgroundError before any training time is spent."""
    if p <= 0:
        return None
    return BackgroundReplacer(make_library(Path(backgrounds) if backgrounds else None, families), p=p, mode=blend)
