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
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from edgesr.artifacts import Artifact, derived_manifest, read_artifact, write_artifact
from edgesr.data.datasets import parity_image
from edgesr.errors import EdgesrError
from edgesr.imaging import image_to_tensor
from edgesr.modelio import load_model
from edgesr.models import deploy_form, select_outputs
from edgesr.onnxutil import op_counts, output_names, pad_image_tail, strip_source_locations
from edgesr.runtime.onnxruntime_backend import ort_session
from edgesr.stages import MODEL, ONNX_FP32, StageContext, register_stage

__all__ = ["ExportConfig", "export_onnx", "export_stage", "parity_check", "ExportError"]


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


class ExportError(EdgesrError, RuntimeError):
    """An export that failed its checks (shapes, parity, operators); the message names the file."""


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
    auto = torch.export.Dim.AUTO

    def run(dims: dict):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.onnx.export(model, (example,), None, input_names=["lr"], output_names=output_names(scales),
                                     opset_version=opset, dynamo=True, external_data=False,
                                     dynamic_shapes={"lr": dims}, verbose=False)

    try:
        try:
            program = run({0: batch, 2: height, 3: width})
        except Exception as strict_error:  # noqa: BLE001 - torch.export raises several types for a failed range proof
            # Window models (SwinIR: pad to whole windows, ceil(H / window) windows) yield guards that hold
            # for every size but that torch.export cannot prove over the declared range; AUTO lets it record
            # them instead. The graph must still come out with dynamic H and W, which is checked below.
            try:
                program = run({0: auto, 2: auto, 3: auto})
            except Exception:  # noqa: BLE001
                raise strict_error from None
    finally:
        for lg, lvl in zip(quiet, levels):
            lg.setLevel(lvl)
    proto = program.model_proto
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    if any(d.HasField("dim_value") for d in (dims[2], dims[3])):
        raise ExportError(f"{path}: the exported graph fixed the input height/width "
                          f"({[d.dim_value or d.dim_param for d in dims]}); the architecture specialises on the "
                          "example size and cannot be exported with dynamic H/W")
    rename = {d.dim_param: name for d, name in zip(dims, ("batch", None, "height", "width"))
              if name and d.HasField("dim_param") and d.dim_param != name}
    if rename:  # AUTO names the symbols s0, s1...: give them the names the strict export uses, everywhere
        pattern = re.compile(r"\b(" + "|".join(map(re.escape, rename)) + r")\b")
        for vi in (*proto.graph.input, *proto.graph.output, *proto.graph.value_info):
            for d in vi.type.tensor_type.shape.dim:
                if d.HasField("dim_param"):
                    d.dim_param = pattern.sub(lambda m: rename[m.group(1)], d.dim_param)
    strip_source_locations(proto)  # the artifact's hash must not depend on where edgesr is installed
    meta = {"edgesr.scales": json.dumps(scales), "edgesr.io": "lr: Nx3xHxW float32 RGB [0,1] -> sr", **(metadata or {})}
    del proto.metadata_props[:]
    for k, v in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, str(v)
    onnx.checker.check_model(proto, full_check=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(proto, str(path))
    return proto


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
def export_stage(cfg: ExportConfig, ctx: StageContext, input: Artifact | str | Path) -> Artifact:
    """The ``export`` stage: model artifact -> ONNX artifact, checked and parity-tested."""
    src = input if isinstance(input, Artifact) else read_artifact(input)
    name, out = ctx.name, ctx.out
    model, arch = deploy_form(load_model(src), src.manifest["arch"])
    scales = list(cfg.scales) if cfg.scales else [int(s) for s in src.manifest["scales"]]
    model = select_outputs(model, tuple(scales))
    manifest = derived_manifest(src, kind="onnx", name=name, precision="fp32", arch=arch,
                                transform={"type": "export", "format": "onnx", "opset": cfg.opset},
                                scales=scales, params=sum(p.numel() for p in model.parameters()))

    def writer(path: Path) -> None:
        proto = export_onnx(model, path, scales=scales, opset=cfg.opset, metadata={
            "edgesr.source_hash": src.hash, "edgesr.arch": json.dumps(arch)})
        if cfg.tail_channels:
            manifest["transforms"][-1]["tail_channels_padded"] = pad_image_tail(proto, cfg.tail_channels)
            onnx.save_model(proto, str(path))
        parity = parity_check(model, path, parity_image())
        if parity["max_abs"] > cfg.parity_atol:
            raise ExportError(f"{out}: ONNX Runtime output differs from PyTorch by up to {parity['max_abs']:.2e} "
                              f"(> parity_atol {cfg.parity_atol:.0e}); the export is wrong for this architecture. "
                              "Try another opset, or report the architecture.")
        # write_artifact reads the manifest after the payload is written, so the measurements go in here.
        manifest["ops"] = op_counts(proto)
        manifest["metrics"] = {"parity": parity, **{k: v for k, v in src.manifest.get("metrics", {}).items()
                                                     if k == "val_psnr"}}

    return write_artifact(out, writer, "model.onnx", manifest)
