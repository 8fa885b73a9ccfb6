"""The training engine shared by every stage that trains (train, distill, gan, prune fine-tunes, qat): the fit
loop (Adam, schedules, EMA, gradient clipping, bfloat16 autocast on GPUs, wall-clock budget), validation
PSNR through the shared protocol, patch sampling for single- and multi-output models, atomic checkpoints and
exact resume, data-parallel training under ``torchrun``.

A run interrupted at any point resumes from ``checkpoint_dir/last.pt`` and continues exactly as the
uninterrupted run would have: the batch for step ``i`` is drawn from a generator seeded by ``(seed, i)``
and the optimiser and scheduler states are restored.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn

from .artifacts import Artifact
from .config import TrainConfig
from .data.datasets import ImagePair, make_lr
from .data.patches import PatchSampler
from .errors import EdgesrError, UsageError
from .imaging import image_to_tensor, modcrop
from .metrics import evaluate_pairs
from .modelio import load_model
from .models import model_scales, pick_output
from .progress import progress_bar

__all__ = ["FitResult", "Schedule", "fit", "validate", "torch_upscaler", "scale_loss", "pairs_at_scale",
           "sampler_for", "fit_options", "fit_metrics", "init_weights", "distributed", "resolve_device",
           "config_fingerprint", "step_batches"]

LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


class TrainingDiverged(EdgesrError, RuntimeError):
    """The loss became NaN or Inf: the stage stops instead of shipping unusable weights."""


class CheckpointMismatch(EdgesrError, RuntimeError):
    """A resumable checkpoint left by a run whose configuration differs from this one (a recipe edited after
    an interrupted or finished training): refused, so that two trainings are never mixed."""


@dataclass
class FitResult:
    model: nn.Module
    steps: int
    seconds: float
    best_psnr: float
    best_step: int
    history: list[dict] = field(default_factory=list)
    stopped_by_time: bool = False


def torch_upscaler(model: nn.Module, scale: int | None = None) -> Callable[[np.ndarray], np.ndarray]:
    """uint8 LR image -> float SR image in [0, 1], with a PyTorch model (the protocol's upscale callable)."""
    scales = model_scales(model)
    scale = scale or scales[0]
    device = next(model.parameters()).device

    def run(lr: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            sr = pick_output(model(image_to_tensor(lr).to(device)), scales, scale)
        return sr[0].clamp(0, 1).float().cpu().numpy().transpose(1, 2, 0)
    return run


def validate(model: nn.Module, pairs: list[ImagePair], scale: int, with_ssim: bool = False) -> float:
    was_training = model.training
    model.eval()
    res = evaluate_pairs(torch_upscaler(model, scale), ((p.name, p.lr, p.hr) for p in pairs), scale,
                         with_ssim=with_ssim)
    model.train(was_training)
    return res.psnr


def _atomic_save(obj: dict, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


@dataclass(frozen=True)
class Schedule:
    """Learning rate as a function of training progress in [0, 1] (and of the step, for warm-up)."""

    kind: str = "cosine"
    min_ratio: float = 0.01
    milestones: tuple[float, ...] = (0.5, 0.75)
    gamma: float = 0.5
    warmup_steps: int = 0

    def factor(self, progress: float, step: int) -> float:
        progress = min(max(progress, 0.0), 1.0)
        if self.kind == "cosine":
            f = self.min_ratio + (1 - self.min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
        elif self.kind == "step":
            f = self.gamma ** sum(progress >= m for m in self.milestones)
        elif self.kind == "constant":
            f = 1.0
        else:
            raise ValueError(f"unknown schedule {self.kind!r}; use cosine, step or constant")
        if self.warmup_steps > 0 and step < self.warmup_steps:
            f *= (step + 1) / self.warmup_steps
        return f


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("device: cuda was asked for, but PyTorch sees no CUDA GPU (torch.cuda.is_available() "
                         "is False); use device: auto or cpu, or install a CUDA build of PyTorch.")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class _Fit:
    """One call of :func:`fit`: the model on its device (DDP-wrapped under torchrun), the optimiser, the EMA, the
    validation history and best weights, and the checkpoint that carries all of them across an interruption."""

    def __init__(self, model: nn.Module, *, lr: float, device: str, amp: bool, ema_decay: float,
                 extra_params: list | None, checkpoint_dir: Path | None, fingerprint: str,
                 val_pairs: list[ImagePair], scale: int, val_degraded: dict[str, list[ImagePair]] | None = None):
        self.rank, self.world = distributed()
        dev = resolve_device(device)
        if self.world > 1 and dev.type == "cuda":
            dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        self.dev, self.model = dev, model.to(dev)
        self.use_amp = amp and dev.type == "cuda"
        self.net: nn.Module = model
        if self.world > 1:
            self.net = nn.parallel.DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)
        self.ema = None
        if ema_decay > 0:
            self.ema = torch.optim.swa_utils.AveragedModel(model, multi_avg_fn=_ema_with_warmup(ema_decay),
                                                           use_buffers=True)
        self.extra = list(extra_params or [])
        for p in self.extra:
            p.data = p.data.to(dev)
        # A model may give some parameters their own learning-rate multiple (``optimizer_groups``: QdqGraph's
        # zero points move in integer steps); the schedule scales every group's rate alike.
        groups = model.optimizer_groups() if hasattr(model, "optimizer_groups") else [{"params": list(model.parameters())}]
        groups = [g for g in groups if g["params"]] + ([{"params": self.extra}] if self.extra else [])
        self.opt = torch.optim.Adam(groups, lr=lr, betas=(0.9, 0.999))
        self.history: list[dict] = []
        self.best = {"psnr": float("-inf"), "score": float("-inf"), "step": 0, "state": None}
        self.checkpoint_dir, self.fingerprint = checkpoint_dir, fingerprint
        self.ckpt = checkpoint_dir / "last.pt" if checkpoint_dir else None
        self.val_pairs, self.scale = val_pairs, scale
        # A multi-scale model is validated on every head (each on the same HR images, LR made at its scale): the
        # best weights are those of the best mean, so that no head is kept from an early step (the recipe's
        # scale alone would freeze a fresh x4 head at the step where x2 peaked).
        scales = model_scales(model)
        self.val_sets = ({s: val_pairs if s == scale else pairs_at_scale(val_pairs, s) for s in scales}
                         if len(scales) > 1 else None)
        # Validation on LR made several ways (``data.valid_degradations``): the kept weights are those of the best
        # mean over them (``bicubic`` counts as the protocol's score above: the mean over heads where several).
        self.val_degraded = dict(val_degraded) if val_degraded else None

    def evaluated(self) -> nn.Module:
        """The weights validated and kept: the EMA's when there is one."""
        return self.ema.module if self.ema is not None else self.model

    def resume(self) -> tuple[int, float]:
        """Continue from the checkpoint, if any (refused when another configuration wrote it): (step, seconds)."""
        start, elapsed0 = 0, 0.0
        if self.ckpt is not None and self.ckpt.is_file():
            state = torch.load(self.ckpt, weights_only=True, map_location=self.dev)
            if state.get("fingerprint") != self.fingerprint:
                raise CheckpointMismatch(f"{self.ckpt}: checkpoint was written by a different configuration (model, "
                                         f"data or schedule changed). Delete it to start over (rm -r "
                                         f"{self.ckpt.parent}), or restore the configuration.")
            self.model.load_state_dict(state["model"])
            self.opt.load_state_dict(state["optim"])
            if self.ema is not None:
                self.ema.load_state_dict(state["ema"])
            with torch.no_grad():
                for p, saved in zip(self.extra, state.get("extra") or []):
                    p.copy_(saved)
            start, self.history, elapsed0 = int(state["step"]), json.loads(state["history"]), float(state["elapsed"])
            self.best = {"psnr": float(state["best_psnr"]), "score": float(state.get("best_score", state["best_psnr"])),
                         "step": int(state["best_step"]), "state": state["best_state"]}
        return start, elapsed0

    def checkpoint(self, step: int, elapsed: float) -> None:
        if self.ckpt is None or self.rank != 0:
            return
        best = self.best
        _atomic_save({"model": self.model.state_dict(), "optim": self.opt.state_dict(),
                      "ema": self.ema.state_dict() if self.ema is not None else None,
                      "extra": [p.detach().cpu() for p in self.extra],
                      "step": step, "elapsed": elapsed, "history": json.dumps(self.history), "best_psnr": best["psnr"],
                      "best_score": best["score"], "best_step": best["step"],
                      "best_state": best["state"] or self.evaluated().state_dict(), "fingerprint": self.fingerprint},
                     self.ckpt)

    def validate(self, step: int) -> float:
        """Validation PSNR of the kept weights (at the recipe's scale), recorded; the best weights so far (by the
        mean over the heads of a multi-scale model) are kept (and saved)."""
        model = self.evaluated()
        psnr = validate(model, self.val_pairs, self.scale)
        entry, score = {"step": step, "val_psnr": round(psnr, 4)}, psnr
        if self.val_sets:
            by = {s: psnr if s == self.scale else validate(model, pairs, s) for s, pairs in self.val_sets.items()}
            score = sum(by.values()) / len(by)
            entry["val_psnr_by_scale"] = {str(s): round(v, 4) for s, v in by.items()}
        if self.val_degraded:
            by = {d: psnr if d == "bicubic" else validate(model, pairs, self.scale)
                  for d, pairs in self.val_degraded.items()}
            entry["val_psnr_by_degradation"] = {d: round(v, 4) for d, v in by.items()}
            score = sum(score if d == "bicubic" else v for d, v in by.items()) / len(by)
            entry["val_score"] = round(score, 4)
        self.history.append(entry)
        if score > self.best["score"]:
            self.best.update(psnr=psnr, score=score, step=step,
                             state={k: v.detach().cpu().clone() for k, v in self.evaluated().state_dict().items()})
            if self.checkpoint_dir is not None:
                save_file(self.best["state"], str(self.checkpoint_dir / "best.safetensors"))
        return psnr

    def step(self, batch, loss_fn: LossFn, grad_clip: float) -> float:
        """One optimisation step on ``batch`` (LR, HR); returns the loss (not finite: the caller stops)."""
        lr_b, hr_b = batch[0].to(self.dev), _to(batch[1], self.dev)
        with torch.autocast(self.dev.type, dtype=torch.bfloat16, enabled=self.use_amp):
            sr = self.net(lr_b)
        sr = tuple(t.float() for t in sr) if isinstance(sr, tuple) else sr.float()
        loss = loss_fn(sr, lr_b, hr_b)
        value = loss.item()
        if not math.isfinite(value):
            return value
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), grad_clip)
        self.opt.step()
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        return value

    def finish(self) -> None:
        """The best validated weights into the model (the averaged ones on processes that do not validate)."""
        if self.world > 1:
            torch.distributed.barrier()
        if self.best["state"] is not None:
            self.model.load_state_dict(self.best["state"])
        elif self.ema is not None:
            self.model.load_state_dict(self.ema.module.state_dict())
        self.model.cpu().eval()


def _progress(step: int, steps: int, elapsed: float, max_seconds: float | None, world: int) -> float:
    """Training progress in [0, 1] for the schedule: max(step / steps, elapsed / budget), the same on every rank."""
    progress = step / max(steps, 1)
    if max_seconds:
        progress = max(progress, elapsed / max_seconds)
        if world > 1:  # every process must follow the same schedule and stop at the same step
            p = torch.tensor([progress], dtype=torch.float64)
            torch.distributed.all_reduce(p, op=torch.distributed.ReduceOp.MAX)
            progress = float(p)
    return progress


def fit(model: nn.Module, sampler: PatchSampler, *, steps: int, lr: float, loss_fn: LossFn,
        val_pairs: list[ImagePair], scale: int, lr_min_ratio: float = 0.01, grad_clip: float = 0.0,
        val_every: int = 200, checkpoint_dir: Path | None = None, checkpoint_every: int = 100,
        resume: bool = True, fingerprint: str = "", desc: str = "train", stop_after: int | None = None,
        schedule: Schedule | None = None, ema_decay: float = 0.0, max_seconds: float | None = None,
        device: str = "cpu", amp: bool = True, extra_params: list | None = None,
        val_degraded: dict[str, list[ImagePair]] | None = None, workers: int = 0,
        clock: Callable[[], float] = time.perf_counter) -> FitResult:
    """Train ``model`` for ``steps`` steps; returns the weights with the best validation PSNR.

    ``loss_fn(sr, lr, hr)`` gives the loss (``sr`` and ``hr`` are per-scale for multi-output models).
    ``stop_after`` ends the loop early after that many steps (a checkpoint is written), as an
    interruption would; the next call with ``resume`` continues the run. Under ``torchrun`` (WORLD_SIZE > 1)
    the model is wrapped in DistributedDataParallel (gloo on CPU, nccl on GPU), each process trains on its
    slice of every global batch, and only rank 0 validates and writes checkpoints. ``extra_params`` are
    optimised with the model but not part of it (distillation adapters). ``val_degraded`` ({degradation: pairs},
    a recipe's ``data.valid_degradations``): each is validated and the weights kept are those of the best mean
    over them (``best_psnr`` stays the protocol's). ``clock`` (seconds) drives the wall-clock budget and the
    recorded training time. ``workers`` > 0 cuts the batches ahead in that many processes (:func:`step_batches`;
    they end with the loop, however it ends).
    """
    schedule = schedule or Schedule(min_ratio=lr_min_ratio)
    run = _Fit(model, lr=lr, device=device, amp=amp, ema_decay=ema_decay, extra_params=extra_params,
               checkpoint_dir=checkpoint_dir, fingerprint=fingerprint, val_pairs=val_pairs, scale=scale,
               val_degraded=val_degraded)
    rank, world = run.rank, run.world
    start, elapsed0 = run.resume() if resume else (0, 0.0)
    if checkpoint_dir is not None and rank == 0:
        checkpoint_dir.mkdir(parents=True, exist_ok=True)
    t0 = clock()
    run.net.train()
    end = steps if stop_after is None else min(steps, start + stop_after)
    running, step, stopped_by_time = None, start, False
    batches = step_batches(sampler, start, end, (rank, world), workers, pin=run.dev.type == "cuda")
    with progress_bar(desc, total=steps, completed=start, enabled=rank == 0) as bar, contextlib.closing(batches):
        for step in range(start, end):
            progress = _progress(step, steps, elapsed0 + clock() - t0, max_seconds, world)
            if max_seconds and progress >= 1.0:
                stopped_by_time = True
                break
            for group in run.opt.param_groups:
                group["lr"] = lr * group.get("lr_scale", 1.0) * schedule.factor(progress, step)
            value = run.step(next(batches), loss_fn, grad_clip)
            if not math.isfinite(value):
                saved = (f"the checkpoint of step {start if not run.history else run.history[-1]['step']} and "
                         f"earlier are kept in {checkpoint_dir}" if checkpoint_dir is not None else "nothing was written")
                raise TrainingDiverged(f"{desc}: the loss became {value} at step {step + 1} (learning rate "
                                       f"{run.opt.param_groups[0]['lr']:.3g}): the training diverged and its weights "
                                       f"are no longer usable; {saved}. Lower lr (or set grad_clip), then run again.")
            running = value if running is None else 0.95 * running + 0.05 * value
            done = step + 1
            info = f"loss {running:.4f}"
            if rank == 0 and (done % val_every == 0 or done == steps):
                info += f"  val {run.validate(done):.2f} dB"
                if "val_score" in run.history[-1]:
                    info += f" (mean over {len(run.val_degraded)} LR kinds {run.history[-1]['val_score']:.2f})"
            bar.update(done, info)
            if done % checkpoint_every == 0 or done == end:
                run.checkpoint(done, elapsed0 + clock() - t0)
        else:
            step = end
    if rank == 0 and (end == steps or stopped_by_time) and (not run.history or run.history[-1]["step"] != step):
        run.validate(step)
        run.checkpoint(step, elapsed0 + clock() - t0)
    run.finish()
    return FitResult(model, step, elapsed0 + clock() - t0, run.best["psnr"], run.best["step"], run.history,
                     stopped_by_time=stopped_by_time)


def step_batches(sampler, start: int, end: int, part: tuple[int, int], workers: int, pin: bool = False):
    """The batches of steps ``start`` to ``end`` in order: cut here (``workers`` 0), or ahead by ``workers``
    processes. Batches depend only on (seed, step), so both give the same tensors. A sampler that computes in this
    process (a teacher cache that writes as it goes) says ``parallel = False`` and is refused."""
    if workers < 0:
        raise UsageError(f"workers must be 0 (batches cut in the training process) or more; got {workers}")
    if workers == 0:
        return (sampler.batch(step, part) for step in range(start, end))
    if not getattr(sampler, "parallel", True):
        raise UsageError(f"workers: {workers} cannot cut these batches in other processes ({type(sampler).__name__} "
                         f"fills a cache in the training process); set workers: 0, or "
                         f"turn the cache off (cache_teacher: false).")
    return _pooled(sampler, start, end, part, workers, pin)


def _pooled(sampler, start: int, end: int, part: tuple[int, int], workers: int, pin: bool):
    """``workers`` spawned processes (a fork of the training process, with PyTorch's and the runtimes' threads
    running, is not safe), each holding the sampler, cut at most 4 batches each ahead of the step being trained;
    the arrays come back as plain NumPy (PyTorch's DataLoader shares tensors through file descriptors and installs a
    process-wide SIGCHLD handler: the test suite segfaulted after it). The pool ends with the generator."""
    import collections
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(workers, initializer=_worker_init, initargs=(sampler, part)) as pool:
        pending: collections.deque = collections.deque()
        ahead = start
        for _ in range(start, end):
            while ahead < end and len(pending) < 4 * workers:
                pending.append(pool.apply_async(_worker_batch, (ahead,)))
                ahead += 1
            lr, hr = pending.popleft().get()
            tensor = (lambda a: torch.from_numpy(a).pin_memory()) if pin else torch.from_numpy
            yield tensor(lr), ({k: tensor(v) for k, v in hr.items()} if isinstance(hr, dict) else tensor(hr))


_WORKER: dict = {}


def _worker_init(sampler, part: tuple[int, int]) -> None:
    torch.set_num_threads(1)
    _WORKER.update(sampler=sampler, part=part)


def _worker_batch(step: int):
    lr, hr = _WORKER["sampler"].batch(step, _WORKER["part"])
    return lr.numpy(), ({k: v.numpy() for k, v in hr.items()} if isinstance(hr, dict) else hr.numpy())


def _ema_with_warmup(decay: float):
    """EMA update whose decay ramps up as min(decay, (1 + n) / (10 + n)) over the first updates (as
    TensorFlow's ExponentialMovingAverage with num_updates), so short runs are not dominated by their
    initial weights. Integer tensors (index buffers, e.g. MSRep's space-to-depth anchor) are copied, not averaged."""
    @torch.no_grad()
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], num_averaged) -> None:
        n = float(num_averaged)
        d = min(decay, (1 + n) / (10 + n))
        floats = [i for i, t in enumerate(averaged) if t.is_floating_point()]
        if len(floats) < len(averaged):
            for i in set(range(len(averaged))) - set(floats):
                averaged[i].copy_(current[i])
            averaged, current = [averaged[i] for i in floats], [current[i] for i in floats]
        if averaged:  # torch groups the tensors by dtype: a group may hold integers only
            torch._foreach_lerp_(averaged, current, 1 - d)
    return update


