"""RLFN — Kong et al., "Residual Local Feature Network for Efficient Super-Resolution", CVPRW 2022 (first
place, runtime track, NTIRE 2022 efficient SR challenge).

Residual local feature blocks (RLFB): three 3x3 conv + LeakyReLU(0.05) layers with a local residual, a 1x1
conv, and enhanced spatial attention (ESA, from RFANet/RFDN): 1x1 squeeze to ``esa_channels``, a stride-2
3x3 conv, 7x7 max-pool with stride 3, a 3x3 conv, bilinear resize back, a 1x1 conv with the squeezed
features added, a 1x1 expand and a sigmoid gate. A 3x3 head, the blocks, a 3x3 conv with a long skip, and
a 3x3 conv to ``3 r^2`` channels + PixelShuffle.

Defaults are the NTIRE 2022 submission at x4 (46 features, 48 mid channels, 4 blocks, ESA 16): 317,218
parameters (the challenge's 0.317M). The paper's RLFN is ``channels: 52, mid_channels: 52, n_blocks: 6``
(0.543M at x4).

Differences from the reference, all for deployment: the max-pool pads 3 pixels (-inf), so any input from
4x4 up runs (the reference needs 15x15; on larger inputs the pooled map differs only at its borders);
inputs are edgesr's [0, 1] RGB with no mean shift (a conv absorbs it); ``anchor: nearest`` (not in the
paper) adds the LR image repeated r^2 times before the PixelShuffle, so the network learns a residual over
nearest upsampling, as the ABPN and MSRep students do. Activations are not in-place (torch-pruning traces
them correctly); the ESA's resize is a traced leaf so the pruner's graph walk sees through it.
"""

from __future__ import annotations

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from . import MODELS

__all__ = ["RLFN"]


def resize_like(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Bilinear resize of ``x`` to ``ref``'s height and width."""
    return F.interpolate(x, size=(ref.shape[2], ref.shape[3]), mode="bilinear", align_corners=False)


torch.fx.wrap("resize_like")


class ESA(nn.Module):
    def __init__(self, n_feats: int, f: int):
        super().__init__()
        self.conv1 = nn.Conv2d(n_feats, f, 1)
        self.conv_f = nn.Conv2d(f, f, 1)
        self.conv2 = nn.Conv2d(f, f, 3, stride=2)
        self.conv3 = nn.Conv2d(f, f, 3, padding=1)
        self.conv4 = nn.Conv2d(f, n_feats, 1)
        self.pool = nn.MaxPool2d(7, stride=3, padding=3)
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c1 = self.conv1(x)
        c3 = resize_like(self.conv3(self.pool(self.conv2(c1))), x)
        return x * self.gate(self.conv4(c3 + self.conv_f(c1)))


class RLFB(nn.Module):
    def __init__(self, channels: int, mid: int, esa_channels: int):
        super().__init__()
        self.c1_r = nn.Conv2d(channels, mid, 3, padding=1)
        self.c2_r = nn.Conv2d(mid, mid, 3, padding=1)
        self.c3_r = nn.Conv2d(mid, channels, 3, padding=1)
        self.act = nn.LeakyReLU(0.05)
        self.c5 = nn.Conv2d(channels, channels, 1)
        self.esa = ESA(channels, esa_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.c3_r(self.act(self.c2_r(self.act(self.c1_r(x))))))
        return self.esa(self.c5(out + x))


@MODELS.register("rlfn")
class RLFN(nn.Module):
    def __init__(self, *, scale: int = 4, channels: int = 46, mid_channels: int = 48, n_blocks: int = 4,
                 esa_channels: int = 16, anchor: str = "none"):
        super().__init__()
        if anchor not in ("none", "nearest"):
            raise ValueError(f"RLFN anchor must be 'none' or 'nearest', got {anchor!r}")
        if scale < 2:
            raise ValueError(f"RLFN needs scale >= 2, got {scale}")
        self.scale, self.scales, self.anchor = scale, (scale,), anchor
        self.conv_1 = nn.Conv2d(3, channels, 3, padding=1)
        self.blocks = nn.Sequential(*[RLFB(channels, mid_channels, esa_channels) for _ in range(n_blocks)])
        self.conv_2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.upsampler = nn.Conv2d(channels, 3 * scale * scale, 3, padding=1)
        self.shuffle = nn.PixelShuffle(scale)
        if anchor == "nearest":
            with torch.no_grad():
                self.upsampler.weight.mul_(0.1)
                self.upsampler.bias.zero_()

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        feat = self.conv_1(lr)
        out = self.upsampler(self.conv_2(self.blocks(feat)) + feat)
        if self.anchor == "nearest":
            out = out + torch.repeat_interleave(lr, self.scale * self.scale, dim=1)
        return self.shuffle(out)
