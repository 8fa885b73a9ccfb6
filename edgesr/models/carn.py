"""CARN-M — Ahn, Kang and Sohn, "Fast, Accurate, and Lightweight Super-Resolution with Cascading Residual
Network", ECCV 2018 (the mobile variant of CARN; reference code and weights: github.com/nmhkahn/CARN-pytorch,
``carn/model/carn_m.py``, ``carn/model/ops.py``, ``checkpoint/carn_m.pth``).

One multi-scale network: a shared trunk and one upsampling head per scale. The trunk: a 1x1 RGB mean
subtraction (DIV2K mean), a 3x3 conv to ``channels``, then ``n_blocks`` cascading blocks with a global
cascade: after block i the outputs of the entry conv and of blocks 1..i are concatenated and fused by a
1x1 conv + ReLU. Each cascading block does the same locally with ONE efficient residual block applied
three times (its weights are shared within the block, the "recursive" CARN-M trick): grouped 3x3 conv +
ReLU, grouped 3x3 conv + ReLU, 1x1 conv, + input, ReLU; each application is followed by concatenation with
all earlier features and a 1x1 conv + ReLU. Head x2: grouped 3x3 conv to ``4 * channels`` + ReLU +
PixelShuffle(2); x4: that twice; x3: grouped 3x3 conv to ``9 * channels`` + ReLU + PixelShuffle(3). The
heads share the final 3x3 conv to RGB and the 1x1 mean addition.

I/O is edgesr's [0, 1] RGB, as in the authors' test script (``ToTensor`` input, output saved as
``x * 255``); the mean shift happens inside, in two frozen 1x1 convs (``sub_mean``, ``add_mean``) that the
checkpoint stores (24 values). Defaults are the released CARN-M checkpoint: 64 channels, groups 4,
3 blocks, heads x2/x3/x4: 414,811 parameters, every value of ``carn_m.pth`` (the paper's "412K" is this
network's weights without biases: 412,050).
Forward returns one tensor per scale in ``scales``, as a tuple (one tensor when there is one scale); the
trunk runs once for all of them. ``scales`` may be a subset of (2, 3, 4) for a model with fewer outputs,
but the authors' multi-scale file only imports into the full (2, 3, 4) model (every tensor is consumed);
a file trained single-scale by the authors' code (``upsample.up``) imports as a one-scale model.
``scale`` is only a check that the scale is one of ``scales``; ``self.scale`` is the first of ``scales``.

Differences from the reference: none in the computation (float-exact on the authors' weights). The shared
residual block is one module called three times (as the reference does), so its weights appear once in the
state dict. ReLUs are not in-place.

Published (the paper's benchmark table, also the repository's ``assets/table.png``; PSNR-Y): Set5 / Set14
x2 37.53 / 33.26, x3 33.99 / 30.08, x4 31.92 / 28.42. edgesr's protocol gives the released weights x2
37.682 / 33.309, x3 34.061 / 30.105, x4 31.885 / 28.422. The x2 gap is the authors' evaluation, not
the network: their ``sample.py`` saves SR images with ``mul(255).clamp(0, 255).byte()``, which truncates
instead of rounding (about -0.5/255 bias per pixel), and their MATLAB scoring (SelfExSR
``compute_difference.m``) takes Y from ``rgb2ycbcr`` on uint8 images, i.e. rounded Y. With truncation
edgesr's numbers become x2 37.507 / 33.247, x3 34.009 / 30.084, x4 31.843 / 28.403 (and with rounded Y
as well 37.428 / 33.219, 33.976 / 30.071, 31.823 / 28.395): truncation accounts for x2 and x3 within
0.025 dB, but no one protocol reproduces all three scales (x4 Set5 31.92 is above every variant), so
the released checkpoint or the authors' LR files probably differ slightly from those behind the table.
"""

from __future__ import annotations

import torch
from torch import nn

from . import MODELS

