"""INT8 (CPU flavour, QDQ U8S8) against FP32 onnxruntime for the `paper` preset, side by side in one run.

    python benchmarks/bench_int8.py --out runs/bench_int8                 # untrained paper model
    python benchmarks/bench_int8.py --out runs/bench_int8 --ckpt best.pt  # a trained checkpoint (any preset)
    python benchmarks/bench_int8.py --out runs/bench_int8 --train-epochs 1

What it does:
1. data: the synthetic dataset (train.data.synth, 1024 px frames) in OUT/data unless --data is given;
2. model: --ckpt, else a paper-preset model (resnet50, global 448, crops 224, K 4) that is trained for
   --train-epochs epochs with train.fit.trainer (0 = random init: then only agreement and speed mean much);
3. export: the real mgfen-export path (export.bundle.export_model) with --int8 on the train split, the
   FP32-fallback search on (calibration.fallback; --no-fallback turns it off); prints this CPU's flags and
   the reduce_range choice, and per flavour the method, the nodes kept FP32 and the gate before/after;
4. the CPU flavour once more without any fallback ("int8_cpu_full": the configured method, everything
   quantised, the same reduce_range and calibration images) and with the --keep K most INT8-sensitive nodes
   kept FP32 ("int8_cpu_keepK", listed), to price the bundle's fallback and bigger ones;
5. accuracy: FP32 vs those INT8 variants and the trt flavour on the test split through the runtime path;
6. speed: global + parts graphs per frame, FP32 and every INT8-cpu variant, sessions with the same
   intra_op_num_threads, interleaved round by round so all see the same machine load; prints min/median
   and the ratios.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from calibration.accuracy import OrtPipeline, PipelineParams, compare_precisions, make_session
from calibration.cpu_features import choose_reduce_range
from calibration.fallback import Quantiser, by_graph, candidates, sensitivity_feeds
from calibration.quantize import prepare_for_quantization
from calibration.reader import GlobalReader, PartsReader
from edge_runtime import names
from edge_runtime.bundle.manifest import load_bundle, sha256_file
from edge_runtime.preprocess import global_input, list_images, load_frame
from edge_runtime.roi import crop_rois
from export.bundle import ExportConfig, export_model


def get_data(args) -> Path:
    if args.data:
        return Path(args.data)
    from train.data.synth import generate_dataset
    from train.data.synth_config import SynthConfig

    data = Path(args.out) / "data"
    if not (data / "manifest.csv").is_file():
        t0 = time.perf_counter()
        generate_dataset(data, SynthConfig(n=args.n, size=1024, seed=0), workers=2, overwrite=True)
        print(f"synthetic data: {args.n} frames in {time.perf_counter() - t0:.0f} s")
    return data


def get_model(args, data: Path):
    if args.ckpt:
        from train.model.checkpoint import load_checkpoint

        model, info = load_checkpoint(args.ckpt)
        return model, info, {"checkpoint": Path(args.ckpt).name}
    if args.train_epochs > 0:
        from train.fit.config import TrainConfig
        from train.fit.trainer import train
        from train.model.checkpoint import load_checkpoint

        run = Path(args.out) / "train"
        train(TrainConfig(data=str(data), out=str(run), preset="paper", pretrained="none",
                          epochs=args.train_epochs, threads=args.threads, progress=False))
        ckpt = sorted(run.glob("*.pt"))[0]
        model, info = load_checkpoint(ckpt)
        return model, info, {"checkpoint": ckpt.name, "trained_epochs": args.train_epochs}
    from train.model.mgfen import build_model, preset

    torch.manual_seed(0)
    model = build_model(preset("paper"), pretrained=None).eval()
    return model, {"thresholds": None}, {"checkpoint": "untrained paper preset (random init, seed 0)"}


def time_pipeline(sessions, feeds) -> float:
    """Seconds for global + parts on one frame's feeds."""
    g, p = sessions
    t0 = time.perf_counter()
    g.run(None, feeds[0])
    p.run(None, feeds[1])
    return time.perf_counter() - t0


