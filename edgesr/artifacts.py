"""Artifacts: a directory holding a payload (safetensors weights or an ``.onnx`` graph) and ``manifest.json``.

The manifest is enough to rebuild the model: architecture name and hyper-parameters, scales, precision,
every transform applied so far (pruned channel shapes, quantisation scheme), the parent artifact's content
hash, and the metrics measured on it. Nothing is guessed from tensor shapes and nothing is pickled.
Artifacts are written to a temporary sibling directory and renamed into place, so a crash never leaves a
half-written artifact behind and an existing one is replaced only by a complete one.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from . import __version__
from .errors import EdgesrError
from .files import atomic_write_text, fix_mode, make_temp_dir
from .models import build_model

__all__ = [
    "Artifact", "ArtifactError", "read_artifact", "write_artifact", "save_model", "load_model",
    "content_hash", "apply_shapes", "module_shapes", "update_metrics", "atomic_write_text", "verify_payload",
]

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
IO_CONVENTION = {"input": "lr", "output": "sr", "layout": "NCHW", "dtype": "float32", "colour": "RGB",
                 "range": [0.0, 1.0]}


class ArtifactError(EdgesrError, ValueError):
    """An artifact that cannot be used; the message names the directory and the fix."""


@dataclass
class Artifact:
    path: Path
    manifest: dict[str, Any]

    @property
    def kind(self) -> str:
        return self.manifest["kind"]

    @property
    def payload(self) -> Path:
        return self.path / self.manifest["payload"]

    @property
    def scale(self) -> int:
        return int(self.manifest["scales"][0])

    @property
    def hash(self) -> str:
        return self.manifest["hash"]


def content_hash(path: Path) -> str:
    """sha256 of a payload file (first 16 hex digits), the identity of an artifact's content."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def _check_payload_name(name: object, mpath: Path) -> str:
    """A manifest names its payload by a plain file name inside its own directory, nothing else."""
    if not isinstance(name, str) or not name or name in (".", "..") or "/" in name or "\\" in name \
            or Path(name).name != name or Path(name).is_absolute():
        raise ArtifactError(f"{mpath}: payload {name!r} is not a file name inside the artifact directory (a "
                            "manifest cannot point outside its directory). The manifest was edited or forged; "
                            "re-run the stage that wrote it, or copy the artifact from a source you trust.")
    return name


def verify_payload(art: "Artifact") -> "Artifact":
    """Check that the payload's content hash is the manifest's: one pass over the file (sha256 at about
    1.6 GB/s here: 0.10 s for the 43M-parameter EDSR's 172 MB, benchmarks/results/trust). Refuses with the file,
    both hashes and the fix."""
    actual = content_hash(art.payload)
    if actual != art.hash:
        raise ArtifactError(
            f"{art.payload}: content hash {actual} differs from the {art.hash} recorded in "
            f"{art.path / MANIFEST}; the payload was modified, truncated or corrupted after it was written. "
            "Re-run the stage that wrote it (edgesr run --force), or copy the whole artifact directory again "
            "from its source.")
    return art


def read_artifact(path: str | os.PathLike, *, verify: bool = True) -> Artifact:
    """Open an artifact directory: the manifest is checked, and (``verify``, the default) the payload's
    content hash is compared with the manifest's, so a corrupted file is refused instead of run."""
    path = Path(path)
    mpath = path / MANIFEST
    if not mpath.is_file():
        what = "no such directory" if not path.exists() else f"no {MANIFEST}"
        raise ArtifactError(f"{path}: not an edgesr artifact ({what}). Point at a directory written by "
                            "an edgesr stage, e.g. runs/quickstart/student.")
    try:
        manifest = json.loads(mpath.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{mpath}: corrupt manifest ({exc}); re-run the stage that wrote it.") from exc
    if not isinstance(manifest, dict):
        raise ArtifactError(f"{mpath}: corrupt manifest (not a JSON object); re-run the stage that wrote it.")
    for key in ("schema_version", "kind", "payload", "scales", "precision", "hash"):
        if key not in manifest:
            raise ArtifactError(f"{mpath}: manifest lacks {key!r}; re-run the stage that wrote it.")
    if not isinstance(manifest["schema_version"], int) or manifest["schema_version"] > SCHEMA_VERSION:
        raise ArtifactError(f"{mpath}: schema {manifest['schema_version']} is newer than this edgesr "
                            f"({__version__}, schema {SCHEMA_VERSION}); upgrade edgesr.")
    _check_payload_name(manifest["payload"], mpath)
    art = Artifact(path, manifest)
    if not art.payload.is_file():
        raise ArtifactError(f"{art.payload}: payload named in the manifest is missing; re-run the stage.")
    return verify_payload(art) if verify else art


def write_artifact(path: str | os.PathLike, payload_writer, payload_name: str, manifest: dict[str, Any]) -> Artifact:
    """Write ``payload_name`` with ``payload_writer(tmp_file)`` and the manifest, then move into place.

    ``manifest`` is read after the payload is written, so the writer may add what it measured to it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = make_temp_dir(path.parent, prefix=f".{path.name}.tmp")
    try:
        payload_writer(tmp / payload_name)
        for f in tmp.iterdir():  # writers differ (safetensors writes 0600): every file gets the umask's mode
            fix_mode(f)
        full = {
            "schema_version": SCHEMA_VERSION,
            "edgesr_version": __version__,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "io": IO_CONVENTION,
            "transforms": [],
            "metrics": {},
            "parent": None,
            **manifest,
            "payload": payload_name,
            "hash": content_hash(tmp / payload_name),
        }
        atomic_write_text(tmp / MANIFEST, json.dumps(full, indent=2, sort_keys=False) + "\n")
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return Artifact(path, full)


def update_metrics(art: Artifact, metrics: dict[str, Any], **fields: Any) -> Artifact:
    """Merge ``metrics`` (and top-level ``fields``) into the artifact's manifest; the payload, and so the
    hash, is unchanged."""
    art.manifest["metrics"] = {**art.manifest.get("metrics", {}), **metrics}
    art.manifest.update(fields)
    atomic_write_text(art.path / MANIFEST, json.dumps(art.manifest, indent=2) + "\n")
    return art


# ----------------------------------------------------------------------------------------------- models

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
        if t.get("type") == "prune":
            apply_shapes(model, t["shapes"])
    return model


def save_model(path: str | os.PathLike, model: nn.Module, *, name: str, arch: dict, precision: str = "fp32",
               transforms: list | None = None, parent: Artifact | None = None,
               metrics: dict | None = None, extra: dict | None = None) -> Artifact:
    """Save a PyTorch model as an artifact: ``model.safetensors`` + manifest."""
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    n_params = sum(p.numel() for p in model.parameters())
    manifest = {
        "kind": "model", "name": name, "arch": arch, "scales": list(getattr(model, "scales", [arch.get("scale")])),
        "precision": precision, "params": n_params, "size_multiple": getattr(model, "size_multiple", 1),
        "transforms": transforms or [], "metrics": metrics or {},
        "parent": {"name": parent.manifest.get("name"), "hash": parent.hash, "path": str(parent.path)} if parent else None,
        **(extra or {}),
    }
    return write_artifact(path, lambda p: save_file(state, str(p), metadata={"format": "pt"}), "model.safetensors",
                          manifest)


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
    return model.eval()
