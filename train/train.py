"""The ``train`` stage: build ``cfg.model`` at the recipe's scale, fit it on HR patches, save the artifact."""

from __future__ import annotations

import torch

from edgesr.artifacts import Artifact, Candidate
from edgesr.config import TrainConfig
from edgesr.data.degradations import degradation_record, training_record
from edgesr.fitting import (config_fingerprint, distributed, fit, fit_metrics, fit_options, init_weights, sampler_for,
                            scale_loss)
from edgesr.losses import LOSSES
from edgesr.modelio import model_candidate
from edgesr.models import build_model, model_scales
from edgesr.stages import MODEL, StageContext, register_stage

__all__ = ["train_stage"]


@register_stage("train", TrainConfig, makes=MODEL, takes={"init_from": MODEL}, trains=True)
def train_stage(cfg: TrainConfig, ctx: StageContext, init_from: Artifact | None = None) -> Candidate | None:
    """Multi-output models are supervised at every output; ``init_from`` (an earlier stage) warm-starts the
    layers it shares with the model (the curriculum: a x2 model's trunk starts its x2+x4 successor)."""
    arch = {**cfg.model, "scale": ctx.scale}
    torch.manual_seed(ctx.seed)
    model = build_model(arch)
    init_record = init_weights(model, init_from) if init_from is not None else None
    sampler = sampler_for(model, ctx.train_pairs, ctx.scale, ctx.patch_size, cfg.batch_size, ctx.seed,
                          ctx.min_patch_std, ctx.degradation)
    loss_fn = scale_loss(LOSSES.build({"type": cfg.loss}), model_scales(model), cfg.scale_weights)
    result = fit(model, sampler, loss_fn=loss_fn, val_pairs=ctx.val_pairs, scale=ctx.scale, val_degraded=ctx.val_degraded,
                 checkpoint_dir=ctx.out.with_name(ctx.out.name + ".ckpt"),
                 fingerprint=config_fingerprint(arch, cfg, ctx.patch_size, ctx.min_patch_std, ctx.seed,
                                                [p.name for p in ctx.train_pairs],
                                                init_from.hash if init_from else None,
                                                *training_record(ctx.degradation, ctx.val_degraded)),
                 desc=f"train {ctx.name}", **fit_options(cfg))
    if distributed()[0] != 0:
        return None
    return model_candidate(ctx.staging, result.model, out=ctx.out, name=ctx.name, arch=arch, parent=init_from, metrics=fit_metrics(result),
                      transforms=[{"type": "init_from", **init_record}] if init_record else [],
                      extra={"training": {"loss": cfg.loss, "lr": cfg.lr, "batch_size": cfg.batch_size,
                                          "patch_size": ctx.patch_size, "seed": ctx.seed, "ema_decay": cfg.ema_decay,
                                          "schedule": cfg.schedule, "max_minutes": cfg.max_minutes,
                                          "degradation": degradation_record(ctx.degradation)[0]
                                          if ctx.degradation != "bicubic" else "bicubic",
                                          **({"valid_degradations": list(ctx.val_degraded)} if ctx.val_degraded else {})}})
