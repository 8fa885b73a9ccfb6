"""Import: a published checkpoint becomes an edgesr model artifact (``edgesr import`` and the ``import`` stage).

The file is read with ``torch.load(weights_only=True, map_location="cpu")`` (no code runs; a checkpoint saved on a
GPU loads on a CPU) or safetensors; wrapper dicts (``state_dict``, ``params_ema``, ``params``, ``model``,
``net``) are unwrapped and ``module.`` prefixes (DataParallel) stripped. Each architecture declares, in its own
file, the authors' layouts it knows, as a static method of its module::

    checkpoint_layout(state) -> (keywords, key_map) | None

``keywords`` are the constructor keywords the tensors fix (channels, blocks, scale) and the switches that make
edgesr's module compute what the authors' code computes; ``key_map`` maps every authors' key to an edgesr key
(or ``(key, fn)`` when a tensor changes layout). The import is strict: every tensor of the file is consumed,
every tensor of the module is given, every shape matches, every value is finite; otherwise the error names the
unused and missing keys, and the keywords the file's shapes point to. ``arch: auto`` asks every architecture
and accepts exactly one answer.

The manifest records the source file (path and full sha256), the layout and the keywords, so the artifact can
be traced to the file it came from; the weights themselves are re-saved as safetensors.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from .artifacts import Artifact, Candidate, materialize
from .errors import EdgesrError
from .modelio import model_candidate
from .models import MODELS, build_model
from .stages import MODEL, StageContext, register_stage

__all__ = ["ImportError_", "ImportConfig", "read_checkpoint", "detect_layouts", "import_checkpoint", "file_sha256"]

WRAPPERS = ("params_ema", "params", "state_dict", "model", "net", "generator")
"""Keys under which training frameworks nest the weights (BasicSR: params_ema before params; Lightning:
state_dict), tried in this order."""


class ImportError_(EdgesrError, ValueError):
    """A checkpoint that cannot become an artifact; the message names the file and the fix."""


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The tensors of a checkpoint file, unwrapped and without ``module.`` prefixes, and what was done to get
    them (``["unwrapped 'params_ema'", "stripped 'module.'"]``)."""
    path = Path(path)
    if not path.is_file():
        raise ImportError_(f"{path}: no such checkpoint file. Check the path (relative paths start at {Path.cwd()}).")
    if path.stat().st_size == 0:
        raise ImportError_(f"{path}: is empty (0 bytes); the download or copy was interrupted, fetch it again.")
    steps: list[str] = []
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        try:
            obj: Any = load_file(str(path))
        except Exception as exc:  # safetensors raises its own error types
            raise ImportError_(f"{path}: cannot read this safetensors file ({exc}); it is corrupt or truncated, "
                               "fetch it again.") from exc
    else:
        if path.suffix.lower() == ".onnx":
            raise ImportError_(f"{path}: is an ONNX graph, not a checkpoint; give a PyTorch checkpoint (.pth, .pt, "
                               ".ckpt) or a .safetensors file.")
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # pickle/zip errors, or a file that holds more than tensors
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            why = ("it holds Python objects other than tensors, which edgesr does not unpickle (no code runs on "
                   "load); re-save it with torch.save(model.state_dict(), path)") if "weights_only" in str(exc) \
                else "it is corrupt, truncated or not a PyTorch checkpoint; fetch it again"
            raise ImportError_(f"{path}: cannot read this checkpoint ({first[:200]}): {why}.") from None
    for _ in range(3):  # nested wrappers: {"state_dict": {"model": {...}}}
        if isinstance(obj, dict) and not _is_state(obj):
            key = next((k for k in WRAPPERS if isinstance(obj.get(k), dict)), None)
            if key is None:
                break
            obj = obj[key]
            steps.append(f"unwrapped {key!r}")
    if not isinstance(obj, dict) or not obj:
        raise ImportError_(f"{path}: holds no tensors edgesr can find (a {type(obj).__name__}); expected a state "
                           f"dict, or one nested under one of {list(WRAPPERS)}.")
    others = sorted(k for k, v in obj.items() if not isinstance(v, torch.Tensor))
    if others:
        raise ImportError_(f"{path}: besides tensors it holds {others[:5]}, and no known wrapper key "
                           f"({', '.join(WRAPPERS)}) around the weights; re-save the model's state_dict alone.")
    for prefix in ("module.", "_orig_mod."):  # DataParallel / DDP, torch.compile
        if all(k.startswith(prefix) for k in obj):
            obj = {k[len(prefix):]: v for k, v in obj.items()}
            steps.append(f"stripped {prefix!r}")
    return {k: v for k, v in obj.items()}, steps


