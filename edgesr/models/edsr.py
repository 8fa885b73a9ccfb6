"""EDSR — Lim et al., "Enhanced Deep Residual Networks for Single Image Super-Resolution", CVPRW 2017.

Defaults are the paper's *baseline* (16 residual blocks x 64 channels, no residual scaling; 1.37M
parameters at x2, 1.52M at x4). The *full* model is ``n_resblocks=32, n_feats=256, res_scale=0.1``
(43.1M at x4). Blocks are conv-ReLU-conv without batch norm; the upsampler is conv + PixelShuffle
(one x2 step twice for x4, one x3 step for x3). The RGB mean of DIV2K is subtracted at the input and
added back at the output, as in the reference code.

``anchor="nearest"`` adds the nearest-neighbour upsampled input to the output, so the network only learns
a residual; this is not in the paper, and converges far faster when compute is short.
ReLUs are not in-place so torch-pruning traces the residual structure correctly.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from . import MODELS

DIV2K_RGB_MEAN = (0.4488, 0.4371, 0.4040)


class ResBlock(nn.Module):
    def __init__(self, n_feats: int, res_scale: float):
        super().__init__()
        self.conv1 = nn.Conv2d(n_feats, n_feats, 3, padding=1)
        self.act = nn.ReLU()
        self.conv2 = nn.Conv2d(n_feats, n_feats, 3, padding=1)
        self.res_scale = res_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        res = self.conv2(self.act(self.conv1(x)))
        if self.res_scale != 1:
            res = res * self.res_scale
        return x + res


def _upsampler(scale: int, n_feats: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    if scale & (scale - 1) == 0:  # power of two
        for _ in range(int(math.log2(scale))):
            layers += [nn.Conv2d(n_feats, 4 * n_feats, 3, padding=1), nn.PixelShuffle(2)]
    elif scale == 3:
        layers += [nn.Conv2d(n_feats, 9 * n_feats, 3, padding=1), nn.PixelShuffle(3)]
    else:
        raise ValueError(f"EDSR supports scales 2, 3, 4, 8; got {scale}")
    return nn.Sequential(*layers)


@MODELS.register("edsr")
class EDSR(nn.Module):
    def __init__(self, *, scale: int = 2, n_resblocks: int = 16, n_feats: int = 64, res_scale: float = 1.0,
                 anchor: str = "none"):
        super().__init__()
        if anchor not in ("none", "nearest"):
            raise ValueError(f"EDSR anchor must be 'none' or 'nearest', got {anchor!r}")
        self.scale, self.anchor = scale, anchor
        self.scales = (scale,)
        self.register_buffer("rgb_mean", torch.tensor(DIV2K_RGB_MEAN).view(1, 3, 1, 1), persistent=False)
        self.head = nn.Conv2d(3, n_feats, 3, padding=1)
        self.body = nn.Sequential(*[ResBlock(n_feats, res_scale) for _ in range(n_resblocks)],
                                  nn.Conv2d(n_feats, n_feats, 3, padding=1))
        self.upsample = _upsampler(scale, n_feats)
        self.tail = nn.Conv2d(n_feats, 3, 3, padding=1)

    def features(self, lr: torch.Tensor) -> torch.Tensor:
        """The LR-space features the upsampler takes (after the body and the long skip)."""
        x = self.head(lr - self.rgb_mean)
        return x + self.body(x)

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        sr = self.tail(self.upsample(self.features(lr))) + self.rgb_mean
        if self.anchor == "nearest":
            sr = sr + F.interpolate(lr, scale_factor=self.scale, mode="nearest") - self.rgb_mean
        return sr
