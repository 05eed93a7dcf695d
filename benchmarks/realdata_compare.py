"""Two runs of benchmarks/realdata.py side by side: the trained models' ROC-AUC per dataset and split in each
run, and the difference B - A per split (same seeded splits, so the same test images), with its mean.

    python benchmarks/realdata_compare.py runs/realdata_lab/realdata.json runs/realdata/realdata.json \
        --names lab,ycrcb --out docs/results/realdata_luma_space.md

Only datasets and splits present in both runs are compared. The per-split difference mixes the variant's
effect with training noise (two trainings of one configuration differ too), so read the mean against the
spread of the differences, not one split.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

MODELS = ("mgfen", "no-parts")


def split_aucs(run: dict) -> dict[tuple[str, int, str], float]:
    """{(dataset, seed, model): test ROC-AUC} of the trained models in one realdata.json."""
    out = {}
    for result in run["results"]:
        for split in result["splits"]:
            for model in MODELS:
                auc = split["models"].get(model, {}).get("roc_auc")
                if auc is not None:
                    out[(result["dataset"], split["seed"], model)] = float(auc)
    return out


def compare(a: dict, b: dict, names: tuple[str, str]) -> str:
    """Markdown: per dataset and model, the AUC of each split in both runs and B - A."""
    aa, bb = split_aucs(a), split_aucs(b)
    keys = sorted(set(aa) & set(bb))
    if not keys:
        raise SystemExit("the two runs share no dataset, split and model")
    lines = [f"| dataset | model | split | {names[0]} AUC | {names[1]} AUC | {names[1]} - {names[0]} |",
             "|---|---|---|---|---|---|"]
    summary = ["", f"| dataset | model | splits | mean {names[0]} | mean {names[1]} | mean difference +- sd | "
               f"splits where {names[1]} is higher |", "|---|---|---|---|---|---|---|"]
    for dataset in sorted({k[0] for k in keys}):
        for model in MODELS:
            rows = [k for k in keys if k[0] == dataset and k[2] == model]
            if not rows:
                continue
            diffs = [bb[k] - aa[k] for k in rows]
            for k, d in zip(rows, diffs):
                lines.append(f"| {dataset} | {model} | {k[1]} | {aa[k]:.3f} | {bb[k]:.3f} | {d:+.3f} |")
            sd = statistics.stdev(diffs) if len(diffs) > 1 else float("nan")
            summary.append(f"| {dataset} | {model} | {len(rows)} | {statistics.mean(aa[k] for k in rows):.3f} | "
                           f"{statistics.mean(bb[k] for k in rows):.3f} | {statistics.mean(diffs):+.3f} +- {sd:.3f} | "
                           f"{sum(d > 0 for d in diffs)} of {len(diffs)} |")
    return "\n".join(lines + summary) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a", type=Path, help="realdata.json of run A")
    ap.add_argument("b", type=Path, help="realdata.json of run B")
    ap.add_argument("--names", default="A,B", help="the two runs' names, comma-separated")
    ap.add_argument("--out", type=Path, default=None, help="also write the table here")
    args = ap.parse_args(argv)
    names = tuple(args.names.split(","))
    if len(names) != 2:
        raise SystemExit(f"--names: two names, got {args.names!r}")
    runs = []
    for path in (args.a, args.b):
        try:
            runs.append(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError) as exc:
            raise SystemExit(f"{path}: not a readable realdata.json ({exc})") from None
    text = compare(runs[0], runs[1], names)
    print(text, end="")
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
