"""Upscaler: images in, images out, through any Backend — padding, tiling, clamping and rounding.

Large images are cut into LR tiles with an overlap margin on each side; each tile's SR is cropped back to
its core before it is pasted, so tile seams carry no border artefacts (with a margin at least the network's
receptive radius, the output equals the untiled one).
"""

from __future__ import annotations

import numpy as np

from edgesr.imaging import to_float, to_uint8

from .backends import Backend

__all__ = ["Upscaler"]


class Upscaler:
    def __init__(self, backend: Backend, *, tile: int = 0, overlap: int = 16, size_multiple: int = 1):
        if tile and tile <= 2 * overlap:
            raise ValueError(f"tile ({tile}) must exceed twice the overlap ({overlap})")
        self.backend, self.tile, self.overlap, self.size_multiple = backend, tile, overlap, size_multiple
        self.scale = backend.scale

    def _run_padded(self, lr: np.ndarray) -> np.ndarray:
        """CHW float -> CHW float SR, padding (reflect) to the model's size multiple and cropping back."""
        _, h, w = lr.shape
        m = self.size_multiple
        ph, pw = (-h) % m, (-w) % m
        x = np.pad(lr, ((0, 0), (0, ph), (0, pw)), mode="reflect") if (ph or pw) else lr
        sr = self.backend.run(x[None])[0]
        return sr[:, : h * self.scale, : w * self.scale]

    def upscale_float(self, img: np.ndarray) -> np.ndarray:
        """H x W x 3 (uint8/uint16/float) -> sH x sW x 3 float32 SR, clamped to [0, 1]."""
        if img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(f"Upscaler expects an HxWx3 image, got shape {img.shape}")
        lr = to_float(img).transpose(2, 0, 1)
        _, h, w = lr.shape
        s = self.scale
        if not self.tile or (h <= self.tile and w <= self.tile):
            sr = self._run_padded(lr)
        else:
            core = self.tile - 2 * self.overlap
            sr = np.zeros((3, h * s, w * s), dtype=np.float32)
            for y0 in range(0, h, core):
                for x0 in range(0, w, core):
                    y1, x1 = min(y0 + core, h), min(x0 + core, w)
                    ya, xa = max(y0 - self.overlap, 0), max(x0 - self.overlap, 0)
                    yb, xb = min(y1 + self.overlap, h), min(x1 + self.overlap, w)
                    out = self._run_padded(lr[:, ya:yb, xa:xb])
                    sr[:, y0 * s:y1 * s, x0 * s:x1 * s] = out[:, (y0 - ya) * s:(y1 - ya) * s, (x0 - xa) * s:(x1 - xa) * s]
        return np.clip(sr.transpose(1, 2, 0), 0.0, 1.0)

    def upscale(self, img: np.ndarray) -> np.ndarray:
        """H x W x 3 image -> sH x sW x 3 ``uint8``."""
        return to_uint8(self.upscale_float(img))