def _is_state(obj: dict) -> bool:
    return bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def detect_layouts(state: dict[str, torch.Tensor]) -> dict[str, tuple[dict, dict]]:
    """Every architecture that recognises ``state``: name -> (keywords, key_map)."""
    found = {}
    for name in MODELS.names():
        layout = getattr(MODELS.get(name), "checkpoint_layout", None)
        if layout is None:
            continue
        got = layout(state)
        if got is not None:
            found[name] = got
    return found


def importable_architectures() -> list[str]:
    return [n for n in MODELS.names() if hasattr(MODELS.get(n), "checkpoint_layout")]


@dataclass(frozen=True)
class Imported:
    model: torch.nn.Module
    arch: dict
    source: dict


def load_checkpoint_model(path: str | Path, arch: str = "auto", keywords: dict | None = None) -> Imported:
    """Build the module a checkpoint file fits and load its weights strictly (see the module docstring)."""
    path = Path(path)
    keywords = dict(keywords or {})
    state, steps = read_checkpoint(path)
    known = importable_architectures()
    if arch == "auto":
        found = detect_layouts(state)
        if not found:
            raise ImportError_(f"{path}: no edgesr architecture recognises this checkpoint's keys (first: "
                               f"{sorted(state)[:4]}); architectures that import: {', '.join(known)}. Name one with "
                               "--arch if the file is in one of their layouts under other names.")
        if len(found) > 1:
            raise ImportError_(f"{path}: several architectures recognise this checkpoint ({', '.join(sorted(found))}); "
                               "choose one with --arch.")
        (arch, (detected, key_map)), = found.items()
    else:
        if arch not in MODELS:
            import difflib

            close = difflib.get_close_matches(arch, known, n=1, cutoff=0.5)
            raise ImportError_(f"--arch {arch}: not an architecture edgesr imports"
                               f"{f' (did you mean {close[0]!r}?)' if close else ''}; these import: {', '.join(known)}, "
                               "or --arch auto.")
        layout = getattr(MODELS.get(arch), "checkpoint_layout", None)
        if layout is None:
            raise ImportError_(f"--arch {arch}: edgesr has this architecture but no importer for its authors' "
                               f"checkpoints; these import: {', '.join(known)}.")
        got = layout(state)
        if got is None:
            others = sorted(detect_layouts(state))
            raise ImportError_(f"{path}: is not a {arch} checkpoint in a layout edgesr knows (keys such as "
                               f"{sorted(state)[:4]})" + (f"; it looks like {', '.join(others)}: --arch {others[0]}"
                                                          if others else "") + ".")
        detected, key_map = got
    spec = {"type": arch, **detected, **keywords}
    try:
        model = build_model(spec)
    except (TypeError, ValueError) as exc:
        raise ImportError_(f"{path}: {arch} does not accept {spec}: {exc}. The file's shapes point to "
                           f"{detected}.") from None
    _load_strict(model, state, key_map, path, arch, detected, keywords)
    n_values = sum(v.numel() for v in state.values())
    source = {"file": str(path), "file_name": path.name, "sha256": file_sha256(path), "layout": arch,
              "read": steps, "tensors": len(state), "values": n_values, "detected": detected}
    return Imported(model.eval(), spec, source)


