"""Typed recipes. A recipe (YAML) names the data, chains stages, and says what the benchmark measures.

Every section is a frozen dataclass; unknown keys, missing keys and wrong types are rejected when the
recipe is loaded, with the file and the key named, so a typo never silently falls back to a default. Each
stage's config class lives with its stage and is found through the stage table (:mod:`edgesr.stages`);
:class:`TrainConfig` is here because it is the training engine's (train and distill share it).
"""

from __future__ import annotations

import dataclasses
import math
import re
import difflib
import inspect
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from .errors import EdgesrError

__all__ = ["RecipeError", "DataConfig", "TrainConfig", "BenchmarkConfig", "StageSpec", "Recipe", "load_recipe",
           "parse_recipe", "check_model_spec", "build_config"]


class RecipeError(EdgesrError, ValueError):
    """A recipe that cannot run; the message names the file, the key and what is expected."""


@dataclass(frozen=True)
class DataConfig:
    train: str = "builtin"
    """'builtin' (images shipped with scikit-image/scikit-learn), a DIV2K root, a benchmark set or a folder."""
    eval: tuple[str, ...] = ("builtin",)
    """Evaluation sets: 'builtin' (held-out built-in images) or benchmark set folders (e.g. .../Set5)."""
    valid: str = "builtin"
    """Validation set used during training and by quality budgets: 'builtin' (three held-out built-in photographs),
    a folder (as ``train``), or 'holdout': ``valid_holdout`` whole photographs of ``train`` taken out of it,
    one crop of each validating (:func:`edgesr.data.datasets.holdout_split`)."""
    valid_holdout: int = 8
    """How many source photographs ``valid: holdout`` takes out of ``train`` (crops named ``<photo>_<y>_<x>`` or
    ``<photo>_s<NNN>`` are one photograph, so none of a validation image's crops is trained on)."""
    train_rescale: tuple[float, ...] = ()
    """More training images from the same photographs: each training image again, its HR reduced by each factor
    (0 < f < 1; MATLAB bicubic, antialiased) and its LR made from that by the protocol, named ``<image>@<f>``.
    A reduced copy's HR holds detail its full-size LR lost, so the network sees other content at other scales (a
    standard augmentation for small training sets). Copies whose LR is smaller than ``patch_size`` are left out;
    validation is untouched."""
    patch_size: int = 32
    """LR patch side in pixels."""
    min_patch_std: float = 0.04
    """Redraw LR patches whose standard deviation is below this (smooth patches teach little)."""
    eval_degradations: tuple[str, ...] = ("bicubic",)
    """How the evaluation sets' LR is made (:data:`edgesr.data.degradations.EVAL_DEGRADATIONS`): ``bicubic`` is
    the sets' own LR (the protocol); every other name adds each set again as ``"<set> <name>"``, its LR made
    from the HR images that way, so the report puts every model's quality per degradation side by side, each
    beside bicubic upscaling of the same LR."""
    degradation: str = "bicubic"
    """How training LR patches are made from HR (train, distill, qat, qat_onnx, prune fine-tuning): ``bicubic``,
    the protocol's MATLAB bicubic (the default), or ``general``, a seeded mix of blurs, aliased and antialiased
    resizes, noise and JPEG (:data:`edgesr.data.degradations.GENERAL_MIX`) for frames not made by bicubic.
    Validation stays on the protocol's LR unless ``valid_degradations`` says otherwise."""
    degradation_mix: dict[str, Any] = field(default_factory=dict)
    """Changes to the ``general`` mix (``data.degradation: general``): any key of
    :data:`~edgesr.data.degradations.GENERAL_MIX`, e.g. ``{blur: 0.05, noise: 0.1, resize: {bicubic: 0.5,
    cubic-aliased: 0.35, bilinear-aliased: 0.15}}`` (``resize`` replaces the default weights: downscales left out
    are not drawn). The resulting mix is recorded in every manifest trained on it."""
    valid_degradations: tuple[str, ...] = ("bicubic",)
    """How the validation images' LR is made while training (names of ``eval_degradations``): each is validated,
    the history records each, and the weights kept are those of the best mean PSNR over them; e.g. ``[bicubic,
    cubic-aliased]`` keeps a general model for both kinds of frame, where the protocol's LR alone (the default)
    keeps the step that suits MATLAB's bicubic best. Quality budgets stay on the protocol's LR."""


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    model: dict[str, Any]
    steps: int = 1000
    batch_size: int = 16
    lr: float = 1e-3
    lr_min_ratio: float = 0.01
    loss: str = "l1"
    grad_clip: float = 0.0
    """Clip the global gradient norm to this (0: no clipping)."""
    schedule: Literal["cosine", "step", "constant"] = "cosine"
    """Learning rate schedule: cosine to lr * lr_min_ratio; step: times gamma at each milestone."""
    milestones: tuple[float, ...] = (0.5, 0.75)
    """Step schedule: fractions of training at which the learning rate is multiplied by ``gamma``."""
    gamma: float = 0.5
    warmup_steps: int = 0
    """Linear learning-rate warm-up from 0 over this many steps."""
    ema_decay: float = 0.0
    """Exponential moving average of the weights (e.g. 0.999); validated and saved instead of the raw
    weights. 0: off."""
    max_minutes: float | None = None
    """Wall-clock budget. The schedule then follows max(step / steps, elapsed / budget), so a run that
    hits the budget still ends its schedule; such a run is not bit-reproducible on resume."""
    init_from: str | None = None
    """Start from this earlier stage's weights where names and shapes match (curriculum: a x2 model's
    trunk starts its x2+x4 successor); the layers that do not match keep their fresh initialisation."""
    scale_weights: tuple[float, ...] = ()
    """Multi-output networks: loss weight of each output scale, smallest scale first (default all 1)."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: bool = True
    """Mixed precision (bfloat16 autocast) when training on a GPU; ignored on CPU."""
    workers: int = field(default=0, metadata={"fingerprint": "never"})
    """Processes that cut the next batches while the model trains (spawned, each holding the sampler, at most 4
    batches each ahead; 0: in the training process). Each batch still depends only on (seed, step): the same batches, in the same
    order, for any number of workers: no fingerprint holds it (artifacts are reused and checkpoints resume across a
    change of it). On a GPU the sampler in the
    training process caps a small student's steps (about 38 a second on an H100): give it several workers."""
    val_every: int = 200
    checkpoint_every: int = 100
    resume: bool = True


