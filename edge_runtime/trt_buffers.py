"""CUDA memory for the native TensorRT backend: the only module that touches a CUDA Python binding.

Two bindings are supported, tried in this order: cuda-python (`cuda.bindings.runtime`, or the older
`cuda.cudart`; NVIDIA's own TensorRT samples use it since 10.14) and pycuda (JetPack users often have
it). Both are imported lazily; neither is needed to import this module. `load_cuda()` raises
BackendError naming what to install when neither is present.

Buffers are fixed-shape: one host numpy array and one device allocation per engine I/O tensor,
allocated once and reused for every frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge_runtime.errors import BackendError

INSTALL_HINT = ("install cuda-python (`pip install cuda-python`) or pycuda (`pip install pycuda`, built "
                "against the device's CUDA; on JetPack use the CUDA that ships with it)")


class CudaApi:
    """The handful of CUDA runtime calls the backend needs. Pointers and streams are plain ints."""

    name = "cuda"

    def malloc(self, nbytes: int) -> int: ...
    def free(self, ptr: int) -> None: ...
    def stream_create(self) -> int: ...
    def stream_sync(self, stream: int) -> None: ...
    def stream_destroy(self, stream: int) -> None: ...
    def htod_async(self, ptr: int, host: np.ndarray, stream: int) -> None: ...
    def dtoh_async(self, host: np.ndarray, ptr: int, stream: int) -> None: ...
    def device(self) -> tuple[str, tuple[int, int]]: ...  # (GPU name, compute capability)
    def close(self) -> None:
        """Release what the binding holds beyond buffers (pycuda's context)."""


class CudaPythonApi(CudaApi):
    """cuda-python runtime API (calls return (error, value...) tuples)."""

    name = "cuda-python"

    def __init__(self) -> None:
        try:
            from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
        except ImportError:
            from cuda import cudart  # older cuda-python; ImportError propagates to load_cuda
        self._rt = cudart
        self._streams: dict[int, object] = {}

    def _call(self, result, what: str):
        err, *values = result if isinstance(result, tuple) else (result,)
        if err != self._rt.cudaError_t.cudaSuccess:
            raise BackendError(f"CUDA {what} failed: {err}")
        return values[0] if len(values) == 1 else values

    def malloc(self, nbytes: int) -> int:
        return int(self._call(self._rt.cudaMalloc(nbytes), "malloc"))

    def free(self, ptr: int) -> None:
        self._call(self._rt.cudaFree(ptr), "free")

    def stream_create(self) -> int:
        stream = self._call(self._rt.cudaStreamCreate(), "stream create")
        self._streams[int(stream)] = stream
        return int(stream)

    def stream_sync(self, stream: int) -> None:
        self._call(self._rt.cudaStreamSynchronize(self._streams[stream]), "stream synchronize")

    def stream_destroy(self, stream: int) -> None:
        self._call(self._rt.cudaStreamDestroy(self._streams.pop(stream)), "stream destroy")

    def htod_async(self, ptr: int, host: np.ndarray, stream: int) -> None:
        kind = self._rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._call(self._rt.cudaMemcpyAsync(ptr, host.ctypes.data, host.nbytes, kind, self._streams[stream]),
                   "copy to device")

    def dtoh_async(self, host: np.ndarray, ptr: int, stream: int) -> None:
        kind = self._rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._call(self._rt.cudaMemcpyAsync(host.ctypes.data, ptr, host.nbytes, kind, self._streams[stream]),
                   "copy to host")

    def device(self) -> tuple[str, tuple[int, int]]:
        dev = self._call(self._rt.cudaGetDevice(), "get device")
        props = self._call(self._rt.cudaGetDeviceProperties(dev), "device properties")
        name = props.name.decode(errors="replace") if isinstance(props.name, bytes) else str(props.name)
        return name.strip("\x00 "), (int(props.major), int(props.minor))


class PyCudaApi(CudaApi):
    """pycuda driver API on the device's primary context (the one TensorRT's runtime uses)."""

    name = "pycuda"

    def __init__(self) -> None:
        import pycuda.driver as cuda  # ImportError propagates to load_cuda

        cuda.init()
        self._cuda = cuda
        self._dev = cuda.Device(0)
        self._ctx = self._dev.retain_primary_context()
        self._ctx.push()
        self._allocs: dict[int, object] = {}
        self._streams: dict[int, object] = {}

    def malloc(self, nbytes: int) -> int:
        alloc = self._cuda.mem_alloc(nbytes)
        self._allocs[int(alloc)] = alloc
        return int(alloc)

    def free(self, ptr: int) -> None:
        self._allocs.pop(ptr).free()

    def stream_create(self) -> int:
        stream = self._cuda.Stream()
        self._streams[stream.handle] = stream
        return stream.handle

    def stream_sync(self, stream: int) -> None:
        self._streams[stream].synchronize()

    def stream_destroy(self, stream: int) -> None:
        self._streams.pop(stream, None)

    def htod_async(self, ptr: int, host: np.ndarray, stream: int) -> None:
        self._cuda.memcpy_htod_async(ptr, host, self._streams[stream])

    def dtoh_async(self, host: np.ndarray, ptr: int, stream: int) -> None:
        self._cuda.memcpy_dtoh_async(host, ptr, self._streams[stream])

    def device(self) -> tuple[str, tuple[int, int]]:
        return self._dev.name(), tuple(self._dev.compute_capability())

    def close(self) -> None:
        self._ctx.pop()


def load_cuda(prefer: str | None = None) -> CudaApi:
    """The first CUDA binding that imports and initialises: "cuda-python" or "pycuda" (or `prefer`).

    Raises BackendError naming both packages when neither can be used.
    """
    order = [CudaPythonApi, PyCudaApi]
    if prefer is not None:
        order = [c for c in order if c.name == prefer]
        if not order:
            raise BackendError(f"unknown CUDA binding {prefer!r}; expected cuda-python or pycuda")
    problems = []
    for cls in order:
        try:
            return cls()
        except ImportError as exc:
            problems.append(f"{cls.name}: not installed ({exc.name or exc})")
        except BackendError as exc:
            problems.append(f"{cls.name}: {exc}")
        except Exception as exc:  # driver/initialisation failures of a binding that did import
            problems.append(f"{cls.name}: cannot initialise CUDA ({type(exc).__name__}: {exc})")
    raise BackendError(f"native TensorRT needs a CUDA binding: {INSTALL_HINT} ({'; '.join(problems)})")


@dataclass
class Buffer:
    """One fixed-shape tensor: host array (reused every frame) and its device allocation (an int)."""

    host: np.ndarray
    device: int


class BufferSet:
    """Host + device buffers for named fixed-shape tensors on one CUDA stream.

    specs: {name: (shape, numpy dtype)}. Use as a context manager or call free().
    """

    def __init__(self, cuda: CudaApi, specs: dict[str, tuple[tuple[int, ...], np.dtype]]) -> None:
        self.cuda = cuda
        self.stream = cuda.stream_create()
        self.buffers: dict[str, Buffer] = {}
        try:
            for name, (shape, dtype) in specs.items():
                host = np.empty(shape, dtype=dtype)
                self.buffers[name] = Buffer(host, cuda.malloc(max(host.nbytes, 1)))
        except BaseException:
            self.free()
            raise

    def upload(self, name: str, array: np.ndarray) -> None:
        """Copy `array` (same shape; dtype cast if needed) into the host buffer, then to the device."""
        buf = self.buffers[name]
        np.copyto(buf.host, array, casting="same_kind")
        self.cuda.htod_async(buf.device, buf.host, self.stream)

    def download(self, name: str) -> None:
        """Queue the device -> host copy of one buffer (valid after sync())."""
        buf = self.buffers[name]
        self.cuda.dtoh_async(buf.host, buf.device, self.stream)

    def sync(self) -> None:
        self.cuda.stream_sync(self.stream)

    def free(self) -> None:
        for buf in self.buffers.values():
            self.cuda.free(buf.device)
        self.buffers = {}
        if self.stream is not None:
            self.cuda.stream_destroy(self.stream)
            self.stream = None

    def __enter__(self) -> "BufferSet":
        return self

    def __exit__(self, *exc) -> None:
        self.free()
