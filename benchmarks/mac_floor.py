"""The MAC floor of benchmarks/bench_e2e.py: MACs per ONNX graph and the MAC/s onnxruntime achieves on
this CPU on large single-op graphs (FP32 and INT8, dense and depthwise), so a measured time can be set
against what the arithmetic alone would take. An estimate from single-op graphs, not a bound."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import onnx

from _common import MicroShape, optimized_op_types, run_rounds, session_from_model
from edge_runtime.cost.graph_cost import count_macs

# Large dense graphs (MACs >= 0.2 G each) for the achieved MAC/s; the depthwise one is reported beside
# (the edge preset's EfficientNet-Lite0 is full of depthwise convs, which run far below the dense rate).
MICRO = (
    MicroShape("conv3x3 256->256 @28", "conv", 256, 256, 3, 28),
    MicroShape("conv1x1 512->512 @28", "conv", 512, 512, 1, 28),
    MicroShape("matmul 256x1024x1024", "matmul", 256, 1024, 1024),
    MicroShape("dwconv3x3 384 @56", "conv", 384, 384, 3, 56, group=384),
)


def graph_macs(*paths: Path) -> dict:
    """count_macs summed over FP32 ONNX files."""
    total: dict[str, int] = {}
    for p in paths:
        for k, v in count_macs(onnx.load(str(p))).items():
            total[k] = total.get(k, 0) + v
    return total


def measure_mac_rates(threads: int, reps: int) -> dict:
    """Achieved MAC/s of onnxruntime (same threads) on the MICRO graphs, FP32 and INT8 interleaved; the
    best of `reps` runs each after one warm-up. Also checks that INT8 ran as fused integer kernels."""
    rows = {}
    for shape in MICRO:
        fns = {}
        fused = None
        for int8 in (False, True):
            model, macs = shape.build(int8)
            if int8:
                fused = [t for t in optimized_op_types(model) if t.startswith(("QLinear", "MatMulInteger"))]
            sess = session_from_model(model, threads)
            name = sess.get_inputs()[0].name
            x = np.random.default_rng(0).random([d for d in sess.get_inputs()[0].shape], dtype=np.float32)
            fns["int8" if int8 else "fp32"] = (lambda s=sess, n=name, x=x: s.run(None, {n: x}))
        samples = run_rounds({k: (lambda r, f=f: _time_ms(f)) for k, f in fns.items()}, reps, 1)
        best = {k: min(v) for k, v in samples.items()}
        rows[shape.name] = {"macs": macs, "int8_fused_ops": fused, "dense": shape.group == 1,
                            **{f"{k}_ms": round(ms, 3) for k, ms in best.items()},
                            **{f"{k}_gmacs": round(macs / ms / 1e6, 1) for k, ms in best.items()}}
    dense = [r for r in rows.values() if r["dense"]]
    dw = [r for r in rows.values() if not r["dense"]]
    return {"shapes": rows,
            "peak_gmacs": {p: max(r[f"{p}_gmacs"] for r in dense) for p in ("fp32", "int8")},
            "depthwise_gmacs": {p: max(r[f"{p}_gmacs"] for r in dw) for p in ("fp32", "int8")} if dw else None}


def _time_ms(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1e3


def floor_ms(macs: dict, rates: dict, precision: str) -> tuple[float, float | None]:
    """(all MACs at the peak dense rate, depthwise MACs at the depthwise rate + the rest at peak) in ms."""
    peak = rates["peak_gmacs"][precision] * 1e9
    plain = macs["total"] / peak * 1e3
    if not rates.get("depthwise_gmacs"):
        return plain, None
    dw = macs.get("ConvDepthwise", 0)
    return plain, ((macs["total"] - dw) / peak + dw / (rates["depthwise_gmacs"][precision] * 1e9)) * 1e3
