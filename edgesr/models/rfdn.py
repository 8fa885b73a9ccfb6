"""RFDN — Liu, Tang and Wu, "Residual Feature Distillation Network for Lightweight Image Super-Resolution",
ECCV 2020 Workshops (first place, AIM 2020 efficient SR challenge; the NTIRE 2022 efficient SR baseline:
github.com/ofsoundof/NTIRE2022_ESR, ``models/rfdn_baseline/``, ``model_zoo/rfdn_baseline.pth``).

A 3x3 head conv to ``channels``, ``n_blocks`` residual feature distillation blocks (RFDB), a 1x1 conv +
LeakyReLU(0.05) fusing the concatenated block outputs, a 3x3 conv with a long skip from the head, and a 3x3
conv to ``3 r^2`` channels + PixelShuffle. An RFDB runs three steps on the features ``x``: a 1x1
"distillation" conv (``channels / 2`` outputs, LeakyReLU) kept aside, and a shallow residual unit
``LeakyReLU(conv3x3(x) + x)`` passed on; a final 3x3 conv (``channels / 2``, LeakyReLU); the four
distilled maps are concatenated, fused by a 1x1 conv and gated by enhanced spatial attention (ESA): 1x1
squeeze to ``esa_channels``, a stride-2 3x3 conv (no padding), a 7x7 max-pool with stride 3 (no padding),
three 3x3 convs (ReLU, ReLU, none), bilinear resize back to the input size, plus a 1x1 conv of the squeezed
map, a 1x1 expand and a sigmoid gate.

Defaults are the AIM 2020 entry (x4, 50 channels, 4 blocks, ESA 12): 433,448 parameters, every value of
``rfdn_baseline.pth`` -- tensor for tensor the authors' ``RFDN_AIM.pth`` (github.com/njulj/RFDN), the
network the paper calls E-RFDN. The paper's Set5/Set14 table reports its RFDN / RFDN-L models (other
widths and depths, trained apart); this file corresponds to none of its rows. edgesr measures Set5 /
Set14 x4 PSNR-Y 32.161 / 28.650 with it (identical outputs to the authors' code).

I/O is edgesr's [0, 1] RGB. The released weights were trained on [0, 255] (the authors' ``test.py`` feeds
``uint8`` values as floats; the NTIRE 2022 script runs the file with ``data_range = 255``): ``data_range: 255``
(what the importer sets) multiplies the input by 255 and divides the output by 255 inside the module. The
default ``data_range: 1`` is the plain [0, 1] network, for training in edgesr (as RLFN).

Minimum input: the ESA's unpadded stride-2 conv and 7x7/3 max-pool need an LR input of at least 15 x 15
pixels (smaller ones fail in the max-pool). Differences from the reference: none in the computation
(the max-pool is unpadded, as in the authors' code; edgesr's RLFN pads it by default); activations are not
in-place; the ESA's resize is a traced leaf for torch.fx, as in RLFN.
"""

from __future__ import annotations

import math

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from . import MODELS

__all__ = ["RFDN"]