__all__ = ["CARNM"]

DIV2K_MEAN = (0.4488, 0.4371, 0.4040)
"""RGB mean of DIV2K in [0, 1], what the authors' ``MeanShift`` subtracts and adds."""


def _mean_shift(mean, sign: float) -> nn.Conv2d:
    conv = nn.Conv2d(3, 3, 1)
    with torch.no_grad():
        conv.weight.copy_(torch.eye(3).view(3, 3, 1, 1))
        conv.bias.copy_(sign * torch.tensor([float(m) for m in mean]))
    conv.requires_grad_(False)  # frozen, as in the reference
    return conv


class EfficientResidual(nn.Module):
    """Grouped 3x3 + ReLU, grouped 3x3 + ReLU, 1x1, residual add, ReLU."""

    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, groups=groups)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, groups=groups)
        self.conv3 = nn.Conv2d(channels, channels, 1)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv3(self.act(self.conv2(self.act(self.conv1(x)))))
        return self.act(out + x)


class Cascade(nn.Module):
    """Local or global cascading: ``units[i]`` (applied to the last fused output), concatenation with every
    earlier feature map, 1x1 fuse conv + ReLU. ``units`` may hold one module used at every step (shared)."""

    def __init__(self, channels: int, steps: int):
        super().__init__()
        self.fuse = nn.ModuleList(nn.Conv2d(channels * (i + 2), channels, 1) for i in range(steps))
        self.act = nn.ReLU()

    def run(self, x: torch.Tensor, units) -> torch.Tensor:
        cat, out = x, x
        for unit, fuse in zip(units, self.fuse):
            cat = torch.cat([cat, unit(out)], dim=1)
            out = self.act(fuse(cat))
        return out


class CascadingBlock(nn.Module):
    def __init__(self, channels: int, groups: int, steps: int = 3):
        super().__init__()
        self.unit = EfficientResidual(channels, groups)  # one set of weights, applied ``steps`` times
        self.cascade = Cascade(channels, steps)
        self.steps = steps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cascade.run(x, [self.unit] * self.steps)


class UpsampleHead(nn.Module):
    """x2 / x4: (grouped 3x3 to 4C + ReLU + PixelShuffle(2)) once / twice; x3: grouped 3x3 to 9C + ReLU +
    PixelShuffle(3)."""

    def __init__(self, channels: int, scale: int, groups: int):
        super().__init__()
        if scale not in (2, 3, 4):
            raise ValueError(f"CARN-M heads are x2, x3 and x4, not x{scale}")
        step = 3 if scale == 3 else 2
        n = 2 if scale == 4 else 1
        self.convs = nn.ModuleList(nn.Conv2d(channels, channels * step * step, 3, padding=1, groups=groups)
                                   for _ in range(n))
        self.shuffle = nn.PixelShuffle(step)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv in self.convs:
            x = self.shuffle(self.act(conv(x)))
        return x


