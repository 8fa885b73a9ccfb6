"""SwinIR — Liang et al., "SwinIR: Image Restoration Using Swin Transformer", ICCVW 2021: the lightweight
classical-SR configuration, edgesr's transformer teacher.

A 3x3 conv embeds the image; residual Swin transformer blocks (RSTB) follow, each ``depths[i]`` Swin
layers (LayerNorm, window multi-head self-attention with a learned relative-position bias, LayerNorm,
MLP with GELU; every other layer shifts its windows by half a window, with the attention mask that keeps
shifted windows from mixing regions) then a 3x3 conv and a residual; a LayerNorm, a 3x3 conv with a long
skip, and the one-step sub-pixel upsampler (3x3 conv to ``3 r^2`` channels + PixelShuffle,
"pixelshuffledirect"). The DIV2K mean is subtracted at the input and added back.

Defaults are the paper's lightweight model: embed 60, depths [6, 6, 6, 6], heads [6, 6, 6, 6], window 8,
MLP ratio 2. Parameters: 910,152 at x2, 929,628 at x4; the paper's 878K / 897K are the same counts without
the 24 relative-position-bias tables (32,400 values), which its count leaves out.

Any input size, in the graph: the image is padded to a multiple of the window (edge replication: any size
from 1 pixel up; the reference reflects, which needs more than half a window) and the output cropped, and
the shifted-window mask is computed from the padded size with index arithmetic, so the ONNX export keeps
dynamic H and W (window count = ceil(H / window), no shape-specialised constants).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import MODELS
from .edsr import DIV2K_RGB_MEAN

__all__ = ["SwinIR"]


def _relative_index(ws: int) -> torch.Tensor:
    coords = torch.stack(torch.meshgrid(torch.arange(ws), torch.arange(ws), indexing="ij")).flatten(1)  # 2 x N
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (ws - 1)  # N x N x 2, in [0, 2ws-2]
    return rel[..., 0] * (2 * ws - 1) + rel[..., 1]


class WindowAttention(nn.Module):
    def __init__(self, dim: int, heads: int, ws: int):
        super().__init__()
        self.heads, self.scale = heads, (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * ws - 1) ** 2, heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        self.register_buffer("relative_index", _relative_index(ws), persistent=False)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        b, n, c = x.shape  # b = batch x windows, n = ws * ws tokens
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = (q * self.scale) @ k.transpose(-2, -1)
        bias = self.relative_position_bias_table[self.relative_index.reshape(-1)].reshape(n, n, -1).permute(2, 0, 1)
        attn = attn + bias.unsqueeze(0)
        if mask is not None:  # mask: windows x n x n, the same for every image of the batch
            w = mask.shape[0]
            attn = (attn.reshape(-1, w, self.heads, n, n) + mask[None, :, None]).reshape(-1, self.heads, n, n)
        attn = attn.softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))


class SwinLayer(nn.Module):
    def __init__(self, dim: int, heads: int, ws: int, shift: int, mlp_ratio: float):
        super().__init__()
        self.ws, self.shift = ws, shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, heads, ws)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor, nh: int, nw: int, mask: torch.Tensor) -> torch.Tensor:
        """``x``: B x (nh ws) x (nw ws) x C, already padded to whole windows."""
        b, c, ws = x.shape[0], x.shape[-1], self.ws
        y = self.norm1(x)
        if self.shift:
            y = torch.roll(y, shifts=(-self.shift, -self.shift), dims=(1, 2))
        windows = y.reshape(b, nh, ws, nw, ws, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, ws * ws, c)
        windows = self.attn(windows, mask if self.shift else None)
        y = windows.reshape(b, nh, nw, ws, ws, c).permute(0, 1, 3, 2, 4, 5).reshape(b, nh * ws, nw * ws, c)
        if self.shift:
            y = torch.roll(y, shifts=(self.shift, self.shift), dims=(1, 2))
        x = x + y
        return x + self.mlp(self.norm2(x))


class RSTB(nn.Module):
    def __init__(self, dim: int, depth: int, heads: int, ws: int, mlp_ratio: float):
        super().__init__()
        self.layers = nn.ModuleList(SwinLayer(dim, heads, ws, 0 if i % 2 == 0 else ws // 2, mlp_ratio)
                                    for i in range(depth))
        self.conv = nn.Conv2d(dim, dim, 3, padding=1)

    def forward(self, x: torch.Tensor, nh: int, nw: int, mask: torch.Tensor) -> torch.Tensor:
        y = x
        for layer in self.layers:
            y = layer(y, nh, nw, mask)
        return x + self.conv(y.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


@MODELS.register("swinir")
class SwinIR(nn.Module):
    def __init__(self, *, scale: int = 2, embed_dim: int = 60, depths: list[int] | None = None,
                 heads: list[int] | None = None, window_size: int = 8, mlp_ratio: float = 2.0):
        super().__init__()
        depths, heads = list(depths or [6, 6, 6, 6]), list(heads or [6, 6, 6, 6])
        if len(depths) != len(heads) or any(embed_dim % h for h in heads):
            raise ValueError(f"SwinIR needs one head count per stage dividing embed_dim={embed_dim}; "
                             f"got depths {depths}, heads {heads}")
        if window_size < 2:
            raise ValueError(f"SwinIR window_size must be >= 2, got {window_size}")
        self.scale, self.scales, self.ws = scale, (scale,), window_size
        self.register_buffer("rgb_mean", torch.tensor(DIV2K_RGB_MEAN).view(1, 3, 1, 1), persistent=False)
        self.conv_first = nn.Conv2d(3, embed_dim, 3, padding=1)
        self.embed_norm = nn.LayerNorm(embed_dim)
        self.stages = nn.ModuleList(RSTB(embed_dim, d, h, window_size, mlp_ratio) for d, h in zip(depths, heads))
        self.norm = nn.LayerNorm(embed_dim)
        self.conv_after_body = nn.Conv2d(embed_dim, embed_dim, 3, padding=1)
        self.upsample = nn.Conv2d(embed_dim, 3 * scale * scale, 3, padding=1)
        self.shuffle = nn.PixelShuffle(scale)
        self.apply(self._init)

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            nn.init.zeros_(m.bias)

    def shift_mask(self, nh: int, nw: int, device: torch.device) -> torch.Tensor:
        """The shifted-window attention mask for an nh x nw window grid: windows x N x N, 0 or -100."""
        ws, s = self.ws, self.ws // 2
        hp, wp = nh * ws, nw * ws
        rows = torch.arange(hp, device=device)
        cols = torch.arange(wp, device=device)
        # After a roll by -s, the last window row/column holds pixels from two regions: ids 0, 1, 2 per axis.
        rid = (rows >= hp - ws).long() + (rows >= hp - s).long()
        cid = (cols >= wp - ws).long() + (cols >= wp - s).long()
        region = (rid[:, None] * 3 + cid[None, :])
        win = region.reshape(nh, ws, nw, ws).permute(0, 2, 1, 3).reshape(-1, ws * ws)
        return (win[:, None, :] != win[:, :, None]).float() * -100.0

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        h, w, ws = lr.shape[2], lr.shape[3], self.ws
        nh, nw = h // ws + 1, w // ws + 1  # always pad (1..ws pixels): no size-specialised branch in the graph
        x = F.pad(lr - self.rgb_mean, (0, nw * ws - w, 0, nh * ws - h), mode="replicate")
        feat = self.conv_first(x)
        y = self.embed_norm(feat.permute(0, 2, 3, 1))  # B x H x W x C tokens
        mask = self.shift_mask(nh, nw, lr.device).to(lr.dtype)  # fp16/bf16 runs add it to half-precision scores
        for stage in self.stages:
            y = stage(y, nh, nw, mask)
        y = self.norm(y).permute(0, 3, 1, 2)
        out = self.shuffle(self.upsample(self.conv_after_body(y) + feat)) + self.rgb_mean
        return out[:, :, : h * self.scale, : w * self.scale]