def cpu_variants(bundle_dir: Path, man, data: Path, out: Path, keep: list[int]) -> dict[str, dict[str, Path]]:
    """The bundle's CPU flavour made again with nothing kept FP32 by the search ("int8_cpu_full": the
    configured method the manifest records, its reduce_range and calibration images) and, for each k in
    `keep`, with the k worst nodes of calibration.fallback's ranking kept FP32 ("int8_cpu_keepK", what a
    search that needed k nodes would ship). {name: {graph: path}}, files under `out`."""
    cal = man.calibration
    cfg = man.preprocess
    root = data / "train" if (data / "train").is_dir() else data
    paths = [root / im["path"] for im in cal["images"]]
    out.mkdir(parents=True, exist_ok=True)
    readers = {"global": GlobalReader(paths, cfg),
               "parts": PartsReader(paths, cfg, make_session(bundle_dir / man.file_for("global", "fp32")))}
    prepared = {g: prepare_for_quantization(bundle_dir / man.file_for(g, "fp32"), out / f"{g}.pre.onnx")
                for g in names.GRAPHS}
    quantiser = Quantiser(prepared, readers, out)
    method, reduce_range = cal["method"], bool(cal["flavours"]["cpu"]["reduce_range"])
    variants = {"int8_cpu_full": {g: r.path for g, r in quantiser.quantise("cpu", method, reduce_range).items()}}
    if keep:
        ranking = candidates(quantiser, "cpu", method, reduce_range, sensitivity_feeds(readers))
        for k in keep:
            kept = ranking[:k]
            files = quantiser.quantise("cpu", method, reduce_range, by_graph(kept))
            variants[f"int8_cpu_keep{k}"] = {g: r.path for g, r in files.items()}
            print(f"int8_cpu_keep{k}: " + ", ".join(f"{n.graph}/{n.name} ({n.op_type}, NSR {n.nsr:.3g})"
                                                  for n in kept))
    return variants


def measure_speed(variants: dict[str, dict[str, Path]], man, data: Path, args):
    """global + parts per frame for each variant ({name: {graph: ONNX file}}) with the same threads,
    interleaved round by round (alternating order) on 4 test frames; returns {name: min/median ms}."""
    cfg = man.preprocess
    frames = [load_frame(p, cfg) for p in list_images(data / "test")[:4]]
    sessions = {k: (make_session(v["global"], args.threads), make_session(v["parts"], args.threads))
                for k, v in variants.items()}
    reference = next(iter(sessions.values()))
    feeds = []
    for f in frames:
        gi = {names.GLOBAL_INPUT: global_input(f, cfg)}
        (boxes,) = reference[0].run([names.BOXES], gi)
        feeds.append((gi, {names.PARTS_INPUT: crop_rois(f, boxes[0], cfg.crop_size)}))
    times = {k: [] for k in sessions}
    for k in sessions:  # warm-up
        time_pipeline(sessions[k], feeds[0])
    for r in range(args.rounds):
        for k in (sessions if r % 2 == 0 else reversed(list(sessions))):
            times[k].append(time_pipeline(sessions[k], feeds[r % len(feeds)]))
    return {k: {"min_ms": round(1000 * min(v), 1), "median_ms": round(1000 * statistics.median(v), 1)}
            for k, v in times.items()}


def speed_table(speed: dict) -> str:
    rows = [f"{k:18s} min {v['min_ms']:8.1f} ms  median {v['median_ms']:8.1f} ms" for k, v in speed.items()]
    fp32 = speed["fp32"]
    for k in speed:
        if k != "fp32":
            rows.append(f"{k} speed-up vs FP32: {fp32['median_ms'] / speed[k]['median_ms']:.2f}x median, "
                        f"{fp32['min_ms'] / speed[k]['min_ms']:.2f}x best-of")
    full = speed.get("int8_cpu_full")
    for k in speed:
        if full is not None and k not in ("fp32", "int8_cpu_full"):
            rows.append(f"the fallback costs: {k} / int8_cpu_full median {speed[k]['median_ms'] / full['median_ms']:.2f}x")
    return "\n".join(rows)


def search_summary(man) -> list[str]:
    """One line per flavour: method, reduce_range, gate before -> after, then the nodes kept FP32."""
    lines = []
    for flavour, entry in (man.calibration or {}).get("flavours", {}).items():
        before, after = entry.get("gate_before") or {}, entry.get("gate_after") or {}
        lines.append(f"{flavour}: method {entry['method']}, reduce_range {entry['reduce_range']}, "
                     f"{len(entry['kept_fp32'])} node(s) kept FP32, {entry['trials']} trial(s); verdicts equal "
                     f"FP32's {before.get('agreement')} -> {after.get('agreement')}, drop "
                     f"{before.get('drop_points')} -> {after.get('drop_points')} pts")
        lines += [f"    {n['graph']}/{n['node']} ({n['op_type']})" for n in entry["kept_fp32"]]
    return lines


