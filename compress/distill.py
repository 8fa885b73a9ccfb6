"""Distillation: the student learns from the HR image, the teacher's SR output, and optionally its features.

``loss = (1 - alpha) L(student(lr), hr) + alpha L(student(lr), teacher(lr))
         + feature_weight * sum_pairs L1(adapter(student_feat), teacher_feat)``

Output distillation reads the teacher's outputs from a cache (``TeacherCache``): the batch of step ``i``
is fully determined by the sampler's seed, so the teacher's output for it is computed once, stored in
8 bits (image precision) under a key made of the teacher's content hash and the sampling parameters, and
read back by every later run: resumes, alpha sweeps, the same student with another budget. Feature
distillation hooks the named layers of both networks; a 1x1 conv adapter per pair maps the student's
channels to the teacher's (trained with the student, not saved with it). Multi-output students get the
loss on each output scale; the teacher term applies to the scales the teacher emits.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgesr.artifacts import Artifact, ArtifactError, Candidate
from edgesr.config import TrainConfig
from edgesr.data.degradations import degradation_record, training_record
from edgesr.data.patches import PatchSampler
from edgesr.fitting import (config_fingerprint, distributed, fit, fit_metrics, fit_options, init_weights,
                            resolve_device, sampler_for)
from edgesr.losses import LOSSES, distill_loss
from edgesr.modelio import load_model, model_candidate
from edgesr.models import build_model, model_scales, outputs_by_scale
from edgesr.progress import console
from edgesr.stages import MODEL, StageContext, register_stage

__all__ = ["DistillConfig", "distill_stage", "TeacherCache", "CachedTeacherSampler", "FeatureDistiller"]


@dataclass(frozen=True, kw_only=True)
class DistillConfig(TrainConfig):
    """A training run whose targets mix HR and the teacher's output."""

    teacher: str
    alpha: float = 0.5
    """Weight of the teacher term: loss = (1 - alpha) L(sr, hr) + alpha L(sr, teacher(lr))."""
    cache_teacher: bool = True
    """Compute the teacher's outputs for every training batch once and keep them on disk (8-bit, keyed by
    the teacher's content hash and the patch sampling), so re-runs and sweeps skip the teacher."""
    cache_limit_gb: float = 8.0
    """Do not cache (run the teacher live, with a message) when the cache would exceed this size."""
    feature_layers: dict[str, str] = field(default_factory=dict)
    """Feature distillation: student module name -> teacher module name; each pair is matched through a
    learned 1x1 conv adapter on the student side (the teacher then runs live)."""
    feature_weight: float = 0.0
    """Weight of the feature term (L1 between adapted student and teacher features)."""
    teacher_lr: Literal["clean", "degraded"] = field(default="clean", metadata={"fingerprint": "when_set"})
    """With ``data.degradation: general``, the LR the teacher sees. ``clean``: each patch's protocol LR (a teacher
    trained on the protocol shows the student what a clean frame becomes). ``degraded``: the student's own LR (a
    teacher trained on the same mix, e.g. a general model distilled into a smaller one); its cached outputs are
    keyed by the mix too."""



