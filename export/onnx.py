"""ONNX export: dynamic height/width, I/O names by the model convention, metadata, checks and parity.

The exported graph takes ``lr`` (N x 3 x H x W float32 RGB in [0, 1]) and returns ``sr`` (or ``sr_x2``,
``sr_x4`` ... for several scales). The scales, the source artifact's hash and the architecture are written
into the ONNX metadata. After export the graph is checked (``onnx.checker``, full shape inference, an
operator inventory) and run in ONNX Runtime on a real image of odd size against PyTorch; the largest
absolute difference is recorded in the manifest and must stay under ``parity_atol``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from edgesr.artifacts import Artifact, Candidate, derived_manifest, read_artifact
from edgesr.data.datasets import parity_image
from edgesr.exporting import ExportError, export_onnx
from edgesr.imaging import image_to_tensor
from edgesr.modelio import load_model
from edgesr.models import deploy_form, select_outputs
from edgesr.onnxutil import op_counts, pad_image_tail
from edgesr.runtime.onnxruntime_backend import ort_session
from edgesr.stages import MODEL, ONNX_FP32, StageContext, register_stage

__all__ = ["ExportConfig", "export_onnx", "export_stage", "parity_check", "ExportError"]  # export_onnx, ExportError: edgesr.exporting


@dataclass(frozen=True)
class ExportConfig:
    input: str
    opset: int = 18
    """ONNX opset (>= 17; 18 is what the PyTorch exporter writes natively)."""
    parity_atol: float = 1e-4
    """Max |ONNX Runtime - PyTorch| allowed on the parity image."""
    scales: tuple[int, ...] = ()
    """Outputs to export from a multi-output model (default: all); the others' layers are left out."""
    tail_channels: int = 16
    """Pad each conv that feeds a PixelShuffle to a multiple of this many output channels, with the anchor
    as a 1x1 conv and the shuffle as an exact ConvTranspose (:func:`edgesr.onnxutil.pad_image_tail`;
    parity-checked like any export). Measured on the pretrained students (benchmarks/results/tail16_x2): INT8
    1.10-1.14x faster on ONNX Runtime and 1.16-1.27x on OpenVINO, where it also removes the 1.2-3.7 dB that
    the as-exported INT8 graphs lose; FP32 unchanged. 0: the graph as PyTorch exports it."""


def parity_check(model: nn.Module, onnx_path: Path, image: np.ndarray) -> dict[str, float]:
    """Max/mean |ORT - PyTorch| on ``image`` (uint8 HxWx3), FP32 on the CPU."""
    x = image_to_tensor(image)
    with torch.inference_mode():
        ref = model(x)
    ref = [ref] if isinstance(ref, torch.Tensor) else list(ref)
    sess = ort_session(onnx_path)
    outs = sess.run(None, {"lr": x.numpy()})
    diffs = [np.abs(o - r.numpy()) for o, r in zip(outs, ref)]
    for o, r in zip(outs, ref):
        if o.shape != tuple(r.shape):
            raise ExportError(f"{onnx_path}: ONNX output shape {o.shape} differs from PyTorch {tuple(r.shape)}")
    return {"max_abs": float(max(d.max() for d in diffs)), "mean_abs": float(np.mean([d.mean() for d in diffs])),
            "input_hw": [int(image.shape[0]), int(image.shape[1])]}


@register_stage("export", ExportConfig, makes=ONNX_FP32, takes={"input": MODEL})
def export_stage(cfg: ExportConfig, ctx: StageContext, input: Artifact | str | Path) -> Candidate:
    """The ``export`` stage: model artifact -> ONNX artifact, checked and parity-tested."""
    src = input if isinstance(input, Artifact) else read_artifact(input)
    model, arch = deploy_form(load_model(src), src.manifest["arch"])
    scales = list(cfg.scales) if cfg.scales else [int(s) for s in src.manifest["scales"]]
    model = select_outputs(model, tuple(scales))
    path = ctx.staging / "model.onnx"
    proto = export_onnx(model, path, scales=scales, opset=cfg.opset, metadata={
        "edgesr.source_hash": src.hash, "edgesr.arch": json.dumps(arch)})
    transform = {"type": "export", "format": "onnx", "opset": cfg.opset}
    if cfg.tail_channels:
        transform["tail_channels_padded"] = pad_image_tail(proto, cfg.tail_channels)
        onnx.save_model(proto, str(path))
    parity = parity_check(model, path, parity_image())
    if parity["max_abs"] > cfg.parity_atol:
        raise ExportError(f"{ctx.out}: ONNX Runtime output differs from PyTorch by up to {parity['max_abs']:.2e} "
                          f"(> parity_atol {cfg.parity_atol:.0e}); the export is wrong for this architecture. "
                          "Try another opset, or report the architecture.")
    manifest = derived_manifest(src, kind="onnx", name=ctx.name, precision="fp32", arch=arch, transform=transform,
                                scales=scales, params=sum(p.numel() for p in model.parameters()))
    manifest["ops"] = op_counts(proto)
    manifest["metrics"] = {"parity": parity, **{k: v for k, v in src.manifest.get("metrics", {}).items()
                                                 if k == "val_psnr"}}
    return Candidate(ctx.staging, path.name, manifest)
