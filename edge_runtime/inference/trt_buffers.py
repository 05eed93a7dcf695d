"""CUDA memory and streams for native TensorRT: the only module that touches a CUDA Python binding.

Two bindings are supported, tried in this order: cuda-python (`cuda.bindings.runtime`, or the older
`cuda.cudart`; NVIDIA's own TensorRT samples use it since 10.14) and pycuda (JetPack users often have it).
Both are imported lazily; neither is needed to import this module.

A binding is used only when it imports AND runs: each probes real calls when it is created (cuda-python:
cudaDriverGetVersion, cudaGetDeviceCount; pycuda: init, Device.count, the primary context) and checks
their return codes. cuda-python 13 imports fine on JetPack 6 but needs a 580+ driver, so every call
returns cudaErrorInsufficientDriver: `load_cuda` then goes on to pycuda, and when nothing works raises
one BackendError naming each binding and why. Every later CUDA call's return code is checked too.

Buffers are fixed-shape: one page-locked host array (cudaMallocHost / pycuda.driver.pagelocked_empty, so
the copies queued on the stream are asynchronous; from pageable memory the driver copies synchronously)
and one device allocation per engine I/O tensor, allocated once and reused for every frame.
"""

from __future__ import annotations

import abc
import contextlib
import ctypes
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Tuple

import numpy as np

from edge_runtime.errors import BackendError

INSTALL_HINT = ("install the CUDA binding that matches JetPack's driver: `pip install -e '.[jetson5]'` "
                "(cuda-python 11.8.0-11.8.2) on JetPack 5, `pip install -e '.[jetson6]'` (cuda-python 12.6.x) on "
                "JetPack 6 -- cuda-python 13 needs a 580+ driver -- or pycuda built on the device, which finds "
                "CUDA through nvcc, not on JetPack's PATH: `PATH=/usr/local/cuda/bin:$PATH pip install pycuda` "
                "(docs/jetson.md)")
BINDINGS = ("cuda-python", "pycuda")
Spec = Tuple[Tuple[int, ...], Any]  # (shape, numpy dtype)


class CudaApi(abc.ABC):
    """The handful of CUDA calls the TensorRT glue needs. Device pointers and streams are plain ints;
    host buffers are numpy arrays in page-locked memory. Every method raises BackendError on a CUDA error.

    skipped: why the bindings tried before this one were not used (load_cuda fills it, for the log).
    """

    name = "cuda"
    skipped: List[str] = []

    @abc.abstractmethod
    def malloc(self, nbytes: int) -> int:
        ...

    @abc.abstractmethod
    def free(self, ptr: int) -> None:
        ...

    @abc.abstractmethod
    def host_empty(self, shape: Tuple[int, ...], dtype: Any) -> np.ndarray:
        """A page-locked host array of `shape` and `dtype` (contents undefined)."""
        ...

    @abc.abstractmethod
    def host_free(self, array: np.ndarray) -> None:
        ...

    @abc.abstractmethod
    def stream_create(self) -> int:
        ...

    @abc.abstractmethod
    def stream_sync(self, stream: int) -> None:
        ...

    @abc.abstractmethod
    def stream_destroy(self, stream: int) -> None:
        ...

    @abc.abstractmethod
    def htod_async(self, ptr: int, host: np.ndarray, stream: int) -> None:
        ...

    @abc.abstractmethod
    def dtoh_async(self, host: np.ndarray, ptr: int, stream: int) -> None:
        ...

    @abc.abstractmethod
    def device(self) -> Tuple[str, Tuple[int, int]]:
        """(GPU name, compute capability) of the device in use."""
        ...

    def close(self) -> None:
        """Release what the binding holds beyond buffers (pycuda's pushed context). Safe to call twice."""


def _error_name(err: Any) -> str:
    name = getattr(err, "name", None)
    return f"{name} ({int(err)})" if name else f"error {int(err)}"


