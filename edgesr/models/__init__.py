"""Architectures: one per file, registered by name, built from ``{"type": name, **kwargs}``."""

from __future__ import annotations

from ..registry import Registry

MODELS: Registry = Registry("architecture")

# Explicit imports register each architecture (one file each).
from . import abpn, edsr  # noqa: E402,F401


def build_model(spec: dict):
    """Build an architecture from ``{"type": name, **hyper-parameters}``."""
    return MODELS.build(spec)


def count_macs(model, hw: tuple[int, int] = (360, 640)) -> tuple[int, int]:
    """(multiply-accumulates, parameters) of ``model`` for one 1 x 3 x H x W input, counted by torch-pruning."""
    import torch
    import torch_pruning as tp

    macs, params = tp.utils.count_ops_and_params(model, torch.zeros(1, 3, *hw))
    return int(macs), int(params)


__all__ = ["MODELS", "build_model", "count_macs"]
