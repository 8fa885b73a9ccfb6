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
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from . import __version__
from .errors import EdgesrError
from .files import atomic_write_text, fix_mode, make_temp_dir

__all__ = [
    "Artifact", "ArtifactError", "Manifest", "read_artifact", "write_artifact", "content_hash", "update_metrics",
    "check_pinned",
    "atomic_write_text", "verify_payload", "parent_record", "derived_manifest", "derived_transforms",
    "check_destination", "artifact_files", "Candidate", "Quality", "staging_dir", "commit", "materialize",
]

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
IO_CONVENTION = {"input": "lr", "output": "sr", "layout": "NCHW", "dtype": "float32", "colour": "RGB",
                 "range": [0.0, 1.0]}


class ArtifactError(EdgesrError, ValueError):
    """An artifact that cannot be used; the message names the directory and the fix."""


class Manifest(dict):
    """An artifact's manifest: the JSON object on disk (a ``dict``, written unchanged), read through typed
    accessors with the defaults old manifests need, the same way everywhere."""

    @property
    def kind(self) -> str:
        return self["kind"]

    @property
    def precision(self) -> str:
        return str(self.get("precision", "fp32"))

    @property
    def scales(self) -> list[int]:
        return [int(s) for s in self["scales"]]

    @property
    def size_multiple(self) -> int:
        """Input sides must be multiples of this (pad and crop back); 1 when the manifest says nothing."""
        return int(self.get("size_multiple", 1))

    @property
    def input_size(self) -> tuple[int, int] | None:
        """(H, W) a graph is bound to (an imported fixed-size ONNX file), or None (any size)."""
        v = self.get("input_size")
        return (int(v[0]), int(v[1])) if v else None

    @property
    def max_batch(self) -> int | None:
        """The largest batch the graph runs at once (1 for a graph bound to batch 1), or None (any)."""
        v = self.get("max_batch")
        return int(v) if v else None

    @property
    def transforms(self) -> list[dict]:
        return list(self.get("transforms", []))

    def last_quantization(self) -> dict[str, Any]:
        """See :func:`last_quantization`."""
        return last_quantization(self)


@dataclass
class Artifact:
    path: Path
    manifest: Manifest

    def __post_init__(self):
        if not isinstance(self.manifest, Manifest):
            self.manifest = Manifest(self.manifest)

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


def check_pinned(art: Artifact, pin: str | None, source: str, where: str) -> None:
    """``pin`` (8 to 16 hex digits of a content hash, or None): the version of ``source`` (a path or a pretrained
    name) that a recipe was made with. Another version (a pretrained name that this edgesr ships anew, a folder
    rewritten since) is refused, naming both hashes and the two ways on."""
    if pin is None:
        return
    if not isinstance(pin, str) or not re.fullmatch(r"[0-9a-fA-F]{8,16}", pin):
        raise ArtifactError(f"{where}.hash: {pin!r} is not a content hash; give the first 8 to 16 hex digits of the "
                            f"artifact's (its manifest's \"hash\": {source} has {art.hash})")
    if art.hash.startswith(pin.lower()):
        return
    shipped = art.path.parent.name == "pretrained" and Path(source).name == source and not Path(source).exists()
    where_from = (f"the pretrained model {source!r} of this edgesr is {art.hash}" if shipped
                  else f"{art.path} now holds {art.hash}")
    get = " (from the edgesr release or commit that shipped it)" if shipped else ""
    raise ArtifactError(f"{where}: {where_from}, not the {pin} the recipe pins (the version it was made with). "
                        f"Point path at a copy of the pinned version{get}, or set hash: {art.hash} to accept "
                        "this one (the stages that use it then re-run).")


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
        foreign = [path] if path.is_file() else sorted(path.glob("*")) if path.is_dir() else []
        foreign = [f for f in foreign if f.suffix.lower() in (".onnx", ".pth", ".pt", ".ckpt", ".safetensors", ".bin")]
        if foreign:
            hint = (f" {foreign[0].name} looks like a model file from elsewhere: bring it in with `edgesr import "
                    f"{foreign[0]} --out DIR` (published checkpoints and ONNX files; see README, Importing published "
                    "models), then use DIR.")
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
    scales, multiple = manifest["scales"], manifest.get("size_multiple", 1)
    if not isinstance(scales, list) or not scales or not all(isinstance(s, int) and not isinstance(s, bool)
                                                             and 1 <= s <= 16 for s in scales):
        raise ArtifactError(f"{mpath}: scales {scales!r} is not a list of whole scales from 1 to 16; the manifest was "
                            "edited or is corrupt. Re-run the stage that wrote it, or copy the artifact again.")
    if not isinstance(multiple, int) or isinstance(multiple, bool) or not 1 <= multiple <= 256:
        raise ArtifactError(f"{mpath}: size_multiple {multiple!r} is not a whole number from 1 to 256; the manifest "
                            "was edited or is corrupt. Re-run the stage that wrote it, or copy the artifact again.")
    art = Artifact(path, manifest)
    if not art.payload.is_file():
        raise ArtifactError(f"{art.payload}: payload named in the manifest is missing; re-run the stage.")
    return verify_payload(art) if verify else art


