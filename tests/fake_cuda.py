"""A fake GPU behind both CUDA Python bindings the TensorRT glue supports, with failures on demand.

Shaped after the real APIs: cuda-python's runtime module (every call returns a tuple whose first item is a
`cudaError_t` IntEnum; streams are `cudaStream_t` objects with __int__; properties carry `name` as bytes)
and pycuda.driver (init, Device, retain_primary_context / push / pop, mem_alloc, pagelocked_empty whose
array `.base` has free(), Stream, memcpy_*_async, errors as pycuda.driver.Error subclasses). Device and
page-locked memory are real host memory (ctypes buffers), so pointers are real addresses, copies are
memmove, and tests/fake_tensorrt.py reads and writes tensors through them.

    gpu = FakeGpu()
    install(monkeypatch, gpu, cuda_python=True, pycuda=True)   # sys.modules; an absent binding is blocked
    gpu.fail["cudaMalloc"] = 2        # the 2nd cudaMalloc fails (0: every call); pycuda names: "mem_alloc"
    gpu.driver = 12060; gpu.runtime = 13000   # cuda-python 13 on JetPack 6: every runtime call fails
    gpu.assert_clean()                # no device/page-locked memory, stream or pushed context left
"""

from __future__ import annotations

import ctypes
import enum
import types
from dataclasses import dataclass, field

import numpy as np


class cudaError_t(enum.IntEnum):  # noqa: N801 (the real name)
    cudaSuccess = 0
    cudaErrorInvalidValue = 1
    cudaErrorMemoryAllocation = 2
    cudaErrorInsufficientDriver = 35
    cudaErrorNoDevice = 100
    cudaErrorInvalidResourceHandle = 400
    cudaErrorLaunchFailure = 719


class cudaMemcpyKind(enum.IntEnum):  # noqa: N801
    cudaMemcpyHostToHost = 0
    cudaMemcpyHostToDevice = 1
    cudaMemcpyDeviceToHost = 2
    cudaMemcpyDeviceToDevice = 3
    cudaMemcpyDefault = 4


class cudaStream_t:  # noqa: N801
    def __init__(self, handle: int = 0) -> None:
        self._handle = int(handle)

    def __int__(self) -> int:
        return self._handle

    def getPtr(self) -> int:  # noqa: N802 (the real name)
        return self._handle


@dataclass
class FakeGpu:
    """One GPU's state, shared by the fake bindings and the fake TensorRT."""

    name: str = "Orin"
    capability: tuple = (8, 7)
    count: int = 1
    driver: int = 12060  # CUDA version the driver supports (cudaDriverGetVersion)
    runtime: int = 12060  # CUDA version the fake cuda-python was built for
    fail: dict = field(default_factory=dict)  # call name -> n (fail the n-th call; 0: every call)
    calls: dict = field(default_factory=dict)
    device: dict = field(default_factory=dict)  # ptr -> ctypes buffer
    pinned: dict = field(default_factory=dict)  # ptr -> ctypes buffer (page-locked host memory)
    streams: set = field(default_factory=set)
    ctx_stack: list = field(default_factory=list)  # pycuda contexts pushed on this thread
    runtime_context: bool = False  # cuda-python's runtime API made the primary context current
    pageable_copies: int = 0  # async copies from/to pageable host memory (synchronous on a real GPU)
    async_copies: int = 0
    int8_bits: int = 8  # the fake TensorRT's int8 kernels (tests/fake_tensorrt.py); fewer: a planted error

    def failing(self, call: str) -> bool:
        n = self.calls[call] = self.calls.get(call, 0) + 1
        want = self.fail.get(call)
        return want is not None and (want == 0 or want == n)

    # memory
    def _alloc(self, table: dict, nbytes: int) -> int:
        buf = ctypes.create_string_buffer(max(int(nbytes), 1))
        ptr = ctypes.addressof(buf)
        table[ptr] = buf
        return ptr

    def _find(self, table: dict, ptr: int, nbytes: int) -> bool:
        for base, buf in table.items():
            if base <= ptr and ptr + nbytes <= base + ctypes.sizeof(buf):
                return True
        return False

    def is_device(self, ptr: int, nbytes: int) -> bool:
        return self._find(self.device, int(ptr), int(nbytes))

    def is_pinned(self, ptr: int, nbytes: int) -> bool:
        return self._find(self.pinned, int(ptr), int(nbytes))

    def copy(self, dst: int, src: int, nbytes: int, to_device: bool) -> bool:
        """An async copy between host and device memory; False for an address that is not live."""
        dev, host = (dst, src) if to_device else (src, dst)
        if not self.is_device(dev, nbytes):
            return False
        self.async_copies += 1
        if not self.is_pinned(host, nbytes):
            self.pageable_copies += 1
        ctypes.memmove(int(dst), int(src), int(nbytes))
        return True

    def read(self, ptr: int, nbytes: int) -> bytes:
        if not self.is_device(ptr, nbytes):
            raise ValueError(f"address {ptr:#x} ({nbytes} bytes) is not device memory")
        return ctypes.string_at(int(ptr), int(nbytes))

    def write(self, ptr: int, data: bytes) -> None:
        if not self.is_device(ptr, len(data)):
            raise ValueError(f"address {ptr:#x} ({len(data)} bytes) is not device memory")
        ctypes.memmove(int(ptr), data, len(data))

    @property
    def has_context(self) -> bool:
        """A CUDA context is current: cuda-python's runtime made the primary one current, or pycuda pushed one."""
        return self.runtime_context or bool(self.ctx_stack)

    def leaks(self) -> dict:
        return {k: v for k, v in (("device", len(self.device)), ("pinned", len(self.pinned)),
                                   ("streams", len(self.streams)), ("contexts", len(self.ctx_stack))) if v}

    def assert_clean(self) -> None:
        assert not self.leaks(), f"leaked: {self.leaks()}"


