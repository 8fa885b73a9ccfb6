"""Meta-SR — Hu et al., "Meta-SR: A Magnification-Arbitrary Network for Super-Resolution", CVPR 2019.

One network for any scale: the meta-upscale module replaces the trunk's fixed upsampler. For output pixel
(i, j) at scale r it reads the 3x3 neighbourhood of LR feature pixel (floor(i / r), floor(j / r)) and
multiplies it by a filter *predicted* from the pixel's position: a weight-prediction network (FC 3 -> 256,
ReLU, FC 256 -> 3 x 3 x C x 3) maps (i/r - floor(i/r), j/r - floor(j/r), 1/r) to that pixel's 3x3 x C -> 3
filter. The trunk is RDN (Meta-RDN, the paper's main model; D16 C8 G64 by default) or EDSR (Meta-EDSR),
without its upsampler. The paper trains on scales 1.1 to 4.0 in steps of 0.1. Its 445,120-parameter
weight-prediction net (at C = 64) plus the trunk is the whole model; the paper gives the structure, not a
total.

In edgesr: ``scales`` (default ``[scale]``) lists the integer scales the forward pass emits, one output
each, so the training stage supervises all of them at once; ``upscale(lr, s)`` runs any scale from 1 to 4
(non-integer included) in PyTorch. For deployment the module is exported per fixed scale: at an integer
scale r the output pixel's offset takes only r x r values, so the predicted filters are exactly one conv
with 3 r^2 outputs followed by PixelShuffle(r). ``reparameterized()`` computes them (``deploy: true``
builds that form), which is what the export, prune and quantize stages take; the scales are recorded in
the manifest as for any model.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from . import MODELS
from .edsr import EDSR
from .rdn import RDN

__all__ = ["MetaSR", "MetaUpscale"]

_TRUNKS = {"rdn": RDN, "edsr": EDSR}


class MetaUpscale(nn.Module):
    """The meta-upscale module: position -> per-pixel 3x3 filter, applied to the LR features."""

    def __init__(self, n_feats: int, hidden: int = 256, out_channels: int = 3, kernel: int = 3):
        super().__init__()
        self.n_feats, self.out_channels, self.kernel = n_feats, out_channels, kernel
        self.predict = nn.Sequential(nn.Linear(3, hidden), nn.ReLU(),
                                     nn.Linear(hidden, kernel * kernel * n_feats * out_channels))

    def filters(self, offsets: torch.Tensor, scale: float) -> torch.Tensor:
        """Filters for position offsets (P x 2, each in [0, 1)): P x (C k k) x out, in ``F.unfold`` order."""
        pos = torch.cat([offsets, torch.full_like(offsets[:, :1], 1.0 / scale)], dim=1)
        return self.predict(pos).view(-1, self.n_feats * self.kernel ** 2, self.out_channels)

    def forward(self, feat: torch.Tensor, scale: float) -> torch.Tensor:
        n, c, h, w = feat.shape
        out_h, out_w = int(math.floor(h * scale + 1e-6)), int(math.floor(w * scale + 1e-6))
        pos_i = torch.arange(out_h, dtype=torch.float64, device=feat.device) / scale
        pos_j = torch.arange(out_w, dtype=torch.float64, device=feat.device) / scale
        src_i, src_j = (pos_i + 1e-9).floor(), (pos_j + 1e-9).floor()
        off_i, off_j = (pos_i - src_i).clamp(min=0).float(), (pos_j - src_j).clamp(min=0).float()
        src_i, src_j = src_i.long().clamp(max=h - 1), src_j.long().clamp(max=w - 1)
        unf = F.unfold(feat, self.kernel, padding=self.kernel // 2).view(n, -1, h, w)
        patches = unf.index_select(2, src_i).index_select(3, src_j)  # N x Ckk x outH x outW
        grid = torch.stack(torch.meshgrid(off_i, off_j, indexing="ij"), dim=-1).view(-1, 2)
        weights = self.filters(grid, scale).view(out_h, out_w, -1, self.out_channels)
        return torch.einsum("nkij,ijko->noij", patches, weights)

    def as_conv(self, scale: int) -> nn.Conv2d:
        """The exact fixed-scale form at integer ``scale``: a conv with 3 r^2 outputs for PixelShuffle(r)."""
        r, k = scale, self.kernel
        sub = torch.arange(r, dtype=torch.float32) / r
        grid = torch.stack(torch.meshgrid(sub, sub, indexing="ij"), dim=-1).view(-1, 2)  # (p, q) row-major
        with torch.no_grad():
            w = self.filters(grid, float(r))  # r^2 x Ckk x out
            # PixelShuffle reads channel o * r^2 + p * r + q as colour o at sub-pixel (p, q).
            w = w.permute(2, 0, 1).reshape(self.out_channels * r * r, self.n_feats, k, k)
        conv = nn.Conv2d(self.n_feats, self.out_channels * r * r, k, padding=k // 2, bias=False)
        with torch.no_grad():
            conv.weight.copy_(w)
        return conv


@MODELS.register("meta_sr")
class MetaSR(nn.Module):
    def __init__(self, *, scale: int = 2, scales: list[int] | None = None, trunk: str = "rdn",
                 trunk_args: dict | None = None, hidden: int = 256, deploy: bool = False):
        super().__init__()
        if trunk not in _TRUNKS:
            raise ValueError(f"Meta-SR trunk must be one of {sorted(_TRUNKS)}, got {trunk!r}")
        scales = sorted(scales) if scales else [scale]
        if scale not in scales or any(not isinstance(s, int) or not 1 < s <= 4 for s in scales):
            raise ValueError(f"Meta-SR emits integer scales 2..4 including scale={scale}; got {scales} "
                             "(non-integer scales: MetaSR.upscale(lr, s) in PyTorch)")
        self.scale, self.scales, self.deploy_form = scale, tuple(scales), deploy
        self.trunk_name, self.trunk_args, self.hidden = trunk, dict(trunk_args or {}), hidden
        self.trunk = _TRUNKS[trunk](scale=2, **self.trunk_args)
        self.trunk.upsample, self.trunk.tail = None, None  # the meta-upscale module replaces them
        n_feats = self.trunk.sfe1.out_channels if trunk == "rdn" else self.trunk.head.out_channels
        if deploy:
            self.convs = nn.ModuleList(nn.Conv2d(n_feats, 3 * s * s, 3, padding=1, bias=False) for s in self.scales)
            self.shuffles = nn.ModuleList(nn.PixelShuffle(s) for s in self.scales)
        else:
            self.meta = MetaUpscale(n_feats, hidden)

    def upscale(self, lr: torch.Tensor, scale: float) -> torch.Tensor:
        """SR at any scale in (1, 4], non-integer included (the training form only)."""
        if self.deploy_form:
            raise ValueError("a deployed Meta-SR is fixed to its integer scales; upscale() needs the training form")
        if not 1 < scale <= 4:
            raise ValueError(f"Meta-SR runs scales in (1, 4], got {scale}")
        return self.meta(self.trunk.features(lr), scale) + self.trunk.rgb_mean

    def forward(self, lr: torch.Tensor):
        feat = self.trunk.features(lr)
        if self.deploy_form:
            outs = [shuffle(conv(feat)) + self.trunk.rgb_mean for conv, shuffle in zip(self.convs, self.shuffles)]
        else:
            outs = [self.meta(feat, float(s)) + self.trunk.rgb_mean for s in self.scales]
        return outs[0] if len(outs) == 1 else tuple(outs)

    def reparameterized(self) -> tuple[nn.Module, dict]:
        """The fixed-scale deploy form: the filters for each integer scale computed once into a conv."""
        if self.deploy_form:
            return self, {}
        plain = MetaSR(scale=self.scale, scales=list(self.scales), trunk=self.trunk_name,
                       trunk_args=self.trunk_args, hidden=self.hidden, deploy=True)
        plain.trunk.load_state_dict(self.trunk.state_dict())
        with torch.no_grad():
            for i, s in enumerate(self.scales):
                plain.convs[i].weight.copy_(self.meta.as_conv(s).weight)
        return plain.eval(), {"deploy": True}