class TeacherCache:
    """Teacher outputs for the batches of ``sampler``, one 8-bit memmap per output scale, filled lazily.

    The key is the teacher's content hash plus everything that decides the batches (seed, patch and batch
    size, scale, targets, augmentation, smooth-patch threshold, image names, process slice). A step is
    marked filled only after its outputs are flushed, so an interrupted run never reads a half-written
    batch."""

    def __init__(self, root: Path, teacher: nn.Module, teacher_hash: str, sampler: PatchSampler, steps: int,
                 part: tuple[int, int] = (0, 1), teacher_lr: str = "clean"):
        self.teacher, self.sampler, self.steps, self.part = teacher.eval(), sampler, steps, part
        degraded = getattr(sampler, "degradation", "bicubic") != "bicubic"
        self.clean = degraded and teacher_lr == "clean"  # the teacher sees the protocol's LR, the student not
        self.scales = [s for s in model_scales(teacher) if s in sampler.targets]
        if not self.scales:
            raise ValueError(f"the teacher emits x{list(model_scales(teacher))}, none of the student's "
                             f"x{list(sampler.targets)}")
        key = {"teacher": teacher_hash, "seed": sampler.seed, "patch": sampler.lr_patch, "batch": sampler.batch_size,
               "scale": sampler.scale, "targets": list(sampler.targets), "augment": sampler.augment,
               "min_std": sampler.min_std, "images": [p.name for p in sampler.pairs], "part": list(part),
               "steps": steps,
               **({"teacher_lr": degradation_record(sampler.degradation)} if degraded and not self.clean else {})}
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
        self.dir = root / digest
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "key.json").write_text(json.dumps(key, indent=1))
        per = sampler.batch_size // part[1]
        p = sampler.lr_patch
        self.maps = {}
        for s in self.scales:
            path = self.dir / f"x{s}.u8"
            shape = (steps, per, 3, p * s, p * s)
            mode = "r+" if path.is_file() and path.stat().st_size == int(np.prod(shape)) else "w+"
            self.maps[s] = np.memmap(path, dtype=np.uint8, mode=mode, shape=shape)
        flags = self.dir / "filled.npy"
        self.filled = np.load(flags) if flags.is_file() else np.zeros(steps, dtype=bool)
        if self.filled.shape != (steps,):
            self.filled = np.zeros(steps, dtype=bool)
        self.hits = self.misses = 0

    @staticmethod
    def size_bytes(sampler: PatchSampler, steps: int, scales: list[int]) -> int:
        p = sampler.lr_patch
        return int(sum(steps * sampler.batch_size * 3 * (p * s) ** 2 for s in scales))

    def get(self, step: int, lr: torch.Tensor) -> dict[int, torch.Tensor]:
        if self.filled[step]:
            self.hits += 1
            return {s: torch.from_numpy(self.maps[s][step].astype(np.float32) / 255.0) for s in self.scales}
        self.misses += 1
        dev = next(self.teacher.parameters()).device
        with torch.inference_mode():
            out = outputs_by_scale(self.teacher(lr.to(dev)), model_scales(self.teacher))
        result = {}
        for s in self.scales:
            q = np.round(out[s].clamp(0, 1).float().cpu().numpy() * 255.0).astype(np.uint8)
            self.maps[s][step] = q
            result[s] = torch.from_numpy(q.astype(np.float32) / 255.0)
        for m in self.maps.values():
            m.flush()
        self.filled[step] = True
        if self.misses % 50 == 0 or step == self.steps - 1:
            self.save_flags()
        return result

    def save_flags(self) -> None:
        tmp = self.dir / ".filled.npy"
        np.save(tmp, self.filled)
        tmp.replace(self.dir / "filled.npy")


class CachedTeacherSampler:
    """A PatchSampler whose targets also carry the teacher's outputs for the batch (from the cache)."""

    parallel = False  # the cache is filled (and its flags kept) in the training process

    def __init__(self, sampler: PatchSampler, cache: TeacherCache):
        self.sampler, self.cache = sampler, cache

    def batch(self, step: int, part: tuple[int, int] = (0, 1)):
        """The student's batch (degraded LR where ``data.degradation`` says so) with the teacher's outputs on
        the same patches' protocol LR: the teacher sees clean frames, the student learns to reach them from
        degraded ones."""
        lr, hr = self.sampler.batch(step, part)
        teacher_lr = self.sampler.batch(step, part, clean=True)[0] if self.cache.clean and not self.cache.filled[step] else lr
        return lr, {"hr": hr, "teacher": self.cache.get(step, teacher_lr)}


class FeatureDistiller(nn.Module):
    """Forward hooks on paired student/teacher layers and a 1x1 conv adapter per pair."""

    def __init__(self, student: nn.Module, teacher: nn.Module, pairs: dict[str, str], probe: torch.Tensor):
        super().__init__()
        self.pairs = dict(pairs)
        self._s_feats: dict[str, torch.Tensor] = {}
        self._t_feats: dict[str, torch.Tensor] = {}
        self._hooks = []
        for s_name, t_name in self.pairs.items():
            for model, name, store in ((student, s_name, self._s_feats), (teacher, t_name, self._t_feats)):
                try:
                    mod = model.get_submodule(name)
                except AttributeError as exc:
                    names = [n for n, _ in model.named_modules() if n][:12]
                    raise ValueError(f"feature_layers: no module {name!r} in {type(model).__name__} "
                                     f"(some names: {names})") from exc
                self._hooks.append(mod.register_forward_hook(
                    lambda m, i, o, key=name, store=store: store.__setitem__(key, o)))
        with torch.no_grad():
            student.eval(), teacher.eval()
            student(probe), teacher(probe)
        student.train()
        self.adapters = nn.ModuleDict({
            s.replace(".", "_"): nn.Conv2d(self._s_feats[s].shape[1], self._t_feats[t].shape[1], 1)
            for s, t in self.pairs.items()})

    def loss(self) -> torch.Tensor:
        total = 0.0
        for s, t in self.pairs.items():
            fs, ft = self.adapters[s.replace(".", "_")](self._s_feats[s]), self._t_feats[t].detach()
            if fs.shape[-2:] != ft.shape[-2:]:
                fs = F.interpolate(fs, size=ft.shape[-2:], mode="bilinear", align_corners=False)
            total = total + F.l1_loss(fs, ft)
        return total / len(self.pairs)

    def remove(self) -> None:
        for h in self._hooks:
            h.remove()


