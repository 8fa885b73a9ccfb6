"""PyTorch models as artifacts: ``model.safetensors`` + manifest, and the way back.

A model is rebuilt from its manifest alone: the architecture spec builds it, recorded prune shapes resize
its layers, then the weights are loaded and checked against it. Nothing is pickled.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file
from torch import nn

from .artifacts import MANIFEST, Artifact, ArtifactError, Candidate, Quality, materialize, parent_record, read_artifact
from .models import build_model

__all__ = ["save_model", "model_candidate", "load_model", "module_shapes", "apply_shapes", "build_from_manifest", "check_finite"]


def module_shapes(model: nn.Module) -> dict[str, dict[str, int]]:
    """Channel shapes of every conv/linear/norm layer, the record pruning leaves in a manifest."""
    shapes = {}
    for name, mod in model.named_modules():
        if isinstance(mod, nn.Conv2d):
            shapes[name] = {"in": mod.in_channels, "out": mod.out_channels, "groups": mod.groups}
        elif isinstance(mod, nn.Linear):
            shapes[name] = {"in": mod.in_features, "out": mod.out_features}
        elif isinstance(mod, (nn.BatchNorm2d, nn.PReLU)):
            n = mod.num_features if isinstance(mod, nn.BatchNorm2d) else mod.num_parameters
            shapes[name] = {"in": n, "out": n}
    return shapes


def _resized(mod: nn.Module, shape: dict[str, int]) -> nn.Module:
    if isinstance(mod, nn.Conv2d):
        return nn.Conv2d(shape["in"], shape["out"], mod.kernel_size, mod.stride, mod.padding, mod.dilation,
                         groups=shape.get("groups", mod.groups), bias=mod.bias is not None,
                         padding_mode=mod.padding_mode)
    if isinstance(mod, nn.Linear):
        return nn.Linear(shape["in"], shape["out"], bias=mod.bias is not None)
    if isinstance(mod, nn.BatchNorm2d):
        return nn.BatchNorm2d(shape["out"], eps=mod.eps, momentum=mod.momentum, affine=mod.affine)
    if isinstance(mod, nn.PReLU):
        return nn.PReLU(shape["out"])
    raise TypeError(f"cannot resize a {type(mod).__name__}")


def apply_shapes(model: nn.Module, shapes: dict[str, dict[str, int]]) -> nn.Module:
    """Rebuild the named layers with recorded channel shapes (how a pruned model is rebuilt from its manifest)."""
    for name, shape in shapes.items():
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, _resized(getattr(parent, child), shape))
    return model


def build_from_manifest(manifest: dict[str, Any]) -> nn.Module:
    model = build_model(manifest["arch"])
    for t in manifest.get("transforms", []):
        if t.get("type") == "prune" and "fallback" not in t:  # a speed-guard fallback shipped the parent unpruned
            apply_shapes(model, t["shapes"])
    return model


def model_candidate(staging: Path, model: nn.Module, *, name: str, arch: dict, precision: str = "fp32",
                    transforms: list | None = None, parent: Artifact | None = None, metrics: dict | None = None,
                    extra: dict | None = None, quality: Quality | None = None, out: Path | None = None) -> Candidate:
    """A PyTorch model as a candidate artifact: ``model.safetensors`` written in ``staging`` + its manifest
    (``out``: where it will be, for messages)."""
    check_finite(model, Path(out or staging))
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(Path(staging) / "model.safetensors"), metadata={"format": "pt"})
    manifest = {
        "kind": "model", "name": name, "arch": arch, "scales": list(getattr(model, "scales", [arch.get("scale")])),
        "precision": precision, "params": sum(p.numel() for p in model.parameters()),
        "size_multiple": getattr(model, "size_multiple", 1), "transforms": transforms or [], "metrics": metrics or {},
        "parent": parent_record(parent) if parent else None,
        **(extra or {}),
    }
    return Candidate(Path(staging), "model.safetensors", manifest, quality)


def save_model(path: str | os.PathLike, model: nn.Module, *, overwrite: bool = False, **fields) -> Artifact:
    """Save a PyTorch model as an artifact at ``path`` (a new or empty directory, or over a model artifact with
    ``overwrite``); ``fields`` as :func:`model_candidate`'s."""
    return materialize(path, lambda staging: model_candidate(staging, model, out=Path(path), **fields),
                       overwrite=overwrite)


def check_finite(model: nn.Module, where: Path) -> None:
    """Refuse weights holding NaN or Inf (a diverged training), naming the tensors."""
    import torch

    bad = [k for k, v in model.state_dict().items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise ArtifactError(f"{where}: weights hold NaN or Inf in {len(bad)} tensor(s) ({', '.join(bad[:4])}): the "
                            "training that made them diverged. Re-train with a lower learning rate, or use an "
                            "earlier checkpoint.")


def load_model(src: str | os.PathLike | Artifact) -> nn.Module:
    """Rebuild a model from its artifact's manifest and load its weights (eval mode, CPU)."""
    art = src if isinstance(src, Artifact) else read_artifact(src)
    if art.kind != "model":
        raise ArtifactError(f"{art.path}: is a {art.kind!r} artifact, not a PyTorch model; use a runtime backend "
                            "(edgesr.runtime) to run it.")
    model = build_from_manifest(art.manifest)
    try:
        state = load_file(str(art.payload))
    except Exception as exc:  # safetensors raises its own error types for corrupt headers
        raise ArtifactError(f"{art.payload}: cannot read weights ({exc}); the file is corrupt or truncated, "
                            "re-run the stage that wrote it.") from exc
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if expected[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        detail = "; ".join(x for x in (
            f"missing {missing[:5]}" if missing else "", f"unexpected {unexpected[:5]}" if unexpected else "",
            "shape mismatch " + ", ".join(f"{k}: file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
                                          for k in wrong[:5]) if wrong else "") if x)
        raise ArtifactError(f"{art.payload}: weights do not fit the architecture in {art.path / MANIFEST} "
                            f"({art.manifest['arch']}): {detail}. The weights and manifest come from different "
                            "models; copy both from the same artifact directory.")
    model.load_state_dict(state)
    check_finite(model, art.payload)
    return model.eval()
