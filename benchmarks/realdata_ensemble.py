"""MGFEN averaged with the frozen-feature probe: does the ensemble beat both on the real development sets?

Issue 22 lists "ensembling with the probe" among the levers. For every dataset and split seed s this reads
MGFEN's test scores from benchmarks/realdata.py's run (RUNS/<dataset>/split<s>/mgfen/scores.json, trained
there with the defaults; nothing is trained here), fits the logistic probe on frozen ImageNet EfficientNet-Lite0
features of the train split at --probe-size (train.audit.baselines, features cached as realdata.py caches
them), and scores on test:

    mgfen              P(counterfeit) of the trained model
    probe              the probe's P
    mean P             (mgfen + probe) / 2
    mean log-odds      sigmoid of the mean of both log-odds (MGFEN's P clipped to [1e-6, 1 - 1e-6])

Accuracy at P >= 0.5 and ROC-AUC with group-bootstrap intervals per split; paired differences (each ensemble
minus MGFEN and minus the probe); means over splits. Deploying an ensemble would add a graph of the probe's
size to the bundle (at 384 px several times the edge preset's global graph): measured here first.

    python benchmarks/realdata_ensemble.py --runs runs/rd_inv --splits 3 \
        --data runs/realdata/cache/signatures_bhsig260_bengali_per_group2 --data runs/real/sneakers_aj1
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import cpu_flags, write_results  # noqa: E402
from realdata import cached_features, run_name  # noqa: E402
from train.audit.baselines import Baseline, fit_predict  # noqa: E402
from train.data.folders import index_folder  # noqa: E402
from train.evaluate.resample import paired_difference, score_with_interval  # noqa: E402

CLIP = 1e-6


def log_odds(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, np.float64), CLIP, 1.0 - CLIP)
    return np.log(p / (1.0 - p))


def ensembles(mgfen: np.ndarray, probe: np.ndarray) -> dict[str, np.ndarray]:
    """{model: [N] P(class 1)} of the four rows of the module docstring."""
    mean_lo = (log_odds(mgfen) + log_odds(probe)) / 2.0
    return {"mgfen": mgfen, "probe": probe, "mean P": (mgfen + probe) / 2.0, "mean log-odds": 1.0 / (1.0 + np.exp(-mean_lo))}


def one_split(data: Path, seed: int, runs: Path, name: str, probe_size: int, cache: Path) -> dict:
    """Scores, intervals and paired differences of one dataset split."""
    index = index_folder(data, seed=seed)
    train_s, test_s = index.split("train"), index.split("test")
    kept = json.loads((runs / name / f"split{seed}" / "mgfen" / "scores.json").read_text())
    if kept["paths"] != [s.path for s in test_s]:
        raise SystemExit(f"{name} split {seed}: the MGFEN run's test images differ from this split's")
    full = index_folder(data, seed=0)
    feats = cached_features(data, [s.path for s in full.samples], (probe_size,), cache)
    row_of = {p: i for i, p in enumerate(feats.paths)}
    probe = fit_predict(Baseline(f"probe{probe_size}", "logistic"), feats.subset([row_of[s.path] for s in train_s]),
                        np.array([s.label for s in train_s]), feats.subset([row_of[s.path] for s in test_s]))
    y, groups = np.array([s.label for s in test_s]), [s.group for s in test_s]
    models = ensembles(np.asarray(kept["scores"], np.float64), probe)
    out = {"seed": seed, "test": len(test_s), "models": {}}
    for model, p in models.items():
        row = score_with_interval(y, p, groups, seed=seed).to_dict()
        if model.startswith("mean"):
            row["minus_mgfen"] = paired_difference(y, p, models["mgfen"], groups, seed=seed)
            row["minus_probe"] = paired_difference(y, p, models["probe"], groups, seed=seed)
        out["models"][model] = row
    return out


def _ci(d: dict, key: str) -> str:
    lo, hi = d[f"{key}_ci"] or (float("nan"), float("nan"))
    return f"{d[key]:+.3f} [{lo:+.3f}, {hi:+.3f}]"


def markdown(header: str, results: dict) -> str:
    lines = [header, ""]
    for name, splits in results.items():
        models = list(splits[0]["models"])
        lines += [f"### {name}", "", "| model | accuracy % per split | mean | ROC-AUC per split | mean | "
                  "AUC minus MGFEN per split [95% CI] | AUC minus probe per split [95% CI] |", "|---|---|---|---|---|---|---|"]
        for model in models:
            rows = [s["models"][model] for s in splits]
            acc = [100 * r["accuracy"] for r in rows]
            auc = [r["roc_auc"] for r in rows if r["roc_auc"] is not None]
            diffs = ["; ".join(_ci(r[k], "roc_auc") for r in rows) if k in rows[0] else "-"
                     for k in ("minus_mgfen", "minus_probe")]
            lines.append(f"| {model} | {', '.join(f'{a:.1f}' for a in acc)} | {np.mean(acc):.1f} | "
                         f"{', '.join(f'{a:.3f}' for a in auc)} | {np.mean(auc):.3f} | {diffs[0]} | {diffs[1]} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", action="append", required=True, type=Path, help="a dataset folder as realdata.py trained on it")
    ap.add_argument("--runs", required=True, type=Path, help="benchmarks/realdata.py's --out")
    ap.add_argument("--splits", type=int, default=3)
    ap.add_argument("--probe-size", type=int, default=384)
    ap.add_argument("--cache", type=Path, default=Path("runs/realdata/cache"))
    ap.add_argument("--out", type=Path, default=Path("runs/realdata_ensemble.json"))
    args = ap.parse_args(argv)
    header = (f"MGFEN + probe ensembles ({time.strftime('%Y-%m-%d')}; {cpu_flags()}); probe at {args.probe_size} px. "
              f"Made by `python benchmarks/realdata_ensemble.py {' '.join(sys.argv[1:] if argv is None else argv)}`.")
    print(header, flush=True)
    results = {}
    for data in args.data:
        name = run_name(data)
        for seed in range(args.splits):
            if not (args.runs / name / f"split{seed}" / "mgfen" / "scores.json").is_file():
                print(f"error: {args.runs / name / f'split{seed}'}: no MGFEN scores.json (run benchmarks/realdata.py "
                      f"--out {args.runs} first)", file=sys.stderr)
                return 2
        results[name] = [one_split(data, s, args.runs, name, args.probe_size, args.cache) for s in range(args.splits)]
        print(markdown("", {name: results[name]}), flush=True)
    write_results(args.out, header, results, markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
