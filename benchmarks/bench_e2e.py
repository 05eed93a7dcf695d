"""End to end per frame, side by side in one run: torch eager MGFEN vs onnxruntime FP32 and INT8 (cpu
flavour), for the `paper` and `edge` presets, with a plain ResNet-50 classifier at 448 px as the
reference point and the multiply-accumulate floor of this CPU.

    python benchmarks/bench_e2e.py --out runs/bench_e2e                         # CPU, 2 threads
    python benchmarks/bench_e2e.py --out runs/bench_e2e --presets edge --frames 3 --warmup 1   # smoke
    python benchmarks/bench_e2e.py --out runs/bench_e2e_gpu --device cuda       # torch FP32 + FP16 on a GPU

Every variant gets the same camera-like frame each round (1024 px BGR from the synthetic test split)
and the same preprocessing (edge_runtime.preprocess.prepare_frame: square crop, resize to F, CLAHE,
brightness). Per frame, timed from the BGR frame to P(counterfeit):
  torch eager   prepare_frame -> global_input + to_nchw -> MGFEN.forward (global branch, roi_align crops
                of the full-resolution frame, parts branch, vote) -> softmax
  ort fp32/int8 prepare_frame -> the runtime pipeline (calibration.accuracy.OrtPipeline: global graph ->
                host crops (edge_runtime.roi.crop_rois) -> parts graph -> vote -> softmax)
  resnet50@448  prepare_frame (paper preset, 1024 px) -> global_input (448 px) -> torchvision resnet50
                (ImageNet normalisation inside) -> softmax; eager, and exported to ONNX FP32 / INT8 cpu.
Variants are interleaved round by round (order reversed every other round), torch, onnxruntime and
OpenCV use the same thread count (--threads), the first --warmup rounds are dropped.

Models are random-init unless --ckpt-paper / --ckpt-edge is given (speed does not depend on the
weights). INT8 files come from the real export path (export.bundle.export_model, cpu flavour) calibrated
on real images of the synthetic dataset (OUT/data), never on random data.

The floor: MACs of the global + parts graphs (counted on the FP32 ONNX graphs, see edge_runtime.cost.graph_cost)
divided by the best MAC/s that onnxruntime reaches on this CPU for large dense single-op graphs (Conv
3x3, Conv 1x1, MatMul; FP32 and QDQ U8S8 INT8), measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import onnxruntime
import torch
import torchvision
from torch import nn

from _common import run_rounds, sample_frames, synthetic_data
from bench_e2e_report import RESNET, build_rows, markdown, verdicts
from calibration.accuracy import OrtPipeline, PipelineParams, make_session
from edge_runtime import names
from edge_runtime.bundle.manifest import load_bundle
from edge_runtime.errors import MgfenError
from edge_runtime.inference.device_info import cpu_model
from edge_runtime.preprocess import PreprocessConfig, global_input, prepare_frame, to_nchw
from edge_runtime.roi import softmax
from mac_floor import MICRO, graph_macs, measure_mac_rates

POSITIVE = names.CLASS_NAMES.index(names.POSITIVE_CLASS)

def log(msg: str) -> None:
    print(msg, flush=True)


# ------------------------------------------------------------------------------------------------ models


class Normalised(nn.Module):
    """x [B,3,H,W] float32 RGB in [0,1] -> ImageNet-normalised -> `net` (as MGFEN normalises inside)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)


def mgfen_model(preset_name: str, ckpt: str | None):
    """(MGFEN in eval mode, checkpoint info, description): the checkpoint, or the preset at random init."""
    if ckpt:
        from train.model.checkpoint import load_checkpoint

        model, info = load_checkpoint(ckpt, map_location="cpu")
        return model.eval(), info, f"checkpoint {Path(ckpt).name}"
    from train.model.mgfen import build_model, preset

    torch.manual_seed(0)
    return build_model(preset(preset_name), pretrained=None).eval(), {}, "random init (seed 0)"


def resnet_model() -> nn.Module:
    torch.manual_seed(0)
    return Normalised(torchvision.models.resnet50(weights=None, num_classes=len(names.CLASS_NAMES))).eval()


