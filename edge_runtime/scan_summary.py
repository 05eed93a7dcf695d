"""The end-of-run summary of `mgfen-scan run`: counts, latency per stage (p50 / p90 ms), and with labels
accuracy, coverage and the confusion table of truth against the four verdicts."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge_runtime.model_runner import STAGES
from edge_runtime.novelty import UNKNOWN

SUMMARY_STAGES = ("capture", "gate") + STAGES + ("total",)
VERDICT_COLUMNS = ("genuine", "counterfeit", "uncertain", UNKNOWN)


def percentiles(values: list[float]) -> dict:
    """{"p50", "p90"} of `values` (ms), rounded to 3 decimals; None for both when there are none."""
    if not values:
        return {"p50": None, "p90": None}
    arr = np.asarray(values, dtype=np.float64)
    return {"p50": round(float(np.percentile(arr, 50)), 3), "p90": round(float(np.percentile(arr, 90)), 3)}


def summarise(verdicts: list[dict], timings: list[dict], stats, wall_s: float, labels: dict | None,
              classes: tuple[str, ...]) -> dict:
    """End-of-run numbers: counts, latency per stage, and with labels accuracy + confusion matrix."""
    out = {"frames": stats.frames, "classified": stats.classified, "retakes": stats.retakes,
           "verdicts": stats.verdicts, "errors": stats.errors, "errors_by_where": stats.errors_by_where,
           "sink_errors": stats.sink_errors, "wall_s": round(wall_s, 3),
           "fps": round(stats.frames / wall_s, 2) if wall_s > 0 else None,
           "latency_ms": {k: percentiles([t[k] for t in timings]) for k in SUMMARY_STAGES},
           "by_verdict": {c: sum(1 for v in verdicts if v["verdict"] == c) for c in VERDICT_COLUMNS}}
    if labels is None:
        return out
    confusion = {c: {v: 0 for v in VERDICT_COLUMNS} for c in classes}
    unlabelled = 0
    for v in verdicts:
        truth = labels.get(str(Path(v["item"]).resolve())) if v.get("item") else None
        if truth is None:
            unlabelled += 1
            continue
        confusion[truth][v["verdict"]] += 1
    n = sum(sum(row.values()) for row in confusion.values())
    correct = sum(confusion[c][c] for c in classes if c in VERDICT_COLUMNS)
    decided = n - sum(row["uncertain"] + row[UNKNOWN] for row in confusion.values())
    out.update(labelled=n, unlabelled=unlabelled, accuracy=round(correct / n, 4) if n else None,
               coverage=round(decided / n, 4) if n else None,
               accuracy_decided=round(correct / decided, 4) if decided else None, confusion=confusion)
    return out


def format_summary(s: dict) -> str:
    """The summary as the lines `mgfen-scan run` prints at the end."""
    lines = [f"frames {s['frames']}  classified {s['classified']}  retakes {s['retakes']}  "
             f"verdicts {s['verdicts']}  errors {s['errors']}  {s['fps']} frames/s over {s['wall_s']} s"]
    if "by_verdict" in s:
        lines.append("verdicts: " + "  ".join(f"{c} {n}" for c, n in s["by_verdict"].items()))
    if "backends" in s:
        lines.append("backends: " + ", ".join(s["backends"]))
    lines.append("latency ms    p50      p90")
    for stage, p in s["latency_ms"].items():
        if p["p50"] is not None:
            lines.append(f"  {stage:<10} {p['p50']:>7.2f}  {p['p90']:>7.2f}")
    if "confusion" in s:
        acc = "n/a" if s["accuracy"] is None else f"{s['accuracy']:.4f}"
        lines.append(f"accuracy {acc} over {s['labelled']} labelled items (uncertain and unknown count as wrong); "
                     f"coverage {s['coverage']}; accuracy on decided {s['accuracy_decided']}; "
                     f"unlabelled {s['unlabelled']}")
        lines.append("confusion (rows: truth)  " + "  ".join(f"{c:>11}" for c in VERDICT_COLUMNS))
        for truth, row in s["confusion"].items():
            lines.append(f"  {truth:<22} " + "  ".join(f"{row[c]:>11}" for c in VERDICT_COLUMNS))
    return "\n".join(lines)
