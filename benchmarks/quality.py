"""Quality harness: the protocol (edgesr.metrics) over evaluation sets, for any Backend."""

from __future__ import annotations

from edgesr.data.datasets import ImagePair
from edgesr.metrics import evaluate_pairs
from edgesr.runtime.base import Backend
from edgesr.runtime.upscaler import Upscaler

__all__ = ["measure_quality"]


def measure_quality(backend: Backend, sets: dict[str, list[ImagePair]], scale: int, size_multiple: int = 1) -> dict:
    """{set name: {psnr, ssim, per_image}} for ``backend`` on each evaluation set."""
    up = Upscaler(backend, size_multiple=size_multiple)
    out = {}
    for set_name, pairs in sets.items():
        res = evaluate_pairs(up.upscale_float, ((p.name, p.lr, p.hr) for p in pairs), scale)
        out[set_name] = res.as_dict()
    return out
