"""Structured channel pruning with torch-pruning's dependency graph, then a short fine-tune.

SR structure is respected: residual adds are coupled by the dependency graph (channels removed from one
member of an add are removed from all), and every convolution whose output feeds a PixelShuffle, or is
the image output, keeps all its output channels — those channels are whole output pixels and colours, so
removing any would change the output geometry (this version leaves them whole; pruning them in groups of
r^2 is left to a later version). Channel counts are rounded to ``round_to`` for hardware-friendly kernels.

The pruned model's layer shapes go into the manifest (``transforms[].shapes``), so it rebuilds from the
manifest without pickling.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
import torch.fx
import torch_pruning as tp
from torch import nn

from edgesr.artifacts import Artifact, load_model, module_shapes, save_model
from edgesr.config import PruneConfig
from edgesr.data.datasets import ImagePair
from edgesr.data.patches import PatchSampler
from edgesr.models import count_macs, deploy_form, model_scales
from edgesr.train.loop import config_fingerprint, fit, sampler_for, validate
from edgesr.train.losses import LOSSES

from .budget import check_budget
from .distill import distill_loss

__all__ = ["protected_convs", "prune_model", "prune_stage"]

_PASS_THROUGH = {"add", "sub", "mul", "iadd", "clamp", "clip", "relu", "truediv"}


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


def prune_model(model: nn.Module, cfg: PruneConfig, sampler: PatchSampler | None = None) -> tuple[nn.Module, dict]:
    """Return a pruned copy of ``model`` and the record of what was removed."""
    model = copy.deepcopy(model).eval()
    protected = protected_convs(model)
    ignored = [model.get_submodule(n) for n in protected]
    example = torch.rand(1, 3, 32, 32)
    if cfg.importance == "magnitude":
        importance = tp.importance.MagnitudeImportance(p=1)
    else:
        importance = tp.importance.TaylorImportance()
    pruner = tp.pruner.MetaPruner(model, example, importance=importance, pruning_ratio=cfg.ratio,
                                  ignored_layers=ignored, round_to=cfg.round_to or None)
    if cfg.importance == "taylor":
        if sampler is None:
            raise ValueError("Taylor importance needs training data for its gradients")
        model.zero_grad()
        for step in range(4):
            lr_b, hr_b = sampler.batch(10_000_000 + step)
            nn.functional.l1_loss(model(lr_b), hr_b).backward()
    before_macs, before_params = count_macs(model)
    before_shapes = module_shapes(model)
    pruner.step()
    model.zero_grad(set_to_none=True)
    after_macs, after_params = count_macs(model)
    shapes = module_shapes(model)
    changed = {k: v for k, v in shapes.items() if before_shapes.get(k) != v}
    record = {"type": "prune", "tool": f"torch-pruning {tp.__version__}", "importance": cfg.importance,
              "ratio": cfg.ratio, "round_to": cfg.round_to, "protected": protected, "shapes": changed,
              "params_before": before_params, "params_after": after_params,
              "macs_before": before_macs, "macs_after": after_macs}
    return model, record


def prune_stage(cfg: PruneConfig, *, name: str, out: Path, source: Artifact, teacher: Artifact | None,
                train_pairs: list[ImagePair], val_pairs: list[ImagePair], scale: int, patch_size: int,
                min_patch_std: float, seed: int) -> Artifact:
    """The ``prune`` stage: prune the input model, fine-tune it, check the quality budget, save."""
    parent, arch = deploy_form(load_model(source), source.manifest["arch"])  # prune what is deployed
    parent_psnr = validate(parent, val_pairs, scale)
    sampler = sampler_for(parent, train_pairs, scale, patch_size, cfg.batch_size, seed + 1, min_patch_std)
    model, record = prune_model(parent, cfg, sampler)
    record["psnr_before_finetune"] = round(validate(model, val_pairs, scale), 4)
    teacher_model = load_model(teacher) if teacher is not None else None
    loss_fn = distill_loss(LOSSES.build({"type": "l1"}), teacher_model, cfg.alpha, model_scales(model))
    if cfg.finetune_steps > 0:
        result = fit(model, sampler, steps=cfg.finetune_steps, lr=cfg.lr, loss_fn=loss_fn, val_pairs=val_pairs,
                     scale=scale, val_every=max(cfg.finetune_steps // 2, 1),
                     checkpoint_dir=out.with_name(out.name + ".ckpt"), checkpoint_every=100,
                     fingerprint=config_fingerprint(source.hash, cfg, seed), desc=f"fine-tune {name}")
        psnr, seconds = result.best_psnr, result.seconds
    else:
        psnr, seconds = validate(model, val_pairs, scale), 0.0
    record["finetune_steps"] = cfg.finetune_steps
    budget = check_budget(f"prune {name}", parent_psnr, psnr, cfg.max_psnr_drop_db, cfg.on_budget_exceeded)
    pre = [] if arch == source.manifest["arch"] else [{"type": "reparameterize", "arch": arch}]
    return save_model(out, model, name=name, arch=arch, parent=source,
                      transforms=source.manifest.get("transforms", []) + pre + [record],
                      metrics={"val_psnr": round(psnr, 4), "budget": budget, "finetune_seconds": round(seconds, 1)})
