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
from edgesr.data.patches import PatchSampler
from edgesr.models import build_model
from edgesr.train.loop import config_fingerprint, fit
from edgesr.train.losses import LOSSES

__all__ = ["distill_loss", "distill_stage"]


def distill_loss(criterion: nn.Module, teacher: nn.Module | None, alpha: float):
    """``loss_fn(sr, lr, hr)`` mixing HR and teacher targets (HR only without a teacher or with alpha 0)."""
    if teacher is None or alpha == 0:
        return lambda sr, lr, hr: criterion(sr, hr)
    teacher.eval()

    def loss_fn(sr: torch.Tensor, lr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            target = teacher(lr).clamp(0, 1)
        return (1 - alpha) * criterion(sr, hr) + alpha * criterion(sr, target.clone())
    return loss_fn


def distill_stage(cfg: DistillConfig, *, name: str, out: Path, teacher: Artifact, train_pairs: list[ImagePair],
                  val_pairs: list[ImagePair], scale: int, patch_size: int, min_patch_std: float,
                  seed: int) -> Artifact:
    """The ``distill`` stage: train ``cfg.model`` from scratch against HR and the teacher artifact."""
    if teacher.scale != scale:
        raise ValueError(f"{teacher.path}: teacher is x{teacher.scale}, the recipe is x{scale}")
    teacher_model = load_model(teacher)
    arch = {**cfg.model, "scale": scale}
    torch.manual_seed(seed)
    student = build_model(arch)
    sampler = PatchSampler(train_pairs, scale, patch_size, cfg.batch_size, seed=seed, min_std=min_patch_std)
    loss_fn = distill_loss(LOSSES.build({"type": cfg.loss}), teacher_model, cfg.alpha)
    result = fit(student, sampler, steps=cfg.steps, lr=cfg.lr, lr_min_ratio=cfg.lr_min_ratio, loss_fn=loss_fn,
                 val_pairs=val_pairs, scale=scale, grad_clip=cfg.grad_clip, val_every=cfg.val_every,
                 checkpoint_dir=out.with_name(out.name + ".ckpt"), checkpoint_every=cfg.checkpoint_every,
                 resume=cfg.resume, desc=f"distill {name}",
                 fingerprint=config_fingerprint(arch, cfg, teacher.hash, patch_size, min_patch_std, seed,
                                                [p.name for p in train_pairs]))
    return save_model(out, result.model, name=name, arch=arch, parent=teacher, transforms=[
        {"type": "distill", "teacher": teacher.manifest.get("name"), "teacher_hash": teacher.hash,
         "alpha": cfg.alpha, "loss": cfg.loss}], metrics={
        "val_psnr": round(result.best_psnr, 4), "best_step": result.best_step, "train_steps": result.steps,
        "train_seconds": round(result.seconds, 1), "history": result.history})
