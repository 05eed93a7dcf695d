"""The annotated preview the live page shows: ROI boxes, heatmap and a verdict banner drawn with OpenCV.

The scanner calls `preview_jpeg` every few frames and hands the bytes to `HttpSink.update_preview`.
"""

from __future__ import annotations

import threading
import time

import cv2
import numpy as np

from edge_runtime.errors import ImageError
from edge_runtime.preprocess import square_crop_box

# BGR colours of the banner, one per decision; anything else (e.g. "scanning") is grey.
DECISION_COLOURS: dict[str, tuple[int, int, int]] = {
    "genuine": (60, 160, 40),
    "counterfeit": (40, 40, 210),
    "uncertain": (0, 170, 230),
    "unknown": (170, 60, 120),
}
OTHER_COLOUR = (110, 110, 110)
BOX_COLOUR = (255, 220, 0)
HEATMAP_ALPHA = 0.45


def _check_frame(frame_bgr: np.ndarray) -> np.ndarray:
    frame = np.asarray(frame_bgr)
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3 or min(frame.shape[:2]) < 1:
        raise ImageError(f"preview needs an HxWx3 uint8 BGR frame, got {frame.dtype} {frame.shape}")
    return frame


def _overlay_heatmap(out: np.ndarray, heatmap: np.ndarray) -> None:
    """Blend a JET-coloured heatmap into the centred square the model saw (in place), weighted by the
    heatmap so cold regions keep the camera image."""
    heat = np.asarray(heatmap, dtype=np.float32)
    heat = np.squeeze(heat)
    if heat.ndim != 2 or heat.size == 0:
        raise ImageError(f"heatmap must be hxw (any leading 1s allowed), got shape {np.shape(heatmap)}")
    heat = np.clip(np.nan_to_num(heat, nan=0.0), 0.0, 1.0)
    x0, y0, side = square_crop_box(*out.shape[:2])
    heat = cv2.resize(heat, (side, side), interpolation=cv2.INTER_LINEAR)
    colour = cv2.applyColorMap((heat * 255.0).astype(np.uint8), cv2.COLORMAP_JET).astype(np.float32)
    region = out[y0 : y0 + side, x0 : x0 + side].astype(np.float32)
    weight = (HEATMAP_ALPHA * heat)[..., None]
    out[y0 : y0 + side, x0 : x0 + side] = np.clip(region * (1.0 - weight) + colour * weight, 0, 255).astype(
        np.uint8
    )


def _draw_boxes(out: np.ndarray, boxes: np.ndarray, box_scores: np.ndarray, scale: float) -> None:
    thickness = max(1, int(round(2 * scale)))
    font_scale = 0.45 * scale
    h, w = out.shape[:2]
    for i, (x1, y1, x2, y2) in enumerate(boxes):
        if not np.all(np.isfinite([x1, y1, x2, y2])):
            continue
        p1 = (int(np.clip(round(x1), 0, w - 1)), int(np.clip(round(y1), 0, h - 1)))
        p2 = (int(np.clip(round(x2), 0, w - 1)), int(np.clip(round(y2), 0, h - 1)))
        cv2.rectangle(out, p1, p2, BOX_COLOUR, thickness, cv2.LINE_AA)
        if i < len(box_scores):
            label = f"{i + 1}: {float(box_scores[i]):.2f}"
            org = (p1[0] + thickness + 1, max(p1[1] - thickness - 2, int(14 * scale)))
            cv2.putText(out, label, org, cv2.FONT_HERSHEY_SIMPLEX, font_scale, (0, 0, 0), thickness + 2,
                        cv2.LINE_AA)
            cv2.putText(out, label, org, cv2.FONT_HERSHEY_SIMPLEX, font_scale, BOX_COLOUR, thickness,
                        cv2.LINE_AA)


def _draw_banner(out: np.ndarray, decision: str, probability: float, scale: float) -> None:
    colour = DECISION_COLOURS.get(decision, OTHER_COLOUR)
    height = max(12, int(round(34 * scale)))
    out[:height] = (0.25 * out[:height] + 0.75 * np.array(colour, np.float32)).astype(np.uint8)
    p = "n/a" if probability is None or not np.isfinite(probability) else f"{float(probability):.3f}"
    text = f"{decision.upper()}  p(counterfeit)={p}"
    thickness = max(1, int(round(2 * scale)))
    cv2.putText(out, text, (int(8 * scale), int(height * 0.72)), cv2.FONT_HERSHEY_SIMPLEX, 0.7 * scale,
                (255, 255, 255), thickness, cv2.LINE_AA)


