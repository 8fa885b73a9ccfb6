"""ESPCN — Shi et al., "Real-Time Single Image and Video Super-Resolution Using an Efficient Sub-Pixel
Convolutional Neural Network", CVPR 2016: 5x5 conv 64, 3x3 conv 32 (tanh), 3x3 conv to r^2 channels and
PixelShuffle. Published Set5 x3 32.55 dB.

Like the paper, on luminance by default (``color="y"``, the Y-channel plumbing of `luma.py`: chroma
from bilinear upsampling, luminance from the network); ``color="rgb"`` runs the network on RGB.
``residual=True`` (edgesr's, not the paper's): the network predicts a correction to the bilinear image, which
is what makes it quantize well (see `luma.py`).
"""

from __future__ import annotations

from torch import nn

from . import MODELS
from .luma import LumaWrapper

__all__ = ["ESPCN"]


@MODELS.register("espcn")
class ESPCN(LumaWrapper):
    def __init__(self, *, scale: int = 3, color: str = "y", residual: bool = False):
        super().__init__(scale, color, residual=residual)
        c = self.channels
        self.network = nn.Sequential(nn.Conv2d(c, 64, 5, padding=2), nn.Tanh(), nn.Conv2d(64, 32, 3, padding=1),
                                     nn.Tanh(), nn.Conv2d(32, c * scale * scale, 3, padding=1), nn.PixelShuffle(scale))
