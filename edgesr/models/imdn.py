"""IMDN — Hui et al., "Lightweight Image Super-Resolution with Information Multi-distillation Network", ACM MM
2019 — and its two challenge variants from the same authors (github.com/Zheng222/IMDN).

**imdn** (the paper's network). Information multi-distillation blocks (IMDB): a 3x3 conv + LeakyReLU(0.05)
whose output is split into a distilled quarter (kept) and the remaining three quarters (refined by the next
3x3 conv + LeakyReLU), three times, then a last 3x3 conv on the remainder gives the fourth quarter; the four
quarters are concatenated, re-weighted by contrast-aware channel attention (CCA: per-channel standard
deviation + mean over the image, 1x1 squeeze by 16, ReLU, 1x1 expand, sigmoid) and fused by a 1x1 conv
with a local residual. A 3x3 head, ``n_blocks`` IMDBs whose outputs are all concatenated and fused by a
1x1 conv + LeakyReLU(0.05), a 3x3 conv with a long skip, and a 3x3 conv to ``3 r^2`` channels +
PixelShuffle. Defaults are the paper's x4 network (64 channels, 6 blocks): 715,176 parameters (694,404 at
x2, 703,059 at x3: the released ``IMDN_x{2,3,4}.pth``). Inputs [0, 1] RGB, as in the authors' test_IMDN.py.

**imdn_rtc** (the simplified IMDN: the AIM 2019 constrained-SR winner's block, IMDN-RTC that won the 2019
AI-in-RTC challenge, and the NTIRE 2022 efficient-SR baseline). The same distillation block without CCA
and with the 1x1 fusion taking only the concatenated quarters; the blocks and a ``tail_kernel`` conv form
one residual branch around the head's features (no concatenation of block outputs); then conv + PixelShuffle.
Defaults are IMDN-RTC (12 channels, 5 blocks, 1x1 tail, x2): 20,190 parameters. The NTIRE 2022 baseline
(ofsoundof/NTIRE2022_ESR ``models/imdn_baseline.py``, the same computation in KAIR's layer naming) is
``channels: 64, n_blocks: 8, tail_kernel: 3, scale: 4``: 893,936 parameters. Inputs [0, 1] RGB (the
NTIRE 2022 test_demo.py runs the baseline with data_range 1.0; the RTC checkpoint's challenge test code is
unpublished, and [0, 1] RGB is what its training code feeds and what reproduces Set5 x2 37.31 dB, where
[0, 255] gives 35.12 dB and BGR 37.29 dB).

**imdn_rte** (the down-up IMDN, second in the 2020 AI-in-RTE challenge, degradation downsampling + noise).
A 3x3 conv + ReLU, then a bias-free stride-2 3x3 conv to half resolution; ``n_blocks`` bias-free
distillation blocks with ReLU that distill a quarter of the channels five times (widths C, C, C, 3C/4,
C/2, C/4; six quarters concatenated and fused by a 1x1 conv, local residual); a bias-free 1x1 conv with a
skip to the half-resolution features; a 3x3 conv to ``3 (2r)^2`` channels + PixelShuffle(2r). Defaults
(20 channels, 6 blocks, x2): 89,748 parameters. The authors' network works on [0, 255] RGB (on [0, 1] its
Set5 x2 PSNR-Y falls to 17.5 dB; [0, 255] RGB gives 35.41, BGR 35.16): edgesr's module scales its [0, 1]
input by ``rgb_range`` and divides the output back. It is trained for noisy downsampled inputs, so on
clean bicubic benchmarks it trails IMDN-RTC.

Each class's ``checkpoint_layout`` reads the authors' released files: IMDN's ``fea_conv / IMDB1..n / c /
LR_conv / upsampler`` names (x2, x3, x4), the RTC ``model.0 / model.1.sub.N.c1.. / model.2`` names and the
NTIRE 2022 baseline's ``model.1.sub.N.conv1.0.. / conv1x1`` names, and the RTE ``fea_conv.0 / fea_conv.2 /
block1..n / LR_conv / upsampler`` names (``module.`` prefixes are stripped before they are asked).

Differences from the reference code, none changing what a released checkpoint computes (checked against the
authors' modules on Set5: bit-identical for imdn_rtc, imdn_rte and the NTIRE 2022 baseline, > 140 dB for
imdn, whose CCA reductions round differently): CCA takes the mean and variance with ``mean`` over the image
rather than sums divided by H*W; activations are not in-place; ``imdn_rte`` takes inputs of any size: the
authors' stride-2 head needs even H and W (an odd side yields an output one LR pixel too large), and
edgesr crops the output to exactly ``r H x r W`` (the extra row/column comes from the conv's zero padding).
Its PixelShuffle factor is ``2 * scale`` (the authors' ``upscale ** 2`` equals that only at their x2).
IMDN's CCA pools over the whole image, so a tiled run (images over the Upscaler's automatic tiling limit)
differs slightly from a whole-image run. ``imdn``/``imdn_rte`` need ``channels`` divisible by 4 (the
authors' blocks assume it).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from . import MODELS

__all__ = ["IMDN", "IMDNRTC", "IMDNRTE"]

_SLOPE = 0.05  # LeakyReLU slope of every IMDN variant with leaky activations


def _run_length(state: dict, pattern: str, start: int = 0) -> int:
    """How many consecutive indices ``start, start + 1, ...`` have ``pattern.format(i)`` in ``state``."""
    n = 0
    while pattern.format(start + n) in state:
        n += 1
    return n


def _shuffle_factor(out_channels: int) -> int | None:
    r = math.isqrt(out_channels // 3)
    return r if r >= 1 and 3 * r * r == out_channels else None


def _conv_keys(src: str, dst: str, bias: bool = True) -> dict[str, str]:
    keys = {f"{src}.weight": f"{dst}.weight"}
    if bias:
        keys[f"{src}.bias"] = f"{dst}.bias"
    return keys


# ------------------------------------------------------------------------------------------------ imdn

def _check_sizes(net: str, scale: int, channels: int, n_blocks: int, *, min_channels: int, multiple: int = 1,
                 why: str = "") -> None:
    """The sizes every IMDN variant shares a rule for: scale and block count >= 1, channels >= ``min_channels``
    and divisible by ``multiple`` (``why``: the reason, for the message)."""
    if scale < 1:
        raise ValueError(f"{net} needs scale >= 1, got {scale}")
    if channels < min_channels or channels % multiple:
        rule = f">= {min_channels}" + (f" and divisible by {multiple}" if multiple > 1 else "")
        raise ValueError(f"{net} needs channels {rule}{f' ({why})' if why else ''}, got {channels}")
    if n_blocks < 1:
        raise ValueError(f"{net} needs n_blocks >= 1, got {n_blocks}")


class CCA(nn.Module):
    """Contrast-aware channel attention: gate = sigmoid(up(relu(down(std + mean)))) over each channel."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        self.down = nn.Conv2d(channels, channels // reduction, 1)
        self.up = nn.Conv2d(channels // reduction, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=(2, 3), keepdim=True)
        std = (x - mean).pow(2).mean(dim=(2, 3), keepdim=True).sqrt()
        return x * torch.sigmoid(self.up(F.relu(self.down(std + mean))))


class IMDB(nn.Module):
    """Information multi-distillation block; ``attention`` adds CCA before the 1x1 fusion (the paper's IMDB)."""

    def __init__(self, channels: int, *, attention: bool):
        super().__init__()
        self.d = channels // 4
        self.r = channels - self.d
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(self.r, channels, 3, padding=1)
        self.conv3 = nn.Conv2d(self.r, channels, 3, padding=1)
        self.conv4 = nn.Conv2d(self.r, self.d, 3, padding=1)
        self.cca = CCA(4 * self.d) if attention else None
        self.fuse = nn.Conv2d(4 * self.d, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d1, r = torch.split(F.leaky_relu(self.conv1(x), _SLOPE), (self.d, self.r), dim=1)
        d2, r = torch.split(F.leaky_relu(self.conv2(r), _SLOPE), (self.d, self.r), dim=1)
        d3, r = torch.split(F.leaky_relu(self.conv3(r), _SLOPE), (self.d, self.r), dim=1)
        out = torch.cat([d1, d2, d3, self.conv4(r)], dim=1)
        if self.cca is not None:
            out = self.cca(out)
        return self.fuse(out) + x


@MODELS.register("imdn")
class IMDN(nn.Module):
    def __init__(self, *, scale: int = 4, channels: int = 64, n_blocks: int = 6):
        super().__init__()
        _check_sizes("IMDN", scale, channels, n_blocks, min_channels=16, multiple=4, why="the CCA squeezes by 16")
        self.scale, self.scales = scale, (scale,)
        self.head = nn.Conv2d(3, channels, 3, padding=1)
        self.blocks = nn.ModuleList(IMDB(channels, attention=True) for _ in range(n_blocks))
        self.merge = nn.Conv2d(channels * n_blocks, channels, 1)
        self.body_out = nn.Conv2d(channels, channels, 3, padding=1)
        self.upsampler = nn.Conv2d(channels, 3 * scale * scale, 3, padding=1)
        self.shuffle = nn.PixelShuffle(scale)

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        feat = self.head(lr)
        outs, x = [], feat
        for block in self.blocks:
            x = block(x)
            outs.append(x)
        merged = F.leaky_relu(self.merge(torch.cat(outs, dim=1)), _SLOPE)
        return self.shuffle(self.upsampler(self.body_out(merged) + feat))

    @staticmethod
    def checkpoint_layout(state: dict[str, torch.Tensor]) -> tuple[dict, dict] | None:
        """The authors' IMDN_x{2,3,4}.pth (``fea_conv``, ``IMDB1..n`` with ``cca.conv_du``, ``c.0``,
        ``LR_conv``, ``upsampler.0``)."""
        need = ("fea_conv.weight", "IMDB1.c1.weight", "IMDB1.cca.conv_du.0.weight", "c.0.weight",
                "LR_conv.weight", "upsampler.0.weight")
        if not all(k in state for k in need) or state["fea_conv.weight"].ndim != 4:
            return None
        n_blocks = _run_length(state, "IMDB{}.c1.weight", start=1)
        channels = int(state["fea_conv.weight"].shape[0])
        scale = _shuffle_factor(int(state["upsampler.0.weight"].shape[0]))
        if scale is None:
            return None
        key_map = {**_conv_keys("fea_conv", "head"), **_conv_keys("c.0", "merge"),
                   **_conv_keys("LR_conv", "body_out"), **_conv_keys("upsampler.0", "upsampler")}
        for i in range(n_blocks):
            src, dst = f"IMDB{i + 1}", f"blocks.{i}"
            for a, b in (("c1", "conv1"), ("c2", "conv2"), ("c3", "conv3"), ("c4", "conv4"), ("c5", "fuse"),
                         ("cca.conv_du.0", "cca.down"), ("cca.conv_du.2", "cca.up")):
                key_map.update(_conv_keys(f"{src}.{a}", f"{dst}.{b}"))
        return {"scale": scale, "channels": channels, "n_blocks": n_blocks}, key_map


# ------------------------------------------------------------------------------------------------ imdn_rtc

@MODELS.register("imdn_rtc")
class IMDNRTC(nn.Module):
    def __init__(self, *, scale: int = 2, channels: int = 12, n_blocks: int = 5, tail_kernel: int = 1):
        super().__init__()
        _check_sizes("IMDN-RTC", scale, channels, n_blocks, min_channels=4)
        if tail_kernel not in (1, 3):
            raise ValueError(f"IMDN-RTC tail_kernel must be 1 (IMDN-RTC) or 3 (NTIRE 2022 baseline), got {tail_kernel}")
        self.scale, self.scales = scale, (scale,)
        self.head = nn.Conv2d(3, channels, 3, padding=1)
        self.blocks = nn.Sequential(*[IMDB(channels, attention=False) for _ in range(n_blocks)])
        self.tail = nn.Conv2d(channels, channels, tail_kernel, padding=tail_kernel // 2)
        self.upsampler = nn.Conv2d(channels, 3 * scale * scale, 3, padding=1)
        self.shuffle = nn.PixelShuffle(scale)

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        feat = self.head(lr)
        return self.shuffle(self.upsampler(feat + self.tail(self.blocks(feat))))

    @staticmethod
    def checkpoint_layout(state: dict[str, torch.Tensor]) -> tuple[dict, dict] | None:
        """IMDN-RTC's model_RTC.pth (``model.1.sub.N.c1..c5``) and the NTIRE 2022 baseline's imdn_baseline.pth
        (``model.1.sub.N.conv1.0, conv2.0, conv3.0, conv4, conv1x1``): head ``model.0``, blocks, tail conv
        ``model.1.sub.<n>``, upsampler ``model.2``."""
        if "model.0.weight" not in state or "model.2.weight" not in state:
            return None
        if "model.1.sub.0.c1.weight" in state and "model.1.sub.0.c5.weight" in state:
            names = (("c1", "conv1"), ("c2", "conv2"), ("c3", "conv3"), ("c4", "conv4"), ("c5", "fuse"))
        elif "model.1.sub.0.conv1.0.weight" in state and "model.1.sub.0.conv1x1.weight" in state:
            names = (("conv1.0", "conv1"), ("conv2.0", "conv2"), ("conv3.0", "conv3"), ("conv4", "conv4"),
                     ("conv1x1", "fuse"))
        else:
            return None
        n_blocks = _run_length(state, "model.1.sub.{}." + names[0][0] + ".weight")
        tail = state.get(f"model.1.sub.{n_blocks}.weight")
        scale = _shuffle_factor(int(state["model.2.weight"].shape[0]))
        if tail is None or tail.ndim != 4 or scale is None:
            return None
        key_map = {**_conv_keys("model.0", "head"), **_conv_keys(f"model.1.sub.{n_blocks}", "tail"),
                   **_conv_keys("model.2", "upsampler")}
        for i in range(n_blocks):
            for a, b in names:
                key_map.update(_conv_keys(f"model.1.sub.{i}.{a}", f"blocks.{i}.{b}"))
        keywords = {"scale": scale, "channels": int(state["model.0.weight"].shape[0]), "n_blocks": n_blocks,
                    "tail_kernel": int(tail.shape[-1])}
        return keywords, key_map


# ------------------------------------------------------------------------------------------------ imdn_rte

class IMDBLarge(nn.Module):
    """Bias-free distillation block with ReLU distilling a quarter of the channels five times."""

    def __init__(self, channels: int):
        super().__init__()
        d = self.d = channels // 4
        r = self.r = channels - d
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(r, channels, 3, padding=1, bias=False)
        self.conv3 = nn.Conv2d(r, channels, 3, padding=1, bias=False)
        self.conv4 = nn.Conv2d(r, r, 3, padding=1, bias=False)
        self.conv5 = nn.Conv2d(r - d, r - d, 3, padding=1, bias=False)
        self.conv6 = nn.Conv2d(d, d, 3, padding=1, bias=False)
        self.fuse = nn.Conv2d(6 * d, channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d, r = self.d, self.r
        d1, rest = torch.split(F.relu(self.conv1(x)), (d, r), dim=1)
        d2, rest = torch.split(F.relu(self.conv2(rest)), (d, r), dim=1)
        d3, rest = torch.split(F.relu(self.conv3(rest)), (d, r), dim=1)
        d4, rest = torch.split(F.relu(self.conv4(rest)), (d, r - d), dim=1)
        d5, rest = torch.split(F.relu(self.conv5(rest)), (d, r - 2 * d), dim=1)
        d6 = F.relu(self.conv6(rest))
        return self.fuse(torch.cat([d1, d2, d3, d4, d5, d6], dim=1)) + x


@MODELS.register("imdn_rte")
class IMDNRTE(nn.Module):
    def __init__(self, *, scale: int = 2, channels: int = 20, n_blocks: int = 6, rgb_range: float = 255.0):
        super().__init__()
        _check_sizes("IMDN-RTE", scale, channels, n_blocks, min_channels=4, multiple=4)
        if not rgb_range > 0:
            raise ValueError(f"IMDN-RTE needs rgb_range > 0, got {rgb_range}")
        self.scale, self.scales, self.rgb_range = scale, (scale,), float(rgb_range)
        self.head = nn.Conv2d(3, channels, 3, padding=1)
        self.down = nn.Conv2d(channels, channels, 3, stride=2, padding=1, bias=False)
        self.blocks = nn.Sequential(*[IMDBLarge(channels) for _ in range(n_blocks)])
        self.tail = nn.Conv2d(channels, channels, 1, bias=False)
        self.upsampler = nn.Conv2d(channels, 3 * (2 * scale) ** 2, 3, padding=1)
        self.shuffle = nn.PixelShuffle(2 * scale)

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        h, w = lr.shape[2], lr.shape[3]
        feat = self.down(F.relu(self.head(lr * self.rgb_range)))
        out = self.shuffle(self.upsampler(self.tail(self.blocks(feat)) + feat))
        return out[:, :, : h * self.scale, : w * self.scale] / self.rgb_range

    @staticmethod
    def checkpoint_layout(state: dict[str, torch.Tensor]) -> tuple[dict, dict] | None:
        """IMDN-RTE's model_RTE.pth (``fea_conv.0``, bias-free ``fea_conv.2``, ``block1..n.c1..c7``,
        ``LR_conv``, ``upsampler.0``)."""
        need = ("fea_conv.0.weight", "fea_conv.2.weight", "block1.c1.weight", "block1.c7.weight",
                "LR_conv.weight", "upsampler.0.weight")
        if not all(k in state for k in need):
            return None
        n_blocks = _run_length(state, "block{}.c1.weight", start=1)
        r = _shuffle_factor(int(state["upsampler.0.weight"].shape[0]))
        if r is None or r % 2:
            return None
        key_map = {**_conv_keys("fea_conv.0", "head"), **_conv_keys("fea_conv.2", "down", bias=False),
                   **_conv_keys("LR_conv", "tail", bias=False), **_conv_keys("upsampler.0", "upsampler")}
        for i in range(n_blocks):
            for j, b in enumerate(("conv1", "conv2", "conv3", "conv4", "conv5", "conv6", "fuse"), start=1):
                key_map.update(_conv_keys(f"block{i + 1}.c{j}", f"blocks.{i}.{b}", bias=False))
        keywords = {"scale": r // 2, "channels": int(state["fea_conv.0.weight"].shape[0]), "n_blocks": n_blocks,
                    "rgb_range": 255.0}
        return keywords, key_map
