"""Pillow's bicubic resize as a backend: the baseline users would otherwise call, timed and scored beside the
models through the same contract. A *baseline* backend (``Backend.baseline``): it runs only the bicubic baseline
artifact (``arch.type: bicubic-resize``, made by the benchmark), is never picked by default and never offered
for a model."""

from __future__ import annotations

import numpy as np

from edgesr.artifacts import Artifact, ArtifactError

from .base import BACKENDS, Backend

__all__ = ["PillowBicubic"]


@BACKENDS.register("pillow")
class PillowBicubic(Backend):
    """The bicubic users call: Pillow's ``Image.resize(..., BICUBIC)`` on 8-bit RGB (a = -0.5, one thread),
    as a benchmark baseline beside the models. It runs only the bicubic artifact (for its scale) and keeps
    the backend contract (float N x 3 x H x W in [0, 1] in and out), so a timed call includes the conversion
    of the frame to 8 bits and back, which a user holding 8-bit frames would not pay: ``convert_ms`` in
    :meth:`describe` is that conversion's cost, measured once at load on a 360 x 640 frame."""

    name = "pillow"
    kinds = ("onnx",)
    baseline = True
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
