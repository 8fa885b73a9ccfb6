"""Architectures: one per file, registered by name, built from ``{"type": name, **kwargs}``."""

from __future__ import annotations

from ..registry import Registry

MODELS: Registry = Registry("architecture")

# Explicit imports register each architecture (one file each).
from . import (abpn, edsr, edsr_msa, espcn, fsrcnn, lapsrn, ms_lapsrn, msrep, rcan, rdn, srcnn,  # noqa: E402,F401
               meta_sr, rlfn, span, srresnet, swinir, vdsr, imdn, carn, rfdn)


def build_model(spec: dict):
    """Build an architecture from ``{"type": name, **hyper-parameters}``."""
    return MODELS.build(spec)


def model_scales(model) -> tuple[int, ...]:
    """The output scales of a model, in the order its forward returns them."""
    return tuple(getattr(model, "scales", (model.scale,)))


def pick_output(out, scales: tuple[int, ...], scale: int):
    """The output for ``scale`` from a forward result (a tensor for one scale, a tuple for several)."""
    if scale not in scales:
        raise ValueError(f"the model emits x{list(scales)}, not x{scale}")
    return out if len(scales) == 1 else out[scales.index(scale)]


def outputs_by_scale(out, scales: tuple[int, ...]) -> dict[int, object]:
    return {scales[0]: out} if len(scales) == 1 else dict(zip(scales, out))


def deploy_form(model, arch: dict) -> tuple[object, dict]:
    """The inference form of a model and its architecture record: re-parameterizable models collapse their
    training-time branches into plain convolutions (``reparameterized()``); others are returned as is."""
    if hasattr(model, "reparameterized"):
        plain, delta = model.reparameterized()
        return plain, {**arch, **delta}
    return model, arch


def select_outputs(model, scales: tuple[int, ...]):
    """A module returning only the outputs of ``model`` for ``scales`` (one tensor, or a tuple in order)."""
    import torch

    have = model_scales(model)
    missing = [s for s in scales if s not in have]
    if missing:
        raise ValueError(f"the model emits x{list(have)}; x{missing} were asked for")
    if tuple(scales) == have:
        return model

    class _Select(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner, self.scales = model, tuple(scales)

        def forward(self, lr):
            out = outputs_by_scale(self.inner(lr), have)
            picked = tuple(out[s] for s in self.scales)
            return picked[0] if len(picked) == 1 else picked

    return _Select().eval()


def count_macs(model, hw: tuple[int, int] = (360, 640)) -> tuple[int, int]:
    """(multiply-accumulates, parameters) of ``model`` for one 1 x 3 x H x W input, counted by torch-pruning."""
    import torch
    import torch_pruning as tp

    macs, params = tp.utils.count_ops_and_params(model, torch.zeros(1, 3, *hw))
    return int(macs), int(params)


__all__ = ["MODELS", "build_model", "count_macs", "model_scales", "pick_output", "outputs_by_scale",
           "deploy_form", "select_outputs"]