class CudaPythonApi(CudaApi):
    """cuda-python's runtime API: every call returns (cudaError_t, value...); a non-zero error raises."""

    name = "cuda-python"

    def __init__(self) -> None:
        try:
            from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
        except ImportError:
            from cuda import cudart  # older cuda-python; ImportError propagates to load_cuda
        self._rt: Any = cudart
        self._streams: Dict[int, Any] = {}
        self._host: Dict[int, int] = {}  # host array data address -> cudaMallocHost pointer
        # Probe: cuda-python built for a newer CUDA than the driver imports fine and fails here.
        driver = int(self._call(cudart.cudaDriverGetVersion(), "cudaDriverGetVersion"))
        try:
            count = int(self._call(cudart.cudaGetDeviceCount(), "cudaGetDeviceCount"))
        except BackendError as exc:
            raise BackendError(f"{exc} (the driver supports CUDA {driver // 1000}.{driver % 1000 // 10}; "
                               "a cuda-python for a newer CUDA imports but cannot run on it)") from None
        if count < 1:
            raise BackendError("no CUDA device (cudaGetDeviceCount returned 0)")

    def _call(self, result: Any, what: str) -> Any:
        err, values = (result[0], result[1:]) if isinstance(result, tuple) else (result, ())
        if int(err) != 0:
            raise BackendError(f"CUDA {what} failed: {_error_name(err)}")
        return values[0] if len(values) == 1 else values

    def malloc(self, nbytes: int) -> int:
        return int(self._call(self._rt.cudaMalloc(nbytes), "cudaMalloc"))

    def free(self, ptr: int) -> None:
        self._call(self._rt.cudaFree(ptr), "cudaFree")

    def host_empty(self, shape: Tuple[int, ...], dtype: Any) -> np.ndarray:
        dt = np.dtype(dtype)
        nbytes = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
        ptr = int(self._call(self._rt.cudaMallocHost(max(nbytes, 1)), "cudaMallocHost"))
        raw = (ctypes.c_char * max(nbytes, 1)).from_address(ptr)
        array = np.frombuffer(raw, dtype=np.uint8)[:nbytes].view(dt).reshape(shape)
        self._host[array.ctypes.data] = ptr
        return array

    def host_free(self, array: np.ndarray) -> None:
        self._call(self._rt.cudaFreeHost(self._host.pop(array.ctypes.data)), "cudaFreeHost")

    def stream_create(self) -> int:
        stream = self._call(self._rt.cudaStreamCreate(), "cudaStreamCreate")
        self._streams[int(stream)] = stream
        return int(stream)

    def stream_sync(self, stream: int) -> None:
        self._call(self._rt.cudaStreamSynchronize(self._streams[stream]), "cudaStreamSynchronize")

    def stream_destroy(self, stream: int) -> None:
        self._call(self._rt.cudaStreamDestroy(self._streams.pop(stream)), "cudaStreamDestroy")

    def htod_async(self, ptr: int, host: np.ndarray, stream: int) -> None:
        kind = self._rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._call(self._rt.cudaMemcpyAsync(ptr, host.ctypes.data, host.nbytes, kind, self._streams[stream]),
                   "cudaMemcpyAsync (to device)")

    def dtoh_async(self, host: np.ndarray, ptr: int, stream: int) -> None:
        kind = self._rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._call(self._rt.cudaMemcpyAsync(host.ctypes.data, ptr, host.nbytes, kind, self._streams[stream]),
                   "cudaMemcpyAsync (to host)")

    def device(self) -> Tuple[str, Tuple[int, int]]:
        dev = self._call(self._rt.cudaGetDevice(), "cudaGetDevice")
        props = self._call(self._rt.cudaGetDeviceProperties(dev), "cudaGetDeviceProperties")
        name = props.name.decode(errors="replace") if isinstance(props.name, bytes) else str(props.name)
        return name.strip("\x00 "), (int(props.major), int(props.minor))


class PyCudaApi(CudaApi):
    """pycuda's driver API on the device's primary context (the one TensorRT's runtime uses), pushed on
    creation and popped by close() -- also when creation fails half-way."""

    name = "pycuda"

    def __init__(self) -> None:
        import pycuda.driver as cuda  # ImportError propagates to load_cuda

        self._cuda: Any = cuda
        self._ctx: Any = None
        self._allocs: Dict[int, Any] = {}
        self._streams: Dict[int, Any] = {}
        self._host: Dict[int, np.ndarray] = {}
        try:
            with self._checked("initialisation"):
                cuda.init()
                if cuda.Device.count() < 1:
                    raise BackendError("no CUDA device (Device.count() is 0)")
                self._dev = cuda.Device(0)
                ctx = self._dev.retain_primary_context()
                ctx.push()
                self._ctx = ctx
        except BaseException:
            self.close()
            raise

    @contextlib.contextmanager
    def _checked(self, what: str) -> Iterator[None]:
        """pycuda raises pycuda.driver.Error subclasses: one BackendError line instead."""
        try:
            yield
        except self._cuda.Error as exc:
            raise BackendError(f"CUDA {what} failed: {type(exc).__name__}: {exc}") from None

    def malloc(self, nbytes: int) -> int:
        with self._checked("mem_alloc"):
            alloc = self._cuda.mem_alloc(nbytes)
        self._allocs[int(alloc)] = alloc
        return int(alloc)

    def free(self, ptr: int) -> None:
        with self._checked("free"):
            self._allocs.pop(ptr).free()

    def host_empty(self, shape: Tuple[int, ...], dtype: Any) -> np.ndarray:
        with self._checked("pagelocked_empty"):
            array = self._cuda.pagelocked_empty(tuple(shape), np.dtype(dtype))
        self._host[array.ctypes.data] = array
        return array

    def host_free(self, array: np.ndarray) -> None:
        allocation: Any = self._host.pop(array.ctypes.data).base  # pycuda's PagelockedHostAllocation
        with self._checked("free (page-locked)"):
            allocation.free()

    def stream_create(self) -> int:
        with self._checked("Stream"):
            stream = self._cuda.Stream()
        self._streams[int(stream.handle)] = stream
        return int(stream.handle)

    def stream_sync(self, stream: int) -> None:
        with self._checked("Stream.synchronize"):
            self._streams[stream].synchronize()

    def stream_destroy(self, stream: int) -> None:
        self._streams.pop(stream, None)  # pycuda destroys a stream with its last reference

    def htod_async(self, ptr: int, host: np.ndarray, stream: int) -> None:
        with self._checked("memcpy_htod_async"):
            self._cuda.memcpy_htod_async(ptr, host, self._streams[stream])

    def dtoh_async(self, host: np.ndarray, ptr: int, stream: int) -> None:
        with self._checked("memcpy_dtoh_async"):
            self._cuda.memcpy_dtoh_async(host, ptr, self._streams[stream])

    def device(self) -> Tuple[str, Tuple[int, int]]:
        major, minor = self._dev.compute_capability()
        return str(self._dev.name()), (int(major), int(minor))

    def close(self) -> None:
        ctx, self._ctx = self._ctx, None
        if ctx is not None:
            with self._checked("context pop"):
                ctx.pop()


