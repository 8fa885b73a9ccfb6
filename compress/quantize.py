"""INT8 post-training quantisation into standard QuantizeLinear/DequantizeLinear (QDQ) ONNX.

ONNX Runtime's static quantiser calibrates activation ranges on real images (MinMax, Entropy or Percentile)
and writes a QDQ graph: weights INT8 symmetric per output channel; activations either UINT8 asymmetric
(``target: onnxruntime``, fastest on x86 CPUs) or INT8 symmetric with zero point 0
(``target: tensorrt``, what TensorRT's explicit quantisation accepts, with biases left in float). The result contains only standard
ONNX operators, never OpenVINO ``FakeQuantize``, and is checked for that.

The PSNR drop against the FP32 parent graph is measured on the validation set through ONNX Runtime and
held to the quality budget.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path
from typing import Iterable

import numpy as np
import onnx
from onnx import numpy_helper

from edgesr.artifacts import Artifact, write_artifact
from edgesr.config import QuantizeConfig
from edgesr.data.datasets import ImagePair
from edgesr.imaging import to_float
from edgesr.metrics import evaluate_pairs
from edgesr.runtime import Upscaler, open_backend

from .budget import check_budget

__all__ = ["calibration_batches", "quantize_onnx", "check_qdq", "quantize_stage", "QuantizeError"]

STANDARD_DOMAINS = {"", "ai.onnx"}


class QuantizeError(RuntimeError):
    pass


def calibration_batches(pairs: list[ImagePair], n: int, patch: int, seed: int = 0) -> list[np.ndarray]:
    """``n`` LR crops (1 x 3 x patch x patch float32) from the training images, most textured first picked
    at random positions (seeded)."""
    rng = np.random.default_rng([seed, 77])
    out = []
    usable = [p for p in pairs if min(p.lr.shape[:2]) >= patch]
    if not usable:
        raise QuantizeError(f"no calibration image is at least {patch} px; lower calibration_patch")
    for i in range(n):
        p = usable[i % len(usable)]
        h, w = p.lr.shape[:2]
        y, x = int(rng.integers(0, h - patch + 1)), int(rng.integers(0, w - patch + 1))
        out.append(np.ascontiguousarray(to_float(p.lr[y:y + patch, x:x + patch]).transpose(2, 0, 1)[None]))
    return out


def quantize_onnx(src: Path, dst: Path, calibration: Iterable[np.ndarray], *, method: str = "minmax",
                  per_channel: bool = True, target: str = "onnxruntime", exclude: tuple[str, ...] = ()) -> None:
    """Static INT8 QDQ quantisation of ``src`` into ``dst`` with ONNX Runtime's quantiser."""
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    batches = list(calibration)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._it = iter(batches)

        def get_next(self):
            b = next(self._it, None)
            return None if b is None else {"lr": b}

        def rewind(self):
            self._it = iter(batches)

    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    symmetric = target == "tensorrt"
    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        quantize_static(str(pre), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=per_channel,
                        activation_type=QuantType.QInt8 if symmetric else QuantType.QUInt8,
                        weight_type=QuantType.QInt8, calibrate_method=methods[method],
                        nodes_to_exclude=list(exclude) or None,
                        extra_options={"ActivationSymmetric": symmetric, "WeightSymmetric": True,
                                       "CalibMovingAverage": False,
                                       # TensorRT takes biases in float and fuses them; it has no INT32 Q/DQ.
                                       "QuantizeBias": not symmetric})


