"""Real-data benchmark: MGFEN (edge preset, as a user runs it), its global-only variant, the linear probe
and the shortcut baselines on the same seeded group splits of each real dataset.

For every dataset folder (arranged with `mgfen-data arrange`, see datasets/) and every split seed s:
    mgfen      mgfen-train --data D --seed s                  (edge preset defaults, frame fitted to the photos)
    no-parts   mgfen-train --data D --seed s --no-parts       (global branch only)
    baselines  train.audit.baselines.default_baselines: image metadata and colour statistics (logistic, 1-NN),
               logistic regression on frozen ImageNet EfficientNet-Lite0 features at two sizes
The split is the project's group-aware 7:2:1 split drawn with seed s (train.data.folders.index_folder), so every
model sees the same images; the baselines are fitted on the train split, everything is scored on test.
Reported per split: accuracy and ROC-AUC with 95% group-bootstrap intervals, the paired difference MGFEN
minus each other model (bootstrap over groups, same replicates for both); across splits: mean +- std.

    python benchmarks/realdata.py --data runs/real/signatures_bhsig260_bengali \
        --data runs/real/signatures_sigcomp2011 --held-out signatures_sigcomp2011 --out runs/realdata
    python benchmarks/realdata.py --data DIR --out /tmp/rd --splits 1 --epochs 1 --frame-size 256 \
        --global-size 64 --crop-size 64 --probe-sizes 64             # a smoke run

--grey also runs each dataset converted to grey (NAME_grey, held out with its original): what MGFEN and the
baselines find once the colour cue (ink, white balance) is gone.
--per-group N (or N1,N2,... per --data) keeps N images per group (seeded; all when 0): the CPU cost of training grows with the
image count, and images of one group (one writer, one item) are the least independent ones. Trained runs
and scores are kept in OUT/<dataset>/split<s>/ and reused by a second run (delete them to redo); the
subsampled folders and the baselines' features are kept in --cache and shared by every variant.
Writes OUT/realdata.json and OUT/realdata.md.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import hashlib
import json
import pickle
import re
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import cpu_flags  # noqa: E402
from train.audit.baselines import ImageFeatures, default_baselines, extract_features, fit_predict  # noqa: E402
from train.audit.probe import DEFAULT_PROBE_SIZES, parse_probe_sizes  # noqa: E402
from train.data.folders import index_folder  # noqa: E402
from train.evaluate.resample import paired_difference, score_with_interval  # noqa: E402
from train.evaluate.vs_baselines import checkpoint_scores  # noqa: E402

MODELS = {"mgfen": {}, "no-parts": {"use_parts": False}}
GREY = "_grey"  # suffix of a dataset's grey copy (--grey); held out when its colour original is
RESOLVE_AUC = 0.03  # the AUC difference the power table asks about (about the gaps seen between models)
Z_ALPHA, Z_POWER = 1.959964, 0.841621  # two-sided 5% test, 80% power (normal quantiles)


def splits_needed(sd: float, delta: float = RESOLVE_AUC) -> int:
    """Seeded splits needed before a paired mean difference of `delta` is told from 0 (two-sided 5%, 80%
    power, normal approximation), when per-split differences spread with standard deviation `sd`
    (test-set sampling and training noise together)."""
    if delta <= 0:
        raise ValueError("delta must be > 0")
    return max(2, int(np.ceil(((Z_ALPHA + Z_POWER) * sd / delta) ** 2)))


def parse_sets(items: list[str]) -> dict:
    """["head_epochs=2", "freeze_bn=true", "select=auc"] -> TrainConfig overrides, each value parsed as JSON
    where it can be (numbers, true/false/null) and kept as a string otherwise."""
    from train.fit.config import TrainConfig

    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in fields:
            raise SystemExit(f"--set {item!r}: expected FIELD=VALUE with a TrainConfig field")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


PER_GROUP_SUFFIX = re.compile(r"_per_group\d+$")  # subsample's folders: --cache / f"{name}_per_group{n}"


def run_name(data: Path) -> str:
    """The dataset's name in this benchmark's runs: its folder, without a per-group subset's suffix."""
    return PER_GROUP_SUFFIX.sub("", data.name)


