"""RCAN — Zhang et al., "Image Super-Resolution Using Very Deep Residual Channel Attention Networks", ECCV 2018.

Paper configuration (defaults): 10 residual groups x 20 residual channel-attention blocks (RCAB), 64
features, channel-attention reduction 16; 15.6M parameters at x4. An RCAB is conv-ReLU-conv followed by
channel attention (global average pool, 1x1 down by the reduction, ReLU, 1x1 up, sigmoid, rescale) and
a residual add; each group ends with a 3x3 conv and a group-level skip; the body ends with a 3x3 conv
and a long skip from the head. Upsampler and mean shift as in EDSR.
"""

from __future__ import annotations

import torch
from torch import nn

from . import MODELS
from .edsr import EDSR


class ChannelAttention(nn.Module):
    def __init__(self, n_feats: int, reduction: int):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.down = nn.Conv2d(n_feats, n_feats // reduction, 1)
        self.act = nn.ReLU()
        self.up = nn.Conv2d(n_feats // reduction, n_feats, 1)
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(self.up(self.act(self.down(self.pool(x)))))


class RCAB(nn.Module):
    def __init__(self, n_feats: int, reduction: int):
        super().__init__()
        self.conv1 = nn.Conv2d(n_feats, n_feats, 3, padding=1)
        self.act = nn.ReLU()
        self.conv2 = nn.Conv2d(n_feats, n_feats, 3, padding=1)
        self.ca = ChannelAttention(n_feats, reduction)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.ca(self.conv2(self.act(self.conv1(x))))


class ResidualGroup(nn.Module):
    def __init__(self, n_feats: int, n_blocks: int, reduction: int):
        super().__init__()
        self.blocks = nn.Sequential(*[RCAB(n_feats, reduction) for _ in range(n_blocks)],
                                    nn.Conv2d(n_feats, n_feats, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.blocks(x)


@MODELS.register("rcan")
class RCAN(EDSR):
    """EDSR's head, long skip, upsampler, tail and mean shift around a body of residual groups."""

    def __init__(self, *, scale: int = 2, n_groups: int = 10, n_blocks: int = 20, n_feats: int = 64,
                 reduction: int = 16):
        if n_feats % reduction:
            raise ValueError(f"RCAN n_feats ({n_feats}) must be a multiple of reduction ({reduction})")
        super().__init__(scale=scale, n_resblocks=0, n_feats=n_feats)
        self.body = nn.Sequential(*[ResidualGroup(n_feats, n_blocks, reduction) for _ in range(n_groups)],
                                  nn.Conv2d(n_feats, n_feats, 3, padding=1))
