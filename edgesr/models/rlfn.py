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

Differences from the reference, all for deployment, each a keyword whose default is edgesr's choice:
``pool_padding: 3`` pads the max-pool 3 pixels (-inf), so any input from 4x4 up runs (the reference,
``pool_padding: 0``, needs 15x15 or more; on larger inputs the pooled map differs only at its borders);
``data_range: 1`` runs the network on edgesr's [0, 1] RGB (the authors' networks run on [0, 255]:
``data_range: 255`` multiplies the input by 255 and divides the output by 255 inside the module, which a
conv cannot absorb because the biases, the ESA's sigmoid gate and the zero padding do not scale);
``anchor: nearest`` (not in the paper) adds the LR image repeated r^2 times before the PixelShuffle, so the
network learns a residual over nearest upsampling, as the ABPN and MSRep students do. Activations are not
in-place (torch-pruning traces them correctly); the ESA's resize is a traced leaf so the pruner's graph walk
sees through it.

Authors' checkpoints (``checkpoint_layout``): the NTIRE 2022 entry as published with the challenge's code
(ofsoundof/NTIRE2022_ESR ``models/team04_rlfn.py``, class ``RLFN_cut``: keys ``fea_conv``, ``B1..B4``,
``LR_conv``, ``upsampler.0``) and the same weights as the NTIRE 2024 baseline (Amazingren/NTIRE2024_ESR
``models/team00_RLFN.py``, ``RLFN_Prune``, and bytedance/RLFN: ``conv_1``, ``block_1..``, ``conv_2``,
``upsampler.0``). The two codes compute the same function; both challenges' ``test_demo.py`` run it with
``data_range = 255.0`` (RGB, [0, 255] in, output clamped to [0, 255] and divided by 255). The layout sets
``pool_padding: 0, data_range: 255``, with which edgesr computes what the authors' code computes (inputs of
15x15 and larger). The file's 46/48 channels and 4 blocks are the challenge's pruned ``RLFN_cut``, not the
paper's RLFN-S (48 channels, 6 blocks, 0.470M at x4) or RLFN; bytedance/RLFN also publishes those
(``rlfn_s_x{2,4}.pth``, ``rlfn_x{2,4}.pth``, same names, same [0, 255] range), which this layout reads too.
"""

from __future__ import annotations

import re

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
    def __init__(self, n_feats: int, f: int, pool_padding: int = 3):
        super().__init__()
        self.conv1 = nn.Conv2d(n_feats, f, 1)
        self.conv_f = nn.Conv2d(f, f, 1)
        self.conv2 = nn.Conv2d(f, f, 3, stride=2)
        self.conv3 = nn.Conv2d(f, f, 3, padding=1)
        self.conv4 = nn.Conv2d(f, n_feats, 1)
        self.pool = nn.MaxPool2d(7, stride=3, padding=pool_padding)
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c1 = self.conv1(x)
        c3 = resize_like(self.conv3(self.pool(self.conv2(c1))), x)
        return x * self.gate(self.conv4(c3 + self.conv_f(c1)))


class RLFB(nn.Module):
    def __init__(self, channels: int, mid: int, esa_channels: int, pool_padding: int = 3):
        super().__init__()
        self.c1_r = nn.Conv2d(channels, mid, 3, padding=1)
        self.c2_r = nn.Conv2d(mid, mid, 3, padding=1)
        self.c3_r = nn.Conv2d(mid, channels, 3, padding=1)
        self.act = nn.LeakyReLU(0.05)
        self.c5 = nn.Conv2d(channels, channels, 1)
        self.esa = ESA(channels, esa_channels, pool_padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.c3_r(self.act(self.c2_r(self.act(self.c1_r(x))))))
        return self.esa(self.c5(out + x))


@MODELS.register("rlfn")
class RLFN(nn.Module):
    def __init__(self, *, scale: int = 4, channels: int = 46, mid_channels: int = 48, n_blocks: int = 4,
                 esa_channels: int = 16, anchor: str = "none", pool_padding: int = 3, data_range: float = 1.0):
        super().__init__()
        if anchor not in ("none", "nearest"):
            raise ValueError(f"RLFN anchor must be 'none' or 'nearest', got {anchor!r}")
        if scale < 2:
            raise ValueError(f"RLFN needs scale >= 2, got {scale}")
        if pool_padding not in (0, 1, 2, 3):
            raise ValueError(f"RLFN pool_padding must be 0 (the reference) to 3 (edgesr), got {pool_padding!r}")
        if not data_range > 0:
            raise ValueError(f"RLFN data_range must be positive (1 or the authors' 255), got {data_range!r}")
        self.scale, self.scales, self.anchor = scale, (scale,), anchor
        self.data_range = float(data_range)
        self.conv_1 = nn.Conv2d(3, channels, 3, padding=1)
        self.blocks = nn.Sequential(*[RLFB(channels, mid_channels, esa_channels, pool_padding)
                                      for _ in range(n_blocks)])
        self.conv_2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.upsampler = nn.Conv2d(channels, 3 * scale * scale, 3, padding=1)
        self.shuffle = nn.PixelShuffle(scale)
        if anchor == "nearest":
            with torch.no_grad():
                self.upsampler.weight.mul_(0.1)
                self.upsampler.bias.zero_()

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        if self.data_range != 1.0:
            lr = lr * self.data_range
        feat = self.conv_1(lr)
        out = self.upsampler(self.conv_2(self.blocks(feat)) + feat)
        if self.anchor == "nearest":
            out = out + torch.repeat_interleave(lr, self.scale * self.scale, dim=1)
        out = self.shuffle(out)
        return out / self.data_range if self.data_range != 1.0 else out

    @staticmethod
    def checkpoint_layout(state: dict[str, torch.Tensor]) -> tuple[dict, dict] | None:
        """The authors' RLFN checkpoints: NTIRE 2022 names (``fea_conv``, ``B<i>``, ``LR_conv``) or NTIRE 2024 /
        bytedance names (``conv_1``, ``block_<i>``, ``conv_2``), both ending in ``upsampler.0``. Block 1 must hold
        exactly an RLFB's tensors (RFDN's blocks, with ``c1_d`` and ESA ``conv_max``, are not RLFN)."""
        for head, block, tail in (("fea_conv", "B", "LR_conv"), ("conv_1", "block_", "conv_2")):
            if f"{head}.weight" in state and f"{tail}.weight" in state:
                break
        else:
            return None
        if "upsampler.0.weight" not in state or f"{block}1.c1_r.weight" not in state:
            return None
        first = {k[len(f"{block}1."):] for k in state if k.startswith(f"{block}1.")}
        if first != {f"{m}.{p}" for m in _RLFB_MODULES for p in ("weight", "bias")}:
            return None
        pattern = re.compile(rf"{re.escape(block)}(\d+)\.")
        indices = sorted({int(m.group(1)) for k in state if (m := pattern.match(k))})
        if indices != list(range(1, len(indices) + 1)):
            return None
        up = state["upsampler.0.weight"].shape[0]
        scale = round((up / 3) ** 0.5)
        if up % 3 or scale * scale * 3 != up:
            return None
        keywords = {"scale": scale, "channels": int(state[f"{head}.weight"].shape[0]),
                    "mid_channels": int(state[f"{block}1.c1_r.weight"].shape[0]), "n_blocks": len(indices),
                    "esa_channels": int(state[f"{block}1.esa.conv1.weight"].shape[0]),
                    "pool_padding": 0, "data_range": 255.0}
        key_map = {}
        for p in ("weight", "bias"):
            key_map[f"{head}.{p}"] = f"conv_1.{p}"
            key_map[f"{tail}.{p}"] = f"conv_2.{p}"
            key_map[f"upsampler.0.{p}"] = f"upsampler.{p}"
            for i in indices:
                for m in _RLFB_MODULES:
                    key_map[f"{block}{i}.{m}.{p}"] = f"blocks.{i - 1}.{m}.{p}"
        return keywords, key_map


_RLFB_MODULES = ("c1_r", "c2_r", "c3_r", "c5", "esa.conv1", "esa.conv_f", "esa.conv2", "esa.conv3", "esa.conv4")
