"""Background sources: procedural texture families with strong macro patterns, and a folder of photos.

Every source renders an HxWx3 uint8 BGR image from a numpy Generator, so a background is reproducible by
seed. The synthetic dataset uses it to place the tag, and background replacement uses the same library.

    lib = BackgroundLibrary(None, FAMILIES)          # procedural only
    lib = BackgroundLibrary(Path("photos"), ())       # photos only, searched recursively
    image, name = lib.sample(rng, 1024, 1024)         # name: family name or photo path relative to the folder
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Callable, Sequence

import cv2
import numpy as np

from edge_runtime.errors import MgfenError

FAMILIES: tuple[str, ...] = ("monogram", "weave", "leather", "wood", "gradient", "plaid")
PHOTO_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
_PHOTO_CACHE_SIZE = 16
_PHOTO_MAX_SIDE = 2048  # photos are cached downscaled to this; crops are then resized to the request


class BackgroundError(MgfenError):
    """A background folder that is missing, empty or holds an unreadable image, or an unknown family."""


# ----------------------------------------------------------------------------------------------- helpers
def _smooth_noise(rng: np.random.Generator, h: int, w: int, cell: float) -> np.ndarray:
    """HxW float32 value noise in about [-1, 1] with features of roughly `cell` pixels."""
    gh, gw = max(2, int(np.ceil(h / cell)) + 2), max(2, int(np.ceil(w / cell)) + 2)
    grid = rng.standard_normal((gh, gw)).astype(np.float32)
    big = cv2.resize(grid, (int(gw * cell), int(gh * cell)), interpolation=cv2.INTER_CUBIC)
    return big[:h, :w] * 0.8


def _random_colour(rng: np.random.Generator, palette: Sequence[tuple[int, int, int]], jitter: float = 18.0) -> np.ndarray:
    base = np.array(palette[int(rng.integers(len(palette)))], np.float32)
    return np.clip(base + rng.normal(0.0, jitter, 3), 0, 255).astype(np.float32)


def _rotated_coords(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates (u along the pattern, v across), HxW float32 each, rotated by a random angle."""
    a = rng.uniform(0, np.pi)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    c, s = np.float32(np.cos(a)), np.float32(np.sin(a))
    return x * c + y * s, -x * s + y * c


def _to_uint8(img: np.ndarray) -> np.ndarray:
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


