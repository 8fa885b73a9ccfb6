"""Quality harness: the protocol (edgesr.metrics) over evaluation sets, for any Backend."""

from __future__ import annotations

from edgesr.data.datasets import ImagePair
from edgesr.metrics import evaluate_pairs
from edgesr.runtime.base import Backend
from edgesr.runtime.upscaler import Upscaler

__all__ = ["measure_quality", "measure_degradations"]


def measure_quality(backend: Backend, sets: dict[str, list[ImagePair]], scale: int, size_multiple: int = 1,
                    show_progress: bool = False) -> dict:
    """{set name: {psnr, ssim, per_image}} for ``backend`` on each evaluation set (``show_progress``: a bar per
    set, images done and ETA; plain lines every 10 % when the output is not a terminal)."""
    from edgesr.progress import progress_bar

    up = Upscaler(backend, size_multiple=size_multiple)
    out = {}
    for set_name, pairs in sets.items():
        with progress_bar(f"eval {set_name}", len(pairs), enabled=show_progress) as bar:
            def items():
                for i, p in enumerate(pairs):
                    yield p.name, p.lr, p.hr
                    bar.update(i + 1)  # (resumed once the image before was scored)

            res = evaluate_pairs(up.upscale_float, items(), scale)
            bar.update(len(pairs))
        out[set_name] = res.as_dict()
    return out


def measure_degradations(backend: Backend, sets: dict[str, list[ImagePair]], scale: int, degradations,
                         size_multiple: int = 1, show_progress: bool = False) -> dict:
    """{set: {degradation: {psnr, ssim, per_image, bicubic_psnr, gain_db}}}: the model on LR made each way,
    beside the protocol's bicubic upscaling of that same LR (the baseline a user would otherwise get)."""
    from edgesr.data.bicubic import imresize
    from edgesr.data.degradations import degraded_sets

    out: dict = {name: {} for name in sets}
    for d in degradations:
        dsets = degraded_sets(sets, scale, d)
        model = measure_quality(backend, dsets, scale, size_multiple, show_progress)
        for name, pairs in dsets.items():
            base = evaluate_pairs(lambda lr: imresize(lr, scale), ((p.name, p.lr, p.hr) for p in pairs), scale,
                                  with_ssim=False)
            out[name][d] = {**model[name], "bicubic_psnr": base.psnr, "gain_db": model[name]["psnr"] - base.psnr}
    return out
