"""Evaluation of a checkpoint on a split: metrics, decisions at its thresholds, risk-coverage, and heatmap
overlays with the chosen boxes (`mgfen-eval`).

    report = evaluate_checkpoint(Path("runs/x/best.pt"), Path("data"), split="test", out=Path("runs/x/eval"))
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from edge_runtime.names import POSITIVE_CLASS
from edge_runtime.roi import Thresholds
from train.data.folders import select_split
from train.evaluate import risk_coverage
from train.evaluate.metrics import classification_report
from train.evaluate.predict import make_loader, predict, resolve_device
from train.fit.threshold_stats import recall_claim
from train.fit.thresholds import (COUNTERFEIT, DEFAULT_TARGET_RECALL, GENUINE, N_RESAMPLES, decision_metrics, decisions,
                                  expected_at)
from train.model.checkpoint import load_checkpoint

REPORT_NAME = "report.json"


def overlay(frame: np.ndarray, heatmap: np.ndarray, boxes: np.ndarray, title: str = "", size: int = 512) -> np.ndarray:
    """frame F x F x 3 uint8 RGB, heatmap [1,h,w] in [0,1], boxes [K,4] normalised -> size x size x 3
    uint8 BGR picture: the frame with the heatmap blended in (jet) and the boxes drawn, numbered by rank."""
    base = cv2.cvtColor(cv2.resize(frame, (size, size), interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2BGR)
    heat = cv2.resize(np.clip(heatmap[0], 0, 1).astype(np.float32), (size, size), interpolation=cv2.INTER_LINEAR)
    span = float(heat.max() - heat.min())
    norm = (heat - heat.min()) / span if span > 1e-8 else np.zeros_like(heat)
    colour = cv2.applyColorMap((norm * 255).astype(np.uint8), cv2.COLORMAP_JET)
    out = cv2.addWeighted(base, 0.6, colour, 0.4, 0)
    for rank, (x1, y1, x2, y2) in enumerate(np.asarray(boxes).reshape(-1, 4)):
        p1 = (int(round(x1 * size)), int(round(y1 * size)))
        p2 = (int(round(x2 * size)) - 1, int(round(y2 * size)) - 1)
        cv2.rectangle(out, p1, p2, (255, 255, 255), 2)
        cv2.putText(out, str(rank + 1), (p1[0] + 3, p1[1] + 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1)
    if title:
        cv2.putText(out, title, (6, size - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1)
    return out


def checkpoint_thresholds(info: dict) -> tuple[Thresholds, dict]:
    """The decision thresholds of a checkpoint's info dict and where they come from: (Thresholds,
    {"genuine_at", "counterfeit_at", "source", "fit"}). Checkpoints made before thresholds were fitted carry
    Thresholds()' defaults and no fit record."""
    th = Thresholds(**info["thresholds"]) if info.get("thresholds") else Thresholds()
    fit = info.get("threshold_fit")
    source = ("fitted on val for counterfeit recall {target_recall} and precision {target_precision} "
              "({n_counterfeit} counterfeit, {n_genuine} genuine val images; genuine_at {genuine_method}, "
              "counterfeit_at {counterfeit_method})".format(**fit) if fit
              else "the checkpoint's thresholds (no fit record: the defaults unless set by hand)")
    return th, {"genuine_at": th.genuine_at, "counterfeit_at": th.counterfeit_at, "source": source, "fit": fit}


