"""How much INT8 moves the novelty score, and which score keeps its unknown decisions.

The INT8 gate of the real-data bundles fails on `unknown` swaps as much as on probabilities: on the BHSig
split-0 bundle the INT8 flavours' novelty scores differ from FP32's by 15% of the threshold at the median
and 60-65% at p99, and INT8 calls 9-10 of 80 val frames unknown where FP32 calls 2. The score (edge_runtime.
novelty) is a Ledoit-Wolf shrunk Mahalanobis distance: the directions the train features never span get the
weight 1 / (shrinkage * mean eigenvalue), and that is where quantisation noise lands.

For each bundle this script takes FP32 and both INT8 flavours' pooled features (the graphs' own
global_features output) on the train, val and test splits and on out-of-domain folders, fits score variants
on the FP32 train features (`shrink>=a`: the Ledoit-Wolf shrinkage raised to at least a; `pca r`: the
Mahalanobis distance in the top r principal directions only plus the residual at the r-th eigenvalue's
weight), sets each threshold on the FP32 val scores as training does (1 - 2% quantile), and reports: in-domain
test refusal (FP32, INT8), out-of-domain refusal (FP32, INT8), and the unknown decisions INT8 changes on val
and test. Reads the bundles' files; trains nothing. Usage:

    python benchmarks/novelty_int8.py --split runs/field/NAME/split0 [--split ...] --ood DIR [--ood ...] --out F.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from _common import cpu_flags, write_results
from calibration.accuracy import bundle_pipelines
from edge_runtime.novelty import DEFAULT_TARGET_RATE, mahalanobis, shrunk_components, threshold_at, unit_rows
from edge_runtime.preprocess import list_images, load_frame

SHRINK_FLOORS = (0.0, 0.2, 0.5, 0.9)  # 0.0: the shipped score (Ledoit-Wolf's own estimate)
PCA_RANKS = (16, 64)


def features(pipes: dict, paths: list[Path], cfg) -> dict[str, np.ndarray]:
    """{pipeline: [N,D] float64 pooled features} of every pipeline on the same frames."""
    out: dict[str, list] = {k: [] for k in pipes}
    for path in paths:
        frame = load_frame(path, cfg)
        for key, pipe in pipes.items():
            out[key].append(pipe.run_frame(frame).features)
    return {k: np.stack(v).astype(np.float64) for k, v in out.items()}


def shrink_variant(train: np.ndarray, floor: float):
    """Score function of the shipped Mahalanobis with the shrinkage raised to at least `floor`."""
    mean, comps, weights, base, _ = shrunk_components(unit_rows(train), floor)
    return lambda f: mahalanobis(unit_rows(f), mean, comps, weights, base)


def pca_variant(train: np.ndarray, rank: int):
    """Score: squared Mahalanobis distance in the top `rank` principal directions plus the residual energy
    at the weight of the rank-th eigenvalue (a floor no direction goes below), / D."""
    x = unit_rows(train)
    n, d = x.shape
    mean = x.mean(0)
    _, sing, comps = np.linalg.svd(x - mean, full_matrices=False)
    lam = sing[:rank] ** 2 / n
    base = 1.0 / lam[-1]
    weights = base - 1.0 / lam
    return lambda f: mahalanobis(unit_rows(f), mean, comps[:rank], weights, base)


def rate(scores: np.ndarray, threshold: float) -> float:
    return round(100.0 * float(np.mean(scores > threshold)), 1)


def evaluate(feats: dict[str, dict[str, np.ndarray]], ood: list[str]) -> dict:
    """Per variant: threshold from FP32 val; refusal % of in-domain test and of each OOD set for fp32 / cpu /
    trt; unknown decisions changed by each INT8 flavour on val + test; median |d score| / threshold."""
    variants = {("shipped (LW)" if f == 0.0 else f"shrink>={f:g}"): shrink_variant(feats["train"]["fp32"], f)
                for f in SHRINK_FLOORS}
    variants.update({f"pca {r}": pca_variant(feats["train"]["fp32"], r) for r in PCA_RANKS})
    out = {}
    for name, fn in variants.items():
        thr = threshold_at(fn(feats["val"]["fp32"]), DEFAULT_TARGET_RATE)
        row: dict = {"threshold": round(thr, 4)}
        for flavour in ("fp32", "cpu", "trt"):
            row[f"test refused {flavour}"] = rate(fn(feats["test"][flavour]), thr)
            row[f"ood refused {flavour}"] = {o: rate(fn(feats[o][flavour]), thr) for o in ood}
        for flavour in ("cpu", "trt"):
            ref = np.concatenate([fn(feats[s]["fp32"]) for s in ("val", "test")])
            got = np.concatenate([fn(feats[s][flavour]) for s in ("val", "test")])
            row[f"changed {flavour}"] = int(np.sum((ref > thr) != (got > thr)))
            row[f"dscore p50 {flavour}"] = round(float(np.median(np.abs(got - ref))) / thr, 4)
        row["n val+test"] = int(len(feats["val"]["fp32"]) + len(feats["test"]["fp32"]))
        out[name] = row
    return out


def markdown(header: str, results: dict) -> str:
    lines = [header, ""]
    for split, res in results.items():
        ood = list(next(iter(res.values()))["ood refused fp32"])
        lines += [f"### {split}", "", "| score | in-domain test refused % fp32 / cpu / trt | "
                  + " | ".join(f"{o} refused % fp32 / cpu / trt" for o in ood)
                  + " | unknown changed on val+test cpu / trt | median \\|d score\\|/threshold cpu / trt |",
                  "|---|---|" + "---|" * len(ood) + "---|---|"]
        for name, r in res.items():
            cells = [f"{r['test refused fp32']} / {r['test refused cpu']} / {r['test refused trt']}"]
            cells += [f"{r['ood refused fp32'][o]} / {r['ood refused cpu'][o]} / {r['ood refused trt'][o]}" for o in ood]
            cells += [f"{r['changed cpu']} / {r['changed trt']} of {r['n val+test']}",
                      f"{r['dscore p50 cpu']} / {r['dscore p50 trt']}"]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--split", action="append", required=True, type=Path,
                    help="a folder with bundle/, train/, val/, test/ (benchmarks/realdata_field.py's layout)")
    ap.add_argument("--ood", action="append", default=[], type=Path, help="out-of-domain images (repeatable)")
    ap.add_argument("--out", required=True, type=Path, help="JSON file; the markdown goes beside it (.md)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    for split in args.split:
        if not (split / "bundle" / "manifest.json").is_file():
            print(f"error: {split}: no bundle/manifest.json", file=sys.stderr)
            return 2
    header = (f"Novelty score under INT8 ({time.strftime('%Y-%m-%d')}; {cpu_flags()}). Made by `python "
              f"benchmarks/novelty_int8.py " + " ".join(f"--split {s}" for s in args.split)
              + "".join(f" --ood {o}" for o in args.ood) + f" --out {args.out}`.")
    print(header, flush=True)
    tests = {s: s / "test" for s in args.split}
    results = {}
    for split in args.split:
        man, params, pipes = bundle_pipelines(split / "bundle", args.threads)
        folders = {"train": split / "train", "val": split / "val", "test": split / "test"}
        folders.update({f"{o.name}": o for o in args.ood})
        folders.update({f"{s.parent.name} test": t for s, t in tests.items() if s != split})
        feats = {k: features(pipes, list_images(p), params.preprocess) for k, p in folders.items()}
        ood = [k for k in folders if k not in ("train", "val", "test")]
        results[str(split)] = evaluate(feats, ood)
        print(markdown("", {str(split): results[str(split)]}), flush=True)
    write_results(args.out, header, results, markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