def annotate_preview(
    frame_bgr: np.ndarray,
    boxes: np.ndarray,
    box_scores: np.ndarray,
    heatmap: np.ndarray | None,
    decision: str,
    probability: float,
) -> np.ndarray:
    """Draw the scanner's evidence onto a copy of the camera frame.

    frame_bgr: HxWx3 uint8 BGR camera frame (the source frame, not the model's square).
    boxes: Kx4 float x1, y1, x2, y2 in source pixels (edge_runtime.roi.boxes_to_source_pixels); K may be 0.
    box_scores: K floats, drawn next to each box.
    heatmap: hxw float in [0,1] over the model's square frame (placed over the centred square crop of the
        source, as prepare_frame took it), or None for no overlay.
    decision: "genuine" | "counterfeit" | "uncertain" | "unknown" (coloured banner) or any other word (grey banner).
    probability: p(counterfeit) shown in the banner.
    Returns a new HxWx3 uint8 BGR image; the input is not modified.
    """
    out = _check_frame(frame_bgr).copy()
    boxes_arr = np.asarray(boxes, dtype=np.float32).reshape(-1, 4) if np.size(boxes) else np.zeros((0, 4))
    scores_arr = np.asarray(box_scores, dtype=np.float32).reshape(-1)
    scale = max(out.shape[:2]) / 640.0
    if heatmap is not None:
        _overlay_heatmap(out, heatmap)
    _draw_boxes(out, boxes_arr, scores_arr, scale)
    _draw_banner(out, str(decision), probability, scale)
    return out


def encode_jpeg(image_bgr: np.ndarray, quality: int = 80) -> bytes:
    """HxWx3 uint8 BGR -> JPEG bytes."""
    ok, buf = cv2.imencode(".jpg", _check_frame(image_bgr), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ImageError("OpenCV could not encode the preview as JPEG")
    return buf.tobytes()


def preview_jpeg(
    frame_bgr: np.ndarray,
    boxes: np.ndarray,
    box_scores: np.ndarray,
    heatmap: np.ndarray | None,
    decision: str,
    probability: float,
    max_side: int = 640,
    quality: int = 80,
) -> bytes:
    """Downscale the frame so its longer side is at most max_side (boxes scaled with it), annotate it
    (annotate_preview) and encode it as JPEG bytes for HttpSink.update_preview."""
    frame = _check_frame(frame_bgr)
    h, w = frame.shape[:2]
    factor = min(1.0, float(max_side) / max(h, w))
    if factor < 1.0:
        size = (max(1, int(round(w * factor))), max(1, int(round(h * factor))))
        frame = cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
        # square_crop_box of the resized frame matches the scaled crop up to rounding of one pixel.
        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4) * np.float32(factor)
    return encode_jpeg(annotate_preview(frame, boxes, box_scores, heatmap, decision, probability), quality)


class PreviewFeeder:
    """A sink that turns the scanner's frames into annotated JPEGs for a live page, off the frame loop.

    The scanner calls `preview(frame_bgr, heatmap, event)` after each frame event. At most once per
    `interval_s` the frame is downscaled here (a new array, so the scanner's buffer is never kept), and a
    worker thread annotates and encodes it and hands the bytes to `update(jpeg)` (HttpSink.update_preview).
    Only the newest pending frame is kept. emit() ignores events; close() stops the worker.
    """

    def __init__(self, update, interval_s: float = 0.2, max_side: int = 640, quality: int = 80) -> None:
        if interval_s <= 0 or max_side < 16 or not 1 <= quality <= 100:
            raise ImageError("preview interval must be > 0, max_side >= 16 and JPEG quality in 1..100")
        self._update = update
        self._interval = float(interval_s)
        self._max_side = int(max_side)
        self._quality = int(quality)
        self._last = float("-inf")
        self._cond = threading.Condition()
        self._job: tuple | None = None
        self._closed = False
        self.encoded = 0
        self.failures = 0
        self._thread = threading.Thread(target=self._run, name="mgfen-preview", daemon=True)
        self._thread.start()

    def emit(self, event: dict) -> None:
        """Events are the other sinks' business."""

    def preview(self, frame_bgr: np.ndarray, heatmap: np.ndarray | None, event: dict) -> None:
        """frame_bgr: HxWx3 uint8 BGR source frame; heatmap: hxw float in [0,1] or None; event: the frame
        event (boxes in source pixels, box_scores, decision, probability). Cheap unless a preview is due."""
        now = time.monotonic()
        if now - self._last < self._interval or self._closed:
            return
        self._last = now
        frame = _check_frame(frame_bgr)
        h, w = frame.shape[:2]
        factor = min(1.0, self._max_side / max(h, w))
        if factor < 1.0:
            small = cv2.resize(frame, (max(1, round(w * factor)), max(1, round(h * factor))),
                               interpolation=cv2.INTER_AREA)
        else:
            small = frame.copy()
        raw_boxes, raw_scores = event.get("boxes"), event.get("box_scores")
        boxes = np.asarray(raw_boxes if raw_boxes is not None else [], np.float32).reshape(-1, 4) * factor
        job = (small, boxes, np.asarray(raw_scores if raw_scores is not None else [], np.float32),
               None if heatmap is None else np.array(heatmap, dtype=np.float32),
               str(event.get("decision", "")), event.get("probability"))
        with self._cond:
            self._job = job
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._job is None and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                job, self._job = self._job, None
            small, boxes, scores, heat, decision, probability = job
            try:
                p = float(probability) if probability is not None else float("nan")
                self._update(encode_jpeg(annotate_preview(small, boxes, scores, heat, decision, p), self._quality))
                self.encoded += 1
            except Exception:  # a bad frame must not end the previews; counted for diagnosis
                self.failures += 1

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout=5.0)
