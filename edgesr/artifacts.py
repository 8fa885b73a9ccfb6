"""Artifacts: a directory holding a payload (safetensors weights or an ``.onnx`` graph) and ``manifest.json``.

This module is the manifest side and imports no torch: an ONNX- or engine-only device reads, verifies and
runs artifacts without PyTorch. Saving and rebuilding PyTorch models is :mod:`edgesr.modelio`.

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

from . import __version__
from .errors import EdgesrError
from .files import atomic_write_text, fix_mode, make_temp_dir

__all__ = [
    "Artifact", "ArtifactError", "read_artifact", "write_artifact", "content_hash", "update_metrics",
    "atomic_write_text", "verify_payload", "parent_record", "derived_manifest", "derived_transforms",
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
    if not path.exists() and len(path.parts) == 1:  # a bare name: a pretrained model shipped with edgesr
        from . import pretrained

        shipped = pretrained.path_of(path.name)
        if shipped is not None:
            path = shipped
    mpath = path / MANIFEST
    if not mpath.is_file():
        what = "no such directory" if not path.exists() else f"no {MANIFEST}"
        hint = ""
        if not path.exists() and len(path.parts) == 1:
            import difflib

            from . import pretrained

            close = difflib.get_close_matches(path.name, pretrained.names(), n=1, cutoff=0.6)
            hint = (f" Did you mean the pretrained model {close[0]!r}?" if close else
                    f" Pretrained models: {', '.join(pretrained.names()) or 'none shipped'} (edgesr models).")
        raise ArtifactError(f"{path}: not an edgesr artifact ({what}). Point at a directory written by "
                            f"an edgesr stage, e.g. runs/quickstart/student, or name a pretrained model.{hint}")
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


def parent_record(parent: Artifact) -> dict[str, Any]:
    """How a derived artifact names the artifact it was made from (its content hash pins it)."""
    return {"name": parent.manifest.get("name"), "hash": parent.hash, "path": str(parent.path)}


def derived_transforms(source: Artifact, arch: dict, transform: dict | None = None) -> list[dict]:
    """``source``'s transforms, then ``reparameterize`` if ``arch`` is not its architecture (a training-form
    student collapsed for deployment), then ``transform``."""
    transforms = list(source.manifest.get("transforms", []))
    if arch != source.manifest["arch"]:
        transforms.append({"type": "reparameterize", "arch": arch})
    if transform is not None:
        transforms.append(transform)
    return transforms


def derived_manifest(source: Artifact, *, kind: str, name: str, precision: str, arch: dict | None = None,
                     transform: dict | None = None, **fields: Any) -> dict[str, Any]:
    """The manifest of an artifact made from ``source``: its architecture (``arch`` when the step changed
    it, e.g. a re-parameterized student, recorded as a ``reparameterize`` transform), scales, size
    multiple, every transform so far plus ``transform``, and the parent record. ``fields`` override."""
    arch = arch if arch is not None else source.manifest["arch"]
    return {"kind": kind, "name": name, "arch": arch, "scales": list(source.manifest["scales"]),
            "precision": precision, "params": source.manifest.get("params"),
            "size_multiple": source.manifest.get("size_multiple", 1),
            "transforms": derived_transforms(source, arch, transform),
            "parent": parent_record(source), **fields}

