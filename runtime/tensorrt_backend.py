"""TensorRT, for engine artifacts, in both flavours: TensorRT 10/11 (``import tensorrt``; data centre, Jetson)
and TensorRT for RTX (``import tensorrt_rtx``; GeForce/RTX). Their runtime APIs agree, so one class runs both;
the engine's manifest names its flavour.

Loading refuses an engine built for another flavour version, platform or GPU *before* anything deserializes
it (:func:`check_engine`, naming both sides and the rebuild command). Then: deserialize, one execution
context, the input shape set per call within the engine's optimization profile, pinned host and device
buffers through the cuda-python helper (:mod:`edgesr.runtime.cuda`) reused across calls (grown when a larger
input arrives), ``execute_async_v3`` on the backend's own stream, and optionally one CUDA graph captured per
input shape and replayed. The GPU harness times its stages (upload, compute, download) with CUDA events.

Also here, shared with the engine builder (``edgesr.export.tensorrt``): the flavours, their installation
hints, and the engine identity check.
"""

from __future__ import annotations

import importlib
import importlib.util
import platform

import numpy as np

from edgesr.artifacts import Artifact
from edgesr.errors import EdgesrError

from .base import BACKENDS, Backend, BackendUnavailable, InputError

__all__ = ["TensorRtBackend", "EngineError", "FLAVOURS", "INSTALL", "flavour_module", "flavour_available",
           "engine_platform", "check_engine"]

FLAVOURS = {"rtx": "tensorrt_rtx", "tensorrt": "tensorrt"}
"""Flavour -> Python module."""
INSTALL = {"rtx": "pip install 'edgesr[rtx]' (TensorRT for RTX; builds without a GPU)",
           "tensorrt": "install TensorRT 10/11 for your GPU or JetPack (pip install 'edgesr[tensorrt]' on x86)"}


class EngineError(EdgesrError, RuntimeError):
    """An engine that cannot be built, or an engine that does not belong to this machine; the message
    names the artifact, both sides and the fix."""


def flavour_module(flavour: str):
    if flavour not in FLAVOURS:
        raise EngineError(f"unknown TensorRT flavour {flavour!r}; use one of {sorted(FLAVOURS)}")
    try:
        return importlib.import_module(FLAVOURS[flavour])
    except ImportError as exc:
        raise EngineError(f"TensorRT flavour {flavour!r} is not installed here ({exc}); {INSTALL[flavour]}") from None


def flavour_available(flavour: str) -> tuple[bool, str]:
    """(importable, version or the reason it is not) without raising."""
    if importlib.util.find_spec(FLAVOURS[flavour]) is None:
        return False, f"not installed; {INSTALL[flavour]}"
    try:
        return True, flavour_module(flavour).__version__
    except EngineError as exc:
        return False, str(exc)


def engine_platform() -> str:
    return f"{platform.system().lower()}-{platform.machine().lower()}"


def check_engine(art: Artifact, *, flavour_version: str | None = None, compute_capability: str | None = None) -> None:
    """Refuse an engine built for another flavour, version, platform or GPU, before it is deserialized.

    ``flavour_version``: the installed version of the engine's flavour (looked up when not given);
    ``compute_capability``: the GPU's, as ``SM86`` (when known; RTX engines name the ones they contain,
    TensorRT engines the one GPU they were built on)."""
    eng = art.manifest.get("engine") or {}
    if art.kind != "engine" or not eng:
        raise EngineError(f"{art.path}: not an engine artifact")
    flavour = eng.get("flavour", "?")
    rebuild = f"edgesr build-engine {art.manifest.get('parent', {}).get('path', '<onnx artifact>')} --flavour {flavour}"
    if flavour_version is None:
        ok, info = flavour_available(flavour) if flavour in FLAVOURS else (False, "unknown flavour")
        if not ok:
            raise EngineError(f"{art.path}: built with {flavour} {eng.get('version')}, which is not installed here "
                              f"({info}).")
        flavour_version = info
    problems = []
    if flavour_version != eng.get("version"):
        problems.append(f"{flavour} version: engine {eng.get('version')}, here {flavour_version}")
    if eng.get("platform") != engine_platform():
        problems.append(f"platform: engine {eng.get('platform')}, here {engine_platform()}")
    targets = eng.get("compute_capabilities")
    if compute_capability and isinstance(targets, list) and compute_capability not in targets:
        problems.append(f"GPU: engine compiled for {targets}, this GPU is {compute_capability}")
    if problems:
        raise EngineError(f"{art.path}: this engine was built for another machine ({'; '.join(problems)}). Engines "
                          f"are not portable across these; rebuild it here: {rebuild}")


