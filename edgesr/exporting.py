"""PyTorch model -> ONNX graph in edgesr's I/O convention (dynamic N, H, W; ``lr`` -> ``sr`` / ``sr_xS``;
metadata; checker and full shape inference). Shared by the ``export`` stage (which adds the parity check and
the manifest) and the runner's latency measurement (which times graphs exported exactly this way)."""

from __future__ import annotations

import json
import logging
import re
import warnings
from pathlib import Path

import onnx
import torch
from torch import nn

from .errors import EdgesrError
from .onnxutil import output_names, strip_source_locations

__all__ = ["ExportError", "export_onnx"]


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
