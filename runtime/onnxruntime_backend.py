"""ONNX Runtime, for ONNX artifacts (FP32, FP16, INT8 Q/DQ), with the given execution providers (CPU by
default). :func:`ort_session` is the one place an ONNX Runtime session is built: every area that runs a
graph (the backend, export parity, FP16 checks, the machine yardstick) builds it here."""

from __future__ import annotations

import os

import numpy as np

from edgesr.artifacts import ArtifactError

from .base import BACKENDS, Backend, BackendUnavailable

__all__ = ["OnnxRuntimeBackend", "ort_session"]


PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider",
             "openvino": "OpenVINOExecutionProvider", "dml": "DmlExecutionProvider", "coreml": "CoreMLExecutionProvider",
             "xnnpack": "XnnpackExecutionProvider"}
"""Short names accepted for ONNX Runtime execution providers (``--providers cuda,cpu``); full names pass as they are."""
PROVIDER_FIX = {
    "CUDAExecutionProvider": "install onnxruntime-gpu (CUDA 12) instead of onnxruntime, on a machine with an NVIDIA GPU",
    "TensorrtExecutionProvider": "install onnxruntime-gpu and TensorRT 10 (its libraries on LD_LIBRARY_PATH)",
    "OpenVINOExecutionProvider": "install onnxruntime-openvino, or use edgesr's openvino backend",
    "DmlExecutionProvider": "install onnxruntime-directml (Windows)",
    "CoreMLExecutionProvider": "ONNX Runtime's macOS wheels have it"}


def ort_session(model: str | os.PathLike | bytes, *, threads: int = 0,
                providers: tuple[str, ...] = ("CPUExecutionProvider",), optimize: bool = True, spin: bool = True,
                profile_prefix: str | None = None):
    """An ``InferenceSession`` on a file or serialized graph: ``threads`` intra-op threads (0: ONNX Runtime's
    default, all cores), one inter-op thread, full graph optimisation (``optimize=False`` keeps every
    tensor observable), warnings off. ``spin=False`` stops idle worker threads from spin-waiting after a run:
    ONNX Runtime's default keeps them busy for a while, which is faster alone but steals the cores from
    whatever runs next (measured in an interleaved benchmark: OpenVINO's median 24 -> 41 ms beside spinning
    ONNX Runtime sessions, ONNX Runtime's own median 1 % slower without spinning). ``profile_prefix`` turns
    on ONNX Runtime's per-node profiler (its JSON trace is written at ``end_profiling()``)."""
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise BackendUnavailable(f"onnxruntime is not installed ({exc}); pip install onnxruntime") from exc
    providers = tuple(PROVIDERS.get(p.lower(), p) for p in providers)
    missing = [p for p in providers if p not in ort.get_available_providers()]
    if missing:
        why = "; ".join(f"{p}: {PROVIDER_FIX.get(p, 'not in this ONNX Runtime build')}" for p in missing)
        raise BackendUnavailable(f"ONNX Runtime {ort.__version__} here has no {', '.join(missing)} ({why}). "
                                 f"Available: {', '.join(ort.get_available_providers())}")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = max(threads, 0)
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                     else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    opts.log_severity_level = 3
    if not spin:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if profile_prefix:
        opts.enable_profiling = True
        opts.profile_file_prefix = profile_prefix
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, sess_options=opts, providers=list(providers))


@BACKENDS.register("onnxruntime")
class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"
    kinds = ("onnx",)
    module = package = "onnxruntime"
    fix = "pip install onnxruntime (CPU) or onnxruntime-gpu."

    interleave_options = {"spin": False}

    def __init__(self, threads: int = 0, providers: tuple[str, ...] = ("CPUExecutionProvider",), spin: bool = True,
                 fast_shuffle: bool = True):
        """``fast_shuffle``: on the CPU provider alone, run each DepthToSpace (pixel shuffle) as the
        bit-exact ConvTranspose of :func:`edgesr.onnxutil.shuffle_as_conv_transpose`, in memory (the artifact
        is not changed): ONNX Runtime's CPU DepthToSpace is a slow generic transpose."""
        super().__init__(threads)
        self.providers, self.spin = tuple(providers), spin
        self.fast_shuffle = fast_shuffle and tuple(PROVIDERS.get(p.lower(), p) for p in providers) == ("CPUExecutionProvider",)
        self.rewritten = 0
        self.session = None
        self.precision = ""

    @classmethod
    def version_of(cls, ort) -> str:
        return f"{ort.__version__} ({', '.join(ort.get_available_providers())})"

    def _load(self, artifact) -> None:
        source = artifact.payload
        if self.fast_shuffle:
            try:  # needs the onnx package, which a runtime-only install (onnxruntime + numpy) may not have
                import onnx

                from edgesr.onnxutil import shuffle_as_conv_transpose

                proto = onnx.load(str(artifact.payload))
                self.rewritten = shuffle_as_conv_transpose(proto)
                if self.rewritten:
                    source = proto.SerializeToString()
            except Exception:  # noqa: BLE001 - a graph the rewrite cannot read is loaded as it is (and checked there)
                self.rewritten = 0
        try:
            self.session = ort_session(source, threads=self.threads, providers=self.providers, spin=self.spin)
        except BackendUnavailable:
            raise
        except Exception as exc:
            raise ArtifactError(f"{artifact.payload}: ONNX Runtime cannot load this graph ({exc}). Re-export it.") from exc
        self.precision = artifact.manifest["precision"]
        self._input = self.session.get_inputs()[0].name

    def _run(self, lr: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self._input: lr})[self.output_index]

    def close(self) -> None:
        super().close()
        self.session = None

    def describe(self) -> dict:
        import onnxruntime as ort

        return {"backend": "onnxruntime", "version": ort.__version__, "providers": list(self.providers),
                "threads": self.threads, "precision": self.precision, "thread_spinning": self.spin,
                "shuffle_as_conv_transpose": self.rewritten}