@BACKENDS.register("tensorrt")
class TensorRtBackend(Backend):
    gpu_timing = True  # the GPU timing protocol (Backend.gpu_timing)
    name = "tensorrt"
    kinds = ("engine",)
    module, package = "tensorrt", "TensorRT (10/11 or for RTX)"
    fix = ("Run engines on an NVIDIA GPU with its driver, TensorRT (10/11, or TensorRT for RTX for RTX engines) and "
           "cuda-python: pip install 'edgesr[gpu]'; ONNX artifacts run anywhere on the onnxruntime backend.")

    def __init__(self, threads: int = 0, device: int = 0, cuda_graphs: bool = False):
        super().__init__(threads)
        self.device, self.cuda_graphs = int(device), bool(cuda_graphs)
        self.cuda = self.stream = self.engine = self.context = None
        self._bufs: dict = {}
        self._graphs: dict = {}
        self._shape: tuple | None = None

    @classmethod
    def available(cls) -> tuple[bool, str]:
        flavours = [(f, flavour_available(f)) for f in FLAVOURS]
        have = [f"{FLAVOURS[f]} {info}" for f, (ok, info) in flavours if ok]
        if not have:
            return False, "neither TensorRT 10/11 (tensorrt) nor TensorRT for RTX (tensorrt_rtx) is installed"
        from .cuda import cuda_available

        ok, gpu = cuda_available()
        if not ok:
            return False, f"{', '.join(have)} installed, but no usable CUDA GPU ({gpu})"
        return True, f"{', '.join(have)}; {gpu}"

    def load(self, artifact: Artifact) -> None:
        if artifact.kind == "engine":
            check_engine(artifact)  # flavour version and platform, before anything touches the GPU or the engine
        super().load(artifact)

    def _load(self, artifact: Artifact) -> None:
        from .cuda import Cuda

        self.cuda = Cuda(self.device)
        check_engine(artifact, compute_capability=self.cuda.compute_capability)  # now that the GPU is known
        flavour = artifact.manifest["engine"]["flavour"]
        trt = flavour_module(flavour)
        self._trt = trt
        self._logger = trt.Logger(trt.Logger.ERROR)
        self._runtime = trt.Runtime(self._logger)
        self.engine = self._runtime.deserialize_cuda_engine(artifact.payload.read_bytes())
        if self.engine is None:
            raise EngineError(f"{artifact.payload}: {FLAVOURS[flavour]} {trt.__version__} could not deserialize this "
                              f"engine on {self.cuda.name} ({self.cuda.compute_capability}); rebuild it here")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        is_input = lambda n: self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT
        self.inputs = [n for n in names if is_input(n)]
        self.outputs = [n for n in names if not is_input(n)]
        if len(self.inputs) != 1:
            raise EngineError(f"{artifact.payload}: expected one input (lr), the engine has {self.inputs}")
        self._dtypes = {n: np.dtype(trt.nptype(self.engine.get_tensor_dtype(n))) for n in names}
        self.profile = [tuple(s) for s in self.engine.get_tensor_profile_shape(self.inputs[0], 0)]
        self.stream = self.cuda.stream()

    # ---- the GPU stages (the harness times each with CUDA events; run() chains them)
    def gpu_event(self):
        return self.cuda.event(self.stream)

    def _buffer(self, key: str, nbytes: int, host: bool):
        buf = self._bufs.get((key, host))
        if buf is None or buf.nbytes < nbytes:
            if buf is not None:
                buf.close()
                self._drop_graphs()  # graphs captured the old addresses
            buf = (self.cuda.host_buffer if host else self.cuda.device_buffer)(nbytes)
            self._bufs[(key, host)] = buf
        return buf

    def prepare(self, lr: np.ndarray) -> None:
        """Set the input shape (within the profile), size the buffers, and put ``lr`` in the pinned input
        buffer; the stages then move it."""
        shape = tuple(lr.shape)
        lo, _, hi = self.profile
        if any(s < a or s > b for s, a, b in zip(shape, lo, hi)):
            raise InputError(f"{self.artifact.path}: input {shape} is outside the engine's optimization profile "
                             f"{lo}..{hi}; tile it (edgesr.runtime.Upscaler with tile=...) or rebuild the engine with "
                             "larger shapes (engine stage `shapes`)")
        name = self.inputs[0]
        if shape != self._shape:
            if not self.context.set_input_shape(name, shape):
                raise InputError(f"{self.artifact.path}: TensorRT refused input shape {shape}")
            self._shape = shape
        self._io = {}
        for n in [name, *self.outputs]:
            dims = tuple(self.context.get_tensor_shape(n)) if n != name else shape
            nbytes = int(np.prod(dims)) * self._dtypes[n].itemsize
            dev, host = self._buffer(n, nbytes, False), self._buffer(n, nbytes, True)
            self.context.set_tensor_address(n, dev.ptr)
            self._io[n] = (dims, nbytes, dev, host)
        dims, _, _, host = self._io[name]
        np.copyto(host.array(dims, self._dtypes[name]), lr, casting="same_kind")

    def upload(self) -> None:
        _, nbytes, dev, host = self._io[self.inputs[0]]
        self.cuda.h2d(dev, host, nbytes, self.stream)

    def compute(self) -> None:
        if not self.cuda_graphs:
            if not self.context.execute_async_v3(self.stream.handle):
                raise EngineError(f"{self.artifact.payload}: execute_async_v3 failed for input {self._shape}")
            return
        graph = self._graphs.get(self._shape)
        if graph is None:
            self.context.execute_async_v3(self.stream.handle)  # once outside capture: TensorRT's lazy setup
            self.stream.synchronize()
            self.cuda.capture_begin(self.stream)
            self.context.execute_async_v3(self.stream.handle)
            graph = self._graphs[self._shape] = self.cuda.capture_end(self.stream)
        self.cuda.launch(graph, self.stream)

    def download(self) -> np.ndarray:
        name = self.outputs[self.output_index]
        dims, nbytes, dev, host = self._io[name]
        self.cuda.d2h(host, dev, nbytes, self.stream)
        return host.array(dims, self._dtypes[name])

    def synchronize(self) -> None:
        self.stream.synchronize()

    def _run(self, lr: np.ndarray) -> np.ndarray:
        self.prepare(lr)
        self.upload()
        self.compute()
        out = self.download()
        self.synchronize()
        return out.astype(np.float32, copy=True)

    def _drop_graphs(self) -> None:
        for g in self._graphs.values():
            self.cuda.destroy_graph(g)
        self._graphs.clear()

    def close(self) -> None:
        if self.cuda is not None:
            if self.stream is not None:
                self.stream.synchronize()
            self._drop_graphs()
            for buf in self._bufs.values():
                buf.close()
            self._bufs.clear()
            self.context = self.engine = None
            if self.stream is not None:
                self.stream.close()
        super().close()

    def describe(self) -> dict:
        eng = (self.artifact.manifest.get("engine") if self.artifact else None) or {}
        return {"backend": "tensorrt", "flavour": eng.get("flavour"), "version": eng.get("version"),
                "gpu": self.cuda.name if self.cuda else None,
                "compute_capability": self.cuda.compute_capability if self.cuda else None,
                "cuda_graphs": self.cuda_graphs, "precision": (self.artifact.manifest.get("precision") if self.artifact else None)}
