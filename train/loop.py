"""The fit loop: Adam, cosine schedule, validation PSNR through the shared protocol, atomic checkpoints, resume.

A run interrupted at any point resumes from ``checkpoint_dir/last.pt`` and continues exactly as the
uninterrupted run would have: the batch for step ``i`` is drawn from a generator seeded by ``(seed, i)``
and the optimiser and scheduler states are restored.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from edgesr.artifacts import Artifact, save_model
from edgesr.config import TrainConfig
from edgesr.data.datasets import ImagePair
from edgesr.data.patches import PatchSampler
from edgesr.imaging import image_to_tensor
from edgesr.metrics import evaluate_pairs
from edgesr.models import build_model
from edgesr.progress import progress_bar

from .losses import LOSSES

__all__ = ["FitResult", "fit", "train_stage", "validate", "torch_upscaler"]

LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class FitResult:
    model: nn.Module
    steps: int
    seconds: float
    best_psnr: float
    best_step: int
    history: list[dict] = field(default_factory=list)


def torch_upscaler(model: nn.Module) -> Callable[[np.ndarray], np.ndarray]:
    """uint8 LR image -> float SR image in [0, 1], with a PyTorch model (the protocol's upscale callable)."""
    def run(lr: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            sr = model(image_to_tensor(lr))
        return sr[0].clamp(0, 1).numpy().transpose(1, 2, 0)
    return run


def validate(model: nn.Module, pairs: list[ImagePair], scale: int, with_ssim: bool = False) -> float:
    was_training = model.training
    model.eval()
    res = evaluate_pairs(torch_upscaler(model), ((p.name, p.lr, p.hr) for p in pairs), scale, with_ssim=with_ssim)
    model.train(was_training)
    return res.psnr


def _atomic_save(obj: dict, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def fit(model: nn.Module, sampler: PatchSampler, *, steps: int, lr: float, loss_fn: LossFn,
        val_pairs: list[ImagePair], scale: int, lr_min_ratio: float = 0.01, grad_clip: float = 0.0,
        val_every: int = 200, checkpoint_dir: Path | None = None, checkpoint_every: int = 100,
        resume: bool = True, fingerprint: str = "", desc: str = "train", stop_after: int | None = None) -> FitResult:
    """Train ``model`` for ``steps`` steps; returns the weights with the best validation PSNR.

    ``loss_fn(sr, lr, hr)`` gives the loss. ``stop_after`` ends the loop early after that many steps (a
    checkpoint is written), as an interruption would; the next call with ``resume`` continues the run.
    """
    opt = torch.optim.Adam(model.parameters(), lr=lr, betas=(0.9, 0.999))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(steps, 1), eta_min=lr * lr_min_ratio)
    start, history = 0, []
    best = {"psnr": float("-inf"), "step": 0, "state": None}
    ckpt = checkpoint_dir / "last.pt" if checkpoint_dir else None
    if ckpt is not None and resume and ckpt.is_file():
        state = torch.load(ckpt, weights_only=True)
        if state.get("fingerprint") != fingerprint:
            raise RuntimeError(f"{ckpt}: checkpoint was written by a different configuration (model, data or "
                               "schedule changed). Delete it to start over, or restore the configuration.")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optim"])
        sched.load_state_dict(state["sched"])
        start, history = int(state["step"]), json.loads(state["history"])
        best = {"psnr": float(state["best_psnr"]), "step": int(state["best_step"]), "state": state["best_state"]}
    if checkpoint_dir is not None:
        checkpoint_dir.mkdir(parents=True, exist_ok=True)

    def checkpoint(step: int) -> None:
        if ckpt is None:
            return
        _atomic_save({"model": model.state_dict(), "optim": opt.state_dict(), "sched": sched.state_dict(),
                      "step": step, "history": json.dumps(history), "best_psnr": best["psnr"],
                      "best_step": best["step"], "best_state": best["state"] or model.state_dict(),
                      "fingerprint": fingerprint}, ckpt)

    def run_validation(step: int) -> float:
        psnr = validate(model, val_pairs, scale)
        history.append({"step": step, "val_psnr": round(psnr, 4)})
        if psnr > best["psnr"]:
            best.update(psnr=psnr, step=step, state={k: v.detach().clone() for k, v in model.state_dict().items()})
        return psnr

    t0 = time.perf_counter()
    model.train()
    end = steps if stop_after is None else min(steps, start + stop_after)
    running = None
    with progress_bar(desc, total=steps, completed=start) as bar:
        for step in range(start, end):
            lr_b, hr_b = sampler.batch(step)
            sr = model(lr_b)
            loss = loss_fn(sr, lr_b, hr_b)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            opt.step()
            sched.step()
            running = loss.item() if running is None else 0.95 * running + 0.05 * loss.item()
            done = step + 1
            info = f"loss {running:.4f}"
            if done % val_every == 0 or done == steps:
                info += f"  val {run_validation(done):.2f} dB"
            bar.update(done, info)
            if done % checkpoint_every == 0 or done == end:
                checkpoint(done)
    if end == steps and (not history or history[-1]["step"] != steps):
        run_validation(steps)
    if best["state"] is not None:
        model.load_state_dict(best["state"])
    model.eval()
    return FitResult(model, end, time.perf_counter() - t0, best["psnr"], best["step"], history)


def config_fingerprint(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def train_stage(cfg: TrainConfig, *, name: str, out: Path, train_pairs: list[ImagePair],
                val_pairs: list[ImagePair], scale: int, patch_size: int, min_patch_std: float,
                seed: int) -> Artifact:
    """The ``train`` stage: build ``cfg.model`` at ``scale``, fit it on HR patches, save the artifact."""
    arch = {**cfg.model, "scale": scale}
    torch.manual_seed(seed)
    model = build_model(arch)
    sampler = PatchSampler(train_pairs, scale, patch_size, cfg.batch_size, seed=seed, min_std=min_patch_std)
    criterion = LOSSES.build({"type": cfg.loss})
    result = fit(model, sampler, steps=cfg.steps, lr=cfg.lr, lr_min_ratio=cfg.lr_min_ratio,
                 loss_fn=lambda sr, lr, hr: criterion(sr, hr), val_pairs=val_pairs, scale=scale,
                 grad_clip=cfg.grad_clip, val_every=cfg.val_every, checkpoint_dir=out.with_name(out.name + ".ckpt"),
                 checkpoint_every=cfg.checkpoint_every, resume=cfg.resume,
                 fingerprint=config_fingerprint(arch, cfg, patch_size, min_patch_std, seed,
                                                [p.name for p in train_pairs]),
                 desc=f"train {name}")
    return save_model(out, result.model, name=name, arch=arch, metrics={
        "val_psnr": round(result.best_psnr, 4), "best_step": result.best_step, "train_steps": result.steps,
        "train_seconds": round(result.seconds, 1), "history": result.history},
        extra={"training": {"loss": cfg.loss, "lr": cfg.lr, "batch_size": cfg.batch_size,
                            "patch_size": patch_size, "seed": seed}})