def subsample(src: Path, dst: Path, per_group: int, seed: int) -> Path:
    """A data folder with at most `per_group` images of every group of `src` (seeded choice), made of
    symlinks and a manifest.csv; `src` itself when per_group is 0. Reused when it already exists."""
    if per_group <= 0:
        return src
    if (dst / "manifest.csv").is_file():
        return dst
    index = index_folder(src, seed=0)
    rng = np.random.default_rng(seed)
    by_group: dict[str, list] = {}
    for s in index.samples:
        by_group.setdefault(s.group, []).append(s)
    keep = []
    for group in sorted(by_group):
        members = sorted(by_group[group], key=lambda s: s.path)
        picks = rng.choice(len(members), size=min(per_group, len(members)), replace=False)
        keep += [members[i] for i in sorted(picks)]
    tmp = dst.with_name(dst.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    rows = []
    for s in keep:
        link = tmp / s.path
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.exists():
            link.symlink_to((src / s.path).resolve())
        rows.append({"path": s.path, "split": "", "label": index.classes[s.label], "group": s.group, "background": ""})
    with (tmp / "manifest.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["path", "split", "label", "group", "background"])
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(dst)
    return dst


def grey_copy(src: Path, dst: Path) -> Path:
    """A copy of data folder `src` whose images are grey (BGR -> grey -> 3 equal channels, same path and
    format) with the same manifest.csv: the colour cue removed, the labels, groups and splits unchanged.
    Reused when it already exists."""
    import cv2

    if (dst / "manifest.csv").is_file():
        return dst
    index = index_folder(src, seed=0)
    tmp = dst.with_name(dst.name + ".tmp")
    for s in index.samples:
        img = cv2.imread(str(src / s.path), cv2.IMREAD_COLOR)
        if img is None:
            raise SystemExit(f"{src / s.path}: unreadable")
        (tmp / s.path).parent.mkdir(parents=True, exist_ok=True)
        if not cv2.imwrite(str(tmp / s.path), cv2.cvtColor(cv2.cvtColor(img, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)):
            raise SystemExit(f"{tmp / s.path}: cannot write")
    if (src / "manifest.csv").is_file():
        (tmp / "manifest.csv").write_bytes((src / "manifest.csv").read_bytes())
    tmp.replace(dst)
    return dst


def train_and_score(data: Path, out: Path, seed: int, overrides: dict, threads: int) -> dict:
    """Train one MGFEN variant on split `seed` of `data` (cached in out/scores.json) and score its test split:
    {"paths": [...], "scores": [...] P(class 1), "train_seconds", "best_epoch"}."""
    cached = out / "scores.json"
    if cached.is_file():
        kept = json.loads(cached.read_text())
        if kept.get("overrides") != overrides:
            raise SystemExit(f"{out}: trained with {kept.get('overrides')}, asked for {overrides}: use another --out")
        return kept
    from train.fit.config import TrainConfig
    from train.fit.trainer import train

    summary = train(TrainConfig(data=str(data), out=str(out), seed=seed, progress=False, threads=threads, **overrides))
    _, test, p = checkpoint_scores(out / "best.pt", data, "test", seed=seed)
    result = {"paths": [s.path for s in test], "scores": p.tolist(), "train_seconds": summary["train_seconds"],
              "best_epoch": summary["best_epoch"], "background": summary.get("background", {}).get("off"),
              "overrides": overrides}
    cached.write_text(json.dumps(result))
    return result


def cached_features(data: Path, paths: list[str], probe_sizes: tuple[int, ...], cache: Path) -> ImageFeatures:
    """extract_features, kept in `cache` under a key of the data folder, the image list, the probe sizes and
    the edge preset's preprocessing the probe sees (the baselines' features do not depend on the trained
    models, so variants of a run share them; a changed preset does not)."""
    from train.model.mgfen import PRESETS

    key = hashlib.sha1(json.dumps([str(data.resolve()), paths, list(probe_sizes),
                                   PRESETS["edge"].preprocess.to_dict()]).encode()).hexdigest()[:16]
    path = cache / f"features_{data.name}_{key}.pkl"
    if path.is_file():
        return pickle.loads(path.read_bytes())
    feats = extract_features(data, paths, probe_sizes)
    cache.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(feats))
    return feats


def run_dataset(data: Path, out: Path, splits: int, probe_sizes: tuple[int, ...], overrides: dict,
                threads: int, cache: Path, log) -> dict:
    """Every model on `splits` seeded group splits of one dataset. Returns the dataset's result dict."""
    full = index_folder(data, seed=0)
    log(f"{data.name}: {len(full.samples)} images, {len({s.group for s in full.samples})} groups; features ...")
    t0 = time.perf_counter()
    feats = cached_features(data, [s.path for s in full.samples], probe_sizes, cache)
    log(f"  features in {time.perf_counter() - t0:.0f} s")
    row_of = {p: i for i, p in enumerate(feats.paths)}
    result: dict = {"dataset": data.name, "images": len(full.samples),
                    "groups": len({s.group for s in full.samples}), "splits": []}
    for seed in range(splits):
        index = index_folder(data, seed=seed)
        train_s, test_s = index.split("train"), index.split("test")
        y_train = np.array([s.label for s in train_s])
        y = np.array([s.label for s in test_s])
        groups = [s.group for s in test_s]
        scores: dict[str, np.ndarray] = {}
        timing: dict[str, float] = {}
        for name, extra in MODELS.items():
            t0 = time.perf_counter()
            r = train_and_score(data, out / f"split{seed}" / name, seed, {**overrides, **extra}, threads)
            if r["paths"] != [s.path for s in test_s]:
                raise RuntimeError(f"{name} split {seed}: test images differ from the benchmark's split")
            scores[name] = np.asarray(r["scores"])
            timing[name] = r["train_seconds"]
            log(f"  split {seed} {name}: trained in {r['train_seconds']:.0f} s "
                f"({time.perf_counter() - t0:.0f} s with scoring), best epoch {r['best_epoch']}")
        f_train = feats.subset([row_of[s.path] for s in train_s])
        f_test = feats.subset([row_of[s.path] for s in test_s])
        for b in default_baselines(probe_sizes):
            scores[b.description] = fit_predict(b, f_train, y_train, f_test)
        split_row = {"seed": seed, "train": len(train_s), "val": len(index.split("val")), "test": len(test_s),
                     "test_groups": len(set(groups)), "train_seconds": timing, "models": {}}
        for name, p in scores.items():
            row = score_with_interval(y, p, groups, seed=seed).to_dict()
            if name != "mgfen":
                row["mgfen_minus_this"] = paired_difference(y, scores["mgfen"], p, groups, seed=seed)
            split_row["models"][name] = row
        result["splits"].append(split_row)
        log(f"  split {seed}: " + ", ".join(f"{n} {100 * m['accuracy']:.1f}%/{m['roc_auc'] or float('nan'):.3f}"
                                            for n, m in split_row["models"].items()))
    names = list(result["splits"][0]["models"])
    result["summary"] = {}
    for name in names:
        acc = [s["models"][name]["accuracy"] for s in result["splits"]]
        auc = [s["models"][name]["roc_auc"] for s in result["splits"] if s["models"][name]["roc_auc"] is not None]
        result["summary"][name] = {"accuracy_mean": float(np.mean(acc)), "accuracy_std": float(np.std(acc)),
                                   "roc_auc_mean": float(np.mean(auc)) if auc else None,
                                   "roc_auc_std": float(np.std(auc)) if auc else None}
    return result


def _ci(v: float | None, ci: list | None, pct: bool) -> str:
    if v is None:
        return "-"
    k, f = (100.0, "{:.1f}") if pct else (1.0, "{:.3f}")
    return f.format(k * v) + (f" [{f.format(k * ci[0])}, {f.format(k * ci[1])}]" if ci else "")


def _diff(d: dict) -> str:
    if d["roc_auc"] is None:
        return "-"
    return "{:+.3f}".format(d["roc_auc"]) + (" [{:+.3f}, {:+.3f}]".format(*d["roc_auc_ci"]) if d["roc_auc_ci"] else "")


def _held_out(dataset: str, held_out: str | None) -> bool:
    return held_out is not None and dataset in (held_out, held_out + GREY)


def _short(name: str) -> str:
    return (name.replace("frozen ImageNet linear probe", "linear probe").replace(", logistic regression", "")
            .replace("global colour statistics", "colour statistics").replace("image metadata", "metadata")
            .replace("1-nearest-neighbour", "1-NN"))


def summary_table(results: list[dict], held_out: str | None) -> list[str]:
    """One row per dataset: accuracy % / ROC-AUC (mean +- std over splits) of MGFEN, --no-parts, the probe at
    each size and the best shortcut (metadata or colour, by mean AUC), and in how many splits MGFEN's paired
    AUC difference to the best other model has an interval above 0."""
    lines = ["| dataset | MGFEN | --no-parts | " + " | ".join(
        _short(n) for n in results[0]["summary"] if "probe" in n) + " | best shortcut | MGFEN above the best other model (AUC, paired) |",
             "|---" * (5 + sum("probe" in n for n in results[0]["summary"])) + "|"]
    for r in results:
        s = r["summary"]

        def cell(name: str) -> str:
            v = s[name]
            auc = "-" if v["roc_auc_mean"] is None else f"{v['roc_auc_mean']:.3f} +- {v['roc_auc_std']:.3f}"
            return f"{100 * v['accuracy_mean']:.1f} +- {100 * v['accuracy_std']:.1f} / {auc}"

        shortcuts = [n for n in s if n not in ("mgfen", "no-parts") and "probe" not in n]
        best_sc = max(shortcuts, key=lambda n: s[n]["roc_auc_mean"] or 0.0)
        others = [n for n in s if n != "mgfen"]
        best = max(others, key=lambda n: s[n]["roc_auc_mean"] or 0.0)
        above = sum(1 for sp in r["splits"] if (sp["models"][best]["mgfen_minus_this"]["roc_auc_ci"] or [0, 0])[0] > 0)
        name = r["dataset"] + (" (held out)" if _held_out(r["dataset"], held_out) else "")
        lines.append(f"| {name} | {cell('mgfen')} | {cell('no-parts')} | "
                     + " | ".join(cell(n) for n in s if "probe" in n)
                     + f" | {_short(best_sc)}: {cell(best_sc)} | {above} of {len(r['splits'])} splits vs {_short(best)} |")
    return lines


def power_table(results: list[dict]) -> list[str]:
    """Per dataset, MGFEN minus --no-parts and minus the probe at its largest size: the paired per-split AUC
    differences' mean and sd, and the splits needed to tell a RESOLVE_AUC difference from 0 at that sd."""
    lines = [f"| dataset | MGFEN minus | AUC difference per split | mean +- sd | splits to resolve {RESOLVE_AUC} |",
             "|---|---|---|---|---|"]
    for r in results:
        probes = [n for n in r["summary"] if "probe" in n]
        for name in ["no-parts"] + probes[-1:]:
            d = [sp["models"][name]["mgfen_minus_this"]["roc_auc"] for sp in r["splits"]]
            d = [v for v in d if v is not None]
            if len(d) < 2:
                continue
            sd = float(np.std(d, ddof=1))
            lines.append(f"| {r['dataset']} | {_short(name)} | {', '.join(f'{v:+.3f}' for v in d)} | "
                         f"{np.mean(d):+.3f} +- {sd:.3f} | {splits_needed(sd)} |")
    return lines


def markdown(results: list[dict], held_out: str | None, header: str) -> str:
    """The README table (summary_table), then per dataset and model: accuracy and ROC-AUC mean +- std over
    splits, per split with intervals and the paired MGFEN-minus-model AUC difference."""
    lines = [header, "", "Accuracy % / ROC-AUC, mean +- std over the splits:", "",
             *summary_table(results, held_out), "",
             "How far the splits can see: the paired AUC difference per split, its mean +- sd (ddof 1), and the "
             f"splits needed to tell a difference of {RESOLVE_AUC} from 0 at that spread (two-sided 5%, 80% power):", "",
             *power_table(results), ""]
    for r in results:
        tag = " (held out of every tuning decision)" if _held_out(r["dataset"], held_out) else ""
        lines += [f"### {r['dataset']}{tag}", "",
                  f"{r['images']} images, {r['groups']} groups, {len(r['splits'])} seeded group splits "
                  f"(test images per split: {', '.join(str(s['test']) for s in r['splits'])}).", "",
                  "| model | accuracy % (mean +- std) | ROC-AUC (mean +- std) | per split: accuracy % [95% CI] / AUC [95% CI] | MGFEN minus model, AUC per split [95% CI] |",
                  "|---|---|---|---|---|"]
        for name, s in r["summary"].items():
            per = "<br>".join(f"{_ci(sp['models'][name]['accuracy'], sp['models'][name]['accuracy_ci'], True)} / "
                              f"{_ci(sp['models'][name]['roc_auc'], sp['models'][name]['roc_auc_ci'], False)}"
                              for sp in r["splits"])
            diff = "-" if name == "mgfen" else "<br>".join(
                _diff(sp["models"][name]["mgfen_minus_this"]) for sp in r["splits"])
            auc = "-" if s["roc_auc_mean"] is None else f"{s['roc_auc_mean']:.3f} +- {s['roc_auc_std']:.3f}"
            lines.append(f"| {name} | {100 * s['accuracy_mean']:.1f} +- {100 * s['accuracy_std']:.1f} | {auc} | {per} | {diff} |")
        lines.append("")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", action="append", required=True, type=Path, help="an arranged real dataset (repeatable)")
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--held-out", default=None, help="name of the dataset kept out of every tuning decision")
    ap.add_argument("--splits", type=int, default=3)
    ap.add_argument("--per-group", default="0",
                    help="images kept per group (0: all); one value, or one per --data in order (e.g. 2,2,0)")
    ap.add_argument("--probe-sizes", default=",".join(map(str, DEFAULT_PROBE_SIZES)))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cache", type=Path, default=Path("runs/realdata/cache"), help="baseline features kept here")
    ap.add_argument("--epochs", type=int, default=None, help="override the preset (smoke runs only)")
    ap.add_argument("--frame-size", type=int, default=None)
    ap.add_argument("--global-size", type=int, default=None)
    ap.add_argument("--crop-size", type=int, default=None)
    ap.add_argument("--grey", action="store_true",
                    help="also run every dataset converted to grey (NAME_grey): what is left without the colour cue")
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                    help="a TrainConfig field for both trained models, e.g. head_epochs=2 (repeatable)")
    args = ap.parse_args(argv)
    overrides = {k: v for k, v in (("epochs", args.epochs), ("frame_size", args.frame_size),
                                   ("global_size", args.global_size), ("crop_size", args.crop_size)) if v is not None}
    overrides.update(parse_sets(args.set))
    probe_sizes = parse_probe_sizes(args.probe_sizes)
    per_group = [int(v) for v in args.per_group.split(",")]
    if len(per_group) not in (1, len(args.data)):
        raise SystemExit(f"--per-group: one value or one per --data ({len(args.data)}), got {args.per_group!r}")
    per_group = per_group * len(args.data) if len(per_group) == 1 else per_group
    args.out.mkdir(parents=True, exist_ok=True)
    header = (f"Real-data benchmark ({time.strftime('%Y-%m-%d')}; {cpu_flags()}); edge preset"
              + (f" with overrides {overrides}" if overrides else " defaults")
              + ("; images per group kept: " + ", ".join(f"{d.name} {n or 'all'}" for d, n in zip(args.data, per_group))
                 if any(per_group) else "") + ".")
    print(header, flush=True)
    results = []
    for data, keep in zip(args.data, per_group):
        sub = subsample(data, args.cache / f"{data.name}_per_group{keep}", keep, seed=0)
        runs = [(data.name, sub)]
        if args.grey:
            runs.append((data.name + GREY, grey_copy(sub, args.cache / f"{sub.name}{GREY}")))
        for name, folder in runs:
            results.append(run_dataset(folder, args.out / name, args.splits, probe_sizes, overrides, args.threads,
                                       args.cache, lambda m: print(m, flush=True)))
            results[-1]["dataset"] = name
            (args.out / "realdata.json").write_text(json.dumps({"header": header, "held_out": args.held_out,
                                                                "results": results}, indent=1))
    md = markdown(results, args.held_out, header)
    (args.out / "realdata.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
