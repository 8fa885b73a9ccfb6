"""VDSR — Kim et al., "Accurate Image Super-Resolution Using Very Deep Convolutional Networks", CVPR 2016.

Twenty 3x3 convolutions (64 channels, ReLU after all but the last) on the bicubic-upsampled Y channel,
with a global residual: the network predicts the difference between the HR image and its bicubic
upsampling. 665K parameters (the paper's figure; 665,921 with biases); published Set5 x2 37.53 dB (291
images, gradient clipping, lr 0.1). One network serves x2, x3 and x4 in the paper (multi-scale training);
here ``scale`` fixes the in-graph bicubic factor, and the trained weights work at any scale if the factor
is changed in the manifest.

As in SRCNN, the bicubic upsampling is in the graph (``F.interpolate``, a = -0.75) and chroma comes from it
(``luma.py``); ``color="rgb"`` runs the network on RGB.
"""

from __future__ import annotations

import torch
from torch import nn

from . import MODELS
from .luma import LumaWrapper, Upsample

__all__ = ["VDSR"]


class _GlobalResidual(nn.Module):
    def __init__(self, scale: int, channels: int, depth: int, n_feats: int):
        super().__init__()
        self.up = Upsample(scale, "bicubic")
        layers: list[nn.Module] = [nn.Conv2d(channels, n_feats, 3, padding=1), nn.ReLU()]
        for _ in range(depth - 2):
            layers += [nn.Conv2d(n_feats, n_feats, 3, padding=1), nn.ReLU()]
        layers.append(nn.Conv2d(n_feats, channels, 3, padding=1))
        self.body = nn.Sequential(*layers)
        for m in self.body:  # He initialisation, as the paper
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                nn.init.zeros_(m.bias)
        with torch.no_grad():  # start at the bicubic anchor: a small residual
            self.body[-1].weight.mul_(0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        up = self.up(x)
        return up + self.body(up)


@MODELS.register("vdsr")
class VDSR(LumaWrapper):
    def __init__(self, *, scale: int = 2, depth: int = 20, n_feats: int = 64, color: str = "y"):
        super().__init__(scale, color, chroma="bicubic")
        if depth < 2:
            raise ValueError(f"VDSR needs depth >= 2, got {depth}")
        self.network = _GlobalResidual(scale, self.channels, depth, n_feats)
