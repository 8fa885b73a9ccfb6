"""The stage table: every recipe stage registered once, with its config class, its function and what it
takes and makes. The recipe loader (reference names, kinds of inputs), the runner and the report read it;
nothing else lists stages.

A stage is ``fn(cfg, ctx, **inputs) -> Candidate``: ``cfg`` its typed config, ``ctx`` a
:class:`StageContext` (what every stage may need: data, scale, patch settings, seed, threads, its staging
directory, and services the runner provides, such as a latency measurement), and ``inputs`` the artifacts
its config's reference fields name (``input=``, ``teacher=``, ``init_from=``; ``None`` when unset). It writes
its payload into ``ctx.staging`` and returns a :class:`~edgesr.artifacts.Candidate`; :func:`run_stage` applies
the quality budget to the stages the table marks lossy and commits the artifact, once, atomically.

Adding a stage is one file that calls :func:`register_stage`, plus its module name in ``STAGE_MODULES``.
"""

from __future__ import annotations

import dataclasses
import importlib
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .artifacts import Artifact, Candidate, check_destination, check_pinned, commit, read_artifact, staging_dir
from .budget import Budget
from .registry import Registry

__all__ = ["StageContext", "StageDef", "STAGES", "register_stage", "stage_table", "LoadConfig", "MODEL", "ONNX",
           "ONNX_FP32", "ENGINE", "ANY", "STAGE_MODULES", "satisfies", "KIND_NAMES", "run_stage", "apply_budget"]

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
    "edgesr.export.tensorrt", "edgesr.export.onnx_import", "edgesr.export.bicubic", "edgesr.importing",
)
"""The files that register stages, imported by :func:`stage_table` (the one place stages are imported)."""


@dataclass(frozen=True)
class StageContext:
    """What the runner hands every stage."""

    name: str
    """The stage's name in the recipe (its artifact's name)."""
    out: Path
    """Where its artifact goes (``<run dir>/<name>``); checkpoints and caches go beside it."""
    staging: Path | None = None
    """Where the stage writes its payload (a fresh temporary directory beside ``out``, made by :func:`run_stage`)."""
    train_pairs: list = ()
    val_pairs: list = ()
    scale: int = 2
    patch_size: int = 32
    min_patch_std: float = 0.04
    degradation: str = "bicubic"
    """How training LR patches are made (``data.degradation``): the protocol's bicubic, or the ``general`` mix
    (a :class:`~edgesr.data.degradations.DegradationSpec` carrying the recipe's ``data.degradation_mix``)."""
    val_degraded: dict | None = None
    """``data.valid_degradations`` other than the protocol alone: {name: validation pairs with LR made that way};
    training stages pass it to ``fit``, which keeps the weights of the best mean over them."""
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
    fn: Callable[..., Candidate]
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
    def deco(fn: Callable[..., Candidate]) -> Callable[..., Candidate]:
        STAGES.register(name)(StageDef(name, config, fn, makes, dict(takes or {}), lossy, trains, external,
                                       environment))
        return fn
    return deco


def stage_table() -> Registry:
    """The registry with every stage of ``STAGE_MODULES`` registered."""
    for module in STAGE_MODULES:
        importlib.import_module(module)
    return STAGES


def apply_budget(cand: Candidate, budget: Budget) -> Candidate:
    """Hold a lossy stage's candidate to its quality budget: over budget with ``fallback``, the stage's gentler
    form first; then the budget record (and the PSNR) join its metrics, or :class:`QualityBudgetExceeded` is
    raised (``fail``) and the candidate never becomes an artifact."""
    q = cand.quality
    if q is None:
        return cand
    if q.parent_psnr is not None and budget.falls_back and budget.exceeded(q.parent_psnr, q.psnr) and cand.gentler:
        cand = cand.gentler()
        q = cand.quality
    metrics = cand.manifest.setdefault("metrics", {})
    metrics["val_psnr"] = round(q.psnr, 4)
    if q.parent_psnr is not None:
        metrics["budget"] = budget.check(q.step, q.parent_psnr, q.psnr)
    return cand


def run_stage(sdef: StageDef, cfg: Any, ctx: StageContext, inputs: dict[str, Artifact]) -> Artifact | None:
    """Run one stage and make its artifact: the stage writes a candidate into a fresh staging directory, the
    quality budget is applied when the table marks the stage lossy (:func:`apply_budget`, the one place), and
    the candidate is committed at ``ctx.out``. A failure leaves nothing behind."""
    staging = staging_dir(ctx.out)
    try:
        cand = sdef.fn(cfg, dataclasses.replace(ctx, staging=staging), **inputs)
        if cand is None and sdef.trains:  # another rank of a data-parallel training: rank 0 writes
            return None
        if not isinstance(cand, Candidate):
            raise TypeError(f"stage {sdef.name!r} returned {type(cand).__name__}, not a Candidate (write the payload "
                            "into ctx.staging and return Candidate(ctx.staging, payload, manifest))")
        if sdef.lossy:
            cand = apply_budget(cand, Budget.of(cfg))
        return commit(ctx.out, cand)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# ------------------------------------------------------------------------------------------------ load

@dataclass(frozen=True)
class LoadConfig:
    """Bring an artifact made elsewhere (another run, a colleague's model) into this run: copied into the run
    directory after its content hash is verified. ``hash`` (optional: the first 8 to 16 hex digits of the content
    hash) pins the version the recipe was made with: a pretrained name that a newer edgesr ships anew, or a folder
    rewritten since, is refused when the recipe loads instead of silently training on from another model."""

    path: str
    hash: str | None = dataclasses.field(default=None, metadata={"fingerprint": "never"})  # the source's hash counts


@register_stage("load", LoadConfig, makes=ANY, external="path")
def load_stage(cfg: LoadConfig, ctx: StageContext) -> Candidate:
    """Copy a verified artifact into the run directory, as it is (manifest included)."""
    art = read_artifact(cfg.path)  # verifies the payload against the manifest's content hash
    check_pinned(art, cfg.hash, cfg.path, f"stage {ctx.name} (load)")  # again: the folder may have changed since
    check_destination(ctx.out, kind=art.kind, overwrite=False, inputs=(art.path,))
    shutil.copytree(art.path, ctx.staging, dirs_exist_ok=True)
    return Candidate(ctx.staging, art.manifest["payload"], dict(art.manifest), complete=True)