BASELINES = {"bicubic": None, "bicubic_pillow": "pillow"}
"""Benchmark variants that are not stages of the recipe: the bicubic graph the runner makes (its ``bicubic``
stage), run on the benchmark's backends, or on a baseline backend of its own (Pillow's resize: ``pillow``)."""


@dataclass(frozen=True)
class BenchmarkConfig:
    variants: tuple[str, ...] = ()
    """Artifact names from the stages, plus 'bicubic'. Model artifacts run through their exported ONNX."""
    backend: str = "onnxruntime"
    """The backend every variant runs on, unless ``backends`` names several."""
    backends: tuple[str, ...] = ()
    """Several backends (e.g. [onnxruntime, openvino]): every variant is measured on each, quality and
    latency per (variant, backend) pair, all pairs timed in one interleaved run. A backend that is not
    installed is left out with its reason in the report (the first one must be available)."""
    input_size: tuple[int, int] = (360, 640)
    """LR input (H, W) for latency."""
    warmup: int = 3
    runs: int = 30
    """Timed rounds; each round runs every (variant, backend) pair once, in a shuffled order."""
    max_seconds: float = 10.0
    """Cap on timing per pair (the interleaved run stops after max_seconds x pairs; at least 5 rounds)."""
    max_ratio_ci: float = 0.10
    """A speed-up whose 95 % interval (bootstrap over rounds) is wider than this fraction of the ratio is
    flagged in the report as not to be trusted (add runs, or quiet the machine)."""
    peak: bool = True
    """Also measure the machine's FP32/INT8 matrix-multiply throughput, the yardstick for achieved GOP/s."""
    frames: bool = True
    """Also time what a user runs, frame in and frame out: ``Upscaler.upscale`` of an 8-bit H x W x 3 frame
    to an 8-bit SR frame (padding, conversions, layout), interleaved in the same run as the bare graph
    (float32 N x 3 x H x W tensor in and out), per (variant, backend) pair."""