def _load_strict(model: torch.nn.Module, state: dict, key_map: dict, path: Path, arch: str, detected: dict,
                 keywords: dict) -> None:
    expected = model.state_dict()
    unused = sorted(k for k in state if k not in key_map)
    renamed: dict[str, torch.Tensor] = {}
    origin: dict[str, str] = {}
    for src, dst in key_map.items():
        if src not in state:
            continue
        fn: Callable | None = None
        if isinstance(dst, tuple):
            dst, fn = dst
        renamed[dst] = fn(state[src]) if fn else state[src]
        origin[dst] = src
    unknown_dst = sorted(k for k in renamed if k not in expected)
    missing = sorted(k for k in expected if k not in renamed)
    wrong = sorted(k for k in renamed if k in expected and tuple(renamed[k].shape) != tuple(expected[k].shape))
    if unused or unknown_dst or missing or wrong:
        parts = []
        if unused or unknown_dst:
            parts.append(f"{len(unused) + len(unknown_dst)} tensor(s) of the file unused: "
                         f"{(unused + [origin[k] for k in unknown_dst])[:5]}")
        if missing:
            parts.append(f"{len(missing)} tensor(s) of the {arch} module not in the file: {missing[:5]}")
        if wrong:
            parts.append("shape mismatch " + ", ".join(
                f"{origin[k]}: file {tuple(renamed[k].shape)} vs module {tuple(expected[k].shape)}" for k in wrong[:3]))
        differ = {k: v for k, v in detected.items() if k in keywords and keywords[k] != v}
        hint = (f"The file's shapes fit {', '.join(f'{k}={v}' for k, v in differ.items())} (you gave "
                f"{', '.join(f'{k}={keywords[k]}' for k in differ)}): drop or change those keywords."
                if differ else f"The file's shapes fit {detected}; if that is right, the file is not a complete "
                               f"{arch} checkpoint.")
        raise ImportError_(f"{path}: does not fit {arch} ({'; '.join(parts)}). {hint}")
    bad = [origin[k] for k, v in renamed.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise ImportError_(f"{path}: holds NaN or Inf values in {bad[:5]}: the training that wrote it diverged. Use "
                           "an earlier checkpoint.")
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in renamed.items()}, strict=True)


def import_checkpoint(path: str | Path, out: str | Path, *, arch: str = "auto", keywords: dict | None = None,
                      scale: int | None = None, name: str | None = None, overwrite: bool = False) -> Artifact:
    """Import ``path`` into a model artifact at ``out``. ``scale``: the scale the file must have (a check, or the
    scale of a network whose file does not fix it); ``keywords``: the architecture's keywords the user sets."""
    return materialize(out, lambda staging: checkpoint_candidate(path, staging, arch=arch, keywords=keywords, scale=scale,
                                                                 name=name or Path(out).name, out=Path(out)),
                       overwrite=overwrite)


def checkpoint_candidate(path: str | Path, staging: Path, *, arch: str, keywords: dict | None, scale: int | None,
                         name: str, out: Path) -> Candidate:
    """The model of checkpoint ``path`` as a candidate artifact written in ``staging`` (see :func:`import_checkpoint`)."""
    keywords = dict(keywords or {})
    if scale is not None:
        keywords.setdefault("scale", scale)
    imp = load_checkpoint_model(path, arch, keywords)
    model = imp.model
    scales = list(getattr(model, "scales", (model.scale,)))
    if scale is not None and scale not in scales:
        raise ImportError_(f"{path}: is a x{'/x'.join(map(str, scales))} network; --scale {scale} does not fit it.")
    n_params = sum(p.numel() for p in model.parameters())
    transform = {"type": "import", "source": imp.source["file_name"], "sha256": imp.source["sha256"],
                 "layout": imp.source["layout"]}
    return model_candidate(staging, model, name=name, arch=imp.arch, transforms=[transform],
                           extra={"source": imp.source, "params": n_params}, out=out)


# ------------------------------------------------------------------------------------------------ stage

@dataclass(frozen=True)
class ImportConfig:
    """Import an authors' checkpoint file (``path``) as this run's model artifact."""

    path: str
    arch: str = "auto"
    keywords: dict = field(default_factory=dict)
    """The architecture's keywords to set (the rest come from the file's shapes)."""


@register_stage("import", ImportConfig, makes=MODEL, external="path")
def import_stage(cfg: ImportConfig, ctx: StageContext) -> Candidate:
    cand = checkpoint_candidate(cfg.path, ctx.staging, arch=cfg.arch, keywords=cfg.keywords, scale=None, name=ctx.name,
                                out=ctx.out)
    if ctx.scale not in cand.manifest["scales"]:
        raise ImportError_(f"{cfg.path}: is a x{'/x'.join(map(str, cand.manifest['scales']))} network; the recipe's "
                           f"scale is {ctx.scale}. Import a checkpoint of that scale, or change the recipe's scale.")
    return cand

