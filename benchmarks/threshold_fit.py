"""Decision thresholds of a trained run, side by side: the checkpoint's own (for a run trained before issue 18,
the former fit: middles in probability on all of val), the val-only fit in log-odds and the bagged fit
(train.fit.thresholds), each on val and test; with --bundle, how far each INT8 flavour moves every image's
log-odds and how many verdicts it changes at each set of thresholds; --bands sweeps the minimum band width
(what MIN_BAND_LOGIT was chosen from).

    python benchmarks/threshold_fit.py --ckpt runs/demo/edge/best.pt --data runs/demo/data \\
        --bundle runs/demo/bundle --out runs/thresholds

Scores are computed once (torch for the fits, the bundle's FP32 / INT8 graphs through the runtime path for
the INT8 columns) and kept in OUT/scores.npz; --scores OUT/scores.npz reuses them without a model.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from edge_runtime.roi import Thresholds
from train.fit.thresholds import decision_metrics, decisions, describe_fit, fit_thresholds, logit

SPLITS = ("val", "test")


def torch_scores(ckpt: Path, data: Path) -> dict:
    """{split: (is_counterfeit [N] bool, P(counterfeit) [N] float64, groups [N] str, paths [N] str)} from the
    checkpoint, plus "thresholds" (the checkpoint's own)."""
    from train.data.folders import select_split
    from train.evaluate.predict import make_loader, predict, resolve_device
    from train.fit.steps import positive_index
    from train.model.checkpoint import load_checkpoint

    model, info = load_checkpoint(ckpt, map_location="cpu")
    classes = list(info["classes"])
    pos = positive_index(classes)
    out: dict = {"thresholds": info.get("thresholds") or {}}
    for split in SPLITS:
        index, chosen = select_split(data, split, classes, 0)
        pred = predict(model, make_loader(index.root, chosen, model.cfg.preprocess, 8), resolve_device("cpu"))
        out[split] = (pred.labels == pos, pred.probs[:, pos].astype(np.float64), [s.group for s in chosen],
                      [str(index.root / s.path) for s in chosen])
    return out


def bundle_logodds(bundle: Path, paths: list[str]) -> dict[str, np.ndarray]:
    """{"fp32" | "int8_cpu" | "int8_trt": [N] float64 log-odds of counterfeit} through the runtime path
    (calibration.accuracy.bundle_pipelines; the TensorRT flavour with its Q/DQ simulated)."""
    from calibration.accuracy import bundle_pipelines
    from edge_runtime.preprocess import load_frame

    man, _, by_flavour = bundle_pipelines(bundle)
    pipes = {k if k == "fp32" else f"int8_{k}": v for k, v in by_flavour.items()}
    out: dict[str, list[float]] = {k: [] for k in pipes}
    neg = 1 - man.positive_index
    for path in paths:
        frame = load_frame(Path(path), man.preprocess)
        for name, pipe in pipes.items():
            z = pipe.run_frame(frame).logits
            out[name].append(float(z[man.positive_index] - z[neg]))
    return {k: np.asarray(v) for k, v in out.items()}


def verdict_changes(z: dict[str, np.ndarray], th: Thresholds) -> dict:
    """Per INT8 flavour: verdicts (genuine / counterfeit / uncertain) equal to FP32's at `th`, and how many
    went from one call straight to the other."""
    ref = decisions(1 / (1 + np.exp(-z["fp32"])), th)
    out = {}
    for name in (k for k in z if k != "fp32"):
        d = decisions(1 / (1 + np.exp(-z[name])), th)
        out[name] = {"equal": float((d == ref).mean()), "changed": int((d != ref).sum()),
                     "crossed": int(((d == 0) & (ref == 1) | (d == 1) & (ref == 0)).sum())}
    return out


def logit_shift(z: dict[str, np.ndarray]) -> dict:
    """|INT8 log-odds - FP32 log-odds| p50 / p99 / max per flavour."""
    return {k: {q: float(np.quantile(np.abs(v - z["fp32"]), x)) for q, x in (("p50", 0.5), ("p99", 0.99), ("max", 1.0))}
            for k, v in z.items() if k != "fp32"}


def row(name: str, th: Thresholds, s: dict, z: dict | None) -> dict:
    r = {"fit": name, "genuine_at": th.genuine_at, "counterfeit_at": th.counterfeit_at,
         "band_logit": float(logit(th.counterfeit_at) - logit(th.genuine_at))}
    for split in SPLITS:
        y, p = s[split][:2]
        r[split] = decision_metrics(y, p, th)
    if z is not None:
        r["int8"] = verdict_changes(z, th)
    return r


def fmt(r: dict) -> str:
    def pct(v):
        return "-" if v is None else f"{100 * v:.1f}"
    cells = [r["fit"], f"{r['genuine_at']:.4g} / {r['counterfeit_at']:.4g}", f"{r['band_logit']:.2f}"]
    for split in SPLITS:
        m = r[split]
        cells.append(f"{pct(m['coverage'])} / {pct(m['error_decided'])} / {m['counterfeit_missed']}")
    for k, v in (r.get("int8") or {}).items():
        cells.append(f"{k} {100 * v['equal']:.1f}% ({v['changed']}, crossed {v['crossed']})")
    return "| " + " | ".join(cells) + " |"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", type=Path)
    ap.add_argument("--data", type=Path)
    ap.add_argument("--bundle", type=Path, default=None)
    ap.add_argument("--scores", type=Path, default=None, help="OUT/scores.npz of an earlier run (no model needed)")
    ap.add_argument("--bands", default="0,0.5,1,1.5,2,3,4", help="minimum band widths (log-odds) to sweep")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.scores is not None:
        raw = np.load(args.scores, allow_pickle=False)
        s = {split: (raw[f"{split}_y"], raw[f"{split}_p"], list(raw[f"{split}_groups"]), list(raw[f"{split}_paths"]))
             for split in SPLITS}
        own = json.loads(str(raw["thresholds"]))
        z = {k[2:]: raw[k] for k in raw.files if k.startswith("z_")} or None
    else:
        s = torch_scores(args.ckpt, args.data)
        own = s.pop("thresholds")
        z = bundle_logodds(args.bundle, s["val"][3] + s["test"][3]) if args.bundle else None
        arrays = {f"{split}_{k}": np.asarray(v) for split in SPLITS
                  for k, v in zip(("y", "p", "groups", "paths"), s[split])}
        arrays.update({f"z_{k}": v for k, v in (z or {}).items()})
        np.savez(args.out / "scores.npz", thresholds=json.dumps(own), **arrays)
    y, p, groups = s["val"][:3]
    rows = []
    if own:
        rows.append(row("checkpoint's own", Thresholds(**own), s, z))
    only = fit_thresholds(y, p, groups=groups, n_resamples=0)
    bagged = fit_thresholds(y, p, groups=groups)
    rows += [row("val-only, log-odds", only.thresholds, s, z), row("bagged (default)", bagged.thresholds, s, z)]
    sweep = [row(f"bagged, band >= {w:g}", fit_thresholds(y, p, groups=groups, min_band_logit=float(w)).thresholds, s, z)
             for w in map(float, args.bands.split(","))]
    head = "| fit | genuine_at / counterfeit_at | band (log-odds) | val coverage / error / missed | test ditto |"
    print(head + (" INT8 verdicts = FP32 (changed) |" * len(z or {})))
    for r in rows + sweep:
        print(fmt(r))
    report = {"rows": rows, "sweep": sweep, "fit": bagged.to_dict(),
              "n": {split: int(len(s[split][0])) for split in SPLITS},
              "counterfeits": {split: int(np.sum(s[split][0])) for split in SPLITS}}
    if z is not None:
        report["logit_shift"] = logit_shift(z)
        print("INT8 |log-odds shift| vs FP32 on val + test:", json.dumps(report["logit_shift"]))
    print("\n".join(["bagged fit:", *[f"  {line}" for line in describe_fit(bagged.to_dict())]]))
    (args.out / "thresholds.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
