"""INT8 post-training quantisation into standard QuantizeLinear/DequantizeLinear (QDQ) ONNX.

ONNX Runtime's static quantiser calibrates activation ranges on real images (MinMax, Entropy or Percentile)
and writes a QDQ graph: weights INT8 symmetric per output channel; activations either UINT8 asymmetric
(``target: onnxruntime``, fastest on x86 CPUs) or INT8 symmetric with zero point 0
(``target: tensorrt``, what TensorRT's explicit quantisation accepts, with biases left in float). NNCF's ONNX
backend (``tool: nncf``) is the alternative quantiser. The result contains only standard ONNX operators,
never OpenVINO ``FakeQuantize``, and is checked for that.

The PSNR drop against the FP32 parent graph is measured on the validation set through ONNX Runtime and
held to the quality budget; ``on_budget_exceeded: fallback`` makes the graph mixed precision.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Literal

import numpy as np
import onnx

from edgesr.artifacts import Artifact, derived_manifest, write_artifact
from edgesr.stages import ONNX, ONNX_FP32, StageContext, register_stage

from .budget import check_budget
from .common import (QuantizeError, calibration_batches, check_qdq, nncf_options, onnx_quality,
                     require_tensorrt_form)

__all__ = ["QuantizeConfig", "quantize_onnx", "quantize_onnx_nncf", "quantize_graph", "quantizable_nodes",
           "quantize_stage"]


@dataclass(frozen=True)
class QuantizeConfig:
    input: str
    """An ONNX artifact (FP32) to quantise."""
    tool: Literal["onnxruntime", "nncf"] = "onnxruntime"
    """onnxruntime: quantize_static (method below); nncf: NNCF's post-training quantization (ONNX backend)."""
    method: Literal["minmax", "entropy", "percentile"] = "minmax"
    per_channel: bool = True
    target: Literal["onnxruntime", "tensorrt"] = "onnxruntime"
    """onnxruntime: UINT8 asymmetric activations (fast on x86); tensorrt: INT8 symmetric (explicit Q/DQ)."""
    calibration_images: int = 32
    calibration_patch: int = 96
    exclude: tuple[str, ...] = ()
    """ONNX node names kept in floating point."""
    max_psnr_drop_db: float | None = None
    on_budget_exceeded: Literal["fail", "warn", "fallback"] = "fail"
    """fallback: accuracy-aware mixed precision, keeping the most sensitive layers in floating point until
    the drop fits max_psnr_drop_db."""


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


def quantize_onnx_nncf(src: Path, dst: Path, calibration: Iterable[np.ndarray], *, target: str = "onnxruntime",
                       exclude: tuple[str, ...] = ()) -> None:
    """Static INT8 quantisation of ``src`` with NNCF's ONNX backend (MinMax statistics + fast bias correction).

    NNCF quantizes the ONNX graph directly and writes standard QuantizeLinear/DequantizeLinear; quantizing
    the PyTorch model and exporting it would leave OpenVINO FakeQuantize nodes that neither ONNX Runtime nor
    TensorRT runs. ``target: tensorrt`` uses the PERFORMANCE preset (symmetric INT8 activations), otherwise
    MIXED (asymmetric activations)."""
    import logging

    import nncf

    logging.getLogger("nncf").setLevel(logging.ERROR)
    batches = [{"lr": b} for b in calibration]
    options = nncf_options(target)
    model = onnx.load(str(src))
    quantized = nncf.quantize(model, nncf.Dataset(batches), **options, subset_size=len(batches),
                              fast_bias_correction=True,
                              ignored_scope=nncf.IgnoredScope(names=list(exclude), validate=False) if exclude else None)
    onnx.save_model(quantized, str(dst))


def quantize_graph(src: Path, dst: Path, batches: list[np.ndarray], cfg: QuantizeConfig,
                   exclude: tuple[str, ...] = ()) -> None:
    """Quantize with the tool the config names; ``exclude`` adds nodes kept in floating point."""
    keep = tuple(cfg.exclude) + tuple(exclude)
    if cfg.tool == "nncf":
        quantize_onnx_nncf(src, dst, batches, target=cfg.target, exclude=keep)
    else:
        quantize_onnx(src, dst, batches, method=cfg.method, per_channel=cfg.per_channel, target=cfg.target,
                      exclude=keep)


_SHAPE_OPS = {"Shape", "Constant", "Reshape", "Unsqueeze", "Squeeze", "Expand", "Gather", "Cast", "Concat",
              "Slice", "Range", "ConstantOfShape"}


def quantizable_nodes(path: Path) -> list[str]:
    """Names of the nodes INT8 can apply to (compute and elementwise ops, not shape arithmetic), graph order."""
    return [n.name for n in onnx.load(str(path)).graph.node if n.op_type not in _SHAPE_OPS]


