"""OpenVINO (Intel's runtime, the one NNCF targets) on x86 CPUs, for ONNX artifacts: reads the ONNX file
directly, dynamic H x W, a latency hint and a thread count, an optional compiled-model cache directory, and
the inference precision OpenVINO chose (``f32``, or ``bf16`` on CPUs with AVX-512 BF16/AMX) recorded, or
forced with ``precision``. ``pip install 'edgesr[openvino]'``; imported only when used."""

from __future__ import annotations

import os

import numpy as np

from edgesr.artifacts import ArtifactError

from .base import BACKENDS, Backend

__all__ = ["OpenVinoBackend"]


@BACKENDS.register("openvino")
class OpenVinoBackend(Backend):
    name = "openvino"
    kinds = ("onnx",)
    module, package = "openvino", "OpenVINO"
    fix = "pip install 'edgesr[openvino]' (OpenVINO runs on x86 CPUs)."

    def __init__(self, threads: int = 0, device: str = "CPU", precision: str | None = None,
                 cache_dir: str | os.PathLike | None = None):
        super().__init__(threads)
        if precision not in (None, "f32", "bf16", "f16"):
            raise ValueError(f"openvino precision {precision!r}: use f32, bf16 or f16 (None: OpenVINO's choice)")
        self.device, self.precision_hint, self.cache_dir = device, precision, cache_dir
        self.compiled = self.request = None
        self.inference_precision = ""

    @classmethod
    def run_dir_options(cls, run_dir) -> dict:
        return {"cache_dir": os.path.join(run_dir, "openvino_cache")}

    @classmethod
    def version_of(cls, ov) -> str:
        return f"{ov.get_version().split('-')[0]} ({', '.join(ov.Core().available_devices)})"

    def _load(self, artifact) -> None:
        import openvino as ov

        core = ov.Core()
        if self.cache_dir is not None:
            core.set_property({"CACHE_DIR": str(self.cache_dir)})
        config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": self.threads}
        if self.precision_hint:
            config["INFERENCE_PRECISION_HINT"] = self.precision_hint
        try:
            self.compiled = core.compile_model(str(artifact.payload), self.device, config)
        except Exception as exc:
            raise ArtifactError(f"{artifact.payload}: OpenVINO cannot compile this graph ({str(exc).splitlines()[0]}). "
                                "Run it with the onnxruntime backend, or re-export it.") from exc
        self.request = self.compiled.create_infer_request()
        chosen = self.compiled.get_property("INFERENCE_PRECISION_HINT")
        self.inference_precision = chosen.to_string() if hasattr(chosen, "to_string") else str(chosen)

    def _run(self, lr: np.ndarray) -> np.ndarray:
        result = self.request.infer({0: lr})
        return np.array(result[self.compiled.output(self.output_index)], dtype=np.float32, copy=True)

    def close(self) -> None:
        super().close()
        self.compiled = self.request = None

    def describe(self) -> dict:
        import openvino as ov

        return {"backend": "openvino", "version": ov.get_version().split("-")[0], "device": self.device,
                "threads": self.threads, "inference_precision": self.inference_precision}