def _to(x, dev: torch.device):
    """Tensors, or nested dicts of tensors, onto ``dev``."""
    return {k: _to(v, dev) for k, v in x.items()} if isinstance(x, dict) else x.to(dev)


def distributed() -> tuple[int, int]:
    """(rank, world size); joins the process group when launched by ``torchrun`` with WORLD_SIZE > 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    import torch.distributed as tdist
    if not tdist.is_initialized():
        tdist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return tdist.get_rank(), world


POLICY_FIELDS = frozenset({"max_psnr_drop_db", "on_budget_exceeded", "min_parity_db", "on_slower"})
"""Stage config fields that decide what happens to a trained result (budgets, their policies, the parity bar),
not how it trains: left out of a checkpoint's fingerprint, so that a tightened budget resumes the training."""


def config_fingerprint(*parts) -> str:
    """What a checkpoint was trained from; a stage config (dataclass) enters without its :data:`POLICY_FIELDS`,
    and without options marked ``checkpoint: when_set`` left at their defaults (options added later: checkpoints
    written before them still resume)."""
    import dataclasses

    def counts(p, f) -> bool:
        return f.name not in POLICY_FIELDS and f.metadata.get("fingerprint") != "never" and not (f.metadata.get("checkpoint") == "when_set"
                                                    and getattr(p, f.name) == f.default)

    plain = [{f.name: getattr(p, f.name) for f in dataclasses.fields(p) if counts(p, f)}
             if dataclasses.is_dataclass(p) and not isinstance(p, type) else p for p in parts]
    return hashlib.sha256(json.dumps(plain, sort_keys=True, default=str).encode()).hexdigest()[:16]


