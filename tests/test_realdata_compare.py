"""benchmarks/realdata_compare.py: per-split AUC differences of two realdata.json runs, only what both share."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import realdata_compare  # noqa: E402


def _run(aucs: dict[str, list[float]]) -> dict:
    """A realdata.json-shaped dict: {dataset: [mgfen AUC per split]}, no-parts 0.1 lower."""
    return {"results": [{"dataset": name, "splits": [
        {"seed": s, "models": {"mgfen": {"roc_auc": a}, "no-parts": {"roc_auc": a - 0.1}, "probe": {"roc_auc": 0.5}}}
        for s, a in enumerate(values)]} for name, values in aucs.items()]}


def test_differences_per_split_and_summary():
    a = _run({"d1": [0.80, 0.90, 0.61], "only_a": [0.5]})
    b = _run({"d1": [0.85, 0.88]})  # two of A's three splits
    text = realdata_compare.compare(a, b, ("lab", "ycrcb"))
    assert "| d1 | mgfen | 0 | 0.800 | 0.850 | +0.050 |" in text
    assert "| d1 | mgfen | 1 | 0.900 | 0.880 | -0.020 |" in text
    assert "0.610" not in text and "only_a" not in text and "probe" not in text
    assert "| d1 | no-parts | 2 | 0.750 | 0.765 | +0.015 +- 0.049 | 1 of 2 |" in text


def test_nothing_shared_and_unreadable_files_are_one_line_errors(tmp_path):
    with pytest.raises(SystemExit, match="share no dataset"):
        realdata_compare.compare(_run({"x": [0.5]}), _run({"y": [0.5]}), ("a", "b"))
    good = tmp_path / "a.json"
    good.write_text(json.dumps(_run({"x": [0.5]})))
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(SystemExit, match="bad.json: not a readable realdata.json"):
        realdata_compare.main([str(good), str(tmp_path / "bad.json")])
    realdata_compare.main([str(good), str(good), "--names", "p,q", "--out", str(tmp_path / "t.md")])
    assert "| x | mgfen | 0 | 0.500 | 0.500 | +0.000 |" in (tmp_path / "t.md").read_text()
