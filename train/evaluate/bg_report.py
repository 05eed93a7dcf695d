"""The background-reliance suite (train.evaluate.bg_suite) run on a checkpoint: its predictor through the
runtime preprocessing, the part boxes it picks, and the report `mgfen-eval --bg-suite` prints and writes."""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Sequence

import cv2
import numpy as np
import torch

from edge_runtime.preprocess import global_input, prepare_frame
from train.data.folders import select_split
from train.evaluate.bg_suite import (SuiteConfig, box_foreground_share, format_results, load_items, run_suite,
                                     variant_sheet)
from train.evaluate.predict import resolve_device
from train.model.checkpoint import load_checkpoint


def checkpoint_predictor(ckpt: Path, device: str = "cpu"):
    """(predict_fn, model, info): predict_fn(list of HxWx3 uint8 BGR) -> N x C softmax probabilities of the
    checkpoint's voted logits, through the runtime preprocessing (prepare_frame, global_input)."""
    dev = resolve_device(device)
    model, info = load_checkpoint(ckpt, map_location="cpu")
    model.to(dev).eval()
    pre = model.cfg.preprocess


    pool = ThreadPoolExecutor(max(1, min(8, (os.cpu_count() or 2) // 2)))  # OpenCV releases the GIL

    @torch.no_grad()
    def predict_fn(images: Sequence[np.ndarray]) -> np.ndarray:
        frames = list(pool.map(lambda b: prepare_frame(b, pre), images))
        image = torch.from_numpy(np.concatenate([global_input(f, pre) for f in frames])).to(dev)
        frame = torch.from_numpy(np.ascontiguousarray(np.stack(frames).transpose(0, 3, 1, 2))).to(dev).float().div_(255.0)
        return model(image, frame)["logits"].float().softmax(1).cpu().numpy()

    return predict_fn, model, info


def predict_boxes(model, images: Sequence[np.ndarray], batch: int = 8) -> np.ndarray:
    """The part boxes a checkpoint's model picks on each image: N x K x 4 normalised x1,y1,x2,y2 float32
    (images HxWx3 uint8 BGR, through the runtime preprocessing)."""
    pre = model.cfg.preprocess
    dev = next(model.parameters()).device
    out = []
    with torch.no_grad():
        for i in range(0, len(images), batch):
            image = np.concatenate([global_input(prepare_frame(b, pre), pre) for b in images[i:i + batch]])
            out.append(model.global_forward(torch.from_numpy(image).to(dev))[2].float().cpu().numpy())
    return np.concatenate(out)


def bg_suite_report(
    ckpt: Path,
    data: Path,
    split: str = "test",
    out: Path | None = None,
    device: str = "cpu",
    batch: int = 8,
    adversarial_m: int = 10,
    blend: str = "hard",
    background_source: str = "auto",
    masks: Path | None = None,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Background-reliance suite of a checkpoint on one split (train.evaluate.bg_suite). With `out`, writes
    bg_suite.json, bg_suite.md and bg_variants.png there; `progress` is given one line per step. Returns
    the result dict."""
    predict_fn, model, info = checkpoint_predictor(ckpt, device)
    classes = list(info["classes"])
    index, samples = select_split(data, split, classes, seed)
    cfg = SuiteConfig(work_size=model.cfg.preprocess.frame_size, adversarial_m=adversarial_m, blend=blend,
                      background_source=background_source, seed=seed, batch=batch)
    items = load_items(index.root, samples, cfg.work_size, masks)
    result = run_suite(items, predict_fn, cfg, len(classes), progress=progress)
    if model.cfg.use_parts:
        boxes = predict_boxes(model, [it.image for it in items], batch)
        result["boxes_on_item"] = box_foreground_share(boxes, [it.mask for it in items])
    result.update({"checkpoint": str(ckpt), "data": str(data), "split": split, "classes": classes})
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "bg_suite.json").write_text(json.dumps(result, indent=2) + "\n")
        (out / "bg_suite.md").write_text(format_results(result) + "\n")
        cv2.imwrite(str(out / "bg_variants.png"), variant_sheet(items, cfg, len(classes)))
    return result
