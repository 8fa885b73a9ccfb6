"""The bicubic baseline as a deployable graph, made by an ordinary stage (``bicubic``): every report measures
it through the same backend as the models, so its latency and quality sit in the same table (and through
Pillow's resize, the registered ``pillow`` baseline backend, as ``bicubic_pillow``). The runner makes it, under
the reserved name ``bicubic``, when a recipe's benchmark lists a baseline; a recipe may also use the stage
under another name (an FP32 graph like any export)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path


from edgesr.artifacts import Candidate
from edgesr.stages import ONNX_FP32, StageContext, register_stage

__all__ = ["bicubic_onnx", "BicubicConfig", "bicubic_stage"]


def bicubic_onnx(path: Path, scale: int, opset: int = 18):
    """A one-node graph (ONNX ``Resize``, cubic, a = -0.5, half-pixel centres) that upscales like MATLAB's
    bicubic except at the image border (ONNX clamps, MATLAB mirrors): the bicubic baseline as a deployable
    graph, timed and scored through the same backend as every model."""
    import onnx
    from onnx import TensorProto, helper

    scales = helper.make_tensor("scales", TensorProto.FLOAT, [4], [1.0, 1.0, float(scale), float(scale)])
    node = helper.make_node("Resize", ["lr", "", "scales"], ["sr"], mode="cubic", cubic_coeff_a=-0.5,
                            coordinate_transformation_mode="half_pixel", exclude_outside=0)
    graph = helper.make_graph([node], "bicubic", [helper.make_tensor_value_info("lr", TensorProto.FLOAT,
                                                                               ["batch", 3, "height", "width"])],
                              [helper.make_tensor_value_info("sr", TensorProto.FLOAT, ["batch", 3, None, None])],
                              initializer=[scales])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="edgesr",
                              ir_version=10)  # IR 10 = ONNX 1.16, what current ONNX Runtime and TensorRT read
    entry = proto.metadata_props.add()
    entry.key, entry.value = "edgesr.scales", json.dumps([scale])
    onnx.checker.check_model(proto, full_check=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(proto, str(path))
    return proto


@dataclass(frozen=True)
class BicubicConfig:
    """The bicubic baseline graph at the recipe's scale."""

    opset: int = 18


@register_stage("bicubic", BicubicConfig, makes=ONNX_FP32)
def bicubic_stage(cfg: BicubicConfig, ctx: StageContext) -> Candidate:
    """The ``bicubic`` stage: the one-node ONNX Resize graph of :func:`bicubic_onnx` as an FP32 ONNX artifact."""
    bicubic_onnx(ctx.staging / "model.onnx", ctx.scale, cfg.opset)
    manifest = {"kind": "onnx", "name": ctx.name, "arch": {"type": "bicubic-resize"}, "scales": [ctx.scale],
                "precision": "fp32", "params": 0, "size_multiple": 1, "ops": {"Resize": 1}}
    return Candidate(ctx.staging, "model.onnx", manifest)