# ------------------------------------------------------------------------------------ procedural families
def _monogram(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Canvas with a repeated logo-like motif in a brick lattice (luxury-luggage style), random angle."""
    size = min(h, w)
    t = max(16, int(size * rng.uniform(0.07, 0.14)))
    ground = _random_colour(rng, [(40, 70, 110), (30, 45, 70), (60, 60, 60), (90, 120, 150), (120, 90, 60)])
    ink = np.clip(ground + rng.choice([-1.0, 1.0]) * rng.uniform(45, 90), 0, 255)
    tile = np.empty((t, t, 3), np.uint8)
    tile[:] = np.clip(ground, 0, 255).astype(np.uint8)
    c = t / 2
    kind = int(rng.integers(3))
    col = tuple(int(v) for v in ink)
    lw = max(1, t // 28)
    if kind == 0:  # four-petal flower
        for dx, dy in ((1, 0), (-1, 0), (0, 1), (0, -1)):
            cv2.circle(tile, (int(c + dx * t * 0.13), int(c + dy * t * 0.13)), max(1, int(t * 0.11)), col, -1, cv2.LINE_AA)
        cv2.circle(tile, (int(c), int(c)), max(1, int(t * 0.05)), tuple(int(v) for v in ground), -1, cv2.LINE_AA)
    elif kind == 1:  # diamond with star
        pts = np.array([[c, c - t * 0.3], [c + t * 0.3, c], [c, c + t * 0.3], [c - t * 0.3, c]], np.int32)
        cv2.polylines(tile, [pts], True, col, lw, cv2.LINE_AA)
        cv2.drawMarker(tile, (int(c), int(c)), col, cv2.MARKER_STAR, max(3, int(t * 0.25)), lw, cv2.LINE_AA)
    else:  # interlocked letters
        scale = t / 60.0
        cv2.putText(tile, "MG", (int(t * 0.18), int(t * 0.66)), cv2.FONT_HERSHEY_TRIPLEX, scale, col, max(1, lw), cv2.LINE_AA)
    reps_y, reps_x = h // t + 4, w // t + 4
    rows = []
    for r in range(reps_y):
        row = np.tile(tile, (1, reps_x, 1))
        rows.append(np.roll(row, (t // 2) * (r % 2), axis=1))
    big = np.concatenate(rows, axis=0).astype(np.float32)
    angle = rng.uniform(-30, 30)
    m = cv2.getRotationMatrix2D((big.shape[1] / 2, big.shape[0] / 2), angle, 1.0)
    m[:, 2] -= [(big.shape[1] - w) / 2, (big.shape[0] - h) / 2]
    out = cv2.warpAffine(big, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    grain = _smooth_noise(rng, h, w, 3.0) * 6.0
    return out + grain[..., None]


def _weave(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Woven fabric: plain or twill structure of two thread colours with shaded thread profiles."""
    size = min(h, w)
    pitch = size * rng.uniform(0.012, 0.03)
    u, v = _rotated_coords(rng, h, w)
    iu, iv = np.floor(u / pitch), np.floor(v / pitch)
    fu, fv = u / pitch - iu, v / pitch - iv
    period = int(rng.choice([2, 3, 4]))
    warp_on_top = ((iu + iv) % period) < (period / 2)
    prof_u = np.sqrt(np.sin(np.pi * fu))  # shading across a warp thread
    prof_v = np.sqrt(np.sin(np.pi * fv))
    c1 = _random_colour(rng, [(60, 40, 30), (150, 140, 130), (40, 40, 120), (70, 110, 60), (170, 160, 150)])
    c2 = np.clip(c1 * rng.uniform(0.5, 1.3) + rng.normal(0, 25, 3), 0, 255)
    shade = np.where(warp_on_top, prof_u, prof_v)[..., None]
    colour = np.where(warp_on_top[..., None], c1, c2)
    fuzz = _smooth_noise(rng, h, w, 2.0)[..., None] * 10.0
    return colour * (0.55 + 0.45 * shade) + fuzz


def _leather(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Pebble-grain leather: embossed multi-scale noise with dark creases and a soft sheen."""
    size = min(h, w)
    cell = size * rng.uniform(0.012, 0.025)
    height = _smooth_noise(rng, h, w, cell) + 0.5 * _smooth_noise(rng, h, w, cell / 2.3)
    crease = np.exp(-(height / 0.12) ** 2)  # thin dark valleys where the field crosses zero
    gy, gx = np.gradient(height)
    emboss = (gx - gy) * (cell * 1.5)
    base = _random_colour(rng, [(20, 20, 25), (30, 50, 90), (60, 100, 150), (30, 30, 110), (90, 110, 120)])
    sheen = _smooth_noise(rng, h, w, size * 0.4) * 0.15
    lum = 1.0 + emboss * 0.35 - crease * 0.35 + sheen
    return base * lum[..., None] + 8.0


def _wood(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Wood: turbulent growth rings plus fine fibre streaks along the grain."""
    size = min(h, w)
    u, v = _rotated_coords(rng, h, w)
    ring = size * rng.uniform(0.03, 0.08)
    turb = _smooth_noise(rng, h, w, size * 0.35) * ring * 0.9
    phase = (v + turb + 0.0004 * (u - w / 2) ** 2 * rng.uniform(-1, 1)) / ring
    rings = (np.sin(2 * np.pi * phase) * 0.5 + 0.5) ** 3
    fibre_src = rng.standard_normal((max(2, h // 2), max(2, w // 40))).astype(np.float32)
    fibres = cv2.resize(fibre_src, (w, h), interpolation=cv2.INTER_LINEAR)  # streaks along x before rotation
    light = _random_colour(rng, [(110, 170, 210), (80, 130, 180), (140, 180, 200), (60, 90, 130)], 12)
    dark = light * rng.uniform(0.45, 0.7)
    t = np.clip(rings + fibres * 0.06, 0, 1)[..., None]
    return light * (1 - t) + dark * t


def _gradient(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Studio-like backdrop: linear or radial gradient between two colours with large soft blotches."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    c1 = rng.uniform(20, 235, 3).astype(np.float32)
    c2 = rng.uniform(20, 235, 3).astype(np.float32)
    if rng.random() < 0.5:
        a = rng.uniform(0, 2 * np.pi)
        t = ((x - w / 2) * np.cos(a) + (y - h / 2) * np.sin(a)) / max(h, w) + 0.5
    else:
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        t = np.sqrt((x - cx) ** 2 + (y - cy) ** 2) / (0.9 * max(h, w))
    t = np.clip(t + _smooth_noise(rng, h, w, min(h, w) * 0.25) * 0.12, 0, 1)[..., None]
    return c1 * (1 - t) + c2 * t


def _plaid(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Tartan: coloured stripe sequences in both directions, averaged, with a fine twill texture."""
    size = min(h, w)
    u, v = _rotated_coords(rng, h, w)
    n = int(rng.integers(3, 6))
    widths = rng.uniform(0.01, 0.06, n) * size
    colours = np.array([_random_colour(rng, [(40, 40, 140), (120, 60, 20), (30, 90, 30), (200, 200, 200), (20, 20, 20), (40, 160, 200)]) for _ in range(n)])
    edges = np.cumsum(widths)
    period = edges[-1]

    def stripes(coord: np.ndarray) -> np.ndarray:
        idx = np.searchsorted(edges, np.mod(coord, period), side="right").clip(0, n - 1)
        return colours[idx]

    twill = (np.mod(np.floor(u / 2.0) + np.floor(v / 2.0), 4) < 2).astype(np.float32)[..., None]
    return (stripes(u) * 0.5 + stripes(v) * 0.5) * (0.9 + 0.1 * twill)


_FAMILY_FUNCS: dict[str, Callable[[np.random.Generator, int, int], np.ndarray]] = {
    "monogram": _monogram,
    "weave": _weave,
    "leather": _leather,
    "wood": _wood,
    "gradient": _gradient,
    "plaid": _plaid,
}


def render_family(name: str, rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """One procedural background of family `name`: HxWx3 uint8 BGR, randomly mirrored."""
    if name not in _FAMILY_FUNCS:
        raise BackgroundError(f"unknown background family {name!r}; known: {', '.join(FAMILIES)}")
    img = _to_uint8(_FAMILY_FUNCS[name](rng, h, w))
    if rng.random() < 0.5:
        img = img[:, ::-1]
    return np.ascontiguousarray(img)


# ------------------------------------------------------------------------------------------------- photos
def find_photos(folder: Path) -> list[str]:
    """Relative POSIX paths of every image under `folder` (recursive, sorted). Raises BackgroundError if none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise BackgroundError(f"background folder {folder} does not exist or is not a folder")
    found = sorted(
        p.relative_to(folder).as_posix()
        for p in folder.rglob("*")
        if p.is_file() and p.suffix.lower() in PHOTO_EXTENSIONS
    )
    if not found:
        raise BackgroundError(f"background folder {folder} holds no images ({', '.join(PHOTO_EXTENSIONS)})")
    return found


def random_crop(rng: np.random.Generator, photo: np.ndarray, h: int, w: int, min_frac: float = 0.5) -> np.ndarray:
    """A random crop of `photo` (any HxWx3 uint8) with the aspect of (h, w), resized to HxWx3, maybe mirrored.

    The crop side is a random fraction in [min_frac, 1] of the largest crop with that aspect.
    """
    ph, pw = photo.shape[:2]
    fit = min(ph / h, pw / w)
    frac = rng.uniform(min_frac, 1.0)
    ch, cw = max(1, int(round(h * fit * frac))), max(1, int(round(w * fit * frac)))
    y0 = int(rng.integers(0, ph - ch + 1))
    x0 = int(rng.integers(0, pw - cw + 1))
    crop = photo[y0 : y0 + ch, x0 : x0 + cw]
    interp = cv2.INTER_AREA if ch > h else cv2.INTER_LINEAR
    out = cv2.resize(crop, (w, h), interpolation=interp)
    if rng.random() < 0.5:
        out = out[:, ::-1]
    return np.ascontiguousarray(out)


class BackgroundLibrary:
    """Named background sources: procedural families and/or photos under a folder.

    `names` lists the families first (in the given order), then the photos' relative paths (sorted).
    """

    def __init__(self, folder: Path | str | None = None, families: tuple[str, ...] = FAMILIES) -> None:
        for fam in families:
            if fam not in _FAMILY_FUNCS:
                raise BackgroundError(f"unknown background family {fam!r}; known: {', '.join(FAMILIES)}")
        self.folder = Path(folder) if folder is not None else None
        self.families = tuple(families)
        self.photos: tuple[str, ...] = tuple(find_photos(self.folder)) if self.folder is not None else ()
        self.names: tuple[str, ...] = self.families + self.photos
        if not self.names:
            raise BackgroundError("a background library needs at least one family or a photo folder")
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()

    def _photo(self, rel: str) -> np.ndarray:
        if rel in self._cache:
            self._cache.move_to_end(rel)
            return self._cache[rel]
        assert self.folder is not None
        path = self.folder / rel
        img = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if img is None or img.size == 0:
            raise BackgroundError(f"cannot read background image {path}")
        side = max(img.shape[:2])
        if side > _PHOTO_MAX_SIDE:
            f = _PHOTO_MAX_SIDE / side
            img = cv2.resize(img, (max(1, int(img.shape[1] * f)), max(1, int(img.shape[0] * f))), interpolation=cv2.INTER_AREA)
        self._cache[rel] = img
        if len(self._cache) > _PHOTO_CACHE_SIZE:
            self._cache.popitem(last=False)
        return img

    def render(self, name: str, rng: np.random.Generator, h: int, w: int) -> np.ndarray:
        """The background `name` (a family or a photo's relative path) as HxWx3 uint8 BGR."""
        if name in self.families:
            return render_family(name, rng, h, w)
        if name in self.photos:
            return random_crop(rng, self._photo(name), h, w)
        raise BackgroundError(f"unknown background {name!r}")

    def sample(
        self, rng: np.random.Generator, h: int, w: int, choices: Sequence[str] | None = None
    ) -> tuple[np.ndarray, str]:
        """A random background from `choices` (default: all names): (HxWx3 uint8 BGR, its name)."""
        pool = tuple(choices) if choices is not None else self.names
        if not pool:
            raise BackgroundError("no background to choose from")
        name = pool[int(rng.integers(len(pool)))]
        return self.render(name, rng, h, w), name


def make_library(backgrounds: Path | None, families: bool | None):
    """A BackgroundLibrary: the photo folder and/or the procedural families (families default: only
    when no folder is given). An empty folder raises BackgroundError."""
    use_families = families if families is not None else backgrounds is None
    return BackgroundLibrary(backgrounds, FAMILIES if use_families else ())
