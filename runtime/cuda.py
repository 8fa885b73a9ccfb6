"""The small CUDA helper the GPU backends and the GPU harness share, on cuda-python (``cuda-bindings``, NVIDIA's
maintained bindings of the CUDA runtime API; wheels for x86-64 and aarch64/Jetson): a device, a stream, device
buffers, pinned host buffers (so copies are truly asynchronous), asynchronous copies, timing events and CUDA
graph capture on a stream. No torch: the TensorRT backend runs with numpy and this alone.

Every call checks its status and raises :class:`CudaError` naming the call and CUDA's message. Without a GPU,
driver or the package, :func:`cuda_available` says which is missing instead of raising.

``pip install 'edgesr[gpu]'`` installs cuda-bindings (13.x needs a driver >= 580; with an older driver pin
``cuda-bindings<13``).
"""

from __future__ import annotations

import ctypes
import importlib.util

import numpy as np

from edgesr.errors import EdgesrError

__all__ = ["CudaError", "cuda_available", "Cuda", "Stream", "Event", "DeviceBuffer", "HostBuffer"]


class CudaError(EdgesrError, RuntimeError):
    """A CUDA runtime call failed, or CUDA cannot run here; the message names the call and the reason."""


def _cudart():
    if importlib.util.find_spec("cuda") is None or importlib.util.find_spec("cuda.bindings") is None:
        raise CudaError("cuda-python is not installed: pip install 'edgesr[gpu]' (cuda-bindings)")
    from cuda.bindings import runtime as cudart

    return cudart


