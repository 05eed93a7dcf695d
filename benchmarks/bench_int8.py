"""INT8 (CPU flavour, QDQ U8S8) against FP32 onnxruntime for the `paper` preset, side by side in one run.

    python benchmarks/bench_int8.py --out runs/bench_int8                 # untrained paper model
    python benchmarks/bench_int8.py --out runs/bench_int8 --ckpt best.pt  # a trained paper checkpoint
    python benchmarks/bench_int8.py --out runs/bench_int8 --train-epochs 1

What it does:
1. data: the synthetic dataset (train.data.synth, 1024 px frames) in OUT/data unless --data is given;
2. model: --ckpt, else a paper-preset model (resnet50, global 448, crops 224, K 4) that is trained for
   --train-epochs epochs with train.fit.trainer (0 = random init: then only agreement and speed mean much);
3. export: the real mgfen-export path (export.bundle.export_model) with --int8 on the train split;
4. accuracy: FP32 vs INT8 (cpu and trt flavours) on the test split through the runtime path;
5. speed: global + parts graphs per frame, FP32 and INT8-cpu sessions with the same intra_op_num_threads,
   interleaved round by round so both see the same machine load; prints min/median and the ratio.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from calibration.accuracy import OrtPipeline, PipelineParams, compare_precisions, make_session
from edge_runtime import names
from edge_runtime.bundle.manifest import load_bundle
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


def measure_speed(bundle_dir: Path, man, data: Path, args):
    """global + parts per frame for FP32 and INT8-cpu sessions with the same threads, interleaved round by
    round (alternating order) on 4 test frames; returns (speed dict, median ratio, best-of ratio)."""
    cfg = man.preprocess
    frames = [load_frame(p, cfg) for p in list_images(data / "test")[:4]]
    sessions = {k: (make_session(bundle_dir / man.file_for("global", *pr), args.threads),
                    make_session(bundle_dir / man.file_for("parts", *pr), args.threads))
                for k, pr in (("fp32", ("fp32",)), ("int8_cpu", ("int8", "cpu")))}
    feeds = []
    for f in frames:
        gi = {names.GLOBAL_INPUT: global_input(f, cfg)}
        (boxes,) = sessions["fp32"][0].run([names.BOXES], gi)
        feeds.append((gi, {names.PARTS_INPUT: crop_rois(f, boxes[0], cfg.crop_size)}))
    times = {k: [] for k in sessions}
    for k in sessions:  # warm-up
        time_pipeline(sessions[k], feeds[0])
    for r in range(args.rounds):
        for k in (sessions if r % 2 == 0 else reversed(list(sessions))):
            times[k].append(time_pipeline(sessions[k], feeds[r % len(feeds)]))
    speed = {k: {"min_ms": round(1000 * min(v), 1), "median_ms": round(1000 * statistics.median(v), 1)}
             for k, v in times.items()}
    ratio = speed["fp32"]["median_ms"] / speed["int8_cpu"]["median_ms"]
    ratio_min = speed["fp32"]["min_ms"] / speed["int8_cpu"]["min_ms"]
    return speed, ratio, ratio_min


def speed_table(speed: dict, ratio: float, ratio_min: float) -> str:
    rows = [f"{k:10s} min {v['min_ms']:8.1f} ms  median {v['median_ms']:8.1f} ms" for k, v in speed.items()]
    return "\n".join(rows + [f"INT8-cpu speed-up vs FP32: {ratio:.2f}x median, {ratio_min:.2f}x best-of"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--data")
    ap.add_argument("--ckpt")
    ap.add_argument("--train-epochs", type=int, default=0)
    ap.add_argument("--n", type=int, default=300, help="synthetic frames when --data is not given")
    ap.add_argument("--calib-n", type=int, default=32)
    ap.add_argument("--calib-method", default="percentile", choices=["entropy", "minmax", "percentile"])
    ap.add_argument("--threads", type=int, default=2, help="onnxruntime intra_op_num_threads (and torch)")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--val-limit", type=int, default=20)
    ap.add_argument("--speed-only", action="store_true",
                    help="reuse OUT/bundle from an earlier run and only time FP32 vs INT8-cpu")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = get_data(args)
    bundle_dir = out / "bundle"
    if args.speed_only:
        man = load_bundle(bundle_dir).manifest
        print(speed_table(*measure_speed(bundle_dir, man, data, args)))
        return
    model, info, source = get_model(args, data)
    info = {k: v for k, v in info.items() if v is not None}

    t0 = time.perf_counter()
    report = export_model(model, info, source, bundle_dir,
                          ExportConfig(int8=True, calib=data, calib_n=args.calib_n, calib_method=args.calib_method,
                                       force=True, val_limit=args.val_limit),
                          lambda m: print(f"  {m}"))
    export_s = time.perf_counter() - t0
    man = load_bundle(bundle_dir).manifest
    cfg = man.preprocess
    params = PipelineParams(cfg, man.global_weight, man.use_parts, man.positive_index)

    pipes = {"fp32": OrtPipeline(bundle_dir / man.file_for("global", "fp32"),
                                 bundle_dir / man.file_for("parts", "fp32"), params, args.threads)}
    for flavour in ("cpu", "trt"):
        pipes[f"int8_{flavour}"] = OrtPipeline(bundle_dir / man.file_for("global", "int8", flavour),
                                               bundle_dir / man.file_for("parts", "int8", flavour),
                                               params, args.threads, simulate_qdq=flavour == "trt")
    t0 = time.perf_counter()
    acc = compare_precisions(pipes, "fp32", data / "test", cfg, man.classes)
    acc_s = time.perf_counter() - t0

    speed, ratio, ratio_min = measure_speed(bundle_dir, man, data, args)

    result = {
        "model": source, "threads": args.threads, "test_images": acc["n"],
        "quantize_seconds": report["int8"]["quantize_seconds"], "export_seconds": round(export_s, 1),
        "accuracy_seconds": round(acc_s, 1), "calibration": {"n": args.calib_n, "method": args.calib_method},
        "parity": {"graph_max_prob_err": max(report["parity"]["graphs"]["max"]["global_prob"],
                                             report["parity"]["graphs"]["max"]["part_prob"]),
                   "runtime_max_prob_err": report["parity"]["runtime"]["max_abs_prob_diff"]},
        "accuracy": {k: acc[k] for k in pipes}, "speed": speed,
        "speedup_median": round(ratio, 2), "speedup_min": round(ratio_min, 2),
    }
    (out / "bench_int8.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nparity: ONNX vs torch max prob error {result['parity']['graph_max_prob_err']:.2e}; "
          f"runtime path {result['parity']['runtime_max_prob_err']:.2e}")
    print(f"quantisation (4 files, {args.calib_n} images, {args.calib_method}): {result['quantize_seconds']} s")
    print(f"{'':10s} {'accuracy':>9s} {'drop pts':>9s} {'agreement':>10s} {'global+parts median ms':>23s}")
    for k in pipes:
        a = acc[k]
        ms = speed.get(k, {}).get("median_ms", float("nan"))
        print(f"{k:10s} {a['accuracy']:9.4f} {0.0 - a['delta_points']:9.2f} {a['agreement']:10.3f} {ms:23.1f}")
    print(f"INT8-cpu speed-up vs FP32 onnxruntime ({args.threads} threads, interleaved): "
          f"{ratio:.2f}x median, {ratio_min:.2f}x best-of")


if __name__ == "__main__":
    main()
