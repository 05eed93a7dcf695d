"""ONNX Runtime calibration readers. Both read images through edge_runtime.preprocess (the one path the
scanner uses), so the INT8 ranges are measured on exactly what the device will feed.

- GlobalReader: {image: 1x3xSxS float32 in [0,1]} per calibration frame.
- PartsReader: {crops: Kx3xRxR float32 in [0,1]} per calibration frame: the crops the FP32 global graph
  picks on that frame, cut from the full-resolution frame with edge_runtime.roi.crop_rois.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
from onnxruntime.quantization import CalibrationDataReader

from edge_runtime import names
from edge_runtime.preprocess import PreprocessConfig, global_input, load_frame
from edge_runtime.roi import crop_rois


def iter_frames(paths: list[Path], cfg: PreprocessConfig) -> Iterator[np.ndarray]:
    """F x F x 3 uint8 RGB frames of the images, in the given order, loaded one at a time."""
    for path in paths:
        yield load_frame(path, cfg)


def global_feed(frame: np.ndarray, cfg: PreprocessConfig) -> dict[str, np.ndarray]:
    """Frame F x F x 3 uint8 RGB -> {GLOBAL_INPUT: 1x3xSxS float32}."""
    return {names.GLOBAL_INPUT: global_input(frame, cfg)}


def parts_feed(frame: np.ndarray, boxes: np.ndarray, cfg: PreprocessConfig) -> dict[str, np.ndarray]:
    """Frame + boxes [1,K,4] or [K,4] normalised -> {PARTS_INPUT: Kx3xRxR float32}."""
    return {names.PARTS_INPUT: crop_rois(frame, np.asarray(boxes).reshape(-1, 4), cfg.crop_size)}


class GlobalReader(CalibrationDataReader):
    """Feeds the global graph's input for each calibration image (lazily; rewind() starts over)."""

    def __init__(self, paths: list[Path], cfg: PreprocessConfig) -> None:
        self.paths, self.cfg = list(paths), cfg
        self._it: Iterator[dict] | None = None

    def _feeds(self) -> Iterator[dict]:
        for frame in iter_frames(self.paths, self.cfg):
            yield global_feed(frame, self.cfg)

    def get_next(self) -> dict | None:
        if self._it is None:
            self._it = self._feeds()
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = None

    def __len__(self) -> int:
        return len(self.paths)


class PartsReader(GlobalReader):
    """Feeds the parts graph the crops that `global_session` (the FP32 global graph, an
    onnxruntime.InferenceSession) picks on each calibration frame."""

    def __init__(self, paths: list[Path], cfg: PreprocessConfig, global_session) -> None:
        super().__init__(paths, cfg)
        self.session = global_session

    def _feeds(self) -> Iterator[dict]:
        for frame in iter_frames(self.paths, self.cfg):
            (boxes,) = self.session.run([names.BOXES], global_feed(frame, self.cfg))
            yield parts_feed(frame, boxes, self.cfg)
