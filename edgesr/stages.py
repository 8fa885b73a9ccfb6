"""The stage table: every recipe stage registered once, with its config class, its function and what it
takes and makes. The recipe loader (reference names, kinds of inputs), the runner and the report read it;
nothing else lists stages.

A stage is ``fn(cfg, ctx, **inputs) -> Artifact``: ``cfg`` its typed config, ``ctx`` a
:class:`StageContext` (what every stage may need: data, scale, patch settings, seed, threads, its output
directory, and services the runner provides, such as a latency measurement), and ``inputs`` the artifacts
its config's reference fields name (``input=``, ``teacher=``, ``init_from=``; ``None`` when unset).

Adding a stage is one file that calls :func:`register_stage`, plus its module name in ``STAGE_MODULES``.
"""

from __future__ import annotations

import importlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .artifacts import Artifact, check_destination, read_artifact
from .registry import Registry

__all__ = ["StageContext", "StageDef", "STAGES", "register_stage", "stage_table", "LoadConfig", "MODEL", "ONNX",
           "ONNX_FP32", "ENGINE", "ANY", "STAGE_MODULES", "satisfies", "KIND_NAMES"]

MODEL, ONNX_FP32, ONNX, ENGINE, ANY = "model", "onnx-fp32", "onnx", "engine", "any"
"""What a stage makes and takes: a PyTorch model artifact, an FP32 ONNX graph, an ONNX graph of any
precision (INT8, FP16: an FP32 one is one too), or anything (``load``: known only once loaded)."""

KIND_NAMES = {MODEL: "a PyTorch model", ONNX_FP32: "an FP32 ONNX graph", ONNX: "an ONNX graph",
              ENGINE: "a TensorRT engine"}


def satisfies(made: str, wanted: str) -> bool:
    """Whether an artifact a stage makes (``made``) can be what another stage takes (``wanted``)."""
    return made in (wanted, ANY) or (wanted == ONNX and made == ONNX_FP32)

STAGE_MODULES = (
    "edgesr.train.train", "edgesr.train.gan", "edgesr.compress.distill", "edgesr.compress.prune",
    "edgesr.compress.ptq", "edgesr.compress.fp16", "edgesr.compress.qat", "edgesr.export.onnx",
    "edgesr.export.tensorrt", "edgesr.export.onnx_import", "edgesr.importing",
)
"""The files that register stages, imported by :func:`stage_table` (the one place stages are imported)."""


@dataclass(frozen=True)
class StageContext:
    """What the runner hands every stage."""

    name: str
    """The stage's name in the recipe (its artifact's name)."""
    out: Path
    """Where its artifact goes (``<run dir>/<name>``); checkpoints and caches go beside it."""
    train_pairs: list = ()
    val_pairs: list = ()
    scale: int = 2
    patch_size: int = 32
    min_patch_std: float = 0.04
    degradation: str = "bicubic"
    """How training LR patches are made (``data.degradation``): the protocol's bicubic, or the ``general`` mix."""
    seed: int = 0
    threads: int = 0
    """Intra-op threads for ONNX Runtime sessions a stage opens (0: all cores); PyTorch's are set by the runner."""
    latency_fn: Callable[[Any, tuple[int, int]], float] | None = None
    """``latency_fn(model, (h, w)) -> p50 ms`` of a PyTorch model exported to ONNX and run by ONNX Runtime on the
    CPU (the runner provides it); the ``prune`` stage's latency target uses it."""
    speedup_fn: Callable[[Any, Any, tuple[int, int], str], dict] | None = None
    """``speedup_fn(ref_model, new_model, (h, w), backend) -> {ratio, ci95, ...}``: how much faster ``new`` runs
    than ``ref`` on ``backend`` (both exported to ONNX), timed in one interleaved run (the ``prune`` stage's speed
    guard uses it, on each backend of ``measure_backends`` or its own ``measure_on``)."""
    measure_backends: tuple[str, ...] = ("onnxruntime",)
    """The recipe's benchmark backends: where its models will be timed, so where a speed claim must hold."""


@dataclass(frozen=True)
class StageDef:
    name: str
    config: type
    fn: Callable[..., Artifact]
    makes: str
    """MODEL, ONNX_FP32, ONNX or ANY: the kind of artifact it writes."""
    takes: dict[str, str]
    """Reference field of its config -> the kind of artifact it must name."""
    lossy: bool = False
    """Measures a PSNR drop against its parent (prune, quantize, fp16, qat): the report compares them."""
    trains: bool = False
    """Runs data-parallel under ``torchrun`` (train, distill)."""
    external: str | None = None
    """Config field naming an artifact outside the run (``load``'s ``path``): its hash joins the fingerprint."""
    environment: Callable[[Any], dict] | None = None
    """Facts of this machine the result depends on (the TensorRT version for engines): they join the
    fingerprint, so a stage re-runs when they change."""


STAGES: Registry = Registry("stage")


def register_stage(name: str, config: type, *, makes: str, takes: dict[str, str] | None = None,
                   lossy: bool = False, trains: bool = False, external: str | None = None,
                   environment: Callable[[Any], dict] | None = None) -> Callable:
    """Decorator registering ``fn(cfg, ctx, **inputs)`` as the stage ``name``."""
    def deco(fn: Callable[..., Artifact]) -> Callable[..., Artifact]:
        STAGES.register(name)(StageDef(name, config, fn, makes, dict(takes or {}), lossy, trains, external,
                                       environment))
        return fn
    return deco


def stage_table() -> Registry:
    """The registry with every stage of ``STAGE_MODULES`` registered."""
    for module in STAGE_MODULES:
        importlib.import_module(module)
    return STAGES


# ------------------------------------------------------------------------------------------------ load

@dataclass(frozen=True)
class LoadConfig:
    """Bring an artifact made elsewhere (another run, a colleague's model) into this run: copied into the run
    directory after its content hash is verified."""

    path: str


@register_stage("load", LoadConfig, makes=ANY, external="path")
def load_stage(cfg: LoadConfig, ctx: StageContext) -> Artifact:
    """Copy a verified artifact into the run directory (atomically: a temp copy renamed into place)."""
    art = read_artifact(cfg.path)  # verifies the payload against the manifest's content hash
    dst = ctx.out
    check_destination(dst, kind=art.kind, overwrite=False, inputs=(art.path,))
    tmp = dst.with_name(f".{dst.name}.load")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(art.path, tmp)
    os.replace(tmp, dst)  # dst is absent or an empty directory
    return read_artifact(dst)