@dataclass(frozen=True)
class StageSpec:
    name: str
    stage: str
    config: Any


@dataclass(frozen=True)
class Recipe:
    name: str
    scale: int
    stages: tuple[StageSpec, ...]
    data: DataConfig = field(default_factory=DataConfig)
    benchmark: BenchmarkConfig = field(default_factory=BenchmarkConfig)
    seed: int = 0
    threads: int = 0
    """Intra-op threads for PyTorch and ONNX Runtime; 0 = all cores."""
    source: str = "<dict>"

    def with_overrides(self, **sections: Any) -> "Recipe":
        """A new recipe with whole fields replaced (CLI flags); the recipe itself is never mutated."""
        return dataclasses.replace(self, **sections)


# ----------------------------------------------------------------------------------------------- parsing

def _check_type(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:  # an optional X: X's own message
            return _check_type(value, options[0], where)
        for a in options:
            try:
                return _check_type(value, a, where)
            except RecipeError:
                pass
        raise RecipeError(f"{where}: {value!r} is not {tp}")
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise RecipeError(f"{where}: {value!r} is not one of {list(typing.get_args(tp))}")
        return value
    if origin is tuple:
        if isinstance(value, (str, int, float)):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise RecipeError(f"{where}: expected a list, got {value!r}")
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_check_type(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise RecipeError(f"{where}: expected {len(args)} values, got {value!r}")
        return tuple(_check_type(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise RecipeError(f"{where}: expected a list, got {value!r}")
        (arg,) = typing.get_args(tp) or (Any,)
        return [_check_type(v, arg, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise RecipeError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise RecipeError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise RecipeError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise RecipeError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is str:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            raise RecipeError(f"{where}: expected a string, got the number {value!r} (YAML reads digits as a number: "
                              "write the value in quotes, as it was meant)")
        if not isinstance(value, str):
            raise RecipeError(f"{where}: expected a string, got {value!r}")
        return value
    raise RecipeError(f"{where}: unsupported type {tp}")


def build_config(cls: type, raw: Any, where: str) -> Any:
    if not isinstance(raw, dict):
        raise RecipeError(f"{where}: expected a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name != "source"}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise RecipeError(f"{where}: unknown key {unknown[0]!r}{_did_you_mean(unknown[0], fields)}; known: "
                          f"{sorted(fields)}")
    kwargs = {}
    for name, f in fields.items():
        if name in raw:
            kwargs[name] = _check_type(raw[name], hints[name], f"{where}.{name}")
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise RecipeError(f"{where}: missing required key {name!r}")
    return cls(**kwargs)


def _did_you_mean(word: str, options) -> str:
    close = difflib.get_close_matches(str(word), [str(o) for o in options], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def check_model_spec(spec: dict, where: str, scale: int | None = None) -> None:
    """Validate an architecture spec ``{type, **keywords}`` without training anything: a known architecture,
    known keywords of the right types, and values its constructor accepts (it is built on PyTorch's meta
    device, which allocates no memory, so even a 43M-parameter teacher checks in milliseconds). ``scale``: the
    recipe's scale, which the stages give the model."""
    import torch

    from .models import MODELS

    known = MODELS.names()
    if "type" not in spec:
        raise RecipeError(f"{where}: missing key 'type' (the architecture); known: {known}")
    arch = spec["type"]
    if not isinstance(arch, str) or arch not in MODELS:
        raise RecipeError(f"{where}.type: unknown architecture {arch!r}{_did_you_mean(arch, known)}; known: {known}")
    cls = MODELS.get(arch)
    sig = inspect.signature(cls)
    params = {n: p for n, p in sig.parameters.items()
              if p.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)}
    open_kwargs = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values())
    hints = typing.get_type_hints(cls.__init__)
    for key, value in spec.items():
        if key == "type":
            continue
        if key not in params:
            if open_kwargs:
                continue
            raise RecipeError(f"{where}.{key}: {arch} has no keyword {key!r}{_did_you_mean(key, params)}; its "
                              f"keywords: {sorted(params)}")
        if key in hints:
            _check_type(value, hints[key], f"{where}.{key}")
    if scale is not None and "scale" in spec and spec["scale"] != scale:
        raise RecipeError(f"{where}.scale: {spec['scale']} differs from the recipe's scale {scale}, which the stage "
                          "gives the model; remove model.scale (or change the recipe's scale)")
    try:
        with torch.device("meta"):
            model = MODELS.build({**spec, **({"scale": scale} if scale is not None and "scale" in params else {})})
    except (ValueError, TypeError, KeyError, AssertionError, NotImplementedError) as exc:
        raise RecipeError(f"{where}: {arch} does not accept {spec}: {exc}") from None
    from .models import model_scales

    scales = list(model_scales(model))
    if any(max(scales) % s for s in scales):  # the patch sampler makes every head's target from the x-top patch
        raise RecipeError(f"{where}: {arch} emits x{scales}, which cannot train together: each training patch is cut "
                          f"at x{max(scales)} and the other heads' targets are made from it by integer downscaling, so "
                          "every head must divide the largest. Use heads [2, 4], or train x3 in a model of its own.")


POSITIVE_COUNTS = ("steps", "batch_size", "calibration_images")
"""Stage fields that count something that must happen at least once (0 steps would ship an untrained model)."""
LEARNING_RATES = ("lr", "disc_lr")


def _check_numbers(cfg: Any, where: str) -> None:
    """Numbers of a stage's config that no run can use, refused at load rather than when the stage starts."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if f.name in POSITIVE_COUNTS and isinstance(value, int) and value < 1:
            raise RecipeError(f"{where}.{f.name}: {value}; it must be at least 1 (e.g. {f.name}: "
                              f"{f.default if isinstance(f.default, int) and f.default > 0 else 1000})")
        if f.name == "finetune_steps" and isinstance(value, int) and value < 0:
            raise RecipeError(f"{where}.{f.name}: {value} is negative; give 0 (no fine-tuning) or a step count")
        if f.name in LEARNING_RATES and isinstance(value, float) and not (math.isfinite(value) and value > 0):
            raise RecipeError(f"{where}.{f.name}: {value}; a learning rate must be a finite number above 0 "
                              f"(e.g. {f.default})")
        if f.name == "loss" and isinstance(value, str):
            from .losses import LOSSES
            if value not in LOSSES:
                raise RecipeError(f"{where}.loss: unknown loss {value!r}; known: {', '.join(LOSSES.names())}"
                                  f"{_did_you_mean(value, LOSSES.names())}")
        if f.name == "on_budget_exceeded" and value == "fallback" and getattr(cfg, "max_psnr_drop_db", None) is None:
            raise RecipeError(f"{where}.on_budget_exceeded: fallback works towards a budget and there is none; give "
                              "max_psnr_drop_db (e.g. max_psnr_drop_db: 0.1)")


def check_devices(recipe: "Recipe", names: set[str] | None = None, reuse_in: str | None = None) -> None:
    """Stages (those in ``names``; default every one) that ask for ``device: cuda`` where PyTorch sees no GPU are
    refused before anything runs. ``reuse_in``: the run directory whose artifacts the others reuse (the runner
    checks only the stages that must run, so a recipe trained on a GPU finishes its CPU stages elsewhere)."""
    cuda = [(i, s) for i, s in enumerate(recipe.stages)
            if getattr(s.config, "device", None) == "cuda" and (names is None or s.name in names)]
    if not cuda:
        return
    import importlib.util

    if importlib.util.find_spec("torch") is not None:
        import torch

        if torch.cuda.is_available():
            return
    i, spec = cuda[0]
    elsewhere = (f"; or train it on a GPU machine and bring its artifact into {reuse_in} (which holds none made by "
                 "this configuration from these inputs)" if reuse_in else "")
    raise RecipeError(f"{recipe.source}: stages[{i}] ({spec.name}).device: cuda, but PyTorch sees no CUDA GPU here; "
                      f"use device: auto (the GPU where there is one) or cpu, or install a CUDA build of PyTorch"
                      f"{elsewhere}")


def _check_loaded(cfg, scale: int, where: str) -> None:
    """A loaded artifact made for another scale, or other than the version the stage pins (``hash``), is refused at
    load, not when a stage that uses it starts."""
    from .artifacts import ArtifactError, check_pinned, read_artifact

    path = cfg.path
    try:
        art = read_artifact(path, verify=False)  # its hash is verified when the stage runs
    except ArtifactError as exc:
        raise RecipeError(f"{where}.path: {exc}") from None
    try:
        check_pinned(art, cfg.hash, path, where)
    except ArtifactError as exc:
        raise RecipeError(str(exc)) from None
    scales = [int(v) for v in art.manifest["scales"]]
    if scale not in scales:
        raise RecipeError(f"{where}.path: {art.path} is a x{'/x'.join(map(str, scales))} {art.kind} artifact and the "
                          f"recipe's scale is {scale}; load an artifact made for x{scale}, or change the recipe's scale")


def _check_plain_name(name: Any, where: str) -> str:
    """A recipe's or a stage's name becomes a directory name under the run directory: a name, not a path."""
    _check_type(name, str, where)
    if not name or name in (".", "..") or name.startswith(".") or any(c in name for c in '/\\\0') \
            or any(ord(c) < 32 for c in name):
        raise RecipeError(f"{where}: {name!r} is not a plain name (it becomes a folder name in the run directory: "
                          "no '/', '\\', leading '.', or control characters); e.g. "
                          f"{re.sub(r'[^A-Za-z0-9_-]+', '_', name).strip('_') or 'my_run'!r}")
    return name


def parse_recipe(raw: dict, source: str = "<dict>", *, devices: bool = True) -> Recipe:
    """The recipe, checked (``devices``: a stage asking for a GPU this machine lacks is refused here; the runner
    passes False and checks only the stages it must run, :func:`check_devices`)."""
    if not isinstance(raw, dict):
        raise RecipeError(f"{source}: a recipe is a mapping with name, scale and stages")
    allowed = {"name", "scale", "stages", "data", "benchmark", "seed", "threads"}
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise RecipeError(f"{source}: unknown key(s) {unknown}; known: {sorted(allowed)}")
    for key in ("name", "scale", "stages"):
        if key not in raw:
            raise RecipeError(f"{source}: missing required key {key!r}")
    scale = _check_type(raw["scale"], int, f"{source}: scale")
    if scale not in (2, 3, 4, 8):
        raise RecipeError(f"{source}: scale {scale} not supported (2, 3, 4 or 8)")
    stages, makes, kinds = _parse_stages(raw["stages"], scale, source)
    data = _parse_data(raw, source)
    bench = _parse_benchmark(raw, stages, makes, kinds, source)
    recipe = Recipe(name=_check_plain_name(raw["name"], f"{source}: name"), scale=scale, stages=tuple(stages),
                    data=data, benchmark=bench, seed=_check_type(raw.get("seed", 0), int, f"{source}: seed"),
                    threads=_check_type(raw.get("threads", 0), int, f"{source}: threads"), source=source)
    if devices:
        check_devices(recipe)
    return recipe


def _parse_stages(raw_stages, scale: int, source: str) -> tuple[list[StageSpec], dict[str, str], dict[str, str]]:
    """Each stage's typed config, its references checked against the stages before it and the kinds they make:
    (stages, name -> kind of artifact made, name -> stage kind)."""
    from .stages import KIND_NAMES, satisfies, stage_table

    table = stage_table()
    stages = []
    seen: set[str] = set()
    makes: dict[str, str] = {}
    kinds: dict[str, str] = {}
    for i, st in enumerate(raw_stages or []):
        where = f"{source}: stages[{i}]"
        if not isinstance(st, dict) or "name" not in st or "stage" not in st:
            raise RecipeError(f"{where}: each stage needs 'name' and 'stage'")
        name, kind = st["name"], st["stage"]
        _check_plain_name(name, f"{where}.name")
        if kind not in table:
            raise RecipeError(f"{where}: unknown stage {kind!r}{_did_you_mean(kind, table.names())}; known: "
                              f"{table.names()}")
        if name in seen or name in BASELINES:
            raise RecipeError(f"{where}: stage name {name!r} is used twice or reserved")
        sdef = table.get(kind)
        cfg = build_config(sdef.config, {k: v for k, v in st.items() if k not in ("name", "stage")}, f"{where} ({name})")
        for ref, wants in sdef.takes.items():
            ref_name = getattr(cfg, ref, None)
            if ref_name is None:
                continue
            if ref_name not in seen:
                raise RecipeError(f"{where} ({name}).{ref}: {ref_name!r} is not a stage defined before {name!r}"
                                  f"{_did_you_mean(ref_name, seen)}")
            if not satisfies(makes[ref_name], wants):
                producers = sorted(n for n in table.names() if satisfies(table.get(n).makes, wants))
                what = f"{KIND_NAMES[wants]} (made by a stage of kind {', '.join(producers)})"
                raise RecipeError(f"{where} ({name}).{ref}: {ref_name!r} is a {kinds[ref_name]} stage; a {kind} "
                                  f"stage's {ref} must be {what}")
        _check_numbers(cfg, f"{where} ({name})")
        if sdef.external and kind == "load":
            _check_loaded(cfg, scale, f"{where} ({name})")
        if hasattr(cfg, "model"):
            check_model_spec(cfg.model, f"{where} ({name}).model", scale)
        seen.add(name)
        kinds[name], makes[name] = kind, sdef.makes
        stages.append(StageSpec(name, kind, cfg))
    return stages, makes, kinds


def _parse_data(raw: dict, source: str) -> DataConfig:
    data = build_config(DataConfig, raw.get("data", {}), f"{source}: data")
    from .data.degradations import EVAL_DEGRADATIONS, TRAIN_DEGRADATIONS

    for d in data.eval_degradations:
        if d not in EVAL_DEGRADATIONS:
            raise RecipeError(f"{source}: data.eval_degradations: {d!r} is not one; use any of "
                              f"{', '.join(EVAL_DEGRADATIONS)}{_did_you_mean(d, list(EVAL_DEGRADATIONS))}")
    if not data.eval_degradations:
        raise RecipeError(f"{source}: data.eval_degradations is empty; leave it out for the protocol's LR (bicubic)")

    if data.degradation not in TRAIN_DEGRADATIONS:
        raise RecipeError(f"{source}: data.degradation: {data.degradation!r} is not one; use one of "
                          f"{', '.join(TRAIN_DEGRADATIONS)}{_did_you_mean(data.degradation, list(TRAIN_DEGRADATIONS))}")
    if data.degradation_mix:
        from .data.degradations import DegradationError, resolve_mix

        if data.degradation == "bicubic":
            raise RecipeError(f"{source}: data.degradation_mix changes the general mix, but data.degradation is "
                              f"bicubic (the protocol); set data.degradation: general, or leave the mix out")
        try:
            resolve_mix(data.degradation_mix)
        except DegradationError as exc:
            raise RecipeError(f"{source}: {exc}") from None
    if data.valid == "holdout" and data.train == "builtin":
        raise RecipeError(f"{source}: data.valid: holdout takes photographs out of data.train, but the built-in "
                          f"training images have a held-out set of their own; use data.valid: builtin, or give "
                          f"data.train a folder")
    if data.valid_holdout < 1:
        raise RecipeError(f"{source}: data.valid_holdout must be >= 1 (photographs held out of data.train), "
                          f"got {data.valid_holdout}")
    for d in data.valid_degradations:
        if d not in EVAL_DEGRADATIONS:
            raise RecipeError(f"{source}: data.valid_degradations: {d!r} is not one; use any of "
                              f"{', '.join(EVAL_DEGRADATIONS)}{_did_you_mean(d, list(EVAL_DEGRADATIONS))}")
    if not data.valid_degradations:
        raise RecipeError(f"{source}: data.valid_degradations is empty; leave it out to validate on the protocol's "
                          f"LR (bicubic)")
    bad = [f for f in data.train_rescale if not 0 < f < 1]
    if bad or len(set(data.train_rescale)) != len(data.train_rescale):
        raise RecipeError(f"{source}: data.train_rescale: {list(data.train_rescale)}; give distinct factors between 0 "
                          f"and 1 (each adds the training images reduced by it, e.g. [0.8, 0.6]; the images at full "
                          f"size are always there)")
    return data


def _parse_benchmark(raw: dict, stages: list[StageSpec], makes: dict[str, str], kinds: dict[str, str],
                     source: str) -> BenchmarkConfig:
    """The benchmark section: its backends exist, its variants are stages or baselines that those backends run."""
    from .stages import ANY, ENGINE, MODEL, ONNX, ONNX_FP32

    seen = set(makes)
    bench = build_config(BenchmarkConfig, raw.get("benchmark", {}), f"{source}: benchmark")
    from .runtime import BACKENDS  # torch-free

    for b in (bench.backend, *bench.backends):
        if b not in BACKENDS.names():
            raise RecipeError(f"{source}: benchmark backend {b!r} is not a backend; backends: {BACKENDS.names()}"
                              f"{_did_you_mean(b, BACKENDS.names())}")
    for v in bench.variants:
        if v not in BASELINES and v not in seen:
            raise RecipeError(f"{source}: benchmark variant {v!r} is not a stage or a baseline "
                              f"({', '.join(BASELINES)}); stages: {sorted(seen)}")
    artifact_kind = {MODEL: "model", ONNX: "onnx", ONNX_FP32: "onnx", ENGINE: "engine"}
    for v in bench.variants:
        kind = artifact_kind.get(makes.get(v, ANY))
        if kind is None:  # a baseline, or a load stage: its kind is known once loaded
            continue
        for b in dict.fromkeys((*bench.backends, bench.backend) if bench.backends else (bench.backend,)):
            runs = BACKENDS.get(b).kinds
            exported = any(getattr(st.config, "input", None) == v and artifact_kind.get(makes[st.name]) in runs
                           for st in stages)
            if kind not in runs and not exported:
                raise RecipeError(f"{source}: benchmark variant {v!r} is a {kinds[v]} stage (it makes a {kind} "
                                  f"artifact) and the backend {b} runs {list(runs)}: add an export stage with input: "
                                  f"{v}, or benchmark it on a backend that runs it")
    return bench


def load_recipe(path: str | os.PathLike, *, devices: bool = True) -> Recipe:
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"{path}: no such recipe file")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise RecipeError(f"{path}: not valid YAML ({exc})") from exc
    return parse_recipe(raw, str(path), devices=devices)
