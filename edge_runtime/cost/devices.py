"""The target Jetsons and what one frame is estimated to cost on each: the one device table.

Every number this module produces is an ESTIMATE, NOT MEASURED ON A DEVICE. It is built from published
figures and stated assumptions, so a first run of `mgfen-bench` on the device should replace it.

GPU side (the graphs, TensorRT INT8). The effective INT8 rate of a device is the ResNet-50 rate it
reaches in MLPerf Inference v3.1, closed division, SingleStream (batch 1, p90 latency, TensorRT 8.5.2):
ResNet-50 v1.5 at 224 px is RESNET50_MACS multiply-accumulates, so

    rate = RESNET50_MACS / MLPerf latency          AGX Orin 0.64 ms, Orin NX 16GB 1.08 ms

(figures as collected in the project's research notes, shared/research.md "Published ResNet-50 ...").
Orin Nano has no MLPerf figure: its rate is the Orin NX rate scaled by NVIDIA's published sparse INT8
TOPS, 40 (Orin Nano 8GB) / 100 (Orin NX 16GB), a scaled estimate with no measurement behind it. (The TOPS
ratio is not a latency ratio: AGX / NX is 275 / 100 = 2.75 by TOPS but 1.69 by MLPerf latency. NX and AGX
TOPS include their DLAs, which a TensorRT GPU engine does not use, and Orin Nano has none, so 40 / 100 may
understate the Nano's GPU; it is kept because it is the published ratio.)

A depthwise MAC costs DEPTHWISE_PENALTY dense MACs: depthwise convs do k*k MACs per loaded value and
cannot use the tensor cores' dense INT8 path. No device figure for the gap exists in this project; the
measured CPU gaps bracket it (benchmarks/mac_floor.py on the 2-core AVX-512 VNNI EPYC, research notes
"Measured 2026-11-30": dense / depthwise = 108 / 23 = 4.7x in FP32, 353 / 13 = 27x in INT8).
DEPTHWISE_PENALTY_RANGE holds those bounds for a sensitivity line. Kernel launches (tens of microseconds
per layer at batch 1) are not modelled: for graphs well under 1 GMAC the estimate is optimistic.

CPU side (preprocessing: prepare_frame, global_input, crop_rois). Measured on the host, fastest of 20
frames (edge_runtime.cost.estimate.measure_host_cpu_ms), then scaled per core by clock and a per-clock
factor: device_ms = host_ms * (host GHz / device GHz) * HOST_PER_CLOCK[host architecture]. The Jetsons'
CPUs are Cortex-A78AE (NVIDIA's module data sheets: Orin Nano 8GB 6 cores at 1.5 GHz, Orin NX 16GB 8 at
2.0 GHz, AGX Orin 64GB 12 at 2.2 GHz). The x86 factor 1.5 is an assumption, not measured: similar scalar
work per clock, but OpenCV's kernels run 256/512-bit AVX2/AVX-512 there against 128-bit NEON.

How many cores the CPU stages get: the runtime leaves OpenCV at its default (a worker per core: colour
conversions, CLAHE and resizes split the frame into row stripes), and on a Jetson the graphs run on the
GPU, so the estimate charges the time measured on the host with opencv_threads(device, host cores)
OpenCV threads: the device's cores less OPENCV_SPARE_CORES (the thread that drives the engines and
the camera's), and never more than the host has, so no thread count is extrapolated past what was
timed. On a 2-core host that is 2 threads for every Jetson, which understates a 6-12 core device. The
speed-up from more threads is assumed to carry over from the host's cores to the device's (shared
LPDDR5 bandwidth could make it smaller). The one-core figures stay beside it (cpu_ms_one_core,
fps_one_core) as the bound that needs no such assumption. mgfen-scan's prefetch overlaps the next
frame's CPU stages with the graphs (fps_overlapped).
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

ESTIMATE_LABEL = "estimate, not measured on a device"

RESNET50_MACS = 4.1e9  # ResNet-50 v1.5, 224 px, batch 1 (graph_cost on torchvision's resnet50: 4.09 G)
MLPERF_RESNET50_MS = {"agx-orin": 0.64, "orin-nx": 1.08}  # MLPerf v3.1 SingleStream p90, INT8, TRT 8.5.2
SPARSE_INT8_TOPS = {"orin-nano": 40.0, "orin-nx": 100.0, "agx-orin": 275.0}  # NVIDIA's published figures

DEPTHWISE_PENALTY = 10.0  # one depthwise MAC = this many dense MACs of time (assumed; bounds below)
DEPTHWISE_PENALTY_RANGE = (4.7, 27.0)  # measured CPU gaps, FP32 and INT8 (benchmarks/mac_floor.py)

# Host work per clock relative to one Cortex-A78AE core, by platform.machine() (assumed, see above).
HOST_PER_CLOCK = {"x86_64": 1.5, "AMD64": 1.5, "aarch64": 1.0, "arm64": 1.0}
OPENCV_SPARE_CORES = 2  # device cores the CPU stages leave to the engines' host thread and the camera


@dataclass(frozen=True)
class DeviceSpec:
    """One target. int8_macs_per_s: effective dense INT8 MAC/s of its GPU; derivation: how that was
    obtained (measured figure or scaled estimate); cpu_cores / cpu_ghz: its Cortex-A78AE cluster."""

    key: str
    name: str
    int8_macs_per_s: float
    derivation: str
    sparse_int8_tops: float
    cpu_cores: int
    cpu_ghz: float

    def to_dict(self) -> dict:
        return dict(vars(self))


def _mlperf_rate(key: str) -> float:
    return RESNET50_MACS / (MLPERF_RESNET50_MS[key] * 1e-3)


DEVICES: Dict[str, DeviceSpec] = {
    "orin-nano": DeviceSpec(
        "orin-nano", "Jetson Orin Nano 8GB",
        _mlperf_rate("orin-nx") * SPARSE_INT8_TOPS["orin-nano"] / SPARSE_INT8_TOPS["orin-nx"],
        "scaled estimate: Orin NX's MLPerf rate x sparse INT8 TOPS 40/100 (no MLPerf figure for Orin Nano)",
        SPARSE_INT8_TOPS["orin-nano"], 6, 1.5),
    "orin-nx": DeviceSpec(
        "orin-nx", "Jetson Orin NX 16GB", _mlperf_rate("orin-nx"),
        "MLPerf v3.1 SingleStream ResNet-50 INT8 1.08 ms / 4.1 GMAC", SPARSE_INT8_TOPS["orin-nx"], 8, 2.0),
    "agx-orin": DeviceSpec(
        "agx-orin", "Jetson AGX Orin 64GB", _mlperf_rate("agx-orin"),
        "MLPerf v3.1 SingleStream ResNet-50 INT8 0.64 ms / 4.1 GMAC", SPARSE_INT8_TOPS["agx-orin"], 12, 2.2),
}
DEVICE_CHOICES = tuple(DEVICES) + ("all",)


def resolve_devices(choice: str) -> Tuple[DeviceSpec, ...]:
    """A DEVICE_CHOICES entry -> the specs it names ("all": every device, in table order)."""
    if choice == "all":
        return tuple(DEVICES.values())
    if choice not in DEVICES:
        raise ValueError(f"unknown device {choice!r}; expected one of {', '.join(DEVICE_CHOICES)}")
    return (DEVICES[choice],)


def graph_ms(dense_macs: float, depthwise_macs: float, device: DeviceSpec,
             depthwise_penalty: float = DEPTHWISE_PENALTY) -> float:
    """Estimated INT8 time (ms) of one graph run: (dense + penalty * depthwise MACs) / the device rate."""
    return (dense_macs + depthwise_penalty * depthwise_macs) / device.int8_macs_per_s * 1e3


def cpu_scale(device: DeviceSpec, host_ghz: Optional[float], machine: Optional[str] = None) -> float:
    """Factor from one host core's time to one device core's time (module docstring); 1.0 where the
    host clock is unknown."""
    if host_ghz is None:
        return 1.0
    per_clock = HOST_PER_CLOCK.get(machine or platform.machine(), 1.0)
    return host_ghz / device.cpu_ghz * per_clock


def opencv_threads(device: DeviceSpec, host_cores: int) -> int:
    """OpenCV threads the estimate charges for `device`: its cores less OPENCV_SPARE_CORES, at most the
    host's `host_cores` (the count that was timed), at least 1 (module docstring)."""
    return max(1, min(host_cores, device.cpu_cores - OPENCV_SPARE_CORES))


