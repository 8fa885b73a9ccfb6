"""SPAN — Wan et al., "Swift Parameter-free Attention Network for Efficient Super-Resolution", CVPRW 2024
(first place, NTIRE 2024 efficient SR challenge).

Parameter-free attention: each block (SPAB) runs three re-parameterizable convs, c1 -> SiLU -> c2 -> SiLU
-> c3, and gates ``c3 + x`` by ``sigmoid(c3) - 0.5`` — the attention map is the features themselves, with
no extra weights. Six blocks; the head features, the sixth block's output (after one more conv), the
first block's output and the fifth block's output are concatenated and fused by a 1x1 conv, then a 3x3
conv to ``3 r^2`` channels + PixelShuffle.

Every conv (``Conv3XC``) trains as a 1x1 expand (x2) -> 3x3 -> 1x1 squeeze chain plus a 1x1 skip and
collapses into one 3x3 conv for deployment (``reparameterized()``; ``deploy: true`` builds that form,
which is what is exported, pruned and quantized). Defaults are the NTIRE 2024 submission at x4 (28
channels): 150,688 parameters deployed (the challenge's 0.151M); the paper's SPAN uses 48 channels
(426K).

Differences from the reference: the chain's first 1x1 conv has no bias, so zero padding commutes with it
and the collapse is exact at the borders too (the reference pads after a biased 1x1, so its collapsed
conv differs at the image border); inputs are edgesr's [0, 1] RGB (no mean shift and x255 scaling; a
conv absorbs both); ``anchor: nearest`` (not in the paper) adds the LR image repeated r^2 times before
the PixelShuffle, as the ABPN and MSRep students do.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import MODELS
from .reparam import MergedConv, copy_merged

__all__ = ["SPAN"]


class Conv3XC(MergedConv):
    """A 3x3 conv trained as 1x1 (cin -> gain cin) -> 3x3 (-> gain cout) -> 1x1 (-> cout) plus a 1x1 skip."""

    def __init__(self, cin: int, cout: int, *, gain: int = 2, deploy: bool = False):
        super().__init__(cin, cout, deploy)
        if deploy:
            return
        self.expand = nn.Conv2d(cin, cin * gain, 1, bias=False)  # no bias: zero padding stays exact
        self.k3 = nn.Conv2d(cin * gain, cout * gain, 3, padding=1)
        self.squeeze = nn.Conv2d(cout * gain, cout, 1)
        self.sk = nn.Conv2d(cin, cout, 1)

    def merged(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The single 3x3 kernel and bias equal to the chain plus the skip (differentiable)."""
        if self.deploy:
            return self.conv.weight, self.conv.bias
        e, s = self.expand.weight[:, :, 0, 0], self.squeeze.weight[:, :, 0, 0]
        w = torch.einsum("om,mekl,ei->oikl", s, self.k3.weight, e) + F.pad(self.sk.weight, (1, 1, 1, 1))
        b = s @ self.k3.bias + self.squeeze.bias + self.sk.bias
        return w, b

    def branches(self, x: torch.Tensor) -> torch.Tensor:
        return self.squeeze(self.k3(self.expand(x))) + self.sk(x)


class SPAB(nn.Module):
    def __init__(self, channels: int, deploy: bool):
        super().__init__()
        self.c1_r = Conv3XC(channels, channels, deploy=deploy)
        self.c2_r = Conv3XC(channels, channels, deploy=deploy)
        self.c3_r = Conv3XC(channels, channels, deploy=deploy)
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out1 = self.c1_r(x)
        out3 = self.c3_r(self.act(self.c2_r(self.act(out1))))
        attention = torch.sigmoid(out3) - 0.5
        return (out3 + x) * attention, out1


@MODELS.register("span")
class SPAN(nn.Module):
    def __init__(self, *, scale: int = 4, channels: int = 28, anchor: str = "none", deploy: bool = False):
        super().__init__()
        if anchor not in ("none", "nearest"):
            raise ValueError(f"SPAN anchor must be 'none' or 'nearest', got {anchor!r}")
        if scale < 2:
            raise ValueError(f"SPAN needs scale >= 2, got {scale}")
        self.scale, self.scales, self.anchor, self.deploy_form = scale, (scale,), anchor, deploy
        self.channels = channels
        self.conv_1 = Conv3XC(3, channels, deploy=deploy)
        self.blocks = nn.ModuleList(SPAB(channels, deploy) for _ in range(6))
        self.conv_2 = Conv3XC(channels, channels, deploy=deploy)
        self.conv_cat = nn.Conv2d(4 * channels, channels, 1)
        self.upsampler = nn.Conv2d(channels, 3 * scale * scale, 3, padding=1)
        self.shuffle = nn.PixelShuffle(scale)
        if anchor == "nearest" and not deploy:
            with torch.no_grad():
                self.upsampler.weight.mul_(0.1)
                self.upsampler.bias.zero_()

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        feat = self.conv_1(lr)
        x, firsts = feat, []
        for block in self.blocks:
            x, out1 = block(x)
            firsts.append(x)
            last_c1 = out1
        out = self.conv_cat(torch.cat([feat, self.conv_2(x), firsts[0], last_c1], dim=1))
        out = self.upsampler(out)
        if self.anchor == "nearest":
            out = out + torch.repeat_interleave(lr, self.scale * self.scale, dim=1)
        return self.shuffle(out)

    def reparameterized(self) -> tuple[nn.Module, dict]:
        """The deploy form (plain 3x3 convs) with the merged weights, and the hyper-parameter change."""
        if self.deploy_form:
            return self, {}
        plain = SPAN(scale=self.scale, channels=self.channels, anchor=self.anchor, deploy=True)
        copy_merged(self, plain)
        with torch.no_grad():
            for name in ("conv_cat", "upsampler"):
                plain.get_submodule(name).load_state_dict(self.get_submodule(name).state_dict())
        return plain.eval(), {"deploy": True}