def check_qdq(path: Path) -> dict:
    """Inspect a QDQ graph: operator inventory, non-standard operators, and whether TensorRT can build it
    (INT8 Q/DQ with zero point 0 everywhere, no INT32 bias Q/DQ)."""
    proto = onnx.load(str(path))
    ops = Counter((n.domain or "", n.op_type) for n in proto.graph.node)
    nonstandard = sorted(f"{d}.{t}" for d, t in ops if d not in STANDARD_DOMAINS)
    if any(t == "FakeQuantize" for _, t in ops):
        nonstandard.append("FakeQuantize")
    inits = {i.name: i for i in proto.graph.initializer}
    zero_points = []
    for n in proto.graph.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear") and len(n.input) > 2 and n.input[2] in inits:
            zero_points.append(numpy_helper.to_array(inits[n.input[2]]))
    trt_ok = bool(zero_points) and all(z.dtype == np.int8 and not np.any(z) for z in zero_points)
    return {"ops": {t if d in STANDARD_DOMAINS else f"{d}.{t}": c for (d, t), c in sorted(ops.items())},
            "nonstandard_ops": nonstandard, "qdq_pairs": ops.get(("", "QuantizeLinear"), 0),
            "tensorrt_explicit_int8": trt_ok,
            "tensorrt_note": "INT8 symmetric Q/DQ (zero point 0)" if trt_ok else
            "UINT8/asymmetric activations: ONNX Runtime CPU only; use target: tensorrt for TensorRT"}


def onnx_quality(art: Artifact, pairs: list[ImagePair], scale: int, threads: int = 0) -> float:
    """Mean PSNR-Y of an ONNX artifact on ``pairs`` through ONNX Runtime."""
    backend = open_backend(art, "onnxruntime", threads=threads)
    up = Upscaler(backend, size_multiple=art.manifest.get("size_multiple", 1))
    try:
        return evaluate_pairs(up.upscale_float, ((p.name, p.lr, p.hr) for p in pairs), scale, with_ssim=False).psnr
    finally:
        backend.close()


def quantize_stage(cfg: QuantizeConfig, *, name: str, out: Path, source: Artifact, calib_pairs: list[ImagePair],
                   val_pairs: list[ImagePair], scale: int, seed: int, threads: int = 0) -> Artifact:
    """The ``quantize`` stage: FP32 ONNX artifact -> INT8 QDQ ONNX artifact, budget-checked."""
    if source.kind != "onnx" or source.manifest["precision"] != "fp32":
        raise QuantizeError(f"{source.path}: quantize takes an FP32 ONNX artifact (an export stage's output), got "
                            f"{source.kind} {source.manifest['precision']}")
    batches = calibration_batches(calib_pairs, cfg.calibration_images, cfg.calibration_patch, seed)
    manifest = {
        "kind": "onnx", "name": name, "arch": source.manifest["arch"], "scales": source.manifest["scales"],
        "precision": "int8", "params": source.manifest.get("params"),
        "size_multiple": source.manifest.get("size_multiple", 1),
        "parent": {"name": source.manifest.get("name"), "hash": source.hash, "path": str(source.path)},
    }

    def writer(path: Path) -> None:
        quantize_onnx(source.payload, path, batches, method=cfg.method, per_channel=cfg.per_channel,
                      target=cfg.target, exclude=cfg.exclude)
        report = check_qdq(path)
        if report["nonstandard_ops"]:
            raise QuantizeError(f"{path}: quantised graph has non-standard operators {report['nonstandard_ops']}; "
                                "neither ONNX Runtime nor TensorRT can run it")
        manifest["ops"] = report.pop("ops")
        manifest["transforms"] = source.manifest.get("transforms", []) + [{
            "type": "quantize", "tool": "onnxruntime.quantization.quantize_static", "format": "QDQ",
            "method": cfg.method, "per_channel": cfg.per_channel, "target": cfg.target,
            "weights": "int8 symmetric" + (" per-channel" if cfg.per_channel else " per-tensor"),
            "activations": "int8 symmetric" if cfg.target == "tensorrt" else "uint8 asymmetric",
            "calibration_images": cfg.calibration_images, "calibration_patch": cfg.calibration_patch,
            "excluded_nodes": list(cfg.exclude), **report}]
        # Measured before the artifact is moved into place: a graph over budget never lands.
        draft = Artifact(path.parent, {**manifest, "payload": path.name})
        psnr = onnx_quality(draft, val_pairs, scale, threads)
        budget = check_budget(f"quantize {name}", parent_psnr, psnr, cfg.max_psnr_drop_db, cfg.on_budget_exceeded)
        manifest["metrics"] = {"val_psnr": round(psnr, 4), "budget": budget}

    parent_psnr = onnx_quality(source, val_pairs, scale, threads)
    return write_artifact(out, writer, "model.onnx", manifest)