# ----------------------------------------------------------------------------------------- cuda-python


def cuda_python_modules(gpu: FakeGpu) -> dict:
    """sys.modules entries for cuda-python: cuda, cuda.bindings, cuda.bindings.runtime (and cuda.cudart)."""
    rt = types.ModuleType("cuda.bindings.runtime")
    E = cudaError_t
    rt.cudaError_t, rt.cudaMemcpyKind, rt.cudaStream_t = cudaError_t, cudaMemcpyKind, cudaStream_t

    def call(name: str, fail_with: cudaError_t = E.cudaErrorMemoryAllocation):
        """(error or None): insufficient driver for every call of a runtime newer than the driver."""
        if gpu.runtime > gpu.driver:
            return E.cudaErrorInsufficientDriver
        if gpu.count < 1:
            return E.cudaErrorNoDevice
        if gpu.failing(name):
            return fail_with
        gpu.runtime_context = True
        return None

    def cudaDriverGetVersion():  # noqa: N802 (the real names)
        return E.cudaSuccess, gpu.driver

    def cudaRuntimeGetVersion():  # noqa: N802
        return E.cudaSuccess, gpu.runtime

    def cudaGetDeviceCount():  # noqa: N802
        err = call("cudaGetDeviceCount", E.cudaErrorNoDevice)
        return (err, 0) if err is not None else (E.cudaSuccess, gpu.count)

    def cudaGetDevice():  # noqa: N802
        err = call("cudaGetDevice")
        return (err, 0) if err is not None else (E.cudaSuccess, 0)

    def cudaGetDeviceProperties(device):  # noqa: N802
        err = call("cudaGetDeviceProperties", E.cudaErrorInvalidValue)
        if err is not None:
            return err, None
        props = types.SimpleNamespace(name=gpu.name.encode() + b"\x00" * 8, major=gpu.capability[0],
                                      minor=gpu.capability[1])
        return E.cudaSuccess, props

    def cudaMalloc(size):  # noqa: N802
        err = call("cudaMalloc")
        return (err, 0) if err is not None else (E.cudaSuccess, gpu._alloc(gpu.device, size))

    def cudaFree(ptr):  # noqa: N802
        err = call("cudaFree", E.cudaErrorInvalidValue)
        if err is None and gpu.device.pop(int(ptr), None) is None:
            err = E.cudaErrorInvalidValue
        return (err or E.cudaSuccess,)

    def cudaMallocHost(size):  # noqa: N802
        err = call("cudaMallocHost")
        return (err, 0) if err is not None else (E.cudaSuccess, gpu._alloc(gpu.pinned, size))

    def cudaFreeHost(ptr):  # noqa: N802
        err = call("cudaFreeHost", E.cudaErrorInvalidValue)
        if err is None and gpu.pinned.pop(int(ptr), None) is None:
            err = E.cudaErrorInvalidValue
        return (err or E.cudaSuccess,)

    def cudaStreamCreate():  # noqa: N802
        err = call("cudaStreamCreate", E.cudaErrorInvalidResourceHandle)
        if err is not None:
            return err, None
        handle = 0x5000 + gpu.calls["cudaStreamCreate"]
        gpu.streams.add(handle)
        return E.cudaSuccess, cudaStream_t(handle)

    def _stream_ok(stream, name):
        err = call(name, E.cudaErrorLaunchFailure)
        if err is None and int(stream) not in gpu.streams:
            err = E.cudaErrorInvalidResourceHandle
        return err

    def cudaStreamSynchronize(stream):  # noqa: N802
        return (_stream_ok(stream, "cudaStreamSynchronize") or E.cudaSuccess,)

    def cudaStreamDestroy(stream):  # noqa: N802
        err = _stream_ok(stream, "cudaStreamDestroy")
        if err is None:
            gpu.streams.discard(int(stream))
        return (err or E.cudaSuccess,)

    def cudaMemcpyAsync(dst, src, count, kind, stream):  # noqa: N802
        err = _stream_ok(stream, "cudaMemcpyAsync")
        if err is None and kind not in (cudaMemcpyKind.cudaMemcpyHostToDevice, cudaMemcpyKind.cudaMemcpyDeviceToHost):
            err = E.cudaErrorInvalidValue
        if err is None and not gpu.copy(int(dst), int(src), int(count),
                                        kind == cudaMemcpyKind.cudaMemcpyHostToDevice):
            err = E.cudaErrorInvalidValue
        return (err or E.cudaSuccess,)

    for fn in (cudaDriverGetVersion, cudaRuntimeGetVersion, cudaGetDeviceCount, cudaGetDevice,
               cudaGetDeviceProperties, cudaMalloc, cudaFree, cudaMallocHost, cudaFreeHost, cudaStreamCreate,
               cudaStreamSynchronize, cudaStreamDestroy, cudaMemcpyAsync):
        setattr(rt, fn.__name__, fn)
    cuda = types.ModuleType("cuda")
    bindings = types.ModuleType("cuda.bindings")
    bindings.runtime = rt
    cuda.bindings = bindings
    cuda.cudart = rt
    return {"cuda": cuda, "cuda.bindings": bindings, "cuda.bindings.runtime": rt, "cuda.cudart": rt}


