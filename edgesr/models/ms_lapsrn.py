"""MS-LapSRN — Lai et al., "Fast and Accurate Image Super-Resolution with Deep Laplacian Pyramid Networks",
TPAMI 2018 (the multi-scale, weight-shared successor of LapSRN, CVPR 2017).

One forward pass on the LR image emits x2, x4 and x8 (``levels``). Each pyramid level has a feature
branch — a recursive block of ``depth`` conv + LeakyReLU(0.2) layers applied ``recursions`` times with a
shared-source local skip, then a 4x4 stride-2 transposed conv — and an image branch that upsamples the
previous level's image by a 4x4 stride-2 transposed conv initialised to bilinear interpolation; a 3x3
conv predicts the residual (the Laplacian band) added to it. Weights are shared across levels, so the
parameter count does not grow with the scale. Trained with Charbonnier on every level (multi-scale
supervision). Paper: D5R8, 64 channels, Y channel only; edgesr works on RGB (3-channel first and residual
convs) with 4x4 transposed convs: 254k parameters.
"""

from __future__ import annotations

import torch
from torch import nn

from . import MODELS


def bilinear_kernel(channels: int, k: int = 4) -> torch.Tensor:
    factor = (k + 1) // 2
    center = factor - 1 if k % 2 == 1 else factor - 0.5
    og = torch.arange(k, dtype=torch.float32)
    filt = 1 - (og - center).abs() / factor
    kernel = filt[:, None] * filt[None, :]
    w = torch.zeros(channels, channels, k, k)
    w[range(channels), range(channels)] = kernel
    return w


class RecursiveBlock(nn.Module):
    def __init__(self, n_feats: int, depth: int):
        super().__init__()
        layers: list[nn.Module] = []
        for _ in range(depth):
            layers += [nn.LeakyReLU(0.2), nn.Conv2d(n_feats, n_feats, 3, padding=1)]
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


@MODELS.register("ms_lapsrn")
class MSLapSRN(nn.Module):
    def __init__(self, *, scale: int = 2, levels: int = 3, n_feats: int = 64, depth: int = 5, recursions: int = 8):
        super().__init__()
        scales = tuple(2 ** (i + 1) for i in range(levels))
        if scale not in scales:
            raise ValueError(f"MS-LapSRN with {levels} levels emits x{list(scales)}; scale x{scale} is not one")
        self.scale, self.scales, self.recursions = scale, scales, recursions
        self.embed = nn.Conv2d(3, n_feats, 3, padding=1)
        self.block = RecursiveBlock(n_feats, depth)  # shared by every recursion and every level
        self.feat_up = nn.Sequential(nn.LeakyReLU(0.2), nn.ConvTranspose2d(n_feats, n_feats, 4, stride=2, padding=1))
        self.residual = nn.Conv2d(n_feats, 3, 3, padding=1)
        self.img_up = nn.ConvTranspose2d(3, 3, 4, stride=2, padding=1, bias=False)
        with torch.no_grad():
            self.img_up.weight.copy_(bilinear_kernel(3))

    def forward(self, lr: torch.Tensor):
        feat, img, outs = self.embed(lr), lr, []
        for _ in self.scales:
            source = feat
            for _ in range(self.recursions):
                feat = self.block(feat) + source  # shared-source local skip
            feat = self.feat_up(feat)
            img = self.img_up(img) + self.residual(feat)
            outs.append(img)
        return outs[0] if len(outs) == 1 else tuple(outs)
