"""The Backend contract: ``load(artifact)``, ``run(lr) -> sr``, ``close()``; one class per runtime.

``run`` takes N x 3 x H x W float32 RGB in [0, 1] and returns N x 3 x sH x sW float32, unclamped (clamping
and rounding are the Upscaler's job). Timing loops live in the benchmark harness, never here.
"""

from __future__ import annotations

import os
from typing import Protocol

import numpy as np

from edgesr.artifacts import Artifact, ArtifactError, load_model, read_artifact
from edgesr.errors import EdgesrError
from edgesr.registry import Registry

__all__ = ["Backend", "BackendUnavailable", "InputError", "check_input", "BACKENDS", "TorchBackend", "OnnxRuntimeBackend", "open_backend"]


class BackendUnavailable(EdgesrError, RuntimeError):
    """The runtime is not installed or cannot run here; the message says why."""


class Backend(Protocol):
    name: str
    scale: int

    def load(self, artifact: Artifact) -> None: ...

    def run(self, lr: np.ndarray) -> np.ndarray: ...

    def close(self) -> None: ...

    def describe(self) -> dict: ...


BACKENDS: Registry = Registry("backend")


class InputError(EdgesrError, ValueError):
    """An input array that breaks the model I/O convention (N x 3 x H x W float in [0, 1], finite)."""


def check_input(lr: np.ndarray) -> np.ndarray:
    """The array a backend runs: N x 3 x H x W, float, finite, in [0, 1]; returned as contiguous float32.
    Anything else raises :class:`InputError` instead of producing a plausible-looking image. (Two passes
    over the input: a fraction of a percent of a network's time.)"""
    if not isinstance(lr, np.ndarray):
        raise InputError(f"expected a numpy array, got {type(lr).__name__}")
    if lr.ndim != 4 or lr.shape[1] != 3 or lr.shape[2] < 1 or lr.shape[3] < 1:
        raise InputError(f"expected an N x 3 x H x W array (RGB, channels first), got shape {lr.shape}; "
                         "transpose an H x W x 3 image with img.transpose(2, 0, 1)[None]")
    if not np.issubdtype(lr.dtype, np.floating):
        raise InputError(f"expected float values in [0, 1], got dtype {lr.dtype}; divide 8-bit images by 255 "
                         "(edgesr.imaging.to_float) or use edgesr.runtime.Upscaler, which converts")
    lo, hi = float(lr.min()), float(lr.max())
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise InputError(f"the input holds NaN or Inf values (min {lo}, max {hi}); check the code that made it")
    if lo < 0.0 or hi > 1.0:
        raise InputError(f"input values span [{lo:.4g}, {hi:.4g}], outside [0, 1]; the models take RGB scaled "
                         "to [0, 1] (divide 8-bit images by 255, clip after colour conversions)")
    return np.ascontiguousarray(lr, dtype=np.float32)


def _threads(threads: int) -> int:
    return threads if threads > 0 else (os.cpu_count() or 1)


@BACKENDS.register("torch")
class TorchBackend:
    """PyTorch eager on the CPU (or ``device='cuda'``); loads a model artifact (safetensors + manifest)."""

    name = "torch"

    def __init__(self, threads: int = 0, device: str = "cpu"):
        self.threads, self.device = _threads(threads), device
        self.model = None
        self.scale = 0

    def load(self, artifact: Artifact) -> None:
        import torch

        if artifact.kind != "model":
            raise ArtifactError(f"{artifact.path}: the torch backend runs model artifacts; this is "
                                f"{artifact.kind!r}. Use the onnxruntime backend for ONNX.")
        if self.device == "cpu":
            torch.set_num_threads(self.threads)
        self.model = load_model(artifact).to(self.device)
        self.scale = artifact.scale

    def run(self, lr: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            out = self.model(torch.from_numpy(check_input(lr)).to(self.device))
        if isinstance(out, tuple):  # a multi-output model: its first (smallest) scale, as the manifest's scale
            out = out[0]
        return out.float().cpu().numpy()

    def close(self) -> None:
        self.model = None

    def describe(self) -> dict:
        import torch

        return {"backend": "torch", "version": torch.__version__, "device": self.device, "threads": self.threads}


@BACKENDS.register("onnxruntime")
class OnnxRuntimeBackend:
    """ONNX Runtime with the given execution providers (CPU by default); loads an ONNX artifact."""

    name = "onnxruntime"

    def __init__(self, threads: int = 0, providers: tuple[str, ...] = ("CPUExecutionProvider",)):
        self.threads, self.providers = _threads(threads), tuple(providers)
        self.session = None
        self.scale = 0
        self.precision = ""

    def load(self, artifact: Artifact) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:  # pragma: no cover - a core dependency
            raise BackendUnavailable(f"onnxruntime is not installed: {exc}") from exc
        if artifact.kind != "onnx":
            raise ArtifactError(f"{artifact.path}: the onnxruntime backend runs ONNX artifacts; this is "
                                f"{artifact.kind!r}. Export it first (stage: export).")
        missing = [p for p in self.providers if p not in ort.get_available_providers()]
        if missing:
            raise BackendUnavailable(f"ONNX Runtime providers {missing} are not available here "
                                     f"(available: {ort.get_available_providers()})")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(artifact.payload), sess_options=opts, providers=list(self.providers))
        except Exception as exc:
            raise ArtifactError(f"{artifact.payload}: ONNX Runtime cannot load this graph ({exc}). Re-export it.") from exc
        self.scale = artifact.scale
        self.precision = artifact.manifest["precision"]
        self._input = self.session.get_inputs()[0].name

    def run(self, lr: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self._input: check_input(lr)})[0]

    def close(self) -> None:
        self.session = None

    def describe(self) -> dict:
        import onnxruntime as ort

        return {"backend": "onnxruntime", "version": ort.__version__, "providers": list(self.providers),
                "threads": self.threads, "precision": self.precision}


def open_backend(artifact: Artifact | str | os.PathLike, backend: str | None = None, **kwargs) -> Backend:
    """Load an artifact into a backend: ONNX artifacts into ONNX Runtime, model artifacts into PyTorch by default."""
    art = artifact if isinstance(artifact, Artifact) else read_artifact(artifact)
    name = backend or ("onnxruntime" if art.kind == "onnx" else "torch")
    b = BACKENDS.build({"type": name, **kwargs})
    b.load(art)
    return b
