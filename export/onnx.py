"""ONNX export: dynamic height/width, I/O names by the model convention, metadata, checks and parity.

The exported graph takes ``lr`` (N x 3 x H x W float32 RGB in [0, 1]) and returns ``sr`` (or ``sr_x2``,
``sr_x4`` ... for several scales). The scales, the source artifact's hash and the architecture are written
into the ONNX metadata. After export the graph is checked (``onnx.checker``, full shape inference, an
operator inventory) and run in ONNX Runtime on a real image of odd size against PyTorch; the largest
absolute difference is recorded in the manifest and must stay under ``parity_atol``.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from edgesr.artifacts import Artifact, load_model, read_artifact, write_artifact
from edgesr.config import ExportConfig
from edgesr.data.datasets import builtin_images
from edgesr.errors import EdgesrError
from edgesr.imaging import image_to_tensor
from edgesr.models import deploy_form, select_outputs

__all__ = ["export_onnx", "export_stage", "op_inventory", "parity_check", "ExportError", "output_names",
           "bicubic_onnx", "bicubic_stage"]


class ExportError(EdgesrError, RuntimeError):
    """An export that failed its checks (shapes, parity, operators); the message names the file."""


def output_names(scales: list[int]) -> list[str]:
    return ["sr"] if len(scales) == 1 else [f"sr_x{s}" for s in scales]


def export_onnx(model: nn.Module, path: Path, *, scales: list[int], opset: int = 18,
                metadata: dict[str, str] | None = None) -> onnx.ModelProto:
    """Export ``model`` to ``path`` with dynamic N, H, W and the edgesr I/O names; returns the ONNX model."""
    model = model.eval()
    example = torch.rand(1, 3, 37, 53)
    batch, height, width = torch.export.Dim("batch", max=64), torch.export.Dim("height", min=4, max=4096), \
        torch.export.Dim("width", min=4, max=4096)
    quiet = [logging.getLogger(n) for n in ("torch.onnx", "onnxscript")]
    levels = [lg.level for lg in quiet]
    for lg in quiet:
        lg.setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(model, (example,), None, input_names=["lr"], output_names=output_names(scales),
                                    opset_version=opset, dynamo=True, external_data=False,
                                    dynamic_shapes={"lr": {0: batch, 2: height, 3: width}}, verbose=False)
    for lg, lvl in zip(quiet, levels):
        lg.setLevel(lvl)
    proto = program.model_proto
    meta = {"edgesr.scales": json.dumps(scales), "edgesr.io": "lr: Nx3xHxW float32 RGB [0,1] -> sr", **(metadata or {})}
    del proto.metadata_props[:]
    for k, v in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, str(v)
    onnx.checker.check_model(proto, full_check=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(proto, str(path))
    return proto


def op_inventory(proto: onnx.ModelProto) -> dict[str, int]:
    """Operator type -> count, over the main graph."""
    return dict(sorted(Counter(n.op_type if not n.domain or n.domain == "ai.onnx" else f"{n.domain}.{n.op_type}"
                               for n in proto.graph.node).items()))


def parity_check(model: nn.Module, onnx_path: Path, image: np.ndarray) -> dict[str, float]:
    """Max/mean |ORT - PyTorch| on ``image`` (uint8 HxWx3), FP32 on the CPU."""
    import onnxruntime as ort

    x = image_to_tensor(image)
    with torch.inference_mode():
        ref = model(x)
    ref = [ref] if isinstance(ref, torch.Tensor) else list(ref)
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    outs = sess.run(None, {"lr": x.numpy()})
    diffs = [np.abs(o - r.numpy()) for o, r in zip(outs, ref)]
    for o, r in zip(outs, ref):
        if o.shape != tuple(r.shape):
            raise ExportError(f"{onnx_path}: ONNX output shape {o.shape} differs from PyTorch {tuple(r.shape)}")
    return {"max_abs": float(max(d.max() for d in diffs)), "mean_abs": float(np.mean([d.mean() for d in diffs])),
            "input_hw": [int(image.shape[0]), int(image.shape[1])]}


def parity_image() -> np.ndarray:
    """A real photograph cropped to an odd size (67 x 45), so dynamic shapes and borders are exercised."""
    _, img = builtin_images("valid")[0]
    return img[101:146, 150:217]


def export_stage(cfg: ExportConfig, *, name: str, out: Path, source: Artifact | str | Path) -> Artifact:
    """The ``export`` stage: model artifact -> ONNX artifact, checked and parity-tested."""
    src = source if isinstance(source, Artifact) else read_artifact(source)
    model, arch = deploy_form(load_model(src), src.manifest["arch"])
    transforms = list(src.manifest.get("transforms", []))
    if arch != src.manifest["arch"]:
        transforms.append({"type": "reparameterize", "arch": arch})
    scales = list(cfg.scales) if cfg.scales else [int(s) for s in src.manifest["scales"]]
    model = select_outputs(model, tuple(scales))
    manifest = {
        "kind": "onnx", "name": name, "arch": arch, "scales": scales, "precision": "fp32",
        "params": sum(p.numel() for p in model.parameters()), "size_multiple": src.manifest.get("size_multiple", 1),
        "transforms": transforms + [{"type": "export", "format": "onnx", "opset": cfg.opset}],
        "parent": {"name": src.manifest.get("name"), "hash": src.hash, "path": str(src.path)},
    }

    def writer(path: Path) -> None:
        proto = export_onnx(model, path, scales=scales, opset=cfg.opset, metadata={
            "edgesr.source_hash": src.hash, "edgesr.arch": json.dumps(arch)})
        parity = parity_check(model, path, parity_image())
        if parity["max_abs"] > cfg.parity_atol:
            raise ExportError(f"{out}: ONNX Runtime output differs from PyTorch by up to {parity['max_abs']:.2e} "
                              f"(> parity_atol {cfg.parity_atol:.0e}); the export is wrong for this architecture. "
                              "Try another opset, or report the architecture.")
        # write_artifact reads the manifest after the payload is written, so the measurements go in here.
        manifest["ops"] = op_inventory(proto)
        manifest["metrics"] = {"parity": parity, **{k: v for k, v in src.manifest.get("metrics", {}).items()
                                                     if k == "val_psnr"}}

    return write_artifact(out, writer, "model.onnx", manifest)


def bicubic_onnx(path: Path, scale: int, opset: int = 18) -> onnx.ModelProto:
    """A one-node graph (ONNX ``Resize``, cubic, a = -0.5, half-pixel centres) that upscales like MATLAB's
    bicubic except at the image border (ONNX clamps, MATLAB mirrors): the bicubic baseline as a deployable
    graph, timed and scored through the same backend as every model."""
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


def bicubic_stage(*, out: Path, scale: int, opset: int = 18) -> Artifact:
    """The bicubic baseline as an ONNX artifact."""
    manifest = {"kind": "onnx", "name": "bicubic", "arch": {"type": "bicubic-resize"}, "scales": [scale],
                "precision": "fp32", "params": 0, "size_multiple": 1, "ops": {"Resize": 1}}
    return write_artifact(out, lambda p: bicubic_onnx(p, scale, opset), "model.onnx", manifest)
