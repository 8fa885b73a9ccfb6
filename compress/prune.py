"""Structured channel pruning with torch-pruning's dependency graph, then a short fine-tune.

SR structure is respected: residual adds are coupled by the dependency graph (channels removed from one
member of an add are removed from all), and every convolution whose output feeds a PixelShuffle, or is
the image output, keeps all its output channels — those channels are whole output pixels and colours, so
removing any would change the output geometry. They are left whole by choice: in the anchor-residual
students that conv *is* the image (3 r^2 channels = 3 colours x r^2 sub-pixels, nothing to remove), and
in EDSR-style upsamplers (conv n -> r^2 n, PixelShuffle) its r^2-channel groups are the post-shuffle
feature maps, coupled to the next conv; keeping them whole costs those MACs but never breaks the pixel
layout. Channel counts are rounded to ``round_to`` for hardware-friendly kernels.

Targets: a channel ratio; a MACs fraction; or a measured latency (the ratio is found by bisection, each
candidate exported to ONNX and timed in ONNX Runtime). Pruning can be iterative: ``iterations`` steps of
prune -> fine-tune, optionally distilling from a teacher during the fine-tunes.

The pruned model's layer shapes go into the manifest (``transforms[].shapes``), so it rebuilds from the
manifest without pickling.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable, Literal

import torch
import torch.fx
import torch_pruning as tp
from torch import nn

from edgesr.artifacts import Artifact, Candidate, Quality, derived_transforms
from edgesr.data.degradations import training_record
from edgesr.data.patches import PatchSampler
from edgesr.errors import EdgesrError
from edgesr.fitting import config_fingerprint, fit, sampler_for, validate
from edgesr.hostinfo import nchwc_block
from edgesr.losses import LOSSES, distill_loss
from edgesr.modelio import load_model, model_candidate, module_shapes
from edgesr.models import count_macs, deploy_form, model_scales, pick_output
from edgesr.progress import console
from edgesr.stages import MODEL, StageContext, register_stage


@dataclass(frozen=True)
class PruneConfig:
    input: str
    target: Literal["ratio", "macs", "latency"] = "ratio"
    """What ``ratio``/``macs_ratio``/``latency_ms`` means: a channel ratio, a MACs fraction, or a measured
    ONNX Runtime latency to reach (the channel ratio is then searched by bisection)."""
    ratio: float = 0.5
    """target ratio: fraction of prunable channels removed (per layer)."""
    macs_ratio: float = 0.5
    """target macs: the pruned model's MACs as a fraction of the unpruned model's."""
    latency_ms: float | None = None
    """target latency: p50 latency to reach at ``latency_input`` on ONNX Runtime (CPU, recipe threads)."""
    latency_input: tuple[int, int] = (360, 640)
    iterations: int = 1
    """Prune in this many steps, each followed by an equal share of the fine-tune (iterative pruning)."""
    importance: Literal["magnitude", "taylor"] = "magnitude"
    round_to: int | Literal["kernel"] = 4
    """Channel counts are rounded to multiples of this. ``kernel``: the channel block of this CPU's convolution
    kernels (ONNX Runtime's NCHWc: 16 with AVX-512, 8 with AVX2, else 4): its time is a staircase in steps of
    the block (``benchmarks/results/widths``, AVX-512: 12 channels 37 % slower than 16; 20 to 32 all alike).
    OpenVINO blocks differently."""
    min_speedup: float | None = None
    """Speed guard: after pruning, the parent and the pruned model (both exported to ONNX) are timed in one
    interleaved run on each backend of ``measure_on`` at ``latency_input``; on every one of them the speed-up
    (ratio of medians) must reach this with 95 % confidence (the lower end of its bootstrap interval over
    rounds), else ``on_slower`` decides. 1.0: ship a pruned model, which costs quality, only when it measurably
    runs faster than its parent. None: not measured."""
    measure_on: tuple[str, ...] = ()
    """Backends the speed guard measures on (default: the recipe's benchmark backends, all of them must agree; a
    backend not installed here is left out, and named in the manifest)."""
    on_slower: Literal["fail", "warn", "fallback"] = "fail"
    """fallback: write the parent unpruned (its manifest records the measured ratio and why)."""
    teacher: str | None = None
    """Fine-tune with this teacher as distillation target (None: against HR only)."""
    alpha: float = 0.5
    finetune_steps: int = 300
    batch_size: int = 16
    lr: float = 5e-4
    max_psnr_drop_db: float | None = None
    on_budget_exceeded: Literal["fail", "warn"] = "fail"


MACS_HW = (90, 160)
"""Input size at which pruning counts MACs (a 640x360 frame has 16x these; the ratios are the same)."""

__all__ = ["PruneConfig", "protected_convs", "prune_model", "prune_to_target", "prune_stage", "PruneError"]

LatencyFn = Callable[[nn.Module], float]


class PruneError(EdgesrError, ValueError):
    """A pruning target that cannot be reached or measured; the message says which and why."""

_PASS_THROUGH = {"add", "sub", "mul", "iadd", "clamp", "clip", "relu", "truediv"}


def kernel_round_to(round_to: int | str) -> int:
    """``round_to`` as a number: ``kernel`` is the channel block of this CPU's NCHWc convolution kernels (ONNX
    Runtime's MLAS: 16 with AVX-512F, 8 with AVX2 or NEON, else 4)."""
    return nchwc_block() if round_to == "kernel" else int(round_to)


def protected_convs(model: nn.Module) -> list[str]:
    """Names of convolutions whose output channels must stay whole: those feeding a PixelShuffle or
    producing the output image, found by tracing the graph (through adds, scalings and activations)."""
    gm = torch.fx.symbolic_trace(model)
    modules = dict(gm.named_modules())
    found: set[str] = set()

    def walk(node: torch.fx.Node) -> None:
        if node.op == "call_module":
            mod = modules[node.target]
            if isinstance(mod, nn.Conv2d):
                found.add(node.target)
                return
            if isinstance(mod, (nn.ReLU, nn.PReLU, nn.LeakyReLU, nn.Identity)):
                for a in node.all_input_nodes:
                    walk(a)
            return
        name = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", "")
        if node.op in ("call_function", "call_method") and name.strip("_") in _PASS_THROUGH:
            for a in node.all_input_nodes:
                walk(a)

    for node in gm.graph.nodes:
        is_shuffle = (node.op == "call_module" and isinstance(modules[node.target], nn.PixelShuffle)) or \
            (node.op == "call_function" and getattr(node.target, "__name__", "") == "pixel_shuffle")
        if is_shuffle or node.op == "output":
            for a in node.all_input_nodes:
                walk(a)
    return sorted(found)


def prune_model(model: nn.Module, cfg: PruneConfig, sampler: PatchSampler | None = None,
                ratio: float | None = None) -> tuple[nn.Module, dict]:
    """Return a copy of ``model`` with ``ratio`` (default ``cfg.ratio``) of its prunable channels removed,
    and the record of what was removed."""
    ratio = cfg.ratio if ratio is None else ratio
    model = copy.deepcopy(model).eval()
    protected = protected_convs(model)
    ignored = [model.get_submodule(n) for n in protected]
    example = torch.rand(1, 3, 32, 32)
    if cfg.importance == "magnitude":
        importance = tp.importance.MagnitudeImportance(p=1)
    else:
        importance = tp.importance.TaylorImportance()
    pruner = tp.pruner.MetaPruner(model, example, importance=importance, pruning_ratio=ratio,
                                  ignored_layers=ignored, round_to=kernel_round_to(cfg.round_to) or None)
    if cfg.importance == "taylor":
        if sampler is None:
            raise ValueError("Taylor importance needs training data for its gradients")
        model.zero_grad()
        scales = model_scales(model)
        for step in range(4):
            lr_b, hr_b = sampler.batch(10_000_000 + step)
            sr = pick_output(model(lr_b), scales, scales[0])
            nn.functional.l1_loss(sr, hr_b[scales[0]] if isinstance(hr_b, dict) else hr_b).backward()
    before_macs, before_params = count_macs(model, MACS_HW)
    before_shapes = module_shapes(model)
    pruner.step()
    model.zero_grad(set_to_none=True)
    after_macs, after_params = count_macs(model, MACS_HW)
    shapes = module_shapes(model)
    changed = {k: v for k, v in shapes.items() if before_shapes.get(k) != v}
    record = {"type": "prune", "tool": f"torch-pruning {tp.__version__}", "importance": cfg.importance,
              "ratio": round(ratio, 4), "round_to": cfg.round_to, "protected": protected, "shapes": changed,
              "params_before": before_params, "params_after": after_params,
              "macs_before": before_macs, "macs_after": after_macs, "macs_at_hw": list(MACS_HW)}
    return model, record


def prune_to_target(model: nn.Module, cfg: PruneConfig, sampler: PatchSampler | None, fraction: float = 1.0,
                    base_macs: int | None = None, base_latency_ms: float | None = None,
                    latency_fn: LatencyFn | None = None) -> tuple[nn.Module, dict]:
    """Prune ``model`` to the config's target. For MACs and latency targets the channel ratio is found by
    bisection (7 steps); ``fraction`` in (0, 1] scales the target for one step of iterative pruning
    (MACs: target ** fraction of the start; latency: interpolated geometrically from ``base_latency_ms``,
    the unpruned model's latency, measured here when not given).

    ``latency_fn(model) -> ms`` measures a candidate (the runner's measurement, see ``StageContext``). The
    goal is recorded unrounded, with the measured start."""
    if cfg.target == "ratio":
        return prune_model(model, cfg, sampler, ratio=1 - (1 - cfg.ratio) ** fraction)
    base_macs = base_macs or count_macs(model, MACS_HW)[0]
    if cfg.target == "macs":
        goal_macs = base_macs * cfg.macs_ratio ** fraction
        meets = lambda cand, rec: rec["macs_after"] <= goal_macs
        goal = {"macs": int(goal_macs)}
    else:
        if cfg.latency_ms is None:
            raise PruneError("prune target latency needs latency_ms")
        if latency_fn is None:
            raise PruneError("prune target latency needs a latency measurement (the runner provides one; "
                             "pass latency_fn when calling prune_to_target directly)")
        measure = latency_fn
        start = base_latency_ms if base_latency_ms is not None else measure(model)
        goal_ms = start * (cfg.latency_ms / start) ** fraction
        meets = lambda cand, rec: measure(cand) <= goal_ms
        goal = {"latency_ms": goal_ms, "start_latency_ms": start}
    lo, hi, best = 0.0, 0.95, None
    for _ in range(7):
        mid = (lo + hi) / 2
        cand, rec = prune_model(model, cfg, sampler, ratio=mid)
        if meets(cand, rec):
            best, hi = (cand, rec), mid
        else:
            lo = mid
    if best is None:
        cand, rec = prune_model(model, cfg, sampler, ratio=0.95)
        if not meets(cand, rec):
            raise PruneError(f"prune: cannot reach {goal} even at ratio 0.95 (MACs {rec['macs_after']:,} of "
                             f"{base_macs:,}); the protected convs (PixelShuffle inputs, image output) bound it")
        best = (cand, rec)
    best[1]["goal"] = goal
    return best


@register_stage("prune", PruneConfig, makes=MODEL, takes={"input": MODEL, "teacher": MODEL}, lossy=True)
def prune_stage(cfg: PruneConfig, ctx: StageContext, input: Artifact, teacher: Artifact | None = None) -> Candidate:
    """The ``prune`` stage: prune the input model to its target (in ``iterations`` steps, each followed by a
    fine-tune, optionally distilling from ``teacher``), check the quality budget, save. A latency target is
    measured with ``ctx.latency_fn`` (ONNX Runtime on the CPU, as the runner provides it); the speed guard on
    every backend of ``measure_on`` (default: the recipe's benchmark backends)."""
    source, name, out, scale, seed = input, ctx.name, ctx.out, ctx.scale, ctx.seed
    val_pairs = ctx.val_pairs
    latency = None
    if cfg.target == "latency":
        if ctx.latency_fn is None:
            raise PruneError(f"prune {name}: target latency needs a latency measurement; run it through "
                             "`edgesr run` (which measures on ONNX Runtime)")
        latency = lambda m: ctx.latency_fn(m, cfg.latency_input)
    parent, arch = deploy_form(load_model(source), source.manifest["arch"])  # prune what is deployed
    parent_psnr = validate(parent, val_pairs, scale)
    sampler = sampler_for(parent, ctx.train_pairs, scale, ctx.patch_size, cfg.batch_size, seed + 1, ctx.min_patch_std,
                          ctx.degradation)
    teacher_model = load_model(teacher) if teacher is not None else None
    loss_fn = distill_loss(LOSSES.build({"type": "l1"}), teacher_model, cfg.alpha, model_scales(parent))
    base_macs, base_params = count_macs(parent, MACS_HW)
    base_shapes = module_shapes(parent)
    base_latency = latency(parent) if latency is not None else None
    model, steps_log, seconds, psnr = parent, [], 0.0, parent_psnr
    k = max(cfg.iterations, 1)
    per_step = cfg.finetune_steps // k
    for i in range(1, k + 1):
        model, record = prune_to_target(model, cfg, sampler, fraction=i / k, base_macs=base_macs,
                                        base_latency_ms=base_latency, latency_fn=latency)
        entry = {"iteration": i, "ratio": record["ratio"], "macs": record["macs_after"],
                 "params": record["params_after"], "psnr_before_finetune": round(validate(model, val_pairs, scale), 4)}
        if per_step > 0:
            result = fit(model, sampler, steps=per_step, lr=cfg.lr, loss_fn=loss_fn, val_pairs=val_pairs,
                         scale=scale, val_degraded=ctx.val_degraded, val_every=max(per_step // 2, 1),
                         checkpoint_dir=out.with_name(f"{out.name}.ckpt{i}"), checkpoint_every=100,
                         fingerprint=config_fingerprint(source.hash, cfg, seed, i,
                                                        *training_record(ctx.degradation, ctx.val_degraded)),
                         desc=f"fine-tune {name} ({i}/{k})")
            psnr, seconds = result.best_psnr, seconds + result.seconds
        else:
            psnr = entry["psnr_before_finetune"]
        entry["psnr_after_finetune"] = round(psnr, 4)
        steps_log.append(entry)
    shapes = module_shapes(model)
    macs, params = count_macs(model, MACS_HW)
    final = {**record, "shapes": {k2: v for k2, v in shapes.items() if base_shapes.get(k2) != v},
             "params_before": base_params, "params_after": params, "macs_before": base_macs, "macs_after": macs,
             "macs_at_hw": list(MACS_HW), "target": cfg.target, "iterations": steps_log, "finetune_steps": cfg.finetune_steps,
             "psnr_before_finetune": steps_log[-1]["psnr_before_finetune"]}
    if cfg.target == "latency":
        final["latency_ms_after"] = round(latency(model), 2)
    slower_on = _speed_guard(cfg, ctx, parent, model, final) if cfg.min_speedup is not None else None
    if slower_on:  # on_slower: fallback
        final = {"type": "prune", "fallback": "parent shipped unpruned: the pruned model was not measurably "
                                              f"{cfg.min_speedup}x faster on {slower_on}",
                 "speedup_vs_parent": final["speedup_vs_parent"], "speedup_by_backend": final["speedup_by_backend"],
                 "target": cfg.target}
        return model_candidate(ctx.staging, parent, name=name, arch=arch, parent=source, out=out,
                               transforms=derived_transforms(source, arch, final),
                               metrics={"val_psnr": round(parent_psnr, 4), "budget": "fallback: not pruned",
                                        "finetune_seconds": round(seconds, 1)})
    return model_candidate(ctx.staging, model, name=name, arch=arch, parent=source, out=out,
                           transforms=derived_transforms(source, arch, final),
                           metrics={"finetune_seconds": round(seconds, 1)}, quality=Quality(f"prune {name}", psnr, parent_psnr))

def _speed_guard(cfg: PruneConfig, ctx: StageContext, parent: nn.Module, model: nn.Module, final: dict) -> str | None:
    """``min_speedup``: whether the pruned ``model`` runs measurably faster than ``parent`` on every backend of
    ``measure_on`` (default: the recipe's benchmark backends), the binding one being where it gains least; the
    measurements join ``final``. Slower: raises with ``on_slower: fail``, else warns and, with ``fallback``,
    returns the backend where it is slower (the parent ships); None otherwise."""
    name = ctx.name
    if ctx.speedup_fn is None:
        raise PruneError(f"prune {name}: min_speedup needs an interleaved latency measurement; run it through "
                         "`edgesr run` (which measures on the recipe's benchmark backends)")
    from edgesr.runtime import BackendUnavailable

    by_backend, left_out = {}, {}
    for b in cfg.measure_on or ctx.measure_backends:
        try:
            by_backend[b] = ctx.speedup_fn(parent, model, cfg.latency_input, b)
        except BackendUnavailable as exc:
            left_out[b] = str(exc)
    if not by_backend:
        raise PruneError(f"prune {name}: min_speedup: none of {list(cfg.measure_on or ctx.measure_backends)} can run "
                         f"here ({'; '.join(left_out.values())}); name an available backend in measure_on")
    lower = lambda sp: sp["ci95"][0] if sp.get("ci95") else sp["ratio"]  # noqa: E731
    binding = min(by_backend, key=lambda b: lower(by_backend[b]))  # the backend where it gains least
    speed = by_backend[binding]
    final["speedup_vs_parent"] = speed
    final["speedup_by_backend"] = by_backend
    if left_out:
        final["speedup_left_out"] = left_out
    low = lower(speed)
    if low >= cfg.min_speedup:
        return None
    msg = (f"prune {name}: on {binding}, the pruned model runs {speed['ratio']:.2f}x its parent's speed (95 % interval "
           f"{low:.2f}-{speed['ci95'][1] if speed.get('ci95') else speed['ratio']:.2f}x; medians "
           f"{speed['new_p50_ms']:.1f} vs {speed['ref_p50_ms']:.1f} ms, one interleaved run, LR "
           f"{cfg.latency_input[0]}x{cfg.latency_input[1]}): not measurably at min_speedup {cfg.min_speedup}; its widths "
           f"{sorted({v['out'] for k, v in final['shapes'].items() if 'out' in v and k not in final['protected']})} may be off the kernels' channel blocks "
           f"(round_to: kernel = {kernel_round_to('kernel')} here)")
    if cfg.on_slower == "fail":
        raise PruneError(msg + "; prune less, use round_to: kernel, or on_slower: fallback")
    console.print(f"[yellow]{msg}[/]" + ("; shipping the parent unpruned (on_slower: fallback)"
                                          if cfg.on_slower == "fallback" else ""))
    return binding if cfg.on_slower == "fallback" else None