def decision_report(is_counterfeit: np.ndarray, p_counterfeit: np.ndarray, thresholds: Thresholds,
                    groups: Sequence[str] | None = None, target_recall: float = DEFAULT_TARGET_RECALL,
                    seed: int = 0) -> dict:
    """Accuracy on decided items, coverage and counterfeit recall at `thresholds`; their 95% intervals over
    bootstrap resamples of the set (by group when `groups` is given; "expected"); the Clopper-Pearson
    recall claim from its counterfeits ("recall_claim", against `target_recall`); and the risk-coverage
    curve and table (train.evaluate.risk_coverage). is_counterfeit: [N] bool; p_counterfeit: [N] float;
    groups: [N] str or None."""
    at = decision_metrics(is_counterfeit, p_counterfeit, thresholds)
    n_cf = int(np.asarray(is_counterfeit, dtype=bool).sum())
    return {"at_thresholds": at,
            "expected": {**expected_at(is_counterfeit, p_counterfeit, thresholds, groups, seed=seed),
                         "n_resamples": N_RESAMPLES, "by": "item" if groups is None else "group"},
            "recall_claim": recall_claim(n_cf, n_cf - at["counterfeit_missed"], target_recall),
            "risk_coverage": {"table": risk_coverage.table(is_counterfeit, p_counterfeit),
                              "curve": risk_coverage.curve(is_counterfeit, p_counterfeit)}}


def evaluate_checkpoint(
    ckpt: Path,
    data: Path,
    split: str = "test",
    out: Path | None = None,
    device: str = "cpu",
    batch: int = 8,
    samples: int = 8,
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """Metrics of a checkpoint on one split of a data folder (or "all"): classification metrics, and at the
    checkpoint's decision thresholds accuracy on decided items, coverage and counterfeit recall, plus the
    risk-coverage curve. With `out`, writes report.json, risk_coverage.png, risk_coverage.md and heatmap
    overlays overlay_XX.png of the first `samples` images. Returns the report dict."""
    dev = resolve_device(device)
    model, info = load_checkpoint(ckpt, map_location="cpu")
    model.to(dev)
    classes = list(info["classes"])
    index, chosen = select_split(data, split, classes, seed)
    loader = make_loader(index.root, chosen, model.cfg.preprocess, batch)
    pred = predict(model, loader, dev, keep=samples, progress=progress)
    positive = classes.index(POSITIVE_CLASS) if POSITIVE_CLASS in classes else len(classes) - 1
    thresholds, threshold_info = checkpoint_thresholds(info)
    p_cf = pred.probs[:, positive] if len(pred.probs) else np.zeros(0)
    report = {
        "checkpoint": str(ckpt),
        "data": str(data),
        "split": split,
        "classes": classes,
        "model_config": model.cfg.to_dict(),
        "metrics": classification_report(pred.labels, pred.probs),
        "loss": pred.loss,
        "thresholds": threshold_info,
        "decisions": decision_report(pred.labels == positive, p_cf, thresholds, [s.group for s in chosen],
                                     float((threshold_info["fit"] or {}).get("target_recall", DEFAULT_TARGET_RECALL))),
        "overlays": [],
    }
    names = {GENUINE: "genuine", COUNTERFEIT: "counterfeit"}
    calls = [names.get(int(d), "uncertain") for d in decisions(p_cf, thresholds)]
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        for i in range(len(pred.frames)):
            entry = {"file": f"overlay_{i:02d}.png", "image": chosen[i].path, "true": classes[pred.labels[i]],
                     "pred": classes[int(pred.probs[i].argmax())], "p_counterfeit": float(p_cf[i]),
                     "decision": calls[i]}
            title = f"{entry['image']}  true={entry['true']}  P(cf)={entry['p_counterfeit']:.2f} -> {entry['decision']}"
            cv2.imwrite(str(out / entry["file"]), overlay(pred.frames[i], pred.heatmaps[i], pred.boxes[i], title))
            report["overlays"].append({**entry, "boxes": pred.boxes[i].tolist()})
        rc = report["decisions"]
        risk_coverage.draw(rc["risk_coverage"]["curve"], out / "risk_coverage.png", fitted=rc["at_thresholds"],
                           title=f"{split}, n {len(p_cf)}")
        (out / "risk_coverage.md").write_text(
            risk_coverage.format_table(rc["risk_coverage"]["table"], fitted=rc["at_thresholds"]) + "\n")
        write_report(report, out)
    return report


def write_report(report: dict, out: Path) -> Path:
    """Write `report` as out / REPORT_NAME (again after mgfen-eval adds its --baselines and --ood parts);
    returns the path."""
    path = Path(out) / REPORT_NAME
    path.write_text(json.dumps(report, indent=2))
    return path
