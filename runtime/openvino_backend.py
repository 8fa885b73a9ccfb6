"""OpenVINO (Intel's runtime, the one NNCF targets) on x86 CPUs, for ONNX artifacts: reads the ONNX file
directly, dynamic H x W, a latency hint and a thread count, an optional compiled-model cache directory, and
the inference precision OpenVINO chose (``f32``, or ``bf16`` on CPUs with AVX-512 BF16/AMX) recorded, or
forced with ``precision``. ``pip install 'edgesr[openvino]'``; imported only when used."""

from __future__ import annotations

import os

import numpy as np

from edgesr.artifacts import ArtifactError

from .base import BACKENDS, Backend

__all__ = ["OpenVinoBackend", "openvino_form"]


def openvino_form(source) -> tuple[bytes | None, int]:
    """The graph OpenVINO is given for ``source`` (a path or serialized bytes): its signed INT8 activations
    rewritten as the unsigned ones with the same values (:func:`edgesr.onnxutil.unsigned_activations`: OpenVINO
    computes a Concat of signed INT8 activations wrong), serialized, and the number of quantizers rewritten;
    (None, 0) where there is nothing to rewrite, or no ``onnx`` package to do it with."""
    try:
        import onnx

        from edgesr.onnxutil import unsigned_activations
    except ImportError:
        return None, 0
    proto = onnx.load_from_string(source) if isinstance(source, (bytes, bytearray)) else onnx.load(str(source))
    n = unsigned_activations(proto)
    return (proto.SerializeToString(), n) if n else (None, 0)


def _ov_bytes(source: bytes | None) -> bytes | None:
    return source if source is None else (openvino_form(source)[0] or source)


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
        self.saturation_risk = False
        self.unsigned_rewrites = 0

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
        self._core, self._config = core, config
        try:
            rewritten, self.unsigned_rewrites = openvino_form(artifact.payload)
            if rewritten is None:
                self.compiled = core.compile_model(str(artifact.payload), self.device, config)
            else:
                self.compiled = core.compile_model(core.read_model(rewritten, ov.Tensor(np.empty(0, np.uint8))),
                                                   self.device, config)
        except Exception as exc:
            raise ArtifactError(f"{artifact.payload}: OpenVINO cannot compile this graph ({str(exc).splitlines()[0]}). "
                                "Run it with the onnxruntime backend, or re-export it.") from exc
        self.request = self.compiled.create_infer_request()
        from .base import saturation_risk

        self.saturation_risk = self.device.upper().startswith("CPU") and saturation_risk(artifact.manifest)
        if self.saturation_risk:  # OpenVINO has no exact mode for it (ONNX Runtime's backend switches one on)
            import warnings

            warnings.warn(f"{artifact.payload}: INT8 with 8-bit weights on a CPU without VNNI: OpenVINO's INT8 "
                          "convolutions add uint8 x int8 products in saturating int16 here and lose quality (measured "
                          "-0.2 to -1.5 dB on the 8-bit students). Re-quantize with weight_bits: 7 (the quantize "
                          "stage's default for CPU targets), or run it with the onnxruntime backend, which computes "
                          "it exactly here.", stacklevel=2)
        from .onnxruntime_backend import uint8_form

        self._u8_source, self._u8_compiled = _ov_bytes(uint8_form(artifact.payload)), None
        self.uint8_native = self._u8_source is not None
        chosen = self.compiled.get_property("INFERENCE_PRECISION_HINT")
        self.inference_precision = chosen.to_string() if hasattr(chosen, "to_string") else str(chosen)

    def _select_output(self) -> None:
        import openvino as ov

        try:
            from edgesr.onnxutil import one_output

            pruned = one_output(self.artifact.payload, self.output_index)
        except ImportError:  # without the onnx package: every head runs, one is returned
            return
        from .onnxruntime_backend import uint8_form

        model = self._core.read_model(_ov_bytes(pruned), ov.Tensor(np.empty(0, np.uint8)))
        self.compiled = self._core.compile_model(model, self.device, self._config)
        self.request = self.compiled.create_infer_request()
        self._u8_source, self._u8_compiled = _ov_bytes(uint8_form(pruned)), None

    def _run(self, lr: np.ndarray) -> np.ndarray:
        result = self.request.infer({0: lr})
        return np.array(result[self.compiled.output(self._head(len(self.compiled.outputs)))], dtype=np.float32,
                        copy=True)

    def _run_uint8(self, frames: np.ndarray) -> tuple[np.ndarray, float]:
        if self._u8_compiled is None:  # compiled on first use, from the 8-bit form's ONNX bytes (nothing on disk)
            import openvino as ov

            model = self._core.read_model(self._u8_source, ov.Tensor(np.empty(0, np.uint8)))
            self._u8_compiled = self._core.compile_model(model, self.device, self._config)
            self._u8_request = self._u8_compiled.create_infer_request()
        result = self._u8_request.infer({0: frames})
        out = np.array(result[self._u8_compiled.output(self._head(len(self._u8_compiled.outputs) - 1))], copy=True)
        return out, float(result[self._u8_compiled.outputs[-1]])

    def close(self) -> None:
        super().close()
        self.compiled = self.request = self._u8_compiled = self._u8_request = None

    def describe(self) -> dict:
        import openvino as ov

        return {"backend": "openvino", "version": ov.get_version().split("-")[0], "device": self.device,
                "threads": self.threads, "inference_precision": self.inference_precision,
                "int8_saturation_risk": self.saturation_risk,
                "signed_int8_activations_as_unsigned": self.unsigned_rewrites,
                "uint8_io": "in the graph" if self.uint8_native else "NumPy"}