SIDECARS = ("trtexec.txt",)
"""Files an artifact writer puts beside the payload (listed in new manifests' ``files``; this list covers
artifacts written before manifests listed their files)."""


QUANTIZING_STEPS = ("quantize", "qat", "qat_onnx")
"""Transform types that write an INT8 graph (and record its form: target, weight bits, TensorRT readiness)."""


def last_quantization(manifest: dict[str, Any]) -> dict[str, Any]:
    """The record of the last step that quantized this artifact's graph ({} when none did): the one place the
    form of an INT8 artifact is looked up (engine builds, the runtimes' 7-/8-bit weight check, QAT on a graph)."""
    return next((t for t in reversed(manifest.get("transforms", [])) if t.get("type") in QUANTIZING_STEPS), {})


def artifact_files(manifest: dict[str, Any]) -> set[str]:
    """The file names that belong to an artifact: its manifest, payload and sidecars."""
    files = manifest.get("files")
    own = set(files) if isinstance(files, list) else set(SIDECARS)
    return own | {MANIFEST, str(manifest.get("payload"))}


def check_destination(path: str | os.PathLike, *, kind: str | None, overwrite: bool,
                      inputs: tuple = ()) -> None:
    """Refuse to write an artifact where it would destroy something: an artifact is written only into a new or
    empty directory, or over an artifact of the same kind (``kind``; None: any) when ``overwrite`` is given,
    never over one of its ``inputs`` and never over files that are not an artifact's own."""
    path = Path(path)
    for src in inputs:
        if src is not None and path.exists() and path.resolve() == Path(src).resolve():
            raise ArtifactError(f"{path}: is the input artifact; refusing to write over it. Choose another output "
                                "directory (--out).")
    if not path.exists():
        return
    if not path.is_dir():
        raise ArtifactError(f"{path}: exists and is a file; an artifact is a directory. Choose another output "
                            "directory (--out).")
    entries = sorted(p.name for p in path.iterdir())
    if not entries:
        return
    try:
        old = json.loads((path / MANIFEST).read_text())
    except (OSError, ValueError):
        old = None
    if not isinstance(old, dict) or "kind" not in old:
        raise ArtifactError(f"{path}: holds {len(entries)} file(s) ({', '.join(entries[:4])}"
                            f"{', ...' if len(entries) > 4 else ''}) and is not an edgesr artifact; writing an "
                            "artifact there would replace them. Choose a new or empty directory (--out).")
    foreign = [e for e in entries if e not in artifact_files(old)]
    if foreign:
        raise ArtifactError(f"{path}: holds an artifact and other files ({', '.join(foreign[:4])}"
                            f"{', ...' if len(foreign) > 4 else ''}); replacing the artifact would delete them. Move "
                            "them out, or choose another directory (--out).")
    if kind is not None and old.get("kind") != kind:
        raise ArtifactError(f"{path}: holds a {old.get('kind')!r} artifact ({old.get('name')}); refusing to replace it "
                            f"with a {kind!r} one. Choose another directory (--out).")
    if not overwrite:
        raise ArtifactError(f"{path}: holds a {old.get('kind')!r} artifact ({old.get('name')}) already; pass "
                            "--overwrite to replace it, or choose another directory (--out).")


