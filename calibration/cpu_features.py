"""Whether the CPU flavour should use 7-bit weights (onnxruntime's `reduce_range`) on this export machine.

onnxruntime's x86 U8S8 kernels multiply uint8 activations by int8 weights. Without VNNI (AVX2, and AVX-512
without avx512_vnni) they use VPMADDUBSW, which adds two u8 x s8 products into a saturating int16: 255 x 127
x 2 = 64770 > 32767, so large activations times large weights clip. onnxruntime's quantize_static
documentation recommends reduce_range=True (weights in [-64, 64]: 255 x 64 x 2 = 32640 fits) on such CPUs
and reduce_range=False where VNNI (VPDPBUSD, 32-bit sums) or AMX is present. ARM CPUs have no such
instruction pair and keep full 8-bit weights.

The export machine decides (`auto`): the CPU flavour is meant for CPUs like it. `on` / `off` force it.

    choose_reduce_range("auto")                      # this machine: (True, "x86_64 without VNNI ...")
    choose_reduce_range("auto", frozenset({"avx2", "avx512_vnni"}), "x86_64")   # (False, ...)
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path

from calibration import CalibrationError

REDUCE_RANGE_MODES = ("auto", "on", "off")
DEFAULT_REDUCE_RANGE = "auto"
VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")  # any one: 8-bit dot products accumulate in 32 bits
REPORTED_FLAGS = ("avx2", "avx512f", "avx512bw", *VNNI_FLAGS, "amx_tile")  # what the record names
X86_MACHINES = ("x86_64", "amd64", "i386", "i686", "x86")


@dataclass(frozen=True)
class ReduceRangeChoice:
    """reduce_range for the CPU flavour, the mode that chose it, why (one line), and the CPU it looked at:
    machine (platform.machine()) and the REPORTED_FLAGS it has (sorted)."""

    reduce_range: bool
    mode: str
    reason: str
    machine: str
    flags: tuple[str, ...]

    def to_dict(self) -> dict:
        return {"reduce_range": self.reduce_range, "mode": self.mode, "reason": self.reason,
                "machine": self.machine, "cpu_flags": list(self.flags)}


def read_cpu_flags(path: str | Path = "/proc/cpuinfo") -> frozenset[str]:
    """The x86 feature flags of the first CPU in /proc/cpuinfo ("flags : ..."); empty when the file is
    missing or has no such line (not Linux, or an ARM CPU, whose line is "Features")."""
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return frozenset(value.split())
    return frozenset()


def choose_reduce_range(mode: str = DEFAULT_REDUCE_RANGE, flags: frozenset[str] | None = None,
                        machine: str | None = None) -> ReduceRangeChoice:
    """Decide reduce_range for the CPU flavour. mode: "auto" (x86 without any VNNI_FLAGS -> True; an x86
    whose flags cannot be read counts as lacking them), "on" or "off". flags / machine default to this
    machine's (read_cpu_flags, platform.machine()); tests inject them. CalibrationError for another mode."""
    if mode not in REDUCE_RANGE_MODES:
        raise CalibrationError(f"--reduce-range must be one of {', '.join(REDUCE_RANGE_MODES)}, got {mode!r}")
    flags = read_cpu_flags() if flags is None else frozenset(flags)
    machine = platform.machine() if machine is None else machine
    present = tuple(sorted(f for f in REPORTED_FLAGS if f in flags))
    if mode != "auto":
        return ReduceRangeChoice(mode == "on", mode, f"--reduce-range {mode}", machine, present)
    if machine.lower() not in X86_MACHINES:
        return ReduceRangeChoice(False, mode, f"{machine}: not x86, no VPMADDUBSW saturation", machine, present)
    vnni = [f for f in VNNI_FLAGS if f in flags]
    if vnni:
        return ReduceRangeChoice(False, mode, f"{machine} with {', '.join(vnni)}: 8-bit weights do not saturate",
                                 machine, present)
    seen = "no CPU flags readable" if not flags else f"flags {' '.join(present) or 'without AVX2'}"
    return ReduceRangeChoice(True, mode, f"{machine} without VNNI ({seen}): U8S8 can saturate, 7-bit weights",
                             machine, present)