def scale_loss(criterion: Callable, scales: tuple[int, ...], weights: tuple[float, ...] = ()) -> LossFn:
    """``loss_fn(sr, lr, hr)`` for a model emitting ``scales``: the weighted sum of the per-scale losses
    (multi-scale supervision, as MS-LapSRN trains); plain ``criterion(sr, hr)`` for one output."""
    if weights and len(weights) != len(scales):
        raise ValueError(f"scale_weights {list(weights)} must give one weight per output scale {list(scales)}")
    if len(scales) == 1:
        return lambda sr, lr, hr: criterion(sr, hr)
    w = weights or (1.0,) * len(scales)
    return lambda sr, lr, hr: sum(wi * criterion(o, hr[s]) for wi, o, s in zip(w, sr, scales))


def pairs_at_scale(pairs: list[ImagePair], scale: int, min_size: int = 0) -> list[ImagePair]:
    """The same HR images paired with LR at another scale (mod-crop + the protocol's bicubic)."""
    out = []
    for p in pairs:
        hr = modcrop(p.hr, scale)
        if min(hr.shape[:2]) >= min_size:
            out.append(ImagePair(p.name, make_lr(hr, scale), hr))
    return out


def init_weights(model: nn.Module, art: Artifact) -> dict:
    """Copy the artifact's weights into ``model`` wherever name and shape match (curriculum / warm start)."""
    source = load_model(art).state_dict()
    own = model.state_dict()
    loaded = sorted(k for k in own if k in source and source[k].shape == own[k].shape)
    if not loaded:
        raise ValueError(f"{art.path}: init_from shares no layer (name and shape) with {type(model).__name__}; "
                         "it must be the same architecture family")
    model.load_state_dict({**own, **{k: source[k] for k in loaded}})
    fresh = sorted(set(own) - set(loaded))
    if fresh and hasattr(model, "warm_start_fresh"):  # e.g. MSRep: new trunk blocks start as near-identities
        model.warm_start_fresh(fresh)
    return {"from": art.manifest.get("name"), "hash": art.hash, "loaded": len(loaded), "fresh": fresh}