@dataclass(frozen=True)
class Quality:
    """What a lossy step measured on the validation images: its PSNR and its parent's, on the same runtime."""

    step: str
    """Names the step in the budget's message (``quantize int8``)."""
    psnr: float
    parent_psnr: float | None = None
    """None: there is no parent to hold it to (the budget does not apply)."""


@dataclass
class Candidate:
    """A stage's result before it is an artifact: its payload (and any side files) written in a staging
    directory, the manifest fields that describe it, and, for a lossy stage, the quality it measured. The
    runner applies the quality budget to it and commits it once (:func:`commit`); nothing edits it after."""

    staging: Path
    """The directory the payload is in (:func:`staging_dir`: beside the destination, same file system)."""
    payload: str
    """The payload's file name in ``staging``."""
    manifest: dict[str, Any]
    quality: Quality | None = None
    gentler: Callable[[], "Candidate"] | None = None
    """A gentler form the stage can make when the result is over budget and the policy is ``fallback`` (mixed
    precision for quantize); it writes into the same staging directory and returns the new candidate."""
    complete: bool = False
    """``staging`` already holds a whole artifact, manifest included (a verified copy): moved into place as is."""
    extra: dict[str, Any] = field(default_factory=dict)
    """What the stage hands its caller beside the artifact (not written)."""


def staging_dir(path: str | os.PathLike) -> Path:
    """A fresh temporary directory beside ``path`` for a candidate's payload (named so that an interrupted run's
    leftovers are recognised and removed by the next one)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return make_temp_dir(path.parent, prefix=f".{path.name}.tmp")


def commit(path: str | os.PathLike, cand: Candidate, *, overwrite: bool = False) -> Artifact:
    """Make ``cand`` the artifact at ``path``: the manifest completed (schema, version, files, content hash) and
    written beside the payload, then the staging directory renamed into place, atomically.

    The destination is checked first (:func:`check_destination`): a new or empty directory, or (``overwrite``)
    an artifact of the same kind; never the parent artifact, never a directory with other files."""
    path, tmp = Path(path), cand.staging
    manifest = cand.manifest
    parent = manifest.get("parent") or {}
    check_destination(path, kind=manifest.get("kind"), overwrite=overwrite,
                      inputs=(parent.get("path"),) if isinstance(parent, dict) else ())
    try:
        if cand.complete:
            full = json.loads((tmp / MANIFEST).read_text())
        else:
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
                "files": sorted(f.name for f in tmp.iterdir() if f.name != MANIFEST),
                "payload": cand.payload,
                "hash": content_hash(tmp / cand.payload),
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
    return Artifact(path, Manifest(full))


def materialize(path: str | os.PathLike, make: Callable[[Path], Candidate], *, overwrite: bool = False) -> Artifact:
    """``make(staging)`` writes a candidate into a fresh staging directory beside ``path``, which is then committed
    there; what a command outside the runner (``edgesr import``, ``build-engine``) does with a candidate."""
    tmp = staging_dir(path)
    try:
        return commit(path, make(tmp), overwrite=overwrite)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_artifact(path: str | os.PathLike, payload_writer: Callable[[Path], Any], payload_name: str,
                   manifest: dict[str, Any], *, overwrite: bool = False) -> Artifact:
    """Write ``payload_name`` with ``payload_writer(file)`` and commit it with ``manifest`` (given complete:
    the writer writes the payload only)."""
    def make(tmp: Path) -> Candidate:
        payload_writer(tmp / payload_name)
        return Candidate(tmp, payload_name, dict(manifest))
    return materialize(path, make, overwrite=overwrite)


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
            # a graph bound to one input size (and batch) stays bound in every form made from it
            **{k: source.manifest[k] for k in ("input_size", "max_batch") if k in source.manifest},
            "transforms": derived_transforms(source, arch, transform),
            "parent": parent_record(source), **fields}

