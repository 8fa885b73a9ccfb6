"""The bicubic baseline as a deployable graph: every report measures it through the same backend as the
models, so its latency and quality sit in the same table (and through Pillow's resize, the registered
``pillow`` baseline backend, as ``bicubic_pillow``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from edgesr.artifacts import Artifact, write_artifact

__all__ = ["bicubic_onnx", "bicubic_artifact"]


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


def bicubic_artifact(*, out: Path, scale: int, opset: int = 18) -> Artifact:
    """The bicubic baseline as an ONNX artifact."""
    manifest = {"kind": "onnx", "name": "bicubic", "arch": {"type": "bicubic-resize"}, "scales": [scale],
                "precision": "fp32", "params": 0, "size_multiple": 1, "ops": {"Resize": 1}}
    try:  # the run's own baseline from an earlier benchmark is replaced; anything else there is refused
        ours = json.loads((Path(out) / "manifest.json").read_text()).get("arch") == manifest["arch"]
    except (OSError, ValueError, AttributeError):
        ours = False
    return write_artifact(out, lambda p: bicubic_onnx(p, scale, opset), "model.onnx", manifest, overwrite=ours)
