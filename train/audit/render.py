"""Rendering of an audit report (train.audit.folder_audit.audit_folder's dict): text for the terminal, Markdown, and a
picture of per-class histograms drawn with OpenCV; write_audit puts audit.json, audit.md and audit.png
in a folder."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from train.audit.image_stats import HASH_BITS

HIST_FIELDS = (("width", "width (px)"), ("height", "height (px)"), ("jpeg_quality", "JPEG quality (JPEG files)"),
               ("bytes_per_pixel", "bytes per pixel"), ("brightness", "brightness (L*/100)"))
_CLASS_BGR = ((60, 160, 60), (40, 40, 210))  # class 0 green, class 1 red
_PANEL = (420, 240)  # width, height of one histogram panel
_BINS = 20


def _range(s: dict | None, fmt: str = "{:.4g}") -> str:
    if s is None:
        return "-"
    if s["min"] == s["max"]:
        return fmt.format(s["median"])
    return f"{fmt.format(s['median'])} [{fmt.format(s['min'])}-{fmt.format(s['max'])}]"


def _counts(d: dict, top: int = 3) -> str:
    items = list(d.items())
    text = ", ".join(f"{k} {v}" for k, v in items[:top])
    return (text + f", +{len(items) - top} more") if len(items) > top else (text or "-")


def _ci(value: float | None, ci: list | None, pct: bool = False) -> str:
    if value is None:
        return "-"
    k = 100.0 if pct else 1.0
    f = "{:.1f}" if pct else "{:.3f}"
    return f.format(k * value) + (f" [{f.format(k * ci[0])}, {f.format(k * ci[1])}]" if ci else "")


def metadata_rows(report: dict) -> list[tuple[str, ...]]:
    """(field, value per class...) rows of the per-class metadata table."""
    meta = [report["metadata"][c] for c in report["classes"]]
    return [
        ("images", *[str(m["n"]) for m in meta]),
        ("width", *[_range(m["width"]) for m in meta]),
        ("height", *[_range(m["height"]) for m in meta]),
        ("aspect", *[_range(m["aspect"], "{:.3f}") for m in meta]),
        ("format", *[_counts(m["formats"]) for m in meta]),
        ("JPEG quality", *[_range(m["jpeg_quality"], "{:.0f}") for m in meta]),
        ("libjpeg tables", *[str(m["jpeg_standard_tables"]) for m in meta]),
        ("subsampling", *[_counts(m["subsampling"]) for m in meta]),
        ("bytes/px", *[_range(m["bytes_per_pixel"], "{:.3f}") for m in meta]),
        ("camera (EXIF)", *[_counts(m["cameras"]) for m in meta]),
    ]


def _table(rows: list[tuple[str, ...]], header: tuple[str, ...]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return ["  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [header, *rows]]


def format_text(report: dict) -> str:
    """The terminal report: counts, groups, metadata table, duplicates, baselines, verdict."""
    cls = report["classes"]
    g, dup, st = report["groups"], report["duplicates"], report["settings"]
    lines = [f"audit of {report['root']}: {report['n_images']} images, classes {' / '.join(cls)} "
             f"(positive: {report['positive_class']}); splits "
             + ("from the folder" if report["splits_declared"] else f"drawn 7:2:1 by seed {st['seed']} (as mgfen-train does)")]
    lines += _table([(sp, *[str(report["counts"][sp][c]) for c in cls]) for sp in report["counts"]], ("split", *cls))
    span = f"{len(g['spanning_splits'])} span two splits" if g["spanning_splits"] else "none spans two splits"
    lines.append(f"groups: {g['n']} ({', '.join(f'{c} {n}' for c, n in g['per_class'].items())}); {span}"
                 + (f"; {len(g['mixed_labels'])} hold both classes" if g["mixed_labels"] else ""))
    lines.append("metadata per class:")
    lines += _table(metadata_rows(report), ("", *cls))
    lines.append(f"near-duplicates (pHash, Hamming distance <= {dup['max_distance']} of {HASH_BITS} bits): "
                 f"{dup['cross_split_count']} across splits, {dup['within_split_count']} within a split "
                 f"(different groups), {dup['same_group_count']} within a group")
    for p in dup["cross_split"][:20]:
        lines.append(f"  !! CROSS-SPLIT DUPLICATE: {p['a']} ({p['splits'][0]}) ~ {p['b']} ({p['splits'][1]}), distance {p['distance']}")
    unit = "groups" if g["cv_unit"] == "group" else "images"
    lines.append(f"baselines ({st['folds']}-fold cross-validation by {unit[:-1]} over all {report['n_images']} images; "
                 f"95% bootstrap intervals resampling {unit}, {st['n_boot']} replicates):")
    lines += _table([(r["description"], _ci(r["accuracy"], r["accuracy_ci"], True), _ci(r["roc_auc"], r["roc_auc_ci"]))
                     for r in report["baselines"]], ("baseline", "accuracy %", "ROC-AUC"))
    lines.append("verdict:")
    lines += [f"  {v['level']}: {v['text']}" for v in report["verdict"]]
    return "\n".join(lines)


def format_markdown(report: dict) -> str:
    """The report as Markdown tables (audit.md)."""
    cls = report["classes"]
    dup = report["duplicates"]
    md = [f"# Data audit: `{report['root']}`", "",
          f"{report['n_images']} images, positive class **{report['positive_class']}**, {report['groups']['n']} groups; "
          f"settings `{json.dumps(report['settings'])}`; {report['seconds']} s.", "", "## Verdict", ""]
    md += [f"- **{v['level']}**: {v['text']}" for v in report["verdict"]]
    md += ["", "## Counts", "", "| split | " + " | ".join(cls) + " |", "|---" * (len(cls) + 1) + "|"]
    md += [f"| {sp} | " + " | ".join(str(report["counts"][sp][c]) for c in cls) + " |" for sp in report["counts"]]
    md += ["", "## Metadata per class", "", "| | " + " | ".join(cls) + " |", "|---" * (len(cls) + 1) + "|"]
    md += ["| " + " | ".join(r) + " |" for r in metadata_rows(report)]
    md += ["", "![per-class histograms](audit.png)", "", "## Baselines (group cross-validation, 95% intervals)", "",
           "| baseline | accuracy % | ROC-AUC |", "|---|---|---|"]
    md += [f"| {r['description']} | {_ci(r['accuracy'], r['accuracy_ci'], True)} | {_ci(r['roc_auc'], r['roc_auc_ci'])} |"
           for r in report["baselines"]]
    md += ["", f"## Near-duplicates (pHash distance <= {dup['max_distance']})", ""]
    for kind in ("cross_split", "within_split", "same_group"):
        md.append(f"- {kind.replace('_', ' ')}: {dup[f'{kind}_count']}")
        md += [f"  - `{p['a']}` ~ `{p['b']}` (distance {p['distance']})" for p in dup[kind][:50]]
    return "\n".join(md) + "\n"


def _panel(values: list[list[float]], title: str, names: list[str]) -> np.ndarray:
    w, h = _PANEL
    img = np.full((h, w, 3), 255, np.uint8)
    cv2.putText(img, title, (8, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (20, 20, 20), 1, cv2.LINE_AA)
    allv = np.concatenate([np.asarray(v, np.float64) for v in values]) if any(values) else np.zeros(0)
    if len(allv) == 0:
        cv2.putText(img, "no values", (w // 2 - 40, h // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (120, 120, 120), 1)
        return img
    lo, hi = float(allv.min()), float(allv.max())
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, _BINS + 1)
    x0, x1, y0, y1 = 10, w - 10, h - 28, 30
    hists = [np.histogram(v, edges)[0] / max(len(v), 1) for v in values]
    top = max(float(x.max()) for x in hists) or 1.0
    bw = (x1 - x0) / _BINS
    for c, hist in enumerate(hists):
        layer = img.copy()
        for b, frac in enumerate(hist):
            if frac > 0:
                ya = int(round(y0 - (y0 - y1) * frac / top))
                cv2.rectangle(layer, (int(x0 + b * bw) + 1, ya), (int(x0 + (b + 1) * bw) - 1, y0), _CLASS_BGR[c], -1)
        img = cv2.addWeighted(layer, 0.5, img, 0.5, 0)
    cv2.line(img, (x0, y0), (x1, y0), (60, 60, 60), 1)
    for text, x in ((f"{lo:.4g}", x0), (f"{hi:.4g}", x1 - 60)):
        cv2.putText(img, text, (x, h - 10), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (60, 60, 60), 1, cv2.LINE_AA)
    for c, name in enumerate(names):
        cv2.putText(img, f"{name} ({len(values[c])})", (w - 190, 18 + 16 * c), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                    _CLASS_BGR[c], 1, cv2.LINE_AA)
    return img


def histogram_picture(report: dict) -> np.ndarray:
    """HxWx3 uint8 BGR: per-class histograms (fraction of the class's images) of HIST_FIELDS, 3 per row."""
    cls = report["classes"]
    panels = []
    for key, title in HIST_FIELDS:
        values = [[im[key] for im in report["images"] if im["label"] == c and im[key] is not None] for c in cls]
        panels.append(_panel(values, title, cls))
    while len(panels) % 3:
        panels.append(np.full_like(panels[0], 255))
    rows = [np.concatenate(panels[i:i + 3], axis=1) for i in range(0, len(panels), 3)]
    return np.concatenate(rows, axis=0)


def write_audit(report: dict, out: Path) -> list[Path]:
    """Write audit.json, audit.md and audit.png into `out` (created); returns the paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "audit.json", out / "audit.md", out / "audit.png"]
    paths[0].write_text(json.dumps(report, indent=2))
    paths[1].write_text(format_markdown(report))
    ok, buf = cv2.imencode(".png", histogram_picture(report))
    if not ok:
        raise OSError("PNG encoding of the histogram picture failed")
    paths[2].write_bytes(buf.tobytes())
    return paths
