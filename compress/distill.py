"""Output distillation: the student learns from the HR image and from the teacher's SR output.

``loss = (1 - alpha) L(student(lr), hr) + alpha L(student(lr), teacher(lr))``. The teacher runs in
inference mode on each training batch; student and teacher see the same patches.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from edgesr.artifacts import Artifact, load_model, save_model
from edgesr.config import DistillConfig
from edgesr.data.datasets import ImagePair
from edgesr.models import build_model, model_scales, outputs_by_scale
from edgesr.train.loop import config_fingerprint, distributed, fit, fit_metrics, fit_options, sampler_for
from edgesr.train.losses import LOSSES

__all__ = ["distill_loss", "distill_stage"]


def distill_loss(criterion: nn.Module, teacher: nn.Module | None, alpha: float,
                 scales: tuple[int, ...] = (), weights: tuple[float, ...] = ()):
    """``loss_fn(sr, lr, hr)`` mixing HR and teacher targets (HR only without a teacher or with alpha 0).

    For a multi-output student (``scales``) the loss is summed over outputs; each output scale the teacher
    also emits gets the teacher term, the others are supervised by HR alone."""
    scales = scales or (None,)
    w = weights or (1.0,) * len(scales)
    t_scales = model_scales(teacher) if teacher is not None else ()
    if teacher is not None:
        teacher.eval()

    def loss_fn(sr, lr: torch.Tensor, hr) -> torch.Tensor:
        srs = sr if isinstance(sr, tuple) else (sr,)
        hrs = [hr[s] for s in scales] if isinstance(hr, dict) else [hr]
        targets: dict = {}
        if teacher is not None and alpha > 0:
            with torch.inference_mode():
                t_out = outputs_by_scale(teacher(lr), t_scales)
            targets = {s: t.clamp(0, 1).clone() for s, t in t_out.items()}
        total = 0.0
        for wi, s, o, h in zip(w, scales, srs, hrs):
            t = targets.get(s if s is not None else t_scales[0]) if targets else None
            term = criterion(o, h) if t is None else (1 - alpha) * criterion(o, h) + alpha * criterion(o, t)
            total = total + wi * term
        return total
    return loss_fn


def distill_stage(cfg: DistillConfig, *, name: str, out: Path, teacher: Artifact, train_pairs: list[ImagePair],
                  val_pairs: list[ImagePair], scale: int, patch_size: int, min_patch_std: float,
                  seed: int) -> Artifact:
    """The ``distill`` stage: train ``cfg.model`` from scratch against HR and the teacher artifact."""
    if scale not in teacher.manifest["scales"]:
        raise ValueError(f"{teacher.path}: teacher emits x{teacher.manifest['scales']}, the recipe is x{scale}")
    teacher_model = load_model(teacher)
    arch = {**cfg.model, "scale": scale}
    torch.manual_seed(seed)
    student = build_model(arch)
    sampler = sampler_for(student, train_pairs, scale, patch_size, cfg.batch_size, seed, min_patch_std)
    scales = model_scales(student)
    loss_fn = distill_loss(LOSSES.build({"type": cfg.loss}), teacher_model, cfg.alpha, scales, cfg.scale_weights)
    result = fit(student, sampler, loss_fn=loss_fn, val_pairs=val_pairs, scale=scale,
                 checkpoint_dir=out.with_name(out.name + ".ckpt"), desc=f"distill {name}",
                 fingerprint=config_fingerprint(arch, cfg, teacher.hash, patch_size, min_patch_std, seed,
                                                [p.name for p in train_pairs]), **fit_options(cfg))
    if distributed()[0] != 0:
        return None
    return save_model(out, result.model, name=name, arch=arch, parent=teacher, transforms=[
        {"type": "distill", "teacher": teacher.manifest.get("name"), "teacher_hash": teacher.hash,
         "alpha": cfg.alpha, "loss": cfg.loss}], metrics=fit_metrics(result))