# ---------------------------------------------------------------------------------------------- pycuda


def pycuda_modules(gpu: FakeGpu, abort_at_exit: bool = False) -> dict:
    """sys.modules entries for pycuda and pycuda.driver.

    abort_at_exit: behave like real pycuda at interpreter exit (for subprocess tests only): when a pushed
    context is still on the stack, print pycuda's "context stack was not empty" message and abort (exit
    134 on Linux) -- what a one-liner that never pops its context does on a Jetson."""
    drv = types.ModuleType("pycuda.driver")
    if abort_at_exit:
        import atexit
        import os
        import sys

        def cleanup() -> None:
            if gpu.ctx_stack:
                sys.stderr.write("PyCUDA ERROR: The context stack was not empty upon module cleanup.\n"
                                 "Use Context.pop() to avoid this problem.\n")
                sys.stdout.flush()
                sys.stderr.flush()
                os.abort()

        atexit.register(cleanup)

    class Error(Exception):
        pass

    class LogicError(Error):
        pass

    class MemoryError(Error):  # noqa: A001 (pycuda's name)
        pass

    class RuntimeError(Error):  # noqa: A001
        pass

    def check(name: str, exc: type = LogicError, what: str = "failed") -> None:
        if gpu.failing(name):
            raise exc(f"cu{name[:1].upper()}{name[1:]} {what}")

    def need_context(name: str) -> None:
        if not gpu.ctx_stack:
            raise LogicError(f"{name} failed: invalid device context")

    def init(flags=0):
        check("init", RuntimeError, "failed: no CUDA-capable device is detected")
        if gpu.count < 1:
            raise RuntimeError("cuInit failed: no CUDA-capable device is detected")

    class Context:
        def push(self):
            check("push")
            gpu.ctx_stack.append(self)

        @staticmethod
        def pop():
            if not gpu.ctx_stack:
                raise LogicError("cuCtxPopCurrent failed: invalid device context")
            gpu.ctx_stack.pop()

        def detach(self):
            pass

    class Device:
        def __init__(self, ordinal):
            if not 0 <= ordinal < gpu.count:
                raise LogicError("cuDeviceGet failed: invalid device ordinal")

        @staticmethod
        def count():
            return gpu.count

        def name(self):
            return gpu.name

        def compute_capability(self):
            return tuple(gpu.capability)

        def retain_primary_context(self):
            check("retain_primary_context")
            return Context()

    class DeviceAllocation:
        def __init__(self, ptr):
            self.ptr = ptr

        def __int__(self):
            return self.ptr

        def free(self):
            if gpu.device.pop(self.ptr, None) is None:
                raise LogicError("cuMemFree failed: invalid value")

    def mem_alloc(nbytes):
        need_context("cuMemAlloc")
        check("mem_alloc", MemoryError, "failed: out of memory")
        return DeviceAllocation(gpu._alloc(gpu.device, nbytes))

    class PagelockedHostAllocation:
        def __init__(self, shape, dtype):
            self.ptr = gpu._alloc(gpu.pinned, int(np.prod(shape)) * np.dtype(dtype).itemsize)
            self.__array_interface__ = {"shape": tuple(shape), "typestr": np.dtype(dtype).str,
                                        "data": (self.ptr, False), "version": 3}

        def free(self):
            if gpu.pinned.pop(self.ptr, None) is None:
                raise LogicError("cuMemFreeHost failed: invalid value")

    def pagelocked_empty(shape, dtype, order="C", mem_flags=0):
        need_context("cuMemHostAlloc")
        check("pagelocked_empty", MemoryError, "failed: out of memory")
        return np.asarray(PagelockedHostAllocation(shape, dtype))

    class Stream:
        def __init__(self, flags=0):
            need_context("cuStreamCreate")
            check("Stream")
            self.handle = 0x7000 + gpu.calls["Stream"]
            gpu.streams.add(self.handle)

        def synchronize(self):
            check("synchronize", LogicError, "failed: an illegal memory access was encountered")

        def __del__(self):
            gpu.streams.discard(getattr(self, "handle", None))

    def _copy(name, dst, src, nbytes, to_device):
        check(name)
        if not gpu.copy(dst, src, nbytes, to_device):
            raise LogicError(f"{name} failed: invalid argument")

    def memcpy_htod_async(dest, src, stream=None):
        _copy("memcpy_htod_async", int(dest), src.ctypes.data, src.nbytes, True)

    def memcpy_dtoh_async(dest, src, stream=None):
        _copy("memcpy_dtoh_async", dest.ctypes.data, int(src), dest.nbytes, False)

    for obj in (Error, LogicError, MemoryError, RuntimeError, Context, Device, DeviceAllocation, Stream, init,
                mem_alloc, pagelocked_empty, memcpy_htod_async, memcpy_dtoh_async):
        setattr(drv, obj.__name__, obj)
    pycuda = types.ModuleType("pycuda")
    pycuda.driver = drv
    return {"pycuda": pycuda, "pycuda.driver": drv}


def install(monkeypatch, gpu: FakeGpu, cuda_python: bool = True, pycuda: bool = True) -> None:
    """Put the chosen fake bindings into sys.modules; block the others (import raises ImportError), so a
    real cuda-python or pycuda installed here never answers."""
    import sys

    present = {}
    if cuda_python:
        present.update(cuda_python_modules(gpu))
    if pycuda:
        present.update(pycuda_modules(gpu))
    for name in ("cuda", "cuda.bindings", "cuda.bindings.runtime", "cuda.cudart", "pycuda", "pycuda.driver"):
        monkeypatch.setitem(sys.modules, name, present.get(name))
