"""Losses: pixel losses registered by name (``loss: l1`` in a recipe), and the distillation objective
shared by the stages that learn from a teacher (distill, prune fine-tunes, qat)."""

from __future__ import annotations

import torch
from torch import nn

from .models import model_scales, outputs_by_scale
from .registry import Registry

__all__ = ["LOSSES", "Charbonnier", "LumaL1", "distill_loss"]

LOSSES: Registry = Registry("loss")


@LOSSES.register("l1")
def l1() -> torch.nn.Module:
    return torch.nn.L1Loss()


@LOSSES.register("mse")
def mse() -> torch.nn.Module:
    return torch.nn.MSELoss()


class Charbonnier(torch.nn.Module):
    """sqrt((x - y)^2 + eps^2), a smooth L1 (Lai et al., LapSRN)."""

    def __init__(self, eps: float = 1e-3):
        super().__init__()
        self.eps = eps

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.sqrt((x - y) ** 2 + self.eps ** 2).mean()


@LOSSES.register("charbonnier")
def charbonnier(eps: float = 1e-3) -> torch.nn.Module:
    return Charbonnier(eps)


# BT.601 (the protocol's rgb2ycbcr), RGB in [0, 1]: rows Y, Cb, Cr without the offsets (they cancel in a difference).
_YCBCR = ((65.481, 128.553, 24.966), (-37.797, -74.203, 112.0), (112.0, -93.786, -18.214))


class LumaL1(torch.nn.Module):
    """L1 on BT.601 luminance plus ``chroma_weight`` times L1 on the two chrominances (each on the [0, 1] scale
    of its 8-bit range: Y spans 219 levels, Cb and Cr 224). PSNR-Y, the papers' measure, sees only the first
    term; plain ``l1`` on RGB gives the chroma errors, invisible to it, the same weight as luminance."""

    def __init__(self, chroma_weight: float = 0.25):
        super().__init__()
        if chroma_weight < 0:
            raise ValueError(f"chroma_weight must be >= 0, got {chroma_weight}")
        self.chroma_weight = float(chroma_weight)
        m = torch.tensor(_YCBCR, dtype=torch.float64) / torch.tensor([[219.0], [224.0], [224.0]], dtype=torch.float64)
        self.register_buffer("matrix", m.view(3, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        d = torch.nn.functional.conv2d(x - y, self.matrix.to(device=x.device, dtype=x.dtype)).abs().mean(dim=(0, 2, 3))
        return d[0] + self.chroma_weight * (d[1] + d[2]) / 2


@LOSSES.register("l1_luma")
def l1_luma(chroma_weight: float = 0.25) -> torch.nn.Module:
    return LumaL1(chroma_weight)


@LOSSES.register("l1_y")
def l1_y() -> torch.nn.Module:
    """Luminance only: chroma is left to whatever the network's colour paths do (the anchor's input colours)."""
    return LumaL1(0.0)


def distill_loss(criterion: nn.Module, teacher: nn.Module | None, alpha: float,
                 scales: tuple[int, ...] = (), weights: tuple[float, ...] = (),
                 features: nn.Module | None = None, feature_weight: float = 0.0):
    """``loss_fn(sr, lr, hr)`` mixing HR and teacher targets (HR only without a teacher or with alpha 0).

    ``hr`` is the sampler's target (a tensor, or {scale: tensor}), or ``{"hr": ..., "teacher": {scale:
    tensor}}`` when the teacher's outputs come from a cache; otherwise the teacher runs on ``lr`` here.
    For a multi-output student (``scales``) the loss is summed over outputs; each output scale the teacher
    also emits gets the teacher term, the others are supervised by HR alone."""
    scales = scales or (None,)
    w = weights or (1.0,) * len(scales)
    t_scales = model_scales(teacher) if teacher is not None else ()
    if teacher is not None:
        teacher.eval()

    def loss_fn(sr, lr: torch.Tensor, hr) -> torch.Tensor:
        targets: dict = {}
        if isinstance(hr, dict) and "teacher" in hr:
            targets, hr = hr["teacher"], hr["hr"]
        elif teacher is not None and (alpha > 0 or features is not None):
            with torch.inference_mode(features is None):
                t_out = outputs_by_scale(teacher(lr), t_scales)
            targets = {s: t.detach().clamp(0, 1).clone() for s, t in t_out.items()} if alpha > 0 else {}
        srs = sr if isinstance(sr, tuple) else (sr,)
        hrs = [hr[s] for s in scales] if isinstance(hr, dict) else [hr]
        total = 0.0
        for wi, s, o, h in zip(w, scales, srs, hrs):
            t = targets.get(s if s is not None else t_scales[0]) if targets else None
            term = criterion(o, h) if t is None else (1 - alpha) * criterion(o, h) + alpha * criterion(o, t)
            total = total + wi * term
        if features is not None and feature_weight > 0:
            total = total + feature_weight * features.loss()
        return total
    return loss_fn
