"""The paper's ablation (its Table 3) on the synthetic dataset with a class-background bias of 0.9.

Five edge-preset models, same data, seed and epochs:
    baseline       global branch only (--no-parts, --no-fpn), no background replacement
    + parts/FPN    FPN heatmap, K part crops from the full frame, heatmap-weighted vote
    + bg replace   baseline + online background replacement (train.enhance.blend.BackgroundReplacer)
    full, no prior parts/FPN + background replacement (the paper's full model)
    full model     the same + the heatmap foreground prior (train.model.loss.foreground_prior, --fg-prior)
Each is scored on a BIASED test set (rendered here with the training bias: the background comes from the
own class's half of the families with probability --bias; the dataset's own test split is unbiased by
design), with the background-reliance suite (train.evaluate.bg_suite) on that set: accuracy on the biased test
(original), on mixed_rand, BG-Gap = mixed_same - mixed_rand, and adversarial-background accuracy.

    python benchmarks/ablation.py --out runs/ablation                     # CPU: long (see --epochs)
    python benchmarks/ablation.py --out runs/ablation --device cuda --workers 12
    python benchmarks/ablation.py --out /tmp/abl --n 40 --size 256 --epochs 1 --frame-size 256 \
        --global-size 64 --crop-size 64 --biased-n 12 --adv-m 2           # a smoke run

Writes OUT/ablation.md (the table), OUT/ablation.json, OUT/ablation.png (bar chart, drawn with OpenCV).
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import cv2
import numpy as np

RUNS = (
    # name, use_parts + fpn, background replacement, foreground prior
    ("baseline", False, False, False),
    ("+ parts/FPN", True, False, False),
    ("+ bg replacement", False, True, False),
    ("full, no fg prior", True, True, False),
    ("full model", True, True, True),
)


# ------------------------------------------------------------------------------------ biased test set


def _render_biased(args: tuple) -> tuple[str, str, str, str]:
    from edge_runtime.names import CLASS_NAMES
    from train.data.synth import render_sample

    config, out, i, label, background, index = args
    image, mask, _ = render_sample(config, index, label, background, group=index)
    rel = f"test/{CLASS_NAMES[label]}/bt{i:04d}.png"
    for base, arr in ((Path(out), image), (Path(out) / "masks", mask)):
        (base / rel).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(base / rel), arr, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    return rel, CLASS_NAMES[label], f"bt{i:04d}", background


def make_biased_test(out: Path, config, n: int, bias: float, workers: int) -> dict:
    """n frames (half per class) of new items whose background is from the own class's half with
    probability `bias`: the shortcut a biased collection has, now also at test time."""
    from train.data.synth import background_halves
    from train.enhance.backgrounds import BackgroundLibrary

    lib = BackgroundLibrary(config.backgrounds, () if config.backgrounds else config.families)
    halves = background_halves(config, lib.names)
    rng = np.random.default_rng([config.seed, 424242])
    jobs = []
    for i in range(n):
        label = i % 2
        own = rng.random() < bias
        half = halves[label] if own else halves[1 - label]
        # indices far above the dataset's own frames: new items, new poses
        jobs.append((config, str(out), i, label, half[int(rng.integers(len(half)))], 1_000_000 + i))
    if workers > 1:
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
            rows = list(pool.map(_render_biased, jobs))
    else:
        rows = [_render_biased(j) for j in jobs]
    with open(out / "manifest.csv", "w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(("path", "split", "label", "group", "background"))
        for rel, cls, group, bg in sorted(rows):
            w.writerow((rel, "test", cls, group, bg))
    own = sum(bg in halves[("genuine", "counterfeit").index(cls)] for _, cls, _, bg in rows) / n
    return {"n": n, "measured_bias": round(own, 3), "halves": [list(h) for h in halves]}


# ------------------------------------------------------------------------------------------- chart


def bar_chart(rows: list[dict], path: Path, width: int = 1100, height: int = 520) -> None:
    """Grouped bars per model: biased-test accuracy, mixed_rand accuracy, BG-Gap (points), via OpenCV."""
    series = (("biased test acc", "acc_biased", (180, 119, 31)), ("mixed_rand acc", "acc_mixed_rand", (14, 127, 255)),
              ("BG-Gap (pt)", "bg_gap", (40, 39, 214)))
    img = np.full((height, width, 3), 255, np.uint8)
    left, right, top, bottom = 70, 20, 50, 110
    ph, pw = height - top - bottom, width - left - right
    font = cv2.FONT_HERSHEY_SIMPLEX
    cv2.putText(img, "Ablation on synthetic data (bias 0.9): accuracy and BG-Gap, %", (left, 30), font, 0.6, (0, 0, 0), 1, cv2.LINE_AA)
    for v in range(0, 101, 20):
        y = top + ph - int(ph * v / 100)
        cv2.line(img, (left, y), (left + pw, y), (225, 225, 225), 1)
        cv2.putText(img, str(v), (left - 35, y + 5), font, 0.45, (80, 80, 80), 1, cv2.LINE_AA)
    cv2.line(img, (left, top), (left, top + ph), (0, 0, 0), 1)
    cv2.line(img, (left, top + ph), (left + pw, top + ph), (0, 0, 0), 1)
    group_w = pw / max(len(rows), 1)
    bar_w = int(group_w * 0.8 / len(series))
    for g, row in enumerate(rows):
        x0 = int(left + g * group_w + group_w * 0.1)
        for s, (_, key, colour) in enumerate(series):
            val = max(0.0, min(100.0, row[key]))  # a negative BG-Gap draws as an empty bar; its label shows the sign
            x = x0 + s * bar_w
            y = top + ph - int(ph * val / 100)
            cv2.rectangle(img, (x, y), (x + bar_w - 4, top + ph), colour, -1)
            cv2.putText(img, f"{row[key]:.1f}", (x, y - 5), font, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
        label = row["model"] if len(row["model"]) <= 22 else row["model"][:20] + ".."
        cv2.putText(img, label, (x0, top + ph + 22), font, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    lx = left
    for name, _, colour in series:
        cv2.rectangle(img, (lx, height - 40), (lx + 18, height - 26), colour, -1)
        cv2.putText(img, name, (lx + 24, height - 28), font, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
        lx += 220
    cv2.imwrite(str(path), img)


def markdown(rows: list[dict], meta: dict) -> str:
    lines = [
        f"Synthetic data: n {meta['n']}, {meta['size']} px, train bias {meta['bias']}; edge preset, {meta['epochs']} epochs, "
        f"seed {meta['seed']}, device {meta['device']}; biased test: {meta['biased_test']['n']} frames, "
        f"measured bias {meta['biased_test']['measured_bias']}; background replacement p {meta['bg_p']}, blend {meta['blend']}; "
        f"suite backgrounds: {meta.get('suite_source', '?')}, adversarial M {meta['adv_m']}; foreground prior weight "
        f"{meta.get('fg_prior', 0)} (full model only). Boxes on item: share of part-box area on the item (biased test).",
        "",
        "| model | biased test acc | mixed_rand acc | BG-Gap (pt) | mixed_next acc | only_fg acc | adversarial acc | unbiased test acc | boxes on item % | train s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['model']} | {r['acc_biased']:.1f} | {r['acc_mixed_rand']:.1f} | {r['bg_gap']:+.1f} | "
                     f"{r['acc_mixed_next']:.1f} | {r['acc_only_fg']:.1f} | {r['acc_adversarial']:.1f} | "
                     f"{r['acc_unbiased_test']:.1f} | {r.get('boxes_on_item', float('nan')):.1f} | {r['train_seconds']:.0f} |")
    return "\n".join(lines) + "\n"


# -------------------------------------------------------------------------------------------- main


def merge(files: list[Path], out: Path, suffix: str) -> None:
    """One table from the JSON files of parallel runs (same data and settings, one model each)."""
    docs = [json.loads(Path(f).read_text()) for f in files]
    order = [name for name, *_ in RUNS]
    rows = sorted((r for d in docs for r in d["rows"]), key=lambda r: order.index(r["model"]))
    meta = dict(docs[0]["meta"], merged_from=[Path(f).name for f in files])
    out.mkdir(parents=True, exist_ok=True)
    (out / f"ablation{suffix}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    table = markdown(rows, meta)
    (out / f"ablation{suffix}.md").write_text(table)
    bar_chart(rows, out / f"ablation{suffix}.png")
    print(table)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--data", type=Path, default=None, help="An existing synth dataset (default: generate OUT/data).")
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--bias", type=float, default=0.9)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workers", type=int, default=0, help="DataLoader workers and rendering processes.")
    ap.add_argument("--pretrained", default="auto")
    ap.add_argument("--bg-p", type=float, default=1.0, help="Probability of replacing a training frame's background.")
    ap.add_argument("--blend", default="alpha")
    ap.add_argument("--biased-n", type=int, default=80, help="Frames in the biased test set.")
    ap.add_argument("--adv-m", type=int, default=5)
    ap.add_argument("--frame-size", type=int, default=None)
    ap.add_argument("--global-size", type=int, default=None)
    ap.add_argument("--crop-size", type=int, default=None)
    ap.add_argument("--fg-prior", type=float, default=1.0, help="Weight of the foreground prior in the full model.")
    ap.add_argument("--only", default="", help="Comma-separated run indices 0..4 to run (default all).")
    ap.add_argument("--reuse", action="store_true", help="Skip training where OUT/runI/best.pt exists (re-score only).")
    ap.add_argument("--biased-dir", type=Path, default=None, help="Biased test folder (default OUT/biased_test).")
    ap.add_argument("--suffix", default="", help="Suffix of the output names (ablation<suffix>.md/json/png).")
    ap.add_argument("--prepare-only", action="store_true",
                    help="Only make the data and the biased test set (then run models in parallel with --only "
                         "and collect the table with --reuse).")
    ap.add_argument("--merge", nargs="+", type=Path, default=None,
                    help="Only collect rows from ablation*.json files of runs made in parallel (--only) into "
                         "OUT/ablation<suffix>.md/json/png.")
    args = ap.parse_args()
    if args.merge:
        merge(args.merge, args.out, args.suffix)
        return

    import torch

    from train.data.synth import generate_dataset
    from train.data.synth_config import SynthConfig
    from train.evaluate.bg_report import bg_suite_report
    from train.fit.config import TrainConfig
    from train.fit.trainer import train

    torch.set_num_threads(args.threads)
    t_all = time.perf_counter()
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    config = SynthConfig(n=args.n, size=args.size, bias=args.bias, seed=args.seed)
    data = args.data
    if data is None:
        data = out / "data"
        if not (data / "card.json").is_file():
            t0 = time.perf_counter()
            generate_dataset(data, config, workers=max(1, args.workers), overwrite=data.exists())
            print(f"dataset: {time.perf_counter() - t0:.1f} s", flush=True)
    biased = args.biased_dir or out / "biased_test"
    if not (biased / "manifest.csv").is_file():
        t0 = time.perf_counter()
        biased.mkdir(parents=True, exist_ok=True)
        bt = make_biased_test(biased, config, args.biased_n, args.bias, max(1, args.workers))
        (biased / "biased.json").write_text(json.dumps(bt))
        print(f"biased test: {bt} in {time.perf_counter() - t0:.1f} s", flush=True)
    bt = json.loads((biased / "biased.json").read_text())
    if args.prepare_only:
        return

    chosen = [int(i) for i in args.only.split(",") if i.strip()] or list(range(len(RUNS)))
    rows = []
    suite_source = None
    for i in chosen:
        name, parts, bg, prior = RUNS[i]
        run_dir = out / f"run{i}"
        t0 = time.perf_counter()
        if args.reuse and (run_dir / "best.pt").is_file() and (run_dir / "report.json").is_file():
            summary = json.loads((run_dir / "report.json").read_text())
            train_s = float(summary.get("train_seconds", float("nan")))
        else:
            summary, train_s = None, 0.0
        cfg = TrainConfig(data=str(data), out=str(run_dir), preset="edge", pretrained=args.pretrained, epochs=args.epochs,
                          batch=args.batch, device=args.device, seed=args.seed, threads=args.threads, workers=args.workers,
                          fpn=parts, use_parts=parts, frame_size=args.frame_size, global_size=args.global_size,
                          crop_size=args.crop_size, progress=False, fg_prior=args.fg_prior if prior else 0.0,
                          bg_replace=args.bg_p if bg else 0.0, blend=args.blend)  # both explicit: the library defaults are on
        if summary is None:
            summary = train(cfg)
            train_s = time.perf_counter() - t0
        suite = bg_suite_report(run_dir / "best.pt", biased, split="test", out=run_dir / f"bg_suite{args.suffix}", device=args.device,
                                batch=16, adversarial_m=args.adv_m, seed=args.seed, progress=False)
        suite_source = suite["background_source"]
        v = suite["variants"]
        row = {
            "model": name,
            "acc_biased": 100 * v["original"]["accuracy"],
            "acc_mixed_rand": 100 * v["mixed_rand"]["accuracy"],
            "acc_mixed_same": 100 * v["mixed_same"]["accuracy"],
            "acc_mixed_next": 100 * v["mixed_next"]["accuracy"],
            "acc_only_fg": 100 * v["only_fg"]["accuracy"],
            "acc_no_fg": 100 * v["no_fg"]["accuracy"],
            "bg_gap": 100 * suite["bg_gap"],
            "acc_adversarial": 100 * suite.get("adversarial", {}).get("accuracy", float("nan")),
            "acc_unbiased_test": 100 * summary.get("test", {}).get("accuracy", float("nan")),
            "boxes_on_item": 100 * suite["boxes_on_item"] if "boxes_on_item" in suite else float("nan"),
            "train_seconds": train_s,
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
        (out / f"ablation{args.suffix}_partial.json").write_text(json.dumps(rows, indent=2))

    order = [name for name, *_ in RUNS]
    rows.sort(key=lambda r: order.index(r["model"]))  # table order, whatever order they ran in
    meta = {"n": args.n, "size": args.size, "bias": args.bias, "epochs": args.epochs, "seed": args.seed, "device": args.device,
            "biased_test": bt, "bg_p": args.bg_p, "fg_prior": args.fg_prior, "blend": args.blend, "adv_m": args.adv_m, "suite_source": suite_source,
            "wall_seconds": round(time.perf_counter() - t_all, 1)}
    (out / f"ablation{args.suffix}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    table = markdown(rows, meta)
    (out / f"ablation{args.suffix}.md").write_text(table)
    bar_chart(rows, out / f"ablation{args.suffix}.png")
    print(table)
    print(f"wall time {meta['wall_seconds']} s")


if __name__ == "__main__":
    main()
