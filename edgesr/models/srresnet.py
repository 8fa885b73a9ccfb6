"""SRResNet — Ledig et al., "Photo-Realistic Single Image Super-Resolution Using a Generative Adversarial
Network", CVPR 2017: the SRGAN generator, trained alone with MSE (SRResNet) or fine-tuned adversarially with
a VGG perceptual loss (SRGAN; edgesr's ``gan`` stage does that on this model).

A 9x9 conv + PReLU, B = 16 residual blocks (3x3 conv, batch norm, PReLU, 3x3 conv, batch norm, skip), a
3x3 conv + batch norm with a long skip to the first features, sub-pixel upsampling (3x3 conv to 4 n
channels, PixelShuffle(2), PReLU; twice for x4, once with PixelShuffle(3) for x3) and a 9x9 conv to RGB.
Defaults are the paper's x4 generator: 64 channels, 1.55M parameters (1,549,462). Batch norm runs in eval
mode after training and exports as BatchNormalization (TensorRT folds it into the conv).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from . import MODELS

__all__ = ["SRResNet"]


class _Block(nn.Module):
    def __init__(self, n_feats: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(n_feats, n_feats, 3, padding=1), nn.BatchNorm2d(n_feats), nn.PReLU(),
                                  nn.Conv2d(n_feats, n_feats, 3, padding=1), nn.BatchNorm2d(n_feats))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


@MODELS.register("srresnet")
class SRResNet(nn.Module):
    def __init__(self, *, scale: int = 4, n_blocks: int = 16, n_feats: int = 64):
        super().__init__()
        if scale not in (2, 3, 4, 8):
            raise ValueError(f"SRResNet supports scales 2, 3, 4, 8; got {scale}")
        self.scale, self.scales = scale, (scale,)
        self.head = nn.Sequential(nn.Conv2d(3, n_feats, 9, padding=4), nn.PReLU())
        self.body = nn.Sequential(*[_Block(n_feats) for _ in range(n_blocks)],
                                  nn.Conv2d(n_feats, n_feats, 3, padding=1), nn.BatchNorm2d(n_feats))
        steps = [3] if scale == 3 else [2] * int(math.log2(scale))
        up: list[nn.Module] = []
        for r in steps:
            up += [nn.Conv2d(n_feats, n_feats * r * r, 3, padding=1), nn.PixelShuffle(r), nn.PReLU()]
        self.upsample = nn.Sequential(*up)
        self.tail = nn.Conv2d(n_feats, 3, 9, padding=4)

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        x = self.head(lr)
        return self.tail(self.upsample(x + self.body(x)))
