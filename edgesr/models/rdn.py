"""RDN — Zhang et al., "Residual Dense Network for Image Super-Resolution", CVPR 2018.

Paper configuration (defaults): D = 16 residual dense blocks, C = 8 conv layers per block, G = 64 growth
rate, G0 = 64 features; 22.3M parameters at x4. Shallow features (two 3x3 convs), residual dense blocks
(densely connected 3x3 conv + ReLU layers, 1x1 local feature fusion, local residual), global feature
fusion (1x1 over the concatenated block outputs, then 3x3) with a global residual to the first shallow
features, and a conv + PixelShuffle upsampler (two x2 steps for x4) followed by a 3x3 conv to RGB.
The DIV2K RGB mean is subtracted at the input and added back, as in the reference code (EDSR's).
"""

from __future__ import annotations

import torch
from torch import nn

from . import MODELS
from .edsr import DIV2K_RGB_MEAN


class DenseLayer(nn.Module):
    def __init__(self, cin: int, growth: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, growth, 3, padding=1)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.act(self.conv(x))], dim=1)


class RDB(nn.Module):
    def __init__(self, g0: int, growth: int, n_layers: int):
        super().__init__()
        self.layers = nn.Sequential(*[DenseLayer(g0 + i * growth, growth) for i in range(n_layers)])
        self.lff = nn.Conv2d(g0 + n_layers * growth, g0, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.lff(self.layers(x))


@MODELS.register("rdn")
class RDN(nn.Module):
    def __init__(self, *, scale: int = 2, n_blocks: int = 16, n_layers: int = 8, growth: int = 64,
                 n_feats: int = 64):
        super().__init__()
        if scale not in (2, 3, 4):
            raise ValueError(f"RDN supports scales 2, 3, 4; got {scale}")
        self.scale, self.scales = scale, (scale,)
        self.register_buffer("rgb_mean", torch.tensor(DIV2K_RGB_MEAN).view(1, 3, 1, 1), persistent=False)
        self.sfe1 = nn.Conv2d(3, n_feats, 3, padding=1)
        self.sfe2 = nn.Conv2d(n_feats, n_feats, 3, padding=1)
        self.rdbs = nn.ModuleList(RDB(n_feats, growth, n_layers) for _ in range(n_blocks))
        self.gff = nn.Sequential(nn.Conv2d(n_blocks * n_feats, n_feats, 1), nn.Conv2d(n_feats, n_feats, 3, padding=1))
        if scale == 4:
            up = [nn.Conv2d(n_feats, growth * 4, 3, padding=1), nn.PixelShuffle(2),
                  nn.Conv2d(growth, growth * 4, 3, padding=1), nn.PixelShuffle(2)]
        else:
            up = [nn.Conv2d(n_feats, growth * scale * scale, 3, padding=1), nn.PixelShuffle(scale)]
        self.upsample = nn.Sequential(*up)
        self.tail = nn.Conv2d(growth, 3, 3, padding=1)

    def features(self, lr: torch.Tensor) -> torch.Tensor:
        """The LR-space features the upsampler takes (after global feature fusion and the global residual)."""
        f_1 = self.sfe1(lr - self.rgb_mean)
        x = self.sfe2(f_1)
        outs = []
        for rdb in self.rdbs:
            x = rdb(x)
            outs.append(x)
        return self.gff(torch.cat(outs, dim=1)) + f_1

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        return self.tail(self.upsample(self.features(lr))) + self.rgb_mean