@register_stage("quantize", QuantizeConfig, makes=ONNX, takes={"input": ONNX_FP32}, lossy=True)
def quantize_stage(cfg: QuantizeConfig, ctx: StageContext, input: Artifact) -> Artifact:
    """The ``quantize`` stage: FP32 ONNX artifact -> INT8 QDQ ONNX artifact, budget-checked; calibrated on
    crops of the training images.

    With ``on_budget_exceeded: fallback`` a graph over budget becomes mixed precision: each quantizable
    layer is quantized alone and its PSNR drop measured (its sensitivity); the most sensitive layers are
    then kept in floating point, one more at a time, until the drop is within ``max_psnr_drop_db``. The
    manifest names the layers kept and their measured sensitivities."""
    source, name, out, scale, threads = input, ctx.name, ctx.out, ctx.scale, ctx.threads
    val_pairs = ctx.val_pairs
    if source.kind != "onnx" or source.manifest["precision"] != "fp32":
        raise QuantizeError(f"{source.path}: quantize takes an FP32 ONNX artifact (an export stage's output), got "
                            f"{source.kind} {source.manifest['precision']}")
    if cfg.tool == "nncf" and (cfg.method != "minmax" or not cfg.per_channel):
        raise QuantizeError(f"quantize {name}: tool nncf calibrates with its own MinMax statistics and per-channel "
                            "weights; method and per_channel apply to tool onnxruntime only")
    if cfg.on_budget_exceeded == "fallback" and cfg.max_psnr_drop_db is None:
        raise QuantizeError(f"quantize {name}: on_budget_exceeded: fallback needs max_psnr_drop_db")
    batches = calibration_batches(ctx.train_pairs, cfg.calibration_images, cfg.calibration_patch, ctx.seed)
    manifest = derived_manifest(source, kind="onnx", name=name, precision="int8")

    def quality(path: Path) -> float:
        return onnx_quality(Artifact(path.parent, {**manifest, "payload": path.name}), val_pairs, scale, threads)

    def writer(path: Path) -> None:
        quantize_graph(source.payload, path, batches, cfg)
        psnr = quality(path)
        mixed = None
        if cfg.on_budget_exceeded == "fallback" and parent_psnr - psnr > cfg.max_psnr_drop_db:
            mixed = _mixed_precision(source.payload, path, batches, cfg, parent_psnr, psnr, quality)
            psnr = mixed["psnr"]
        report = check_qdq(path)
        if report["nonstandard_ops"]:
            raise QuantizeError(f"{path}: quantised graph has non-standard operators {report['nonstandard_ops']}; "
                                "neither ONNX Runtime nor TensorRT can run it")
        if cfg.target == "tensorrt":
            report["tensorrt_readiness"] = require_tensorrt_form(path, f"quantize {name}")
        manifest["ops"] = report.pop("ops")
        manifest["precision"] = "int8" if not mixed or not mixed["fp_layers"] else "int8+fp32"
        manifest["transforms"] = source.manifest.get("transforms", []) + [{
            "type": "quantize", "format": "QDQ",
            "tool": "nncf.quantize (ONNX backend)" if cfg.tool == "nncf" else "onnxruntime.quantization.quantize_static",
            "method": cfg.method if cfg.tool == "onnxruntime" else "nncf minmax + fast bias correction",
            "per_channel": cfg.per_channel, "target": cfg.target,
            "weights": "int8 symmetric" + (" per-channel" if cfg.per_channel else " per-tensor"),
            "activations": "int8 symmetric" if cfg.target == "tensorrt" else "uint8/int8 asymmetric",
            "calibration_images": cfg.calibration_images, "calibration_patch": cfg.calibration_patch,
            "excluded_nodes": list(cfg.exclude), "mixed_precision": mixed, **report}]
        # Measured before the artifact is moved into place: a graph over budget never lands.
        policy = "warn" if cfg.on_budget_exceeded == "warn" else "fail"
        budget = check_budget(f"quantize {name}", parent_psnr, psnr, cfg.max_psnr_drop_db, policy)
        manifest["metrics"] = {"val_psnr": round(psnr, 4), "budget": budget}

    parent_psnr = onnx_quality(source, val_pairs, scale, threads)
    return write_artifact(out, writer, "model.onnx", manifest)


def _mixed_precision(src: Path, dst: Path, batches: list[np.ndarray], cfg: QuantizeConfig, parent_psnr: float,
                     full_psnr: float, quality) -> dict:
    """Keep the most sensitive layers in floating point until the drop fits the budget; rewrites ``dst``."""
    layers = [n for n in quantizable_nodes(src) if n not in cfg.exclude]
    trial = dst.with_name("sensitivity.onnx")
    sensitivity = {}
    for layer in layers:  # quantize this layer alone: exclude every other one
        quantize_graph(src, trial, batches, cfg, exclude=tuple(x for x in layers if x != layer))
        sensitivity[layer] = round(parent_psnr - quality(trial), 4)
    ranked = sorted(layers, key=lambda n: sensitivity[n], reverse=True)
    kept: list[str] = []
    psnr = full_psnr
    for layer in ranked:
        if parent_psnr - psnr <= cfg.max_psnr_drop_db:
            break
        kept.append(layer)
        quantize_graph(src, dst, batches, cfg, exclude=tuple(kept))
        psnr = quality(dst)
    trial.unlink(missing_ok=True)
    return {"fp_layers": kept, "psnr": psnr, "full_int8_drop_db": round(parent_psnr - full_psnr, 4),
            "sensitivity_db": sensitivity,
            "reason": "kept in floating point, most sensitive first (PSNR drop when quantized alone), until the "
                      "drop fits max_psnr_drop_db"}