def bundle_for(model, info: dict, desc: str, folder: Path, data: Path, args) -> Path:
    """FP32 + INT8-cpu bundle of `model` through export.bundle.export_model (reused with --reuse)."""
    from export.bundle import ExportConfig, export_model

    if args.reuse and (folder / names.MANIFEST_FILE).is_file():
        log(f"  reusing {folder}")
        return folder
    t0 = time.perf_counter()
    info = {k: v for k, v in info.items() if v is not None}
    export_model(model, info, {"checkpoint": desc}, folder,
                 ExportConfig(int8=True, calib=data, calib_n=args.calib_n, calib_method=args.calib_method,
                              force=True, val_limit=4, parity_frames=4, int8_flavours=("cpu",)),
                 lambda m: log(f"  {m}"))
    log(f"  exported {folder} in {time.perf_counter() - t0:.0f} s")
    return folder


def resnet_onnx(net: nn.Module, folder: Path, data: Path, cfg: PreprocessConfig, args) -> tuple[Path, Path]:
    """resnet50 at 448 px exported to FP32 ONNX (input `image`, output `logits`) and quantised to INT8
    (cpu flavour, calibrated on real images of `data`); reused with --reuse."""
    from calibration.quantize import prepare_for_quantization, quantize_graph
    from calibration.reader import GlobalReader
    from calibration.select import select_calibration
    from export.onnx_export import DEFAULT_OPSET, export_module

    fp32, int8 = folder / "resnet50.onnx", folder / "resnet50.int8.cpu.onnx"
    if args.reuse and fp32.is_file() and int8.is_file():
        return fp32, int8
    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    example = torch.rand(1, 3, cfg.global_size, cfg.global_size)
    export_module(net, example, fp32, names.GLOBAL_INPUT, ("logits",), DEFAULT_OPSET)
    pre = prepare_for_quantization(fp32, folder / "resnet50.pre.onnx")
    calib = select_calibration(data, args.calib_n)
    quantize_graph(pre, int8, GlobalReader(calib.paths, cfg), "cpu", args.calib_method, prepared=True)
    pre.unlink()
    log(f"  resnet50: ONNX FP32 + INT8-cpu in {time.perf_counter() - t0:.0f} s")
    return fp32, int8


# ------------------------------------------------------------------------------------------------ variants


class TimedSession:
    """An onnxruntime session that adds the wall time of each run() to `seconds` (time inside graphs)."""

    def __init__(self, session) -> None:
        self.session = session
        self.seconds = 0.0

    def run(self, outputs, feeds):
        t0 = time.perf_counter()
        try:
            return self.session.run(outputs, feeds)
        finally:
            self.seconds += time.perf_counter() - t0


@dataclass
class Variant:
    """One row: `frame_fn(bgr) -> (P(positive), inside-graph seconds or None)`, timed around by sample()."""

    group: str  # "paper" | "edge" | RESNET
    engine: str  # "torch eager fp32" | "torch eager fp16" | "ort fp32" | "ort int8-cpu"
    cfg: PreprocessConfig
    frame_fn: object
    macs: dict | None = None
    precision: str = "fp32"

    @property
    def key(self) -> str:
        return f"{self.group} | {self.engine}"

    def sample(self, bgr: np.ndarray) -> dict:
        t0 = time.perf_counter()
        frame = prepare_frame(bgr, self.cfg)
        t1 = time.perf_counter()
        prob, graph_s = self.frame_fn(frame)
        t2 = time.perf_counter()
        return {"total": (t2 - t0) * 1e3, "preprocess": (t1 - t0) * 1e3, "model": (t2 - t1) * 1e3,
                "graphs": None if graph_s is None else graph_s * 1e3, "prob": prob}


def torch_mgfen_fn(model, cfg: PreprocessConfig, device: torch.device, fp16: bool):
    """F x F x 3 uint8 RGB frame -> P(positive) through MGFEN.forward (crops by roi_align inside)."""

    def run(frame: np.ndarray):
        image = torch.from_numpy(global_input(frame, cfg)).to(device)
        full = torch.from_numpy(to_nchw(frame)).to(device)
        with torch.inference_mode(), torch.autocast(device.type, dtype=torch.float16, enabled=fp16):
            logits = model(image, full)["logits"]
        return float(torch.softmax(logits.float(), -1)[0, POSITIVE]), None  # float() waits for the GPU

    return run


