"""Structural re-parameterization shared by the students that train a conv as several linear branches and
deploy it as one plain 3x3 conv (MSRep's RepConv, SPAN's Conv3XC)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["MergedConv", "copy_merged"]


class MergedConv(nn.Module):
    """A 3x3 conv (padding 1) that trains as branches and runs as their sum. With ``deploy`` the base builds
    the plain ``self.conv`` and the subclass stops there; otherwise the subclass builds its branches and
    implements ``merged()`` (the single kernel and bias, differentiable) and ``branches(x)`` (the branches
    run one by one: the reference ``merged`` is checked against). Training runs the merged kernel: one
    conv's cost, the branches' output and gradients."""

    def __init__(self, cin: int, cout: int, deploy: bool):
        super().__init__()
        self.cin, self.cout, self.deploy = cin, cout, deploy
        if deploy:
            self.conv = nn.Conv2d(cin, cout, 3, padding=1)

    def merged(self) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def branches(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.deploy:
            return self.conv(x)
        w, b = self.merged()
        return F.conv2d(x, w, b, padding=1)

    def forward_branches(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) if self.deploy else self.branches(x)


def copy_merged(trained: nn.Module, plain: nn.Module) -> None:
    """Write every :class:`MergedConv` of ``trained`` into the plain conv at the same path of ``plain`` (its
    deploy form, built with the same hyper-parameters)."""
    with torch.no_grad():
        for name, mod in trained.named_modules():
            if isinstance(mod, MergedConv):
                w, b = mod.merged()
                target = plain.get_submodule(name).conv
                target.weight.copy_(w)
                target.bias.copy_(b)
