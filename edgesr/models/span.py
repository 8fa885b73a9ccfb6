"""SPAN — Wan et al., "Swift Parameter-free Attention Network for Efficient Super-Resolution", CVPRW 2024
(first place, NTIRE 2024 efficient SR challenge).

Parameter-free attention: each block (SPAB) runs three re-parameterizable convs, c1 -> SiLU -> c2 -> SiLU
-> c3, and gates ``c3 + x`` by ``sigmoid(c3) - 0.5`` — the attention map is the features themselves, with
no extra weights. Six blocks; the head features, the sixth block's output (after one more conv), the
first block's output and the sixth block's c1 output are concatenated and fused by a 1x1 conv, then a 3x3
conv to ``3 r^2`` channels + PixelShuffle.

Every conv (``Conv3XC``) trains as a 1x1 expand (x2) -> 3x3 -> 1x1 squeeze chain plus a 1x1 skip and
collapses into one 3x3 conv for deployment (``reparameterized()``; ``deploy: true`` builds that form,
which is what is exported, pruned and quantized). Defaults are the NTIRE 2024 submission at x4 (28
channels): 150,688 parameters deployed (the challenge's 0.151M); the paper's SPAN uses 48 channels
(426K).

Differences from the reference: the chain's first 1x1 conv has no bias, so zero padding commutes with it
and the collapse is exact at the borders too (the reference pads after a biased 1x1, so its collapsed
conv differs at the image border; its deployed file holds only the collapsed convs, which are plain 3x3
convs with zero padding 1, exactly edgesr's ``deploy: true`` form); ``anchor: nearest`` (not in the paper)
adds the LR image repeated r^2 times before the PixelShuffle, as the ABPN and MSRep students do. Two more,
as keywords whose defaults are edgesr's choice: ``img_range: 1, rgb_mean: null`` feed the network
edgesr's [0, 1] RGB as is, where the reference feeds ``(x - rgb_mean) * img_range`` (mean 0.4488, 0.4371,
0.4040 and 255) and returns its output unscaled; with zero padding no conv absorbs that exactly at the
borders, so the module applies it when asked. ``c1_act: false`` concatenates the sixth block's c1 output
before its SiLU, where the reference's in-place SiLU (``SiLU(inplace=True)`` on the tensor it also
returns) makes the concatenated map the activated one, ``c1_act: true``.

Authors' checkpoints (``checkpoint_layout``): the NTIRE 2024 deployed files of Amazingren/NTIRE2024_ESR,
``team38_span_ch28_slim.pth`` (SPAN, ``models/team38_SPAN.py``, class ``SPAN30``, 28 channels) and
``team39_spantiny_ch26_slim.pth`` (SPAN-tiny, ``models/team39_SPANtiny.py``: the same code, 26 channels,
also six blocks and SiLU): keys ``conv_1.eval_conv``, ``block_<i>.c<j>_r.eval_conv``, ``conv_cat``,
``conv_2.eval_conv``, ``upsampler.0``. Their ``test_demo.py`` runs them on [0, 1] RGB (``data_range =
1.0``). The layout sets ``deploy: true, img_range: 255, rgb_mean: [0.4488, 0.4371, 0.4040], c1_act: true``,
with which edgesr computes what the authors' code computes. Training-form files (``sk``, ``conv.0..2``
branches) are not importable: edgesr's training form has no bias on the first 1x1 conv.
"""

from __future__ import annotations

import re

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
    def __init__(self, channels: int, deploy: bool, c1_act: bool = False):
        super().__init__()
        self.c1_r = Conv3XC(channels, channels, deploy=deploy)
        self.c2_r = Conv3XC(channels, channels, deploy=deploy)
        self.c3_r = Conv3XC(channels, channels, deploy=deploy)
        self.act = nn.SiLU()
        self.c1_act = c1_act

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out1 = self.c1_r(x)
        act1 = self.act(out1)
        out3 = self.c3_r(self.act(self.c2_r(act1)))
        attention = torch.sigmoid(out3) - 0.5
        return (out3 + x) * attention, act1 if self.c1_act else out1


