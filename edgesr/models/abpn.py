"""ABPN-style anchor-residual plain network — Du et al., "Anchor-based Plain Net for Mobile Image
Super-Resolution", CVPRW 2021 (MAI 2021 challenge winner for INT8 mobile SR).

A stack of plain 3x3 conv + ReLU layers predicts ``3 r^2`` channels; the *anchor* — the LR input repeated
``r^2`` times along channels, i.e. nearest-neighbour upsampling expressed before the PixelShuffle — is
added, then PixelShuffle rearranges to the HR image. The network learns only a residual over nearest
upsampling, which trains fast and keeps INT8 noise away from the image itself. Every op (Conv, Relu,
Add, DepthToSpace) quantises cleanly in ONNX Runtime and TensorRT.

Paper configuration: 28 channels, 4 body convs (x3). ``channels=16, n_body=5`` is edgesr's ~14k-parameter
x2 student. A pruned ABPN keeps these keywords; its per-layer widths are in the manifest's prune record.
"""

from __future__ import annotations

import torch
from torch import nn

from . import MODELS


@MODELS.register("abpn")
class ABPN(nn.Module):
    def __init__(self, *, scale: int = 2, channels: int = 28, n_body: int = 4):
        super().__init__()
        if scale < 2:
            raise ValueError(f"ABPN needs scale >= 2, got {scale}")
        if n_body < 0 or channels < 1:
            raise ValueError("ABPN needs channels >= 1 and n_body >= 0")
        self.scale = scale
        self.scales = (scale,)
        r2 = scale * scale
        self.head = nn.Conv2d(3, channels, 3, padding=1)
        body: list[nn.Module] = [nn.ReLU()]
        for _ in range(n_body):
            body += [nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU()]
        self.body = nn.Sequential(*body)
        self.tail = nn.Conv2d(channels, 3 * r2, 3, padding=1)
        self.shuffle = nn.PixelShuffle(scale)

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        r2 = self.scale * self.scale
        anchor = torch.repeat_interleave(lr, r2, dim=1)  # channel c*r2+k -> colour c, as PixelShuffle reads it
        return self.shuffle(self.tail(self.body(self.head(lr))) + anchor)