def sampler_for(model: nn.Module, train_pairs: list[ImagePair], scale: int, patch_size: int, batch_size: int,
                seed: int, min_patch_std: float, degradation: str = "bicubic") -> PatchSampler:
    """Patches for ``model``: one target at ``scale``, or one per output for multi-scale models."""
    scales = model_scales(model)
    if scale not in scales:
        raise ValueError(f"the model emits x{list(scales)}; the recipe trains x{scale}")
    top = max(scales)
    if any(top % s for s in scales):
        raise UsageError(f"the model's heads x{list(scales)} cannot train together: each training patch is cut at x{top} "
                         f"and its targets for the other heads are made from it by integer downscaling, so every head "
                         f"must divide x{top}. Use heads [2, 4] (or x3 alone, or [3] + [2] in two models)")
    pairs = train_pairs if top == scale else pairs_at_scale(train_pairs, top, min_size=patch_size * top)
    if not pairs:
        raise ValueError(f"no training image is at least {patch_size * top} px for x{top} patches of {patch_size}")
    return PatchSampler(pairs, top, patch_size, batch_size, seed=seed, min_std=min_patch_std, targets=scales,
                        degradation=degradation)


def fit_options(cfg: TrainConfig) -> dict:
    """The fit() keywords a TrainConfig (or a subclass) sets."""
    return {"steps": cfg.steps, "lr": cfg.lr, "grad_clip": cfg.grad_clip, "val_every": cfg.val_every,
            "checkpoint_every": cfg.checkpoint_every, "resume": cfg.resume, "ema_decay": cfg.ema_decay,
            "max_seconds": cfg.max_minutes * 60 if cfg.max_minutes else None, "device": cfg.device, "amp": cfg.amp,
            "workers": cfg.workers,
            "schedule": Schedule(cfg.schedule, cfg.lr_min_ratio, cfg.milestones, cfg.gamma, cfg.warmup_steps)}


def fit_metrics(result: FitResult) -> dict:
    return {"val_psnr": round(result.best_psnr, 4), "best_step": result.best_step, "train_steps": result.steps,
            "train_seconds": round(result.seconds, 1), "stopped_by_time": result.stopped_by_time,
            "history": result.history}