def _check(cudart, result, call: str):
    """Unwrap a cuda-bindings result tuple ``(status, *values)``; raise on a status other than success."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if err != cudart.cudaError_t.cudaSuccess:
        _, msg = cudart.cudaGetErrorString(err)
        raise CudaError(f"{call} failed: {getattr(err, 'name', err)} ({msg.decode() if isinstance(msg, bytes) else msg})")
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


def cuda_available(device: int = 0) -> tuple[bool, str]:
    """(usable, "<GPU name> SMxy, driver/runtime versions" or the reason it is not) without raising."""
    try:
        cudart = _cudart()
        n = _check(cudart, cudart.cudaGetDeviceCount(), "cudaGetDeviceCount")
    except CudaError as exc:
        return False, str(exc)
    if n <= device:
        return False, f"CUDA sees {n} device(s); device {device} does not exist"
    props = _check(cudart, cudart.cudaGetDeviceProperties(device), "cudaGetDeviceProperties")
    drv = _check(cudart, cudart.cudaDriverGetVersion(), "cudaDriverGetVersion")
    return True, (f"{props.name.decode(errors='replace').strip(chr(0))} SM{props.major}{props.minor}, "
                  f"CUDA driver {drv // 1000}.{drv % 1000 // 10}")


class Stream:
    """A non-blocking CUDA stream (``handle`` is what TensorRT's ``execute_async_v3`` takes)."""

    def __init__(self, cuda: "Cuda"):
        self._c = cuda.cudart
        self.raw = _check(self._c, self._c.cudaStreamCreateWithFlags(self._c.cudaStreamNonBlocking),
                          "cudaStreamCreateWithFlags")

    @property
    def handle(self) -> int:
        return int(self.raw)

    def synchronize(self) -> None:
        _check(self._c, self._c.cudaStreamSynchronize(self.raw), "cudaStreamSynchronize")

    def close(self) -> None:
        if self.raw is not None:
            self._c.cudaStreamDestroy(self.raw)
            self.raw = None


class Event:
    """A timing event recorded on a stream; ``elapsed_ms(end)`` is GPU time between two recorded events."""

    def __init__(self, cuda: "Cuda", stream: Stream):
        self._c, self._stream = cuda.cudart, stream
        self.raw = _check(self._c, self._c.cudaEventCreateWithFlags(self._c.cudaEventDefault), "cudaEventCreate")

    def record(self) -> "Event":
        _check(self._c, self._c.cudaEventRecord(self.raw, self._stream.raw), "cudaEventRecord")
        return self

    def synchronize(self) -> None:
        _check(self._c, self._c.cudaEventSynchronize(self.raw), "cudaEventSynchronize")

    def elapsed_ms(self, end: "Event") -> float:
        return float(_check(self._c, self._c.cudaEventElapsedTime(self.raw, end.raw), "cudaEventElapsedTime"))

    def close(self) -> None:
        if self.raw is not None:
            self._c.cudaEventDestroy(self.raw)
            self.raw = None


class DeviceBuffer:
    """``nbytes`` of device memory (cudaMalloc); ``ptr`` is the address TensorRT binds."""

    def __init__(self, cuda: "Cuda", nbytes: int):
        self._c, self.nbytes = cuda.cudart, int(nbytes)
        self.ptr = int(_check(self._c, self._c.cudaMalloc(max(1, self.nbytes)), f"cudaMalloc({self.nbytes})"))

    def close(self) -> None:
        if self.ptr:
            self._c.cudaFree(self.ptr)
            self.ptr = 0


class HostBuffer:
    """``nbytes`` of pinned (page-locked) host memory, with a numpy view: copies from and to it run
    asynchronously on a stream, which pageable memory does not."""

    def __init__(self, cuda: "Cuda", nbytes: int):
        self._c, self.nbytes = cuda.cudart, int(nbytes)
        self.ptr = int(_check(self._c, self._c.cudaMallocHost(max(1, self.nbytes)), f"cudaMallocHost({self.nbytes})"))
        self._raw = (ctypes.c_byte * max(1, self.nbytes)).from_address(self.ptr)

    def array(self, shape, dtype) -> np.ndarray:
        """A numpy view of the buffer's first bytes as ``shape`` / ``dtype`` (no copy)."""
        dtype = np.dtype(dtype)
        n = int(np.prod(shape)) * dtype.itemsize
        if n > self.nbytes:
            raise CudaError(f"host buffer of {self.nbytes} bytes cannot hold {tuple(shape)} {dtype}")
        return np.frombuffer(self._raw, dtype=dtype, count=int(np.prod(shape))).reshape(shape)

    def close(self) -> None:
        if self.ptr:
            self._raw = None
            self._c.cudaFreeHost(self.ptr)
            self.ptr = 0


class Cuda:
    """One GPU through the CUDA runtime: ``stream()``, ``event(stream)``, ``device_buffer(n)``,
    ``host_buffer(n)``, ``h2d`` / ``d2h`` asynchronous copies, and CUDA graph capture (``capture_begin`` /
    ``capture_end`` -> a graph to ``launch``). Raises :class:`CudaError` when CUDA cannot run here."""

    def __init__(self, device: int = 0):
        ok, why = cuda_available(device)
        if not ok:
            raise CudaError(f"CUDA cannot run here: {why}")
        self.cudart = _cudart()
        self.device = device
        _check(self.cudart, self.cudart.cudaSetDevice(device), "cudaSetDevice")
        props = _check(self.cudart, self.cudart.cudaGetDeviceProperties(device), "cudaGetDeviceProperties")
        self.name = props.name.decode(errors="replace").strip("\0")
        self.compute_capability = f"SM{props.major}{props.minor}"
        self.description = why

    def stream(self) -> Stream:
        return Stream(self)

    def event(self, stream: Stream) -> Event:
        return Event(self, stream)

    def device_buffer(self, nbytes: int) -> DeviceBuffer:
        return DeviceBuffer(self, nbytes)

    def host_buffer(self, nbytes: int) -> HostBuffer:
        return HostBuffer(self, nbytes)

    def h2d(self, dst: DeviceBuffer, src: HostBuffer, nbytes: int, stream: Stream) -> None:
        _check(self.cudart, self.cudart.cudaMemcpyAsync(dst.ptr, src.ptr, nbytes,
                                                        self.cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, stream.raw),
               "cudaMemcpyAsync(host to device)")

    def d2h(self, dst: HostBuffer, src: DeviceBuffer, nbytes: int, stream: Stream) -> None:
        _check(self.cudart, self.cudart.cudaMemcpyAsync(dst.ptr, src.ptr, nbytes,
                                                        self.cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost, stream.raw),
               "cudaMemcpyAsync(device to host)")

    def capture_begin(self, stream: Stream) -> None:
        """Start recording the work enqueued on ``stream`` into a CUDA graph (nothing runs until launched)."""
        mode = self.cudart.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
        _check(self.cudart, self.cudart.cudaStreamBeginCapture(stream.raw, mode), "cudaStreamBeginCapture")

    def capture_end(self, stream: Stream):
        """End the capture and instantiate it: the executable graph to ``launch``."""
        graph = _check(self.cudart, self.cudart.cudaStreamEndCapture(stream.raw), "cudaStreamEndCapture")
        exe = _check(self.cudart, self.cudart.cudaGraphInstantiate(graph, 0), "cudaGraphInstantiate")
        self.cudart.cudaGraphDestroy(graph)
        return exe

    def launch(self, graph_exec, stream: Stream) -> None:
        _check(self.cudart, self.cudart.cudaGraphLaunch(graph_exec, stream.raw), "cudaGraphLaunch")

    def destroy_graph(self, graph_exec) -> None:
        self.cudart.cudaGraphExecDestroy(graph_exec)