def esa_resize(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Bilinear resize of ``x`` to ``ref``'s height and width (align_corners=False)."""
    return F.interpolate(x, size=(ref.shape[2], ref.shape[3]), mode="bilinear", align_corners=False)


torch.fx.wrap("esa_resize")


class RFDNESA(nn.Module):
    """Enhanced spatial attention as in RFDN (unpadded stride-2 conv and 7x7/3 max-pool, three 3x3 convs)."""

    def __init__(self, channels: int, f: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, f, 1)
        self.conv_f = nn.Conv2d(f, f, 1)
        self.conv_max = nn.Conv2d(f, f, 3, padding=1)
        self.conv2 = nn.Conv2d(f, f, 3, stride=2)
        self.conv3 = nn.Conv2d(f, f, 3, padding=1)
        self.conv3_ = nn.Conv2d(f, f, 3, padding=1)
        self.conv4 = nn.Conv2d(f, channels, 1)
        self.pool = nn.MaxPool2d(7, stride=3)
        self.relu = nn.ReLU()
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c1 = self.conv1(x)
        low = self.relu(self.conv_max(self.pool(self.conv2(c1))))
        low = self.conv3_(self.relu(self.conv3(low)))
        return x * self.gate(self.conv4(esa_resize(low, x) + self.conv_f(c1)))


class RFDB(nn.Module):
    def __init__(self, channels: int, esa_channels: int):
        super().__init__()
        d = channels // 2
        self.c1_d, self.c1_r = nn.Conv2d(channels, d, 1), nn.Conv2d(channels, channels, 3, padding=1)
        self.c2_d, self.c2_r = nn.Conv2d(channels, d, 1), nn.Conv2d(channels, channels, 3, padding=1)
        self.c3_d, self.c3_r = nn.Conv2d(channels, d, 1), nn.Conv2d(channels, channels, 3, padding=1)
        self.c4 = nn.Conv2d(channels, d, 3, padding=1)
        self.c5 = nn.Conv2d(4 * d, channels, 1)
        self.act = nn.LeakyReLU(0.05)
        self.esa = RFDNESA(channels, esa_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        distilled = []
        for conv_d, conv_r in ((self.c1_d, self.c1_r), (self.c2_d, self.c2_r), (self.c3_d, self.c3_r)):
            distilled.append(self.act(conv_d(x)))
            x = self.act(conv_r(x) + x)
        distilled.append(self.act(self.c4(x)))
        return self.esa(self.c5(torch.cat(distilled, dim=1)))


@MODELS.register("rfdn")
class RFDN(nn.Module):
    def __init__(self, *, scale: int = 4, channels: int = 50, n_blocks: int = 4, esa_channels: int = 12,
                 data_range: float = 1.0):
        super().__init__()
        if scale < 2:
            raise ValueError(f"RFDN needs scale >= 2, got {scale}")
        if data_range not in (1, 255):
            raise ValueError(f"RFDN data_range must be 1 or 255, got {data_range}")
        self.scale, self.scales, self.data_range = scale, (scale,), float(data_range)
        self.fea_conv = nn.Conv2d(3, channels, 3, padding=1)
        self.blocks = nn.ModuleList(RFDB(channels, esa_channels) for _ in range(n_blocks))
        self.fuse = nn.Conv2d(channels * n_blocks, channels, 1)
        self.act = nn.LeakyReLU(0.05)
        self.LR_conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.upsampler = nn.Conv2d(channels, 3 * scale * scale, 3, padding=1)
        self.shuffle = nn.PixelShuffle(scale)

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        x = lr * self.data_range if self.data_range != 1.0 else lr
        feat = self.fea_conv(x)
        outs, out = [], feat
        for block in self.blocks:
            out = block(out)
            outs.append(out)
        body = self.LR_conv(self.act(self.fuse(torch.cat(outs, dim=1)))) + feat
        sr = self.shuffle(self.upsampler(body))
        return sr / self.data_range if self.data_range != 1.0 else sr

    @staticmethod
    def checkpoint_layout(state: dict[str, torch.Tensor]) -> tuple[dict, dict] | None:
        """RFDN state dicts of the AIM 2020 / NTIRE 2022 code (``fea_conv``, ``B1``..``Bn`` with ``c1_d``,
        ``c1_r``, ..., ``esa.conv_max``, ``c.0`` (fusion), ``LR_conv``, ``upsampler.0``). The input range
        is not in the file: the key names are those of the challenge baseline, trained on [0, 255]."""
        needed = ("fea_conv.weight", "B1.c1_d.weight", "B1.c1_r.weight", "B1.c4.weight", "B1.esa.conv_max.weight",
                  "B1.esa.conv3_.weight", "c.0.weight", "LR_conv.weight", "upsampler.0.weight")
        if any(k not in state for k in needed):
            return None
        channels = int(state["fea_conv.weight"].shape[0])
        n_blocks = 0
        while f"B{n_blocks + 1}.c1_d.weight" in state:
            n_blocks += 1
        r = math.isqrt(int(state["upsampler.0.weight"].shape[0]) // 3)
        if 3 * r * r != int(state["upsampler.0.weight"].shape[0]) or r < 2:
            return None
        esa = int(state["B1.esa.conv1.weight"].shape[0])
        km: dict = {}
        for p in ("weight", "bias"):
            for k in ("fea_conv", "LR_conv"):
                km[f"{k}.{p}"] = f"{k}.{p}"
            km[f"c.0.{p}"] = f"fuse.{p}"
            km[f"upsampler.0.{p}"] = f"upsampler.{p}"
            for b in range(n_blocks):
                for k in ("c1_d", "c1_r", "c2_d", "c2_r", "c3_d", "c3_r", "c4", "c5"):
                    km[f"B{b + 1}.{k}.{p}"] = f"blocks.{b}.{k}.{p}"
                for k in ("conv1", "conv_f", "conv_max", "conv2", "conv3", "conv3_", "conv4"):
                    km[f"B{b + 1}.esa.{k}.{p}"] = f"blocks.{b}.esa.{k}.{p}"
        return {"scale": r, "channels": channels, "n_blocks": n_blocks, "esa_channels": esa, "data_range": 255.0}, km
