"""SRCNN — Dong et al., "Image Super-Resolution Using Deep Convolutional Networks", TPAMI 2016 (ECCV 2014).

The first CNN for SR: the LR image is upsampled by bicubic interpolation first, then three convolutions
(patch extraction f1 x f1 -> n1, non-linear mapping f2 x f2 -> n2, reconstruction f3 x f3 -> 1) with ReLU
between them. Defaults are the paper's 9-1-5 network with n1 = 64, n2 = 32 on the Y channel: 8,032 weights
(the paper's count, biases excluded); published Set5 x3 32.39 dB (ImageNet training).

Differences from the paper, both for a network that runs on any input size: the bicubic upsampling is in
the graph (``F.interpolate``, Keys a = -0.75, not MATLAB's a = -0.5 with antialiasing; it only upsamples,
where the two agree closely), and the convolutions are zero-padded ("same") instead of "valid", so the
output has the full size. Chroma comes from bicubic upsampling (``luma.py``); ``color="rgb"`` runs the
network on RGB.
"""

from __future__ import annotations

from torch import nn

from . import MODELS
from .luma import LumaWrapper, Upsample

__all__ = ["SRCNN"]


@MODELS.register("srcnn")
class SRCNN(LumaWrapper):
    def __init__(self, *, scale: int = 3, n1: int = 64, n2: int = 32, f1: int = 9, f2: int = 1, f3: int = 5,
                 color: str = "y"):
        super().__init__(scale, color, chroma="bicubic")
        if any(f % 2 == 0 for f in (f1, f2, f3)):
            raise ValueError(f"SRCNN filter sizes must be odd (same padding), got {f1}-{f2}-{f3}")
        c = self.channels
        self.network = nn.Sequential(
            Upsample(scale, "bicubic"),
            nn.Conv2d(c, n1, f1, padding=f1 // 2), nn.ReLU(),
            nn.Conv2d(n1, n2, f2, padding=f2 // 2), nn.ReLU(),
            nn.Conv2d(n2, c, f3, padding=f3 // 2))
        for m in self.network:  # the paper's initialisation: Gaussian, std 0.001, zero bias
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.001)
                nn.init.zeros_(m.bias)
