"""The bicubic baseline as a deployable graph: every report measures it through the same backend as the
models, so its latency and quality sit in the same table."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from edgesr.artifacts import Artifact, ArtifactError, write_artifact
from edgesr.runtime.base import Backend

__all__ = ["bicubic_onnx", "bicubic_artifact", "PillowBicubic"]


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


class PillowBicubic(Backend):
    """The bicubic users call: Pillow's ``Image.resize(..., BICUBIC)`` on 8-bit RGB (a = -0.5, one thread),
    as a benchmark baseline beside the models. It runs only the bicubic artifact (for its scale) and keeps
    the backend contract (float N x 3 x H x W in [0, 1] in and out), so a timed call includes the conversion
    of the frame to 8 bits and back, which a user holding 8-bit frames would not pay: ``convert_ms`` in
    :meth:`describe` is that conversion's cost, measured once at load on a 360 x 640 frame."""

    name = "pillow"
    kinds = ("onnx",)
    module = "PIL"
    package = "Pillow"
    fix = "pip install Pillow"

    def __init__(self, threads: int = 0):
        super().__init__(1)
        self.convert_ms = None

    def _load(self, artifact: Artifact) -> None:
        if artifact.manifest.get("arch", {}).get("type") != "bicubic-resize":
            raise ArtifactError(f"{artifact.path}: the pillow baseline resizes images; it runs the bicubic "
                                "baseline artifact only, not a model")
        import time

        x = np.random.default_rng(0).random((360, 640, 3), dtype=np.float32)
        t = time.perf_counter()
        u8 = (x * 255 + 0.5).astype(np.uint8)
        np.repeat(np.repeat(u8, artifact.scale, 0), artifact.scale, 1).astype(np.float32) / 255  # output-size copy
        self.convert_ms = (time.perf_counter() - t) * 1000

    def _run(self, lr: np.ndarray) -> np.ndarray:
        from PIL import Image

        n, _, h, w = lr.shape
        s = self.scale
        out = np.empty((n, 3, h * s, w * s), np.float32)
        for i in range(n):
            u8 = (lr[i].transpose(1, 2, 0) * 255 + 0.5).astype(np.uint8)
            up = Image.fromarray(u8).resize((w * s, h * s), Image.Resampling.BICUBIC)
            out[i] = np.asarray(up, dtype=np.float32).transpose(2, 0, 1) / 255
        return out

    uint8_native = True
    """8-bit frames go to Pillow as they are: the frame in / frame out row is what a Pillow user pays."""

    def _run_uint8(self, frames: np.ndarray) -> tuple[np.ndarray, float]:
        from PIL import Image

        n, h, w, _ = frames.shape
        s = self.scale
        return np.stack([np.asarray(Image.fromarray(f).resize((w * s, h * s), Image.Resampling.BICUBIC))
                         for f in frames]), 0.0

    def describe(self) -> dict:
        import PIL

        return {"backend": "pillow", "version": PIL.__version__, "threads": 1, "precision": "uint8",
                "convert_ms": round(self.convert_ms, 2) if self.convert_ms is not None else None}