def torch_resnet_fn(net, cfg: PreprocessConfig, device: torch.device, fp16: bool):
    def run(frame: np.ndarray):
        x = torch.from_numpy(global_input(frame, cfg)).to(device)
        with torch.inference_mode(), torch.autocast(device.type, dtype=torch.float16, enabled=fp16):
            logits = net(x)
        return float(torch.softmax(logits.float(), -1)[0, POSITIVE]), None

    return run


def ort_mgfen_fn(pipe: OrtPipeline):
    """The runtime pipeline; the time inside its two sessions is returned beside P(positive)."""
    pipe.global_session = TimedSession(pipe.global_session)
    if pipe.parts_session is not None:
        pipe.parts_session = TimedSession(pipe.parts_session)
    sessions = [s for s in (pipe.global_session, pipe.parts_session) if s is not None]

    def run(frame: np.ndarray):
        before = sum(s.seconds for s in sessions)
        prob = pipe.run_frame(frame).probability
        return prob, sum(s.seconds for s in sessions) - before

    return run


def ort_resnet_fn(path: Path, cfg: PreprocessConfig, threads: int):
    session = TimedSession(make_session(path, threads))

    def run(frame: np.ndarray):
        before = session.seconds
        (logits,) = session.run(None, {names.GLOBAL_INPUT: global_input(frame, cfg)})
        return float(softmax(logits[0])[POSITIVE]), session.seconds - before

    return run


