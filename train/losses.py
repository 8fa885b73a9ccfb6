"""Pixel losses, registered by name (``loss: l1`` in a recipe)."""

from __future__ import annotations

import torch

from edgesr.registry import Registry

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
