"""Where the novelty threshold should come from, measured on trained real-data models: in-domain test frames
refused (target: the rate, 2%) against out-of-domain frames refused, for each threshold rule, over every
split of benchmarks/realdata.py's runs.

The table (mean, shrunk covariance) is the one training fits, on the train split's pooled global features;
only the threshold differs between rules, each the (1 - rate) quantile of:

    val                 the val scores (training's rule when val holds >= 1 / rate images)
    heldout, by index   held-out train scores, folds by index (training's fallback for a small val)
    heldout, by group   held-out train scores, folds by group (no image scored by a fit that saw its item)
    val + heldout       the val scores and the by-group held-out train scores together
    ..., conformal      the same scores, but the k-th smallest, k = ceil((n + 1) (1 - rate)) (at most n), instead
                        of numpy's interpolated quantile: a new in-domain frame then exceeds it with probability
                        (n + 1 - k) / (n + 1) <= rate, where the interpolated one refuses about 2 / (n + 1) more
                        than the rate when n is a few dozen (3.8% instead of 2% at n = 52)

With --min-shrinkage A,B,... the table itself varies too: the covariance shrinkage raised to at least each
value (edge_runtime.novelty.fit_novelty's min_shrinkage; 0 is training's table), with training's threshold
rule, in a table of its own.

For each dataset and split: the checkpoint RUNS/<dataset>/split<s>/mgfen/best.pt (realdata.py's MGFEN run),
features of that split's train / val / test images and of every --ood folder (computed as training does:
train.fit.novelty_fit.global_features over an un-augmented loader, FP32), then each rule's threshold and the
share of test and out-of-domain frames scoring above it. Reported pooled over splits with Wilson 95%
intervals, and per split. The rule training uses is also recomputed and checked against the threshold the
checkpoint holds.

    python benchmarks/novelty_threshold.py --runs runs/rd6_all --splits 6 \
        --data runs/realdata/cache/signatures_bhsig260_bengali_per_group2 --data runs/real/sneakers_aj1 \
        --data runs/realdata/cache/signatures_sigcomp2011_per_group2 --ood runs/real/textures_dtd10
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import cpu_flags  # noqa: E402
from realdata import run_name  # noqa: E402
from edge_runtime.novelty import DEFAULT_TARGET_RATE, fit_novelty, heldout_scores, unit_rows  # noqa: E402
from edge_runtime.preprocess import list_images  # noqa: E402
from train.data.folders import Sample, index_folder  # noqa: E402
from train.evaluate.ood import wilson  # noqa: E402
from train.evaluate.predict import make_loader  # noqa: E402
from train.fit.novelty_fit import global_features  # noqa: E402
from train.model.checkpoint import load_checkpoint, read_checkpoint  # noqa: E402

RULES = ("val", "heldout, by index", "heldout, by group", "val + heldout", "val, conformal",
         "val + heldout, conformal")
ROOT = Path(__file__).resolve().parents[1]


def rule_scores(table, train: np.ndarray, val: np.ndarray, groups: list[str]) -> dict[str, np.ndarray]:
    """{rule: the calibration scores its quantile is taken of} for one fitted table (RULES)."""
    x = unit_rows(train.astype(np.float64))
    v = table.score(val) if len(val) else np.zeros(0)
    by_group = heldout_scores(x, groups=groups)
    return {"val": v, "heldout, by index": heldout_scores(x), "heldout, by group": by_group,
            "val + heldout": np.concatenate([v, by_group]), "val, conformal": v,
            "val + heldout, conformal": np.concatenate([v, by_group])}


def rank_threshold(scores: np.ndarray, rate: float) -> float:
    """The k-th smallest score, k = ceil((n + 1) (1 - rate)) clipped to [1, n] (the 'conformal' rules)."""
    ordered = np.sort(scores)
    k = min(len(ordered), max(1, math.ceil((len(ordered) + 1) * (1.0 - rate))))
    return float(ordered[k - 1])


def one_split(data: Path, seed: int, ckpt: Path, ood: dict[str, list], rate: float,
              floors: tuple[float, ...] = ()) -> dict:
    """Counts for one dataset split: {"test": n, "val": n, "stored_threshold", "recomputed_threshold",
    "rules": {rule: {"threshold", "test_refused", "ood": {name: refused}}}, "ood_n": {name: n},
    "floors": {floor: {"shrinkage", "threshold", "test_refused", "ood"}} (training's rule, each floor)}."""
    model, _ = load_checkpoint(ckpt, map_location="cpu")
    stored = read_checkpoint(ckpt)["novelty"]
    cfg = model.cfg.preprocess
    index = index_folder(data, seed=seed)
    cpu = torch.device("cpu")

    def feats(root: Path, samples) -> np.ndarray:
        return global_features(model, make_loader(root, samples, cfg, 16), cpu) if samples else np.zeros((0, 1))

    train_s, val_s, test_s = index.split("train"), index.split("val"), index.split("test")
    train, val, test = feats(index.root, train_s), feats(index.root, val_s), feats(index.root, test_s)
    table = fit_novelty(train, val if len(val) else None, rate)
    test_scores = table.score(test)
    ood_feats = {name: feats(root, samples) for name, (root, samples) in ood.items()}
    ood_scores = {name: table.score(f) for name, f in ood_feats.items()}
    out = {"test": len(test_s), "val": len(val_s), "train": len(train_s),
           "stored_threshold": float(stored["threshold"]), "stored_source": str(stored["source"]),
           "recomputed_threshold": table.threshold, "rules": {},
           "ood_n": {name: len(s) for name, s in ood_scores.items()}}
    groups = [s.group for s in train_s]
    out["floors"] = {}
    for floor in floors:
        t = fit_novelty(train, val if len(val) else None, rate, groups, min_shrinkage=floor)
        out["floors"][f"{floor:g}"] = {"shrinkage": t.shrinkage, "threshold": t.threshold,
                                       "test_refused": int((t.score(test) > t.threshold).sum()),
                                       "ood": {name: int((t.score(f) > t.threshold).sum())
                                               for name, f in ood_feats.items()}}
    for rule, calib in rule_scores(table, train, val, groups).items():
        if len(calib) == 0:
            continue
        thr = rank_threshold(calib, rate) if rule.endswith("conformal") else float(np.quantile(calib, 1.0 - rate))
        out["rules"][rule] = {"threshold": thr, "calib_n": len(calib), "test_refused": int((test_scores > thr).sum()),
                              "ood": {name: int((s > thr).sum()) for name, s in ood_scores.items()}}
    return out


def ood_sets(datasets: list[Path], ood_dirs: list[Path], own: Path) -> dict[str, tuple[Path, list]]:
    """{name: (root, samples)}: every --ood folder whole, and the split-0 test images of the other datasets."""
    sets = {}
    for d in ood_dirs:  # any folder of images: one class or none, so no index_folder
        sets[d.name] = (d, [Sample(p.relative_to(d).as_posix(), 0, "", "test") for p in list_images(d)])
    for d in datasets:
        if d != own:
            idx = index_folder(d, seed=0)
            sets[run_name(d)] = (idx.root, idx.split("test"))
    return sets


def fmt_rate(k: int, n: int) -> str:
    lo, hi = wilson(k, n)
    return f"{100 * k / max(n, 1):.1f} [{100 * lo:.1f}, {100 * hi:.1f}] ({k}/{n})"


def markdown(results: dict, command: str, flags: str, rate: float) -> str:
    lines = [f"# Novelty threshold rules on real-data models (target in-domain refusal {100 * rate:g}%)", "",
             f"Made by `{command}` ({time.strftime('%Y-%m-%d')}; {flags}). Each row pools the splits: "
             "% refused [Wilson 95%] (refused / frames). In-domain: the test split; out of domain: the other "
             "datasets' split-0 test images and the --ood folders. Rules: benchmarks/novelty_threshold.py.", ""]
    for name, splits in results.items():
        ood_names = list(splits[0]["ood_n"])
        sources = sorted({s["stored_source"] for s in splits})
        same = all(math.isclose(s["stored_threshold"], s["recomputed_threshold"], rel_tol=1e-3) for s in splits)
        lines += [f"## {name}", "",
                  f"{len(splits)} splits; val images per split {', '.join(str(s['val']) for s in splits)}; training's "
                  f"threshold source: {', '.join(sources)}; recomputed thresholds equal the checkpoints': "
                  f"{'yes' if same else 'NO'}.", "",
                  "| rule | calibration scores per split | in-domain test refused | "
                  + " | ".join(f"{o} refused" for o in ood_names) + " |",
                  "|---|---|---|" + "---|" * len(ood_names)]
        for rule in RULES:
            rows = [s["rules"][rule] for s in splits if rule in s["rules"]]
            if not rows:
                continue
            k = sum(r["test_refused"] for r in rows)
            n = sum(s["test"] for s in splits if rule in s["rules"])
            cells = [fmt_rate(sum(r["ood"][o] for r in rows), sum(s["ood_n"][o] for s in splits if rule in s["rules"]))
                     for o in ood_names]
            lines.append(f"| {rule} | {', '.join(str(r['calib_n']) for r in rows)} | {fmt_rate(k, n)} | "
                         + " | ".join(cells) + " |")
        floors = list(splits[0].get("floors", {}))
        if floors:
            lines += ["", "Covariance shrinkage raised to at least a floor (training's threshold rule; 0: training's "
                      "table):", "", "| floor | shrinkage per split | in-domain test refused | "
                      + " | ".join(f"{o} refused" for o in ood_names) + " |", "|---|---|---|" + "---|" * len(ood_names)]
            for floor in floors:
                rows = [s["floors"][floor] for s in splits]
                cells = [fmt_rate(sum(r["ood"][o] for r in rows), sum(s["ood_n"][o] for s in splits)) for o in ood_names]
                shrink = ", ".join(f"{r['shrinkage']:.3f}" for r in rows)
                lines.append(f"| {floor} | {shrink} | "
                             f"{fmt_rate(sum(r['test_refused'] for r in rows), sum(s['test'] for s in splits))} | "
                             + " | ".join(cells) + " |")
        lines += ["", "Per split, in-domain test refused (of n):", "",
                  "| rule | " + " | ".join(f"split {i}" for i in range(len(splits))) + " |",
                  "|---|" + "---|" * len(splits)]
        for rule in RULES:
            cells = [f"{s['rules'][rule]['test_refused']}/{s['test']}" if rule in s["rules"] else "-" for s in splits]
            lines.append(f"| {rule} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", action="append", required=True, type=Path,
                    help="a dataset folder exactly as realdata.py trained on it (its per-group subset)")
    ap.add_argument("--runs", required=True, type=Path, help="benchmarks/realdata.py's --out")
    ap.add_argument("--ood", action="append", default=[], type=Path, help="a folder of out-of-domain images")
    ap.add_argument("--splits", type=int, default=3)
    ap.add_argument("--rate", type=float, default=DEFAULT_TARGET_RATE)
    ap.add_argument("--min-shrinkage", default="", help="comma list of shrinkage floors to compare (0 is added)")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "results" / "novelty_threshold.md")
    args = ap.parse_args()
    try:
        floors = tuple(sorted({0.0, *(float(x) for x in args.min_shrinkage.split(",") if x.strip())}))
    except ValueError:
        raise SystemExit(f"--min-shrinkage: a comma list of numbers in [0, 1], got {args.min_shrinkage!r}") from None
    if not all(0.0 <= f <= 1.0 for f in floors):
        raise SystemExit(f"--min-shrinkage: values must be in [0, 1], got {args.min_shrinkage!r}")
    floors = floors if args.min_shrinkage else ()
    torch.set_num_threads(2)
    flags = cpu_flags()
    print(f"host: {flags}", flush=True)
    results = {}
    for data in args.data:
        name = run_name(data)
        ood = ood_sets(args.data, args.ood, data)
        results[name] = []
        for seed in range(args.splits):
            ckpt = args.runs / name / f"split{seed}" / "mgfen" / "best.pt"
            if not ckpt.is_file():
                raise SystemExit(f"{ckpt}: no such checkpoint (run benchmarks/realdata.py --out {args.runs} first)")
            t0 = time.perf_counter()
            r = one_split(data, seed, ckpt, ood, args.rate, floors)
            results[name].append(r)
            print(f"{name} split {seed} ({time.perf_counter() - t0:.0f} s): " + "; ".join(
                f"{rule} {v['test_refused']}/{r['test']}" for rule, v in r["rules"].items()), flush=True)
    command = "python benchmarks/novelty_threshold.py " + " ".join(sys.argv[1:])
    text = markdown(results, command, flags, args.rate)
    args.out.write_text(text)
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")
    print(text + f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
