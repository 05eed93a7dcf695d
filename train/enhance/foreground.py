"""One-shot foreground extraction without SAM (the PerSAM idea on a plain CNN).

From one or a few reference images with foreground masks:

1. features: the image is resized to `work_size`, run through an ImageNet backbone (EfficientNet-Lite0 by
   default, offline weights), and the chosen feature maps are resized to `feature_res` x `feature_res`,
   L2-normalised per map, concatenated and L2-normalised again -> R x R x D unit vectors;
2. target: the masked average of the reference features, PerSAM-F style (mean + max) / 2, normalised;
3. similarity: cosine of every cell with the target, standardised per image (z-score) so one threshold
   works across lighting and backgrounds; the threshold is fitted on the references themselves (the z that
   best reproduces their own masks); probability = sigmoid(sharpness * (z - threshold));
4. refinement: cv2.grabCut on a `grabcut_size` image, seeded from the probability (sure / probable
   foreground and background, GC_INIT_WITH_MASK), then the largest connected component, holes filled.

Which maps: measured on the synthetic tag data (40 images, one reference), the ROC AUC of the cosine map
against the exact masks is 0.44-0.73 for the stride-8 maps alone, 0.86 for C4 (stride 16), 0.98 for C5 and
0.98 for C4 + C5; the earlier "mid-level" pair (C3 + C4) gives 0.64. So the default taps are C4 + C5.
Sizes: on those 40 frames, work/GrabCut sides 512/256 gave a mean IoU of 0.92, 768/384 0.958, 640/384
0.960 (the default). On the default synthetic dataset (299 frames, one reference) the default reaches a
mean IoU of 0.967 at about 1.2 s per 1024 px frame on one CPU thread (benchmarks/bench_foreground.py).

    fg = ForegroundExtractor(ForegroundConfig())
    fg.fit([(ref_bgr, ref_mask)])
    result = fg.segment(bgr)        # result.mask HxW uint8 {0, 255}, result.confidence in [0, 1]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from edge_runtime.errors import MgfenError
from edge_runtime.preprocess import read_image


class ForegroundError(MgfenError):
    """A reference mask that is unreadable, empty, full, or of another size than its image; no reference."""


@dataclass(frozen=True)
class ForegroundConfig:
    """Parameters of the one-shot extractor.

    work_size: side the image is resized to before the backbone (a multiple of 32).
    taps: indices into the backbone's (C2, C3, C4, C5) maps whose features are concatenated.
    feature_res: side of the similarity grid the maps are resized to.
    grabcut_size: side of the image GrabCut runs on (the mask is then resized to the input size).
    grabcut_iters: GrabCut iterations.
    sharpness: slope of the sigmoid from z-score to probability.
    sure_fg, sure_bg: probabilities above / below which a pixel seeds GrabCut as certain.
    fill_holes: fill holes inside the kept component (objects are solid from the camera's side).
    backbone, pretrained: see train.model.backbones.build_backbone.
    """

    work_size: int = 640
    taps: tuple[int, ...] = (2, 3)
    feature_res: int = 32
    grabcut_size: int = 384
    grabcut_iters: int = 5
    sharpness: float = 3.0
    sure_fg: float = 0.95
    sure_bg: float = 0.05
    fill_holes: bool = True
    backbone: str = "efficientnet_lite0"
    pretrained: str | None = "auto"

    def __post_init__(self) -> None:
        if self.work_size < 64 or self.work_size % 32:
            raise ValueError(f"work_size must be a multiple of 32 and >= 64, got {self.work_size}")
        if not self.taps or any(t not in (0, 1, 2, 3) for t in self.taps):
            raise ValueError(f"taps must be indices in 0..3 (C2..C5), got {self.taps}")
        if not 4 <= self.feature_res <= self.work_size:
            raise ValueError(f"feature_res must be in [4, work_size], got {self.feature_res}")
        if self.grabcut_size < 32:
            raise ValueError(f"grabcut_size must be >= 32, got {self.grabcut_size}")
        if not 0.5 < self.sure_fg < 1.0 or not 0.0 < self.sure_bg < 0.5:
            raise ValueError("need 0.5 < sure_fg < 1 and 0 < sure_bg < 0.5")


@dataclass(frozen=True)
class ForegroundResult:
    """mask: HxW uint8 {0, 255} at the input's size; confidence in [0, 1]; probability: RxR float32."""

    mask: np.ndarray
    confidence: float
    probability: np.ndarray = field(repr=False)


# -------------------------------------------------------------------------------------------- masks


def binarise_mask(mask: np.ndarray, name: str = "mask") -> np.ndarray:
    """HxW (or HxWx1/3) uint8 mask -> HxW bool. 8-bit masks are cut at 128; a 0/1 mask is taken as is."""
    if not isinstance(mask, np.ndarray) or mask.dtype != np.uint8:
        raise ForegroundError(f"{name}: a mask must be a uint8 array")
    if mask.ndim == 3:
        mask = mask[:, :, 0]
    if mask.ndim != 2:
        raise ForegroundError(f"{name}: a mask must be HxW, got shape {tuple(mask.shape)}")
    return mask > 0 if int(mask.max(initial=0)) == 1 else mask >= 128


def read_mask(path: str | Path) -> np.ndarray:
    """Read a mask file (8-bit PNG or any image) -> HxW uint8 {0, 255}."""
    path = Path(path)
    if not path.is_file():
        raise ForegroundError(f"{path}: mask file not found")
    mask = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if mask is None:
        raise ForegroundError(f"{path}: not a readable mask image")
    return binarise_mask(mask, str(path)).astype(np.uint8) * 255


def check_reference(image: np.ndarray, mask: np.ndarray, name: str = "reference") -> np.ndarray:
    """Validate a reference pair: image HxWx3 uint8 BGR, mask HxW. Returns the HxW bool mask."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ForegroundError(f"{name}: the image must be HxWx3 uint8 BGR")
    fg = binarise_mask(mask, f"{name} mask")
    if fg.shape != image.shape[:2]:
        raise ForegroundError(
            f"{name}: mask is {fg.shape[1]}x{fg.shape[0]} but the image is {image.shape[1]}x{image.shape[0]}; "
            "a reference mask must have the image's size"
        )
    if not fg.any():
        raise ForegroundError(f"{name}: the mask is empty (no foreground pixel)")
    if fg.all():
        raise ForegroundError(f"{name}: the mask covers the whole image (no background to learn from)")
    return fg


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two masks (bool or uint8, nonzero = foreground); 1.0 when both are empty."""
    a, b = np.asarray(a) > 0, np.asarray(b) > 0
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def largest_component(mask: np.ndarray, fill_holes: bool = True) -> np.ndarray:
    """HxW uint8/bool -> HxW uint8 {0, 1}: the largest 8-connected component, holes optionally filled."""
    m = (np.asarray(mask) > 0).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(m, connectivity=8)
    if n <= 1:
        return m
    keep = (labels == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))).astype(np.uint8)
    if fill_holes:
        contours, _ = cv2.findContours(keep, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        keep = cv2.drawContours(np.zeros_like(keep), contours, -1, 1, thickness=cv2.FILLED)
    return keep


# ------------------------------------------------------------------------------------------ features


class FeatureExtractor:
    """Image -> grid of unit feature vectors from an ImageNet backbone (train.model.backbones, weights offline).

    __call__(bgr HxWx3 uint8 BGR) -> R x R x D float32, each vector of unit length, R = config.feature_res.
    """

    def __init__(self, config: ForegroundConfig) -> None:
        import torch

        from train.model.backbones import build_backbone

        self.config = config
        self._torch = torch
        self.net = build_backbone(config.backbone, config.pretrained).eval()
        self._mean = torch.tensor(self.net.mean, dtype=torch.float32).view(1, 3, 1, 1)
        self._std = torch.tensor(self.net.std, dtype=torch.float32).view(1, 3, 1, 1)

    def __call__(self, bgr: np.ndarray) -> np.ndarray:
        torch = self._torch
        import torch.nn.functional as F

        cfg = self.config
        side = cfg.work_size
        interp = cv2.INTER_AREA if min(bgr.shape[:2]) > side else cv2.INTER_LINEAR
        rgb = cv2.cvtColor(cv2.resize(bgr, (side, side), interpolation=interp), cv2.COLOR_BGR2RGB)
        x = torch.from_numpy(rgb).permute(2, 0, 1)[None].float().div_(255.0)
        with torch.no_grad():
            maps = self.net((x - self._mean) / self._std)
            res = (cfg.feature_res, cfg.feature_res)
            parts = [F.normalize(F.interpolate(maps[t], size=res, mode="bilinear", align_corners=False), dim=1) for t in cfg.taps]
            feats = F.normalize(torch.cat(parts, dim=1), dim=1)[0]
        return feats.permute(1, 2, 0).contiguous().numpy()


def _z_scores(features: np.ndarray, target: np.ndarray) -> np.ndarray:
    sim = features @ target
    return ((sim - sim.mean()) / (sim.std() + 1e-6)).astype(np.float32)


def _grid_mask(fg: np.ndarray, res: int) -> np.ndarray:
    """HxW bool -> RxR float32 foreground fraction of each cell."""
    return cv2.resize(fg.astype(np.float32), (res, res), interpolation=cv2.INTER_AREA)


# ---------------------------------------------------------------------------------------- extractor


class ForegroundExtractor:
    """Fit a target on reference pairs, then segment new images (see the module docstring)."""

    def __init__(self, config: ForegroundConfig | None = None, features: FeatureExtractor | None = None) -> None:
        self.config = config or ForegroundConfig()
        self.features = features if features is not None else FeatureExtractor(self.config)
        self.target: np.ndarray | None = None  # D float32 unit vector
        self.z_threshold: float = 0.0
        self.reference_iou: float = 0.0  # how well the fitted threshold reproduces the references' masks

    def fit(self, references: Sequence[tuple[np.ndarray, np.ndarray]]) -> "ForegroundExtractor":
        """references: (image HxWx3 uint8 BGR, mask HxW uint8) pairs, sizes may differ between pairs."""
        if not references:
            raise ForegroundError("at least one reference image with a mask is needed")
        res = self.config.feature_res
        feats, grids, targets = [], [], []
        for i, (image, mask) in enumerate(references):
            fg = check_reference(image, mask, f"reference {i + 1}")
            f = self.features(image)
            grid = _grid_mask(fg, res)
            cells = grid >= 0.5
            if not cells.any():  # a very small object: use the cells it touches most
                cells = grid >= grid.max() * 0.5
            vecs = f[cells]
            t = (vecs.mean(axis=0) + vecs.max(axis=0)) / 2.0
            targets.append(t / (np.linalg.norm(t) + 1e-12))
            feats.append(f)
            grids.append(grid >= 0.5)
        target = np.mean(targets, axis=0)
        self.target = (target / (np.linalg.norm(target) + 1e-12)).astype(np.float32)
        # threshold on the z-score that best reproduces the references' own masks (mean IoU over refs)
        zs = [_z_scores(f, self.target) for f in feats]
        best_iou, best_t = -1.0, 0.0
        for t in np.linspace(-2.0, 3.0, 101):
            iou = float(np.mean([mask_iou(z > t, g) for z, g in zip(zs, grids)]))
            if iou > best_iou:
                best_iou, best_t = iou, float(t)
        self.z_threshold, self.reference_iou = best_t, best_iou
        return self

    def probability(self, bgr: np.ndarray) -> np.ndarray:
        """HxWx3 uint8 BGR -> RxR float32 foreground probability in [0, 1]."""
        if self.target is None:
            raise ForegroundError("call fit() with reference images before segmenting")
        z = _z_scores(self.features(bgr), self.target)
        return (1.0 / (1.0 + np.exp(-self.config.sharpness * (z - self.z_threshold)))).astype(np.float32)

    def segment(self, bgr: np.ndarray) -> ForegroundResult:
        """HxWx3 uint8 BGR -> ForegroundResult(mask HxW uint8 {0,255}, confidence, probability RxR)."""
        cfg = self.config
        prob_grid = self.probability(bgr)
        g = cfg.grabcut_size
        small = cv2.resize(bgr, (g, g), interpolation=cv2.INTER_AREA if min(bgr.shape[:2]) > g else cv2.INTER_LINEAR)
        prob = cv2.resize(prob_grid, (g, g), interpolation=cv2.INTER_LINEAR)
        seeds = np.full((g, g), cv2.GC_PR_BGD, np.uint8)
        seeds[prob > 0.5] = cv2.GC_PR_FGD
        seeds[prob > cfg.sure_fg] = cv2.GC_FGD
        seeds[prob < cfg.sure_bg] = cv2.GC_BGD
        coarse = prob > 0.5
        has_fg = np.isin(seeds, (cv2.GC_FGD, cv2.GC_PR_FGD)).any()
        has_bg = np.isin(seeds, (cv2.GC_BGD, cv2.GC_PR_BGD)).any()
        if has_fg and has_bg:
            bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
            cv2.grabCut(small, seeds, None, bgd, fgd, cfg.grabcut_iters, cv2.GC_INIT_WITH_MASK)
            refined = np.isin(seeds, (cv2.GC_FGD, cv2.GC_PR_FGD))
        else:  # GrabCut needs both classes; a map that is all one side is returned as is (low confidence)
            refined = coarse
        keep = largest_component(refined, cfg.fill_holes)
        confidence = self._confidence(prob, coarse, keep > 0)
        h, w = bgr.shape[:2]
        full = cv2.resize(keep * 255, (w, h), interpolation=cv2.INTER_LINEAR)
        mask = np.where(full >= 128, 255, 0).astype(np.uint8)
        return ForegroundResult(mask=mask, confidence=confidence, probability=prob_grid)

    @staticmethod
    def _confidence(prob: np.ndarray, coarse: np.ndarray, final: np.ndarray) -> float:
        """Agreement of the similarity map with the refined mask, in [0, 1].

        The product of (a) the IoU between the thresholded probability and the final mask and (b) the
        contrast mean(prob inside) - mean(prob outside). A clean, well-separated object scores near 1; a
        mask GrabCut had to invent, or a flat map, scores low.
        """
        if not final.any() or final.all():
            return 0.0
        contrast = float(prob[final].mean() - prob[~final].mean())
        return float(np.clip(mask_iou(coarse, final) * max(contrast, 0.0), 0.0, 1.0))


BOX_WORK_SIDE = 512  # box_mask runs GrabCut on the image scaled to at most this side
BOX_ITERS = 5  # GrabCut iterations of box_mask


def parse_box(text: str) -> tuple[int, int, int, int]:
    """"X,Y,W,H" (whole pixels: left, top, width, height) -> (x, y, w, h); ForegroundError otherwise."""
    try:
        x, y, w, h = (int(v) for v in text.split(","))
    except ValueError:
        raise ForegroundError(f"--ref-box {text!r}: expected X,Y,W,H in whole pixels, e.g. 40,60,300,200") from None
    return x, y, w, h


def check_box(box: tuple[int, int, int, int], width: int, height: int, name: str = "reference") -> None:
    """ForegroundError unless the box (x, y, w, h) lies inside a width x height image, is at least 8 px on
    each side and leaves some of the image outside it (GrabCut learns the background there)."""
    x, y, w, h = box
    text = f"{x},{y},{w},{h}"
    if w < 8 or h < 8:
        raise ForegroundError(f"{name}: --ref-box {text} is too small (width and height must be >= 8 px)")
    if x < 0 or y < 0 or x + w > width or y + h > height:
        raise ForegroundError(f"{name}: --ref-box {text} reaches outside the {width}x{height} image "
                              f"(need 0 <= X, 0 <= Y, X + W <= {width}, Y + H <= {height})")
    if w >= width and h >= height:
        raise ForegroundError(f"{name}: --ref-box {text} covers the whole image; leave some background outside it")


def box_mask(image: np.ndarray, box: tuple[int, int, int, int], iters: int = BOX_ITERS,
             work_side: int = BOX_WORK_SIDE) -> np.ndarray:
    """Foreground mask of the object inside a box, by GrabCut seeded from the box (GC_INIT_WITH_RECT).

    image: HxWx3 uint8 BGR; box: (x, y, w, h) in pixels of the image (check_box). GrabCut runs on the image
    scaled to at most `work_side`; the largest component is kept, holes filled. Returns HxW uint8 {0, 255}.
    """
    h, w = image.shape[:2]
    check_box(box, w, h)
    scale = min(1.0, work_side / max(h, w))
    small = cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA) \
        if scale < 1.0 else image
    sh, sw = small.shape[:2]
    x, y, bw, bh = box
    x0, y0 = int(np.floor(x * scale)), int(np.floor(y * scale))
    x1, y1 = min(sw, int(np.ceil((x + bw) * scale))), min(sh, int(np.ceil((y + bh) * scale)))
    seeds = np.zeros((sh, sw), np.uint8)
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.grabCut(small, seeds, (x0, y0, x1 - x0, y1 - y0), bgd, fgd, iters, cv2.GC_INIT_WITH_RECT)
    keep = largest_component(np.isin(seeds, (cv2.GC_FGD, cv2.GC_PR_FGD)), fill_holes=True)
    full = cv2.resize(keep * 255, (w, h), interpolation=cv2.INTER_LINEAR) if scale < 1.0 else keep * 255
    mask = np.where(full >= 128, 255, 0).astype(np.uint8)
    outside = np.ones((h, w), bool)
    outside[y : y + bh, x : x + bw] = False
    mask[outside] = 0  # nothing outside the box, whatever the rescaling did at its edge
    return mask


def load_references(images: Sequence[str | Path], masks: Sequence[str | Path] = (),
                    boxes: Sequence[str] = ()) -> list[tuple[np.ndarray, np.ndarray]]:
    """Read reference pairs: images (any format read_image accepts), each with its mask file, or each with a
    box "X,Y,W,H" around the object (box_mask makes the mask). Masks and boxes are not mixed."""
    if masks and boxes:
        raise ForegroundError("give each --ref either a --ref-mask or a --ref-box, not both kinds")
    if not images:
        raise ForegroundError("at least one --ref image with its --ref-mask or --ref-box is needed")
    given, kind = (boxes, "--ref-box") if boxes else (masks, "--ref-mask")
    if len(images) != len(given):
        raise ForegroundError(f"got {len(images)} reference images but {len(given)} {kind}; pair each --ref with "
                              "a --ref-mask (or each with a --ref-box)")
    pairs = []
    for img_path, item in zip(images, given):
        image = read_image(img_path)
        if boxes:
            box = parse_box(str(item))
            check_box(box, image.shape[1], image.shape[0], str(img_path))
            mask = box_mask(image, box)
        else:
            mask = read_mask(item)
        check_reference(image, mask, str(img_path))
        pairs.append((image, mask))
    return pairs
