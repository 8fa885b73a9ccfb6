"""LapSRN — Lai et al., "Deep Laplacian Pyramid Networks for Fast and Accurate Super-Resolution", CVPR 2017:
the single-scale-trained progressive network (one model per scale, x2 / x4 / x8), beside its
weight-shared multi-scale successor ``ms_lapsrn``.

log2(scale) pyramid levels, each with its own weights. Feature branch: a 3x3 input conv, then per level
``depth`` 3x3 conv + LeakyReLU(0.2) layers, a 3x3 stride-2 transposed conv + LeakyReLU that doubles the
features, and a 3x3 conv predicting the level's residual (the Laplacian band). Image branch: the previous
level's image is upsampled by a 4x4 stride-2 transposed conv initialised to bilinear interpolation and the
residual is added. Every level's image is an output (``sr_x2``, ``sr_x4``, ...), supervised with
Charbonnier in the paper (multi-scale supervision). As in the reference code: depth 10, 64 channels, Y
channel; 812K weights at x4 (the paper's figure; 814K with biases).

Y-channel plumbing from ``luma.py`` (chroma by bilinear upsampling at each level); ``color="rgb"`` runs
the network on RGB.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from . import MODELS
from .ms_lapsrn import bilinear_kernel
from .luma import LumaWrapper

__all__ = ["LapSRN"]


class _Level(nn.Module):
    def __init__(self, n_feats: int, depth: int, channels: int):
        super().__init__()
        layers: list[nn.Module] = []
        for _ in range(depth):
            layers += [nn.Conv2d(n_feats, n_feats, 3, padding=1), nn.LeakyReLU(0.2)]
        layers += [nn.ConvTranspose2d(n_feats, n_feats, 3, stride=2, padding=1, output_padding=1), nn.LeakyReLU(0.2)]
        self.features = nn.Sequential(*layers)
        self.residual = nn.Conv2d(n_feats, channels, 3, padding=1)
        self.img_up = nn.ConvTranspose2d(channels, channels, 4, stride=2, padding=1, bias=False)
        with torch.no_grad():
            self.img_up.weight.copy_(bilinear_kernel(channels))
            self.residual.weight.mul_(0.1)  # start near bilinear upsampling


@MODELS.register("lapsrn")
class LapSRN(LumaWrapper):
    def __init__(self, *, scale: int = 4, depth: int = 10, n_feats: int = 64, color: str = "y"):
        super().__init__(scale, color)
        if scale not in (2, 4, 8):
            raise ValueError(f"LapSRN is a x2 pyramid: scale must be 2, 4 or 8, got {scale}")
        levels = int(math.log2(scale))
        self.scales = tuple(2 ** (i + 1) for i in range(levels))
        c = self.channels
        self.input_conv = nn.Sequential(nn.Conv2d(c, n_feats, 3, padding=1), nn.LeakyReLU(0.2))
        self.levels = nn.ModuleList(_Level(n_feats, depth, c) for _ in range(levels))

    def pyramid(self, x: torch.Tensor) -> list[torch.Tensor]:
        feat, img, outs = self.input_conv(x), x, []
        for level in self.levels:
            feat = level.features(feat)
            img = level.img_up(img) + level.residual(feat)
            outs.append(img)
        return outs

    def forward(self, lr: torch.Tensor):
        if self.color == "rgb":
            outs = self.pyramid(lr)
        else:
            outs = [self.to_rgb(lr, y, s) for y, s in zip(self.pyramid(self.luma(lr)), self.scales)]
        return outs[0] if len(outs) == 1 else tuple(outs)