@MODELS.register("span")
class SPAN(nn.Module):
    def __init__(self, *, scale: int = 4, channels: int = 28, anchor: str = "none", deploy: bool = False,
                 img_range: float = 1.0, rgb_mean: list[float] | None = None, c1_act: bool = False):
        super().__init__()
        if anchor not in ("none", "nearest"):
            raise ValueError(f"SPAN anchor must be 'none' or 'nearest', got {anchor!r}")
        if scale < 2:
            raise ValueError(f"SPAN needs scale >= 2, got {scale}")
        if rgb_mean is not None and len(rgb_mean) != 3:
            raise ValueError(f"SPAN rgb_mean must be three numbers (R, G, B) or null, got {rgb_mean!r}")
        if not img_range > 0:
            raise ValueError(f"SPAN img_range must be positive (1 or the authors' 255), got {img_range!r}")
        self.scale, self.scales, self.anchor, self.deploy_form = scale, (scale,), anchor, deploy
        self.channels, self.c1_act = channels, bool(c1_act)
        self.img_range = float(img_range)
        self.rgb_mean = None if rgb_mean is None else [float(v) for v in rgb_mean]
        if self.rgb_mean is not None:  # a constant of the module, not a weight of the file
            self.register_buffer("mean", torch.tensor(self.rgb_mean).view(1, 3, 1, 1), persistent=False)
        self.conv_1 = Conv3XC(3, channels, deploy=deploy)
        self.blocks = nn.ModuleList(SPAB(channels, deploy, self.c1_act) for _ in range(6))
        self.conv_2 = Conv3XC(channels, channels, deploy=deploy)
        self.conv_cat = nn.Conv2d(4 * channels, channels, 1)
        self.upsampler = nn.Conv2d(channels, 3 * scale * scale, 3, padding=1)
        self.shuffle = nn.PixelShuffle(scale)
        if anchor == "nearest" and not deploy:
            with torch.no_grad():
                self.upsampler.weight.mul_(0.1)
                self.upsampler.bias.zero_()

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        x = lr
        if self.rgb_mean is not None:
            x = x - self.mean
        if self.img_range != 1.0:
            x = x * self.img_range
        feat = self.conv_1(x)
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
        plain = SPAN(scale=self.scale, channels=self.channels, anchor=self.anchor, deploy=True,
                     img_range=self.img_range, rgb_mean=self.rgb_mean, c1_act=self.c1_act)
        copy_merged(self, plain)
        with torch.no_grad():
            for name in ("conv_cat", "upsampler"):
                plain.get_submodule(name).load_state_dict(self.get_submodule(name).state_dict())
        return plain.eval(), {"deploy": True}

    @staticmethod
    def checkpoint_layout(state: dict[str, torch.Tensor]) -> tuple[dict, dict] | None:
        """The authors' deployed SPAN files (NTIRE 2024 ``*_slim.pth``): every conv as ``<name>.eval_conv``."""
        need = ("conv_1.eval_conv.weight", "block_1.c1_r.eval_conv.weight", "conv_2.eval_conv.weight",
                "conv_cat.weight", "upsampler.0.weight")
        if not all(k in state for k in need):
            return None
        up = state["upsampler.0.weight"].shape[0]
        scale = round((up / 3) ** 0.5)
        if up % 3 or scale * scale * 3 != up:
            return None
        keywords = {"scale": scale, "channels": int(state["conv_1.eval_conv.weight"].shape[0]), "deploy": True,
                    "img_range": 255.0, "rgb_mean": [0.4488, 0.4371, 0.4040], "c1_act": True}
        key_map = {}
        block = re.compile(r"block_(\d+)\.(c[123]_r)\.eval_conv\.(weight|bias)$")
        for k in state:
            if m := block.match(k):
                key_map[k] = f"blocks.{int(m.group(1)) - 1}.{m.group(2)}.conv.{m.group(3)}"
        for p in ("weight", "bias"):
            key_map[f"conv_1.eval_conv.{p}"] = f"conv_1.conv.{p}"
            key_map[f"conv_2.eval_conv.{p}"] = f"conv_2.conv.{p}"
            key_map[f"conv_cat.{p}"] = f"conv_cat.{p}"
            key_map[f"upsampler.0.{p}"] = f"upsampler.{p}"
        return keywords, key_map
