"""What machine a benchmark ran on: CPU, GPU, runtime versions, and on a Jetson its model, L4T release,
power mode and whether the clocks are at maximum; and whether its onnxruntime install can be the one
wanted (ort_install_note). Every probe is best-effort and bounded in time: a missing tool or file leaves
that field None rather than failing the benchmark."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from pathlib import Path

CPU_EP, CUDA_EP, TRT_EP = "CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text(errors="replace").strip().strip("\x00")
    except OSError:
        return None


def _run(cmd: list[str], timeout: float = 5.0) -> str | None:
    if shutil.which(cmd[0]) is None:
        return None
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def cpuinfo_field(key: str, cpuinfo: str = "/proc/cpuinfo") -> str | None:
    """The value of the first `key : value` line of /proc/cpuinfo (the first CPU's), or None."""
    for line in (_read(cpuinfo) or "").splitlines():
        if line.startswith(key) and ":" in line:
            return line.split(":", 1)[1].strip()
    return None


def cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo (x86 'model name', Arm 'Hardware'/'Model'), else
    platform.processor()."""
    for key in ("model name", "Hardware", "Model"):
        value = cpuinfo_field(key)
        if value:
            return value
    return platform.processor() or platform.machine()


def cpu_ghz(cpuinfo: str = "/proc/cpuinfo") -> float | None:
    """The CPU clock in GHz: cpufreq's maximum where exposed, else /proc/cpuinfo's 'cpu MHz' (what a VM
    reports); None where neither is readable."""
    clocks = cpu_clocks()
    if clocks is not None and clocks["max_mhz"]:
        return max(clocks["max_mhz"]) / 1000.0
    try:
        return float(cpuinfo_field("cpu MHz", cpuinfo) or "") / 1000.0
    except ValueError:
        return None


def cpu_clocks() -> dict | None:
    """{'cur_mhz': [...], 'max_mhz': [...], 'at_max': bool} from cpufreq, or None where not exposed."""
    cur, top = [], []
    base = Path("/sys/devices/system/cpu")
    for cpu in sorted(base.glob("cpu[0-9]*")):
        c = _read(str(cpu / "cpufreq/scaling_cur_freq"))
        m = _read(str(cpu / "cpufreq/cpuinfo_max_freq"))
        if c and m and c.isdigit() and m.isdigit():
            cur.append(int(c) // 1000)
            top.append(int(m) // 1000)
    if not cur:
        return None
    return {"cur_mhz": cur, "max_mhz": top, "at_max": all(c >= 0.98 * m for c, m in zip(cur, top))}


def gpu_info() -> list[dict]:
    """NVIDIA GPUs via nvidia-smi (name, memory, driver); empty where there is none or no nvidia-smi."""
    out = _run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"])
    gpus = []
    for line in (out or "").splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 3:
            gpus.append({"name": parts[0], "memory": parts[1], "driver": parts[2]})
    return gpus


def jetson_board(root: str = "/") -> tuple[str, str]:
    """(model, module ids) of a Jetson from its device tree, for the engine cache key: Orin Nano, NX and
    AGX all report GPU "Orin" and compute capability 8.7. model: /proc/device-tree/model ("NVIDIA Jetson
    AGX Orin Developer Kit"); module ids: the part-number entries of /proc/device-tree/compatible
    (NUL-separated, e.g. "nvidia,p3768-0000+p3767-0005,nvidia,p3767-0005,nvidia,tegra234"), which tell
    the module SKU where a carrier board's model string does not. ("", "") off a Jetson."""
    base = Path(root) / "proc/device-tree"
    model = _read(str(base / "model")) or ""
    try:
        raw = (base / "compatible").read_bytes().decode(errors="replace")
    except OSError:
        raw = ""
    ids = ",".join(part for part in raw.split("\x00") if part.strip())
    return model, ids


def jetson_info() -> dict | None:
    """Jetson model, L4T release and power mode; None on other machines."""
    release = _read("/etc/nv_tegra_release")
    model = _read("/proc/device-tree/model")
    if release is None and not (model and "jetson" in model.lower()):
        return None
    power = _run(["nvpmodel", "-q"])
    return {"model": model, "l4t": release.splitlines()[0] if release else None,
            "power_mode": power.splitlines()[0] if power else None}


def package_version(name: str) -> str | None:
    """Version of an importable package, without importing it when it is absent."""
    try:
        from importlib.metadata import PackageNotFoundError, version
        return version(name)
    except PackageNotFoundError:
        return None


def ort_install_note(providers: list[str]) -> str:
    """"" or one line on an onnxruntime install that cannot be what the user wants: onnxruntime and
    onnxruntime-gpu both installed (they write the same onnxruntime/ folder: whichever came last won), or
    on a Jetson (its device tree says so) an onnxruntime with neither the CUDA nor the TensorRT provider
    (PyPI's CPU wheel, which `pip install -e .` brings)."""
    from importlib import metadata

    dists = set()
    for dist in ("onnxruntime", "onnxruntime-gpu"):
        try:
            metadata.version(dist)
            dists.add(dist)
        except metadata.PackageNotFoundError:
            pass
    if len(dists) == 2:
        return ("onnxruntime and onnxruntime-gpu are both installed and share one folder: pip uninstall -y "
                "onnxruntime onnxruntime-gpu, then install one (docs/jetson.md)")
    model, ids = jetson_board()
    on_jetson = "Jetson" in model or "nvidia," in ids  # a Raspberry Pi has a device tree too
    if on_jetson and TRT_EP not in providers and CUDA_EP not in providers:
        return ("this onnxruntime has no CUDA or TensorRT provider (the CPU wheel): on a Jetson replace it with "
                "NVIDIA's onnxruntime-gpu wheel (docs/jetson.md)")
    return ""


def tensorrt_version() -> str | None:
    """TensorRT's version: JetPack installs it as a system module, not always with pip metadata."""
    found = package_version("tensorrt")
    if found:
        return found
    try:
        import tensorrt  # noqa: PLC0415 - optional, only on NVIDIA devices
    except ImportError:
        return None
    return getattr(tensorrt, "__version__", None)


def describe_device(threads: int | None = None) -> dict:
    """Everything above in one JSON-ready dict, with warnings (e.g. clocks not at maximum)."""
    clocks = cpu_clocks()
    jetson = jetson_info()
    warnings = []
    if clocks is not None and not clocks["at_max"]:
        warnings.append("CPU clocks are not at maximum (on a Jetson: sudo jetson_clocks); "
                        "latency will read high")
    if jetson is not None and jetson["power_mode"] and "MAXN" not in jetson["power_mode"].upper():
        warnings.append(f"power mode is {jetson['power_mode']!r}, not MAXN (sudo nvpmodel -m 0)")
    return {
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "threads": threads,
        "machine": platform.machine(),
        "python": platform.python_version(),
        "onnxruntime": package_version("onnxruntime") or package_version("onnxruntime-gpu"),
        "tensorrt": tensorrt_version(),
        "gpus": gpu_info(),
        "jetson": jetson,
        "cpu_clocks": clocks,
        "warnings": warnings,
    }