# ------------------------------------------------------------------------------------------------ main


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", default="paper,edge", help="comma-separated MGFEN presets")
    ap.add_argument("--frames", type=int, default=30, help="timed rounds (every variant once per round)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed rounds first")
    ap.add_argument("--threads", type=int, default=2, help="torch threads = onnxruntime intra_op_num_threads")
    ap.add_argument("--out", required=True, help="output folder (data, bundles, bench_e2e.json/.md)")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                    help="cuda: torch eager FP32 and FP16 autocast on the GPU, no onnxruntime rows")
    ap.add_argument("--ckpt-paper", help="trained checkpoint for the paper preset (default: random init)")
    ap.add_argument("--ckpt-edge", help="trained checkpoint for the edge preset (default: random init)")
    ap.add_argument("--data", help="dataset folder (train.data.synth layout); default OUT/data, generated once")
    ap.add_argument("--n", type=int, default=24, help="synthetic frames when --data is not given")
    ap.add_argument("--calib-n", type=int, default=8, help="INT8 calibration images")
    ap.add_argument("--calib-method", default="minmax", choices=["entropy", "minmax", "percentile"],
                    help="INT8 calibration (does not change the speed; the histogram methods can fail on "
                         "the constant tensors of a random-init model)")
    ap.add_argument("--no-reference", action="store_true", help="leave out the resnet50@448 rows")
    ap.add_argument("--micro-reps", type=int, default=10, help="runs per MAC/s micro-benchmark graph")
    ap.add_argument("--reuse", action="store_true", help="reuse bundles / ONNX files already in OUT")
    args = ap.parse_args(argv)
    args.presets = [p.strip() for p in args.presets.split(",") if p.strip()]
    from train.model.mgfen import PRESETS

    bad = [p for p in args.presets if p not in PRESETS]
    if bad or not args.presets:
        ap.error(f"--presets: unknown {bad}; expected some of {', '.join(PRESETS)}")
    if args.frames < 1 or args.warmup < 0 or args.threads < 1 or args.micro_reps < 1:
        ap.error("--frames, --threads and --micro-reps must be >= 1 and --warmup >= 0")
    if args.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: torch sees no CUDA device on this machine")
    for flag in ("ckpt_paper", "ckpt_edge", "data"):
        value = getattr(args, flag)
        if value and not Path(value).exists():
            ap.error(f"--{flag.replace('_', '-')}: {value} not found")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)  # prepare_frame (CLAHE, resize) gets the same cores as the models
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    t_start = time.perf_counter()
    data = Path(args.data) if args.data else synthetic_data(out / "data", args.n, log=log)
    frames = sample_frames(data, 4)

    variants: list[Variant] = []
    models = []
    for name in args.presets:
        log(f"{name}:")
        model, info, desc = mgfen_model(name, getattr(args, f"ckpt_{name}", None))
        models.append(f"{name} {desc}")
        cfg = model.cfg.preprocess
        if cuda:
            model = model.to(device)
            variants.append(Variant(name, "torch eager fp32", cfg, torch_mgfen_fn(model, cfg, device, False)))
            variants.append(Variant(name, "torch eager fp16", cfg, torch_mgfen_fn(model, cfg, device, True),
                                    precision="fp16"))
            continue
        folder = bundle_for(model, info, f"{name} {desc}", out / "bundles" / name, data, args)
        man = load_bundle(folder).manifest
        params = PipelineParams(cfg, man.global_weight, man.use_parts, man.positive_index)
        fp32 = [folder / man.file_for(g, "fp32") for g in ("global", "parts")]
        int8 = [folder / man.file_for(g, "int8", "cpu") for g in ("global", "parts")]
        macs = graph_macs(*(fp32 if man.use_parts else fp32[:1]))
        variants.append(Variant(name, "torch eager fp32", cfg, torch_mgfen_fn(model, cfg, device, False), macs))
        variants.append(Variant(name, "ort fp32", cfg, ort_mgfen_fn(OrtPipeline(*fp32, params, args.threads)), macs))
        variants.append(Variant(name, "ort int8-cpu", cfg, ort_mgfen_fn(OrtPipeline(*int8, params, args.threads)),
                                macs, "int8"))
    if not args.no_reference:
        from train.model.mgfen import preset

        log(f"{RESNET}:")
        cfg = preset("paper").preprocess  # 1024 px frame, 448 px global view
        net = resnet_model()
        models.append("resnet50 random init (seed 0)")
        if cuda:
            net = net.to(device)
            variants.append(Variant(RESNET, "torch eager fp32", cfg, torch_resnet_fn(net, cfg, device, False)))
            variants.append(Variant(RESNET, "torch eager fp16", cfg, torch_resnet_fn(net, cfg, device, True),
                                    precision="fp16"))
        else:
            fp32, int8 = resnet_onnx(net, out / "resnet50", data, cfg, args)
            macs = graph_macs(fp32)
            variants.append(Variant(RESNET, "torch eager fp32", cfg, torch_resnet_fn(net, cfg, device, False), macs))
            variants.append(Variant(RESNET, "ort fp32", cfg, ort_resnet_fn(fp32, cfg, args.threads), macs))
            variants.append(Variant(RESNET, "ort int8-cpu", cfg, ort_resnet_fn(int8, cfg, args.threads), macs, "int8"))

    rates = None
    if not cuda:
        log(f"MAC/s micro-benchmark ({len(MICRO)} graphs x FP32/INT8, {args.micro_reps} runs each)...")
        rates = measure_mac_rates(args.threads, args.micro_reps)

    log(f"timing {len(variants)} variants: {args.warmup} warm-up + {args.frames} rounds...")
    t0 = time.perf_counter()
    fns = {v.key: (lambda r, v=v: v.sample(frames[r % len(frames)])) for v in variants}
    samples = run_rounds(fns, args.frames, args.warmup,
                         progress=lambda r: log(f"  round {r + 1}/{args.warmup + args.frames}, "
                                                f"{time.perf_counter() - t0:.0f} s") if (r + 1) % 5 == 0 else None)
    rows = build_rows(variants, samples, rates)

    meta = {"device": torch.cuda.get_device_name(device) if cuda else "CPU", "cpu": cpu_model(),
            "threads": args.threads, "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
            "python": platform.python_version(), "frames": args.frames, "warmup": args.warmup,
            "models": "; ".join(models) + (" (random weights: speed only, probabilities meaningless)"
                                           if any("random" in m for m in models) else ""),
            "command": " ".join(sys.argv), "seconds": None, "verdicts": verdicts(rows)}
    meta["seconds"] = round(time.perf_counter() - t_start, 1)
    md = markdown(rows, rates, meta)
    (out / "bench_e2e.md").write_text(md)
    (out / "bench_e2e.json").write_text(json.dumps({"meta": meta, "rows": rows, "mac_rates": rates}, indent=2) + "\n")
    print("\n" + md)
    log(f"wrote {out / 'bench_e2e.md'} and {out / 'bench_e2e.json'} ({meta['seconds']:.0f} s in all)")


if __name__ == "__main__":
    try:
        main()
    except MgfenError as exc:  # export / calibration / bundle problems: one line, non-zero exit
        sys.exit(f"bench_e2e: {exc}")