def load_cuda(prefer: str | None = None) -> CudaApi:
    """The first CUDA binding that imports and runs: "cuda-python", then "pycuda" (or only `prefer`).

    The returned binding's `skipped` says why earlier ones were passed over. Raises one BackendError
    naming every binding and why it cannot be used, plus what to install, when none works.
    """
    order: List[Any] = [CudaPythonApi, PyCudaApi]
    if prefer is not None:
        order = [c for c in order if c.name == prefer]
        if not order:
            raise BackendError(f"unknown CUDA binding {prefer!r}; expected {' or '.join(BINDINGS)}")
    problems: List[str] = []
    for cls in order:
        try:
            api = cls()
        except ImportError as exc:
            problems.append(f"{cls.name}: not installed ({exc.name or exc})")
            continue
        except BackendError as exc:
            problems.append(f"{cls.name}: {exc}")
            continue
        except Exception as exc:  # a binding that imported but fails in a way it does not report itself
            problems.append(f"{cls.name}: cannot initialise CUDA ({type(exc).__name__}: {exc})")
            continue
        api.skipped = problems
        return api
    raise BackendError(f"native TensorRT needs a CUDA binding that works here ({'; '.join(problems)}); "
                       f"{INSTALL_HINT}")


def describe_cuda(prefer: str | None = None) -> str:
    """One line for a ticket: the binding load_cuda picks, its (GPU name, compute capability) and why
    earlier bindings were skipped, e.g. "cuda-python ('Orin', (8, 7)) []". The binding is closed before
    returning, also on an error: pycuda aborts the interpreter at exit (exit 134, "context stack was not
    empty") when its pushed context is still current."""
    cuda = load_cuda(prefer)
    try:
        return f"{cuda.name} {cuda.device()} {cuda.skipped}"
    finally:
        cuda.close()


@dataclass
class Buffer:
    """One fixed-shape tensor: page-locked host array (reused every frame) and its device allocation."""

    host: np.ndarray
    device: int


class BufferSet:
    """Host + device buffers for named fixed-shape tensors on one CUDA stream.

    specs: {name: (shape, numpy dtype)}. Use as a context manager or call free(). A failure while
    allocating frees what was allocated before it and raises the original error.
    """

    def __init__(self, cuda: CudaApi, specs: Dict[str, Spec]) -> None:
        self.cuda = cuda
        self.stream: int | None = None
        self.buffers: Dict[str, Buffer] = {}
        try:
            self.stream = cuda.stream_create()
            for name, (shape, dtype) in specs.items():
                host = cuda.host_empty(tuple(shape), dtype)
                try:
                    device = cuda.malloc(max(host.nbytes, 1))
                except BaseException:
                    cuda.host_free(host)
                    raise
                self.buffers[name] = Buffer(host, device)
        except BaseException:
            with contextlib.suppress(Exception):  # keep the original error
                self.free()
            raise

    @property
    def stream_handle(self) -> int:
        if self.stream is None:
            raise BackendError("CUDA buffers already freed")
        return self.stream

    def upload(self, name: str, array: np.ndarray) -> None:
        """Copy `array` (same shape; dtype cast if needed) into the host buffer, then queue it to the device."""
        buf = self.buffers[name]
        np.copyto(buf.host, array, casting="same_kind")
        self.cuda.htod_async(buf.device, buf.host, self.stream_handle)

    def download(self, name: str) -> None:
        """Queue the device -> host copy of one buffer (valid after sync())."""
        buf = self.buffers[name]
        self.cuda.dtoh_async(buf.host, buf.device, self.stream_handle)

    def sync(self) -> None:
        self.cuda.stream_sync(self.stream_handle)

    def free(self) -> None:
        """Release every buffer and the stream, even when one release fails; then raise the first error."""
        errors: List[Exception] = []

        def attempt(release: Any, what: Any) -> None:
            try:
                release(what)
            except Exception as exc:
                errors.append(exc)

        buffers, self.buffers = self.buffers, {}
        for buf in buffers.values():
            attempt(self.cuda.free, buf.device)
            attempt(self.cuda.host_free, buf.host)
        stream, self.stream = self.stream, None
        if stream is not None:
            attempt(self.cuda.stream_destroy, stream)
        if errors:
            raise errors[0]

    def __enter__(self) -> "BufferSet":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.free()
