"""Y-channel plumbing shared by the luminance-only classics (SRCNN, VDSR, FSRCNN, ESPCN, LapSRN).

These papers super-resolve the luminance only. edgesr's I/O is RGB, so the wrapper computes Y (BT.601, as
the protocol measures it), runs ``self.network`` on it, upsamples the RGB image (``chroma``: bilinear, or
bicubic for the networks that work on a bicubic-upsampled input) and shifts all three channels so that the
output's Y equals the network's: chroma from interpolation, luminance from the network. ``color="rgb"``
runs the network on the three channels instead.

``residual=True`` (not in the papers) makes the network predict only a correction to the interpolated image
(its luminance, or its RGB): the output is ``interpolate(lr) + network(...)``. Its activations then span the
detail the network adds instead of the whole image, which is what decides its INT8 loss. Measured on Set5 x2
(`benchmarks/results/int8_zoo_x2`, 2,000 equal steps, ONNX Runtime MinMax): FSRCNN loses 0.91 dB in INT8 as
published and 0.26 dB residual; ESPCN 0.22 and 0.10 dB; the residual forms are also better in FP32 (+2.10 and
+0.30 dB at equal steps). The default stays the paper's form, so saved artifacts keep their meaning.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

Y_WEIGHTS = (65.481 / 255, 128.553 / 255, 24.966 / 255)  # BT.601, RGB in [0, 1] -> Y in [16/255, 235/255]

__all__ = ["LumaWrapper", "Y_WEIGHTS"]


class LumaWrapper(nn.Module):
    """``self.network`` (set by the architecture) maps Y (N x 1 x H x W), or RGB with ``color="rgb"``, to its
    upscaled version."""

    def __init__(self, scale: int, color: str, chroma: str = "bilinear", residual: bool = False):
        super().__init__()
        if color not in ("y", "rgb"):
            raise ValueError(f"color must be 'y' or 'rgb', got {color!r}")
        self.scale, self.scales, self.color, self.chroma = scale, (scale,), color, chroma
        self.residual = residual
        self.register_buffer("y_weights", torch.tensor(Y_WEIGHTS).view(1, 3, 1, 1), persistent=False)
        self.channels = 1 if color == "y" else 3

    def luma(self, rgb: torch.Tensor) -> torch.Tensor:
        return (rgb * self.y_weights).sum(dim=1, keepdim=True) + 16 / 255

    def to_rgb(self, lr: torch.Tensor, y_hr: torch.Tensor, scale: int) -> torch.Tensor:
        """RGB at ``scale`` whose Y is ``y_hr`` and whose chroma is the interpolated input's."""
        up = F.interpolate(lr, scale_factor=scale, mode=self.chroma, align_corners=False)
        # Adding d to R, G and B moves Y by d * sum(weights); solve for the network's Y.
        return up + (y_hr - self.luma(up)) / float(sum(Y_WEIGHTS))

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        x = lr if self.color == "rgb" else self.luma(lr)
        if self.residual:  # interpolated image + the network's correction (of Y: spread so that Y moves by it)
            up = F.interpolate(lr, scale_factor=self.scale, mode=self.chroma, align_corners=False)
            out = self.network(x)
            return up + (out if self.color == "rgb" else out / float(sum(Y_WEIGHTS)))
        if self.color == "rgb":
            return self.network(lr)
        return self.to_rgb(lr, self.network(x), self.scale)


class Upsample(nn.Module):
    """Interpolation inside a network (the bicubic pre-upsampling of SRCNN and VDSR)."""

    def __init__(self, scale: int, mode: str = "bicubic"):
        super().__init__()
        self.scale, self.mode = scale, mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=self.scale, mode=self.mode, align_corners=False)
