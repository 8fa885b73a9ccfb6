"""EDSR-MSA — EDSR (Lim et al., CVPRW 2017) whose residual blocks carry a multi-scale attention module.

The module follows the multi-scale idea of MSRN (Li et al., "Multi-scale Residual Network for Image
Super-Resolution", ECCV 2018: parallel branches of different receptive fields, fused by a 1x1 conv) and
uses the fused result as a spatial-and-channel attention map, as pixel attention does (PAN, Zhao et al.,
ECCVW 2020): the block's residual features are squeezed by a 1x1 conv (``reduction``), sent through
parallel 3x3 branches with dilation 1, 2 and 3 (receptive fields 3, 5 and 7), concatenated, fused by a
1x1 conv back to ``n_feats`` channels and passed through a sigmoid; the map re-weights the residual
before the skip add. Every op (Conv with dilation, Sigmoid, Mul) exports to ONNX and runs in TensorRT.

Defaults: EDSR-baseline body (16 blocks x 64 channels, residual scaling 1), reduction 4, dilations
(1, 2, 3); about 1.6M parameters at x2. Mean shift, upsampler and optional nearest anchor as in EDSR.
"""

from __future__ import annotations

import torch
from torch import nn

from . import MODELS
from .edsr import EDSR


class MultiScaleAttention(nn.Module):
    def __init__(self, n_feats: int, reduction: int = 4, dilations: tuple[int, ...] = (1, 2, 3)):
        super().__init__()
        mid = max(n_feats // reduction, 1)
        self.squeeze = nn.Conv2d(n_feats, mid, 1)
        self.branches = nn.ModuleList(nn.Conv2d(mid, mid, 3, padding=d, dilation=d) for d in dilations)
        self.act = nn.ReLU()
        self.fuse = nn.Conv2d(mid * len(dilations), n_feats, 1)
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.act(self.squeeze(x))
        attention = self.gate(self.fuse(torch.cat([self.act(b(s)) for b in self.branches], dim=1)))
        return x * attention


class MSABlock(nn.Module):
    def __init__(self, n_feats: int, res_scale: float, reduction: int, dilations: tuple[int, ...]):
        super().__init__()
        self.conv1 = nn.Conv2d(n_feats, n_feats, 3, padding=1)
        self.act = nn.ReLU()
        self.conv2 = nn.Conv2d(n_feats, n_feats, 3, padding=1)
        self.msa = MultiScaleAttention(n_feats, reduction, dilations)
        self.res_scale = res_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        res = self.msa(self.conv2(self.act(self.conv1(x))))
        if self.res_scale != 1:
            res = res * self.res_scale
        return x + res


@MODELS.register("edsr_msa")
class EDSRMSA(EDSR):
    """EDSR (head, long skip, upsampler, tail, mean shift, optional anchor) with MSA residual blocks."""

    def __init__(self, *, scale: int = 2, n_resblocks: int = 16, n_feats: int = 64, res_scale: float = 1.0,
                 reduction: int = 4, dilations: list[int] | None = None, anchor: str = "none"):
        super().__init__(scale=scale, n_resblocks=0, n_feats=n_feats, anchor=anchor)
        dil = tuple(dilations or (1, 2, 3))
        self.body = nn.Sequential(*[MSABlock(n_feats, res_scale, reduction, dil) for _ in range(n_resblocks)],
                                  nn.Conv2d(n_feats, n_feats, 3, padding=1))