def bundle_variants(bundle_dir: Path, man, extra: dict[str, dict[str, Path]]) -> dict[str, dict[str, Path]]:
    """{name: {graph: file}}: fp32, the `extra` ones (cpu_variants), int8_cpu (the bundle's, with its
    fallback) unless its files are byte for byte one of the extra variants (then timing it twice would
    only measure the noise)."""
    bundle = {g: bundle_dir / man.file_for(g, "int8", "cpu") for g in names.GRAPHS}
    digest = {g: sha256_file(p) for g, p in bundle.items()}
    same = [k for k, v in extra.items() if all(sha256_file(v[g]) == digest[g] for g in names.GRAPHS)]
    if same:
        print(f"int8_cpu (the bundle's files) = {same[0]}: timed once")
    return {"fp32": {g: bundle_dir / man.file_for(g, "fp32") for g in names.GRAPHS}, **extra,
            **({} if same else {"int8_cpu": bundle})}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--data")
    ap.add_argument("--ckpt")
    ap.add_argument("--train-epochs", type=int, default=0)
    ap.add_argument("--n", type=int, default=300, help="synthetic frames when --data is not given")
    ap.add_argument("--calib-n", type=int, default=32)
    ap.add_argument("--calib-method", default="percentile", choices=["entropy", "minmax", "percentile"])
    ap.add_argument("--no-fallback", action="store_true", help="export without the FP32-fallback search")
    ap.add_argument("--threads", type=int, default=2, help="onnxruntime intra_op_num_threads (and torch)")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--val-limit", type=int, default=20)
    ap.add_argument("--keep", type=int, nargs="*", default=[8, 32],
                    help="also time the CPU flavour with this many of the most INT8-sensitive nodes kept FP32")
    ap.add_argument("--speed-only", action="store_true",
                    help="reuse OUT/bundle from an earlier run and only time FP32 vs its INT8-cpu files")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = get_data(args)
    bundle_dir = out / "bundle"
    choice = choose_reduce_range("auto")
    flags = " ".join(choice.flags) or "none of AVX2 / AVX-512 / VNNI / AMX"
    print(f"CPU: {choice.machine}, flags {flags}; reduce_range auto -> {choice.reduce_range} ({choice.reason})")
    if args.speed_only:
        man = load_bundle(bundle_dir).manifest
        print(speed_table(measure_speed(bundle_variants(bundle_dir, man, {}), man, data, args)))
        return
    model, info, source = get_model(args, data)
    info = {k: v for k, v in info.items() if v is not None}

    t0 = time.perf_counter()
    report = export_model(model, info, source, bundle_dir,
                          ExportConfig(int8=True, calib=data, calib_n=args.calib_n, calib_method=args.calib_method,
                                       fallback=not args.no_fallback, force=True, val_limit=args.val_limit),
                          lambda m: print(f"  {m}"))
    export_s = time.perf_counter() - t0
    man = load_bundle(bundle_dir).manifest
    cfg = man.preprocess
    params = PipelineParams(cfg, man.global_weight, man.use_parts, man.positive_index)
    t0 = time.perf_counter()
    variants = bundle_variants(bundle_dir, man, cpu_variants(bundle_dir, man, data, out / "cpu_variants", args.keep))
    full_s = time.perf_counter() - t0

    pipes = {k: OrtPipeline(v["global"], v["parts"], params, args.threads) for k, v in variants.items()}
    pipes["int8_trt"] = OrtPipeline(bundle_dir / man.file_for("global", "int8", "trt"),
                                    bundle_dir / man.file_for("parts", "int8", "trt"), params, args.threads,
                                    simulate_qdq=True)
    t0 = time.perf_counter()
    acc = compare_precisions(pipes, "fp32", data / "test", cfg, man.classes)
    acc_s = time.perf_counter() - t0

    speed = measure_speed(variants, man, data, args)

    result = {
        "model": source, "threads": args.threads, "test_images": acc["n"],
        "quantize_seconds": report["int8"]["quantize_seconds"], "export_seconds": round(export_s, 1),
        "cpu_variants_seconds": round(full_s, 1), "accuracy_seconds": round(acc_s, 1),
        "calibration": {"n": args.calib_n, "method": args.calib_method,
                        "reduce_range": man.calibration["reduce_range"],
                        "flavours": man.calibration.get("flavours")},
        "parity": {"graph_max_prob_err": max(report["parity"]["graphs"]["max"]["global_prob"],
                                             report["parity"]["graphs"]["max"]["part_prob"]),
                   "runtime_max_prob_err": report["parity"]["runtime"]["max_abs_prob_diff"]},
        "accuracy": {k: acc[k] for k in pipes}, "speed": speed,
        "speedup_median": {k: round(speed["fp32"]["median_ms"] / v["median_ms"], 2) for k, v in speed.items()},
    }
    (out / "bench_int8.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nparity: ONNX vs torch max prob error {result['parity']['graph_max_prob_err']:.2e}; "
          f"runtime path {result['parity']['runtime_max_prob_err']:.2e}")
    print(f"quantisation (4 files, {args.calib_n} images, {args.calib_method}, search "
          f"{'off' if args.no_fallback else 'on'}): {result['quantize_seconds']} s; the other INT8-cpu variants {full_s:.1f} s")
    print("\n".join(["search per flavour:"] + search_summary(man)))
    print(f"{'':16s} {'accuracy':>9s} {'drop pts':>9s} {'agreement':>10s} {'global+parts median ms':>23s}")
    for k in pipes:
        a = acc[k]
        ms = speed.get(k, {}).get("median_ms", float("nan"))
        print(f"{k:16s} {a['accuracy']:9.4f} {0.0 - a['delta_points']:9.2f} {a['agreement']:10.3f} {ms:23.1f}")
    print(f"speed ({args.threads} threads, interleaved):")
    print(speed_table(speed))


if __name__ == "__main__":
    main()