@register_stage("distill", DistillConfig, makes=MODEL, takes={"teacher": MODEL, "init_from": MODEL}, trains=True)
def distill_stage(cfg: DistillConfig, ctx: StageContext, teacher: Artifact,
                  init_from: Artifact | None = None) -> Candidate | None:
    """The ``distill`` stage: train ``cfg.model`` against HR and the teacher artifact, from scratch or from
    ``init_from``'s weights where names and shapes match."""
    name, out, scale, seed = ctx.name, ctx.out, ctx.scale, ctx.seed
    train_pairs, val_pairs, patch_size, min_patch_std = ctx.train_pairs, ctx.val_pairs, ctx.patch_size, ctx.min_patch_std
    if scale not in teacher.manifest["scales"]:
        raise ArtifactError(f"{teacher.path}: teacher emits x{teacher.manifest['scales']}, the recipe is x{scale}; "
                            "distil from a teacher trained at the recipe's scale")
    teacher_model = load_model(teacher).to(resolve_device(cfg.device))
    arch = {**cfg.model, "scale": scale}
    torch.manual_seed(seed)
    student = build_model(arch)
    init_record = init_weights(student, init_from) if init_from is not None else None
    sampler = sampler_for(student, train_pairs, scale, patch_size, cfg.batch_size, seed, min_patch_std,
                          ctx.degradation)
    scales = model_scales(student)
    features = None
    if cfg.feature_layers and cfg.feature_weight > 0:
        probe = sampler.batch(0)[0][:1]
        features = FeatureDistiller(student, teacher_model.cpu(), cfg.feature_layers, probe)
        teacher_model.to(resolve_device(cfg.device))
    loss_fn = distill_loss(LOSSES.build({"type": cfg.loss}), teacher_model, cfg.alpha, scales, cfg.scale_weights,
                           features, cfg.feature_weight)
    source, cache_info = sampler, {"used": False}
    rank, world = distributed()
    if cfg.cache_teacher and cfg.alpha > 0:
        t_scales = [s for s in model_scales(teacher_model) if s in sampler.targets]
        size = TeacherCache.size_bytes(sampler, cfg.steps, t_scales)
        if size > cfg.cache_limit_gb * 1e9:
            console.print(f"distill {name}: teacher cache would take {size / 1e9:.1f} GB (> cache_limit_gb "
                          f"{cfg.cache_limit_gb}); running the teacher live")
            cache_info["reason"] = f"{size / 1e9:.1f} GB over cache_limit_gb"
        else:
            cache = TeacherCache(out.parent / ".teacher_cache", teacher_model, teacher.hash, sampler, cfg.steps,
                                 (rank, world), cfg.teacher_lr)
            source = CachedTeacherSampler(sampler, cache)
            cache_info = {"used": True, "dir": str(cache.dir), "bytes": size,
                          "filled_before": int(cache.filled.sum())}
    if (ctx.degradation != "bicubic" and cfg.teacher_lr == "clean" and cfg.alpha > 0
            and (features is not None or not isinstance(source, CachedTeacherSampler))):
        raise ValueError(f"distill {name}: data.degradation {ctx.degradation!r} distils through the teacher cache, "
                         "where the teacher's outputs come from the same patches' protocol LR (a teacher run live, or "
                         "feature distillation, would see the student's degraded LR). Turn cache_teacher on (or "
                         "raise cache_limit_gb) and leave feature_layers out; or, for a teacher trained on the same "
                         "mix, set teacher_lr: degraded.")
    result = fit(student, source, loss_fn=loss_fn, val_pairs=val_pairs, scale=scale, val_degraded=ctx.val_degraded,
                 checkpoint_dir=out.with_name(out.name + ".ckpt"), desc=f"distill {name}",
                 extra_params=list(features.adapters.parameters()) if features is not None else None,
                 fingerprint=config_fingerprint(arch, cfg, teacher.hash, patch_size, min_patch_std, seed,
                                                [p.name for p in train_pairs],
                                                *training_record(ctx.degradation, ctx.val_degraded),
                                                *([init_from.hash] if init_from is not None else [])),
                 **fit_options(cfg))
    if features is not None:
        features.remove()
    if isinstance(source, CachedTeacherSampler):
        source.cache.save_flags()
        cache_info.update(hits=source.cache.hits, misses=source.cache.misses)
    if rank != 0:
        return None
    return model_candidate(ctx.staging, result.model, out=out, name=name, arch=arch, parent=teacher, transforms=[
        *([{"type": "init_from", **init_record}] if init_record else []),
        {"type": "distill", "teacher": teacher.manifest.get("name"), "teacher_hash": teacher.hash,
         "alpha": cfg.alpha, "loss": cfg.loss, "feature_layers": cfg.feature_layers,
         "feature_weight": cfg.feature_weight, "teacher_cache": cache_info,
         **({"degradation": degradation_record(ctx.degradation)[0], "teacher_lr": cfg.teacher_lr}
            if ctx.degradation != "bicubic" else {})}],
        metrics=fit_metrics(result))