def frame_estimate(graph_macs: Dict[str, Tuple[float, float]], host_cpu_ms: float, device: DeviceSpec,
                   host_ghz: Optional[float], machine: Optional[str] = None,
                   depthwise_penalty: float = DEPTHWISE_PENALTY, threads: int = 1,
                   host_one_core_ms: Optional[float] = None) -> dict:
    """One frame on `device`: graph_macs {graph: (dense MACs, depthwise MACs)} of the graphs a frame runs,
    host_cpu_ms the host's CPU time per frame with `threads` OpenCV threads, host_one_core_ms the same
    with one (default: host_cpu_ms). Returns {"graphs_ms": {graph: ms}, "gpu_ms", "cpu_ms",
    "total_ms", "fps" (sequential: CPU then GPU), "fps_overlapped" (CPU of the next frame beside the
    graphs: 1000 / max(cpu, gpu)), "opencv_threads", "cpu_ms_one_core", "fps_one_core" (sequential, one
    core), "label"} with ms rounded to 0.01."""
    per = {g: graph_ms(d, w, device, depthwise_penalty) for g, (d, w) in graph_macs.items()}
    gpu = sum(per.values())
    scale = cpu_scale(device, host_ghz, machine)
    cpu = host_cpu_ms * scale
    one = (host_cpu_ms if host_one_core_ms is None else host_one_core_ms) * scale
    return {"device": device.key, "graphs_ms": {g: round(v, 3) for g, v in per.items()},
            "gpu_ms": round(gpu, 3), "cpu_ms": round(cpu, 2), "total_ms": round(gpu + cpu, 2),
            "fps": round(1000.0 / (gpu + cpu), 1), "fps_overlapped": round(1000.0 / max(gpu, cpu), 1),
            "opencv_threads": threads, "cpu_ms_one_core": round(one, 2),
            "fps_one_core": round(1000.0 / (gpu + one), 1),
            "depthwise_penalty": depthwise_penalty, "label": ESTIMATE_LABEL}