@MODELS.register("carn_m")
class CARNM(nn.Module):
    def __init__(self, *, scales: list[int] | tuple[int, ...] = (2, 3, 4), scale: int | None = None,
                 channels: int = 64, groups: int = 4, n_blocks: int = 3, mean: list[float] | tuple = DIV2K_MEAN):
        super().__init__()
        scales = tuple(int(s) for s in scales)
        if not scales or len(set(scales)) != len(scales) or any(s not in (2, 3, 4) for s in scales):
            raise ValueError(f"CARN-M scales must be distinct values among 2, 3, 4; got {list(scales)}")
        if scale is not None and scale not in scales:
            raise ValueError(f"CARN-M with scales {list(scales)} has no x{scale} output")
        if channels % groups:
            raise ValueError(f"CARN-M channels ({channels}) must be a multiple of groups ({groups})")
        self.scales, self.scale = scales, scales[0]
        self.sub_mean = _mean_shift(mean, -1.0)
        self.add_mean = _mean_shift(mean, 1.0)
        self.entry = nn.Conv2d(3, channels, 3, padding=1)
        self.blocks = nn.ModuleList(CascadingBlock(channels, groups) for _ in range(n_blocks))
        self.cascade = Cascade(channels, n_blocks)
        self.heads = nn.ModuleDict({f"x{s}": UpsampleHead(channels, s, groups) for s in scales})
        self.exit = nn.Conv2d(channels, 3, 3, padding=1)

    def forward(self, lr: torch.Tensor):
        feat = self.cascade.run(self.entry(self.sub_mean(lr)), self.blocks)
        outs = tuple(self.add_mean(self.exit(self.heads[f"x{s}"](feat))) for s in self.scales)
        return outs[0] if len(outs) == 1 else outs

    @staticmethod
    def checkpoint_layout(state: dict[str, torch.Tensor]) -> tuple[dict, dict] | None:
        """nmhkahn/CARN-pytorch ``carn_m.py`` state dicts: ``b1.b1.body.{0,2,4}`` (the shared efficient
        residual block of block 1), ``b1.c1``, ``c1``, ``upsample.up2/up3/up4`` (multi-scale) or
        ``upsample.up`` (single-scale training), ``sub_mean.shifter``, ``add_mean.shifter``, ``exit``."""
        needed = ("entry.weight", "exit.weight", "sub_mean.shifter.bias", "add_mean.shifter.bias",
                  "b1.b1.body.0.weight", "b1.b1.body.4.weight", "b1.c1.body.0.weight", "c1.body.0.weight")
        if any(k not in state for k in needed) or any(k.startswith("b1.b2.") for k in state):
            return None  # b1.b2: full CARN (three unshared residual blocks per cascading block)
        channels = int(state["entry.weight"].shape[0])
        per_group = int(state["b1.b1.body.0.weight"].shape[1])
        if per_group == 0 or channels % per_group:
            return None
        n_blocks = 0
        while f"b{n_blocks + 1}.b1.body.0.weight" in state:
            n_blocks += 1
        km: dict = {"sub_mean.shifter.weight": "sub_mean.weight", "sub_mean.shifter.bias": "sub_mean.bias",
                    "add_mean.shifter.weight": "add_mean.weight", "add_mean.shifter.bias": "add_mean.bias"}
        for p in ("weight", "bias"):
            km[f"entry.{p}"] = f"entry.{p}"
            km[f"exit.{p}"] = f"exit.{p}"
            for b in range(n_blocks):
                for i, j in ((0, 1), (2, 2), (4, 3)):
                    km[f"b{b + 1}.b1.body.{i}.{p}"] = f"blocks.{b}.unit.conv{j}.{p}"
                for i in range(3):
                    km[f"b{b + 1}.c{i + 1}.body.0.{p}"] = f"blocks.{b}.cascade.fuse.{i}.{p}"
            for i in range(n_blocks):
                km[f"c{i + 1}.body.0.{p}"] = f"cascade.fuse.{i}.{p}"
        if "upsample.up.body.0.weight" in state:  # a single-scale model (multi_scale=False)
            wide = int(state["upsample.up.body.0.weight"].shape[0]) // channels
            scales = [3] if wide == 9 else [4] if "upsample.up.body.3.weight" in state else [2]
            heads = {scales[0]: "upsample.up"}
        else:
            scales = [s for s in (2, 3, 4) if f"upsample.up{s}.body.0.weight" in state]
            heads = {s: f"upsample.up{s}" for s in scales}
        if not scales:
            return None
        for s, src in heads.items():
            for n, i in enumerate((0, 3) if s == 4 else (0,)):
                for p in ("weight", "bias"):
                    km[f"{src}.body.{i}.{p}"] = f"heads.x{s}.convs.{n}.{p}"
        return {"scales": scales, "channels": channels, "groups": channels // per_group, "n_blocks": n_blocks}, km
