"""Quantization-aware training through NNCF, exported to standard Q/DQ ONNX."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from edgesr.artifacts import Artifact, Candidate, Quality, derived_manifest, last_quantization
from edgesr.data.degradations import degradation_record, training_record
from edgesr.stages import MODEL, ONNX, ONNX_FP32, StageContext, register_stage

from .common import (QuantizeError, calibration_batches, check_qdq, dequantize_layers, nncf_options, onnx_quality,
                     require_tensorrt_form, u8s8_pair_sum_max)

__all__ = ["QatConfig", "qat_stage", "QatOnnxConfig", "qat_onnx_stage"]


@dataclass(frozen=True)
class QatConfig:
    """Quantization-aware training through NNCF: PTQ initialisation, then fine-tuning with fake quantizers,
    then export to standard Q/DQ ONNX."""

    input: str
    """A PyTorch model artifact (FP32)."""
    target: Literal["onnxruntime", "tensorrt"] = "onnxruntime"
    """onnxruntime: NNCF MIXED preset (asymmetric activations); tensorrt: PERFORMANCE (symmetric INT8)."""
    calibration_images: int = 32
    calibration_patch: int = 96
    steps: int = 500
    batch_size: int = 16
    lr: float = 5e-5
    teacher: str | None = None
    """Distil from this model during the fine-tune (None: HR only)."""
    alpha: float = 0.5
    val_every: int = 100
    opset: int = 17
    max_psnr_drop_db: float | None = None
    on_budget_exceeded: Literal["fail", "warn"] = "fail"


@register_stage("qat", QatConfig, makes=ONNX, takes={"input": MODEL, "teacher": MODEL}, lossy=True)
def qat_stage(cfg: QatConfig, ctx: StageContext, input: Artifact, teacher: Artifact | None = None) -> Candidate:
    """The ``qat`` stage: PyTorch model artifact -> INT8 Q/DQ ONNX artifact trained with fake quantization.

    1. ``nncf.quantize`` on the PyTorch model (deploy form) with calibration crops: the PTQ starting point.
    2. Fine-tune the NNCF model (fake quantizers on weights and activations, their ranges trainable)
       against HR, or HR and a teacher, with the edgesr fit loop (best validation PSNR kept).
    3. ``nncf.strip`` turns NNCF's quantizers into standard quantize/dequantize ops, and the TorchScript
       ONNX exporter writes QuantizeLinear/DequantizeLinear (no FakeQuantize), checked like every INT8 graph.
    The ONNX Runtime PSNR of the result is held to the budget against the FP32 parent.
    """
    import logging
    import os

    # NNCF compiles its CPU extension on first use and gives up after 60 s by default, which a loaded 2-core
    # machine can exceed (seen in this project's test run); a stale lock is still caught, after 10 minutes.
    os.environ.setdefault("NNCF_EXTENSION_LOAD_TIMEOUT", "600")
    import nncf
    import torch

    from edgesr.data.datasets import parity_image
    from edgesr.fitting import config_fingerprint, fit, sampler_for, validate
    from edgesr.imaging import image_to_tensor
    from edgesr.losses import LOSSES, distill_loss
    from edgesr.modelio import load_model
    from edgesr.models import deploy_form, model_scales
    source, name, scale, seed = input, ctx.name, ctx.scale, ctx.seed
    train_pairs, val_pairs, threads = ctx.train_pairs, ctx.val_pairs, ctx.threads
    if source.kind != "model":
        raise QuantizeError(f"{source.path}: qat takes a PyTorch model artifact (a train/distill/prune stage's "
                            f"output), got {source.kind!r}")
    logging.getLogger("nncf").setLevel(logging.ERROR)
    model, arch = deploy_form(load_model(source), source.manifest["arch"])
    scales = list(model_scales(model))
    parent_psnr = validate(model, val_pairs, scale)
    calib = [torch.from_numpy(b) for b in calibration_batches(train_pairs, cfg.calibration_images,
                                                              cfg.calibration_patch, seed)]
    options = nncf_options(cfg.target)
    preset = options["preset"]
    qmodel = nncf.quantize(model.eval(), nncf.Dataset(calib), **options, subset_size=len(calib),
                           fast_bias_correction=True)
    ptq_psnr = validate(qmodel, val_pairs, scale)
    sampler = sampler_for(model, train_pairs, scale, ctx.patch_size, cfg.batch_size, seed + 3, ctx.min_patch_std,
                          ctx.degradation)
    loss_fn = distill_loss(LOSSES.build({"type": "l1"}), load_model(teacher) if teacher else None, cfg.alpha,
                           tuple(scales))
    result = fit(qmodel, sampler, steps=cfg.steps, lr=cfg.lr, loss_fn=loss_fn, val_pairs=val_pairs, scale=scale,
                 val_degraded=ctx.val_degraded, val_every=cfg.val_every,
                 fingerprint=config_fingerprint(source.hash, cfg, seed, *training_record(ctx.degradation, ctx.val_degraded)),
                 desc=f"qat {name}")
    example = image_to_tensor(parity_image())
    stripped = nncf.strip(result.model.eval(), do_copy=True, example_input=example)
    manifest = derived_manifest(source, kind="onnx", name=name, precision="int8", arch=arch, scales=scales,
                                params=sum(p.numel() for p in model.parameters()))

    path = ctx.staging / "model.onnx"
    report = _export_qat(stripped, example, path, scales, cfg, name)
    manifest["ops"] = report.pop("ops")
    psnr = onnx_quality(Artifact(path.parent, {**manifest, "payload": path.name}), val_pairs, scale, threads)
    manifest["transforms"] = manifest["transforms"] + [{
            "type": "qat", "tool": f"nncf {nncf.__version__} (quantize + fine-tune + strip)", "format": "QDQ",
            "target": cfg.target, "preset": str(preset.value), "steps": result.steps, "lr": cfg.lr,
            "teacher": teacher.manifest.get("name") if teacher else None,
            "calibration_images": cfg.calibration_images, **report,
            **({"degradation": degradation_record(ctx.degradation)[0]} if ctx.degradation != "bicubic" else {})}]
    manifest["metrics"] = {"fp32_val_psnr": round(parent_psnr, 4), "ptq_val_psnr": round(ptq_psnr, 4),
                           "qat_torch_val_psnr": round(result.best_psnr, 4), "train_seconds": round(result.seconds, 1),
                           "history": result.history}
    return Candidate(ctx.staging, path.name, manifest, Quality(f"qat {name}", psnr, parent_psnr))


def _export_qat(stripped, example, path: Path, scales: list[int], cfg: QatConfig, name: str) -> dict:
    """The stripped NNCF model through the TorchScript ONNX exporter (QuantizeLinear/DequantizeLinear), checked
    as a standard Q/DQ graph (and TensorRT's form for that target); returns the Q/DQ report."""
    import warnings

    import onnx
    import torch

    from edgesr.onnxutil import output_names, strip_source_locations

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(stripped, (example,), str(path), input_names=["lr"], output_names=output_names(scales),
                          opset_version=cfg.opset, dynamo=False,
                          dynamic_axes={"lr": {0: "batch", 2: "height", 3: "width"}})
    proto = onnx.load(str(path))
    if strip_source_locations(proto):
        onnx.save_model(proto, str(path))
    report = check_qdq(path)
    if report["nonstandard_ops"] or report["qdq_pairs"] == 0:
        raise QuantizeError(f"{path}: the QAT export is not a standard Q/DQ graph (non-standard ops "
                            f"{report['nonstandard_ops']}, {report['qdq_pairs']} Q/DQ pairs)")
    if cfg.target == "tensorrt":
        report["tensorrt_readiness"] = require_tensorrt_form(path, f"qat {name}")
    return report


@dataclass(frozen=True)
class QatOnnxConfig:
    """Quantization-aware training of the deployed Q/DQ graph itself (:class:`edgesr.compress.qdq_graph.QdqGraph`):
    the INT8 graph a ``quantize`` stage wrote is run in PyTorch exactly as ONNX Runtime computes it, its weights,
    biases and quantizer scales are fine-tuned through the fake quantizers, and the trained numbers are written
    back into the same graph. Same nodes and Q/DQ placement as the post-training graph it starts from, so the
    same speed on every runtime, and no second export path (the ``qat`` stage's NNCF export skips the export
    stage's rewrites and places its quantizers differently)."""

    input: str
    """An INT8 Q/DQ ONNX artifact (a quantize stage's output)."""
    reference: str | None = None
    """The FP32 ONNX graph it was quantized from: the quality budget's parent, and the distillation target
    when ``alpha`` > 0 (run in PyTorch: the network's own FP32 outputs)."""
    teacher: str | None = None
    """A PyTorch model to distil from instead of ``reference`` (alpha > 0)."""
    alpha: float = 0.0
    """Weight of the distillation target against HR (0: HR only)."""
    loss: str = field(default="l1", metadata={"fingerprint": "when_set", "checkpoint": "when_set"})
    """Pixel loss (``edgesr.losses.LOSSES``): ``l1_luma`` weighs luminance, what PSNR-Y measures, over chroma."""
    steps: int = 1000
    batch_size: int = 16
    lr: float = 2e-5
    train_scales: bool = True
    """Train the quantizers' scales too (LSQ); False: the weights and biases only."""
    train_zero_points: bool = field(default=False, metadata={"fingerprint": "when_set"})
    """With train_scales: train the zero points of asymmetric activation quantizers too (LSQ+), where the
    post-training graph's zero point lies inside the integer range (before a LeakyReLU or PReLU, an Add, a
    Concat): the range's window can then move, not only widen or narrow around the same zero. A zero point at
    the range's end (after a ReLU) and symmetric quantizers (target tensorrt) stay as they are."""
    float_layers: tuple[str, ...] = field(default=(), metadata={"fingerprint": "when_set", "checkpoint": "when_set"})
    """Convolutions (ONNX node names) whose weights go to floating point before training: they start at the
    values the input graph's INT8 weights stand for and train off the grid (their activations stay as they
    are). For a trained graph whose INT8 weights are its floor (the fallback says so): the layers whose 8-bit
    weights cost most (``python -m edgesr.benchmarks.weight_sensitivity`` ranks them)."""
    patch_size: int | None = field(default=None, metadata={"fingerprint": "when_set", "checkpoint": "when_set"})
    """LR patch side of this stage's training batches (default: the recipe's ``data.patch_size``): a fine-tune of
    a large-patch network can take 4x the steps in the same time at half the side."""
    val_every: int = 250
    max_psnr_drop_db: float | None = None
    """Against ``reference`` (required with it)."""
    on_budget_exceeded: Literal["fail", "warn", "fallback"] = "fail"
    """fallback: mixed precision after training, when the trained graph is over budget: each activation's Q/DQ
    pair is removed alone and the validation PSNR it gives back measured on the runtime; then the costliest
    pairs are removed, most first, until the drop is within ``max_psnr_drop_db`` (their consumers run in float).
    The manifest names the float activations and every pair's measured cost."""
    min_parity_db: float = 50.0
    """The lowest PSNR (peak 1.0) allowed between the trained graph's output in ONNX Runtime and in the
    PyTorch simulation that trained it, on the parity image: below it, what trained is not what runs, unless
    ONNX Runtime agrees no better with itself (fused kernels against node-by-node execution: a graph without an
    image skip amplifies single rounding flips) and the simulation is within 1 dB of that agreement, or each
    quantizer's piece of graph, run by ONNX Runtime on the simulation's own inputs, gives the simulation's integers
    but for isolated one-step flips after float convolutions (recorded as ``parity_per_quantizer``)."""


@register_stage("qat_onnx", QatOnnxConfig, makes=ONNX, takes={"input": ONNX, "reference": ONNX_FP32, "teacher": MODEL},
                lossy=True)
def qat_onnx_stage(cfg: QatOnnxConfig, ctx: StageContext, input: Artifact, reference: Artifact | None = None,
                   teacher: Artifact | None = None) -> Candidate:
    """The ``qat_onnx`` stage: INT8 Q/DQ ONNX artifact -> the same graph with trained weights and scales.

    Quality is measured in ONNX Runtime (the protocol) before and after; if training did not beat the input
    graph on the validation images, the input graph is written unchanged (recorded), so the stage never ships
    a graph worse than the post-training one it was given."""
    import onnx

    from edgesr.fitting import config_fingerprint, fit, sampler_for
    from edgesr.losses import LOSSES, distill_loss
    from edgesr.modelio import load_model
    from edgesr.qdq_graph import QdqGraph

    name, out, scale, seed, val_pairs, threads = ctx.name, ctx.out, ctx.scale, ctx.seed, ctx.val_pairs, ctx.threads
    _check_qat_onnx_inputs(cfg, name, input, reference, teacher)
    from .ptq import quality_backend

    scales = tuple(int(s) for s in input.manifest["scales"])
    quantized_by = last_quantization(input.manifest)
    target = quantized_by.get("target", "onnxruntime")
    runtime = quality_backend(target, f"qat_onnx {name}")  # OpenVINO for target openvino, as the quantize stage
    proto = onnx.load(str(input.payload))
    if cfg.float_layers:
        dequantize_layers(proto, cfg.float_layers)
    graph = QdqGraph(proto, scales, train_scales=cfg.train_scales, train_zero_points=cfg.train_zero_points)
    ptq_psnr = onnx_quality(input, val_pairs, scale, threads, runtime)
    parent_psnr = onnx_quality(reference, val_pairs, scale, threads, runtime) if reference is not None else None
    distil_from = None  # the network whose outputs are the distillation target (alpha > 0)
    if cfg.alpha > 0:
        if teacher is not None:
            distil_from = load_model(teacher)
        else:
            distil_from = QdqGraph(onnx.load(str(reference.payload)), scales)
            for p in distil_from.parameters():
                p.requires_grad_(False)
    sampler = sampler_for(graph, ctx.train_pairs, scale, cfg.patch_size or ctx.patch_size, cfg.batch_size, seed + 5,
                          ctx.min_patch_std, ctx.degradation)
    loss_fn = distill_loss(LOSSES.build({"type": cfg.loss}), distil_from, cfg.alpha, scales)
    result = fit(graph, sampler, steps=cfg.steps, lr=cfg.lr, loss_fn=loss_fn, val_pairs=val_pairs, scale=scale,
                 val_degraded=ctx.val_degraded, val_every=cfg.val_every,
                 checkpoint_dir=out.with_name(f"{out.name}.ckpt"), checkpoint_every=250,
                 fingerprint=config_fingerprint(input.hash, cfg, seed, *training_record(ctx.degradation, ctx.val_degraded)),
                 desc=f"qat_onnx {name}")
    trained = graph.to_onnx()
    manifest = derived_manifest(input, kind="onnx", name=name, precision=input.manifest["precision"])
    path = ctx.staging / "model.onnx"
    onnx.save_model(trained, str(path))
    psnr = onnx_quality(Artifact(path.parent, {**manifest, "payload": path.name}), val_pairs, scale, threads, runtime)
    parity, self_db, per_quantizer = _simulation_parity(graph, path, manifest, cfg.min_parity_db, threads)
    kept_input = psnr <= ptq_psnr
    if kept_input:  # training did not help on the validation images: ship the post-training graph
        onnx.save_model(proto, str(path))
        psnr = ptq_psnr
    report = check_qdq(path)
    if report["u8s8_pair_sum_max"] > u8s8_pair_sum_max(proto):
        raise QuantizeError(f"{path}: training widened the weights' integer range ({report['u8s8_pair_sum_max']} > "
                            f"{u8s8_pair_sum_max(proto)} for a pair of uint8 x int8 products); report it")
    manifest["ops"] = report.pop("ops")
    manifest["transforms"] = manifest["transforms"] + [{
        "type": "qat_onnx", "tool": "edgesr QdqGraph (PyTorch simulation of the Q/DQ graph, STE + LSQ scales)",
        "format": "QDQ", "target": target, "quality_measured_on": runtime, "steps": result.steps, "lr": cfg.lr,
        "train_scales": cfg.train_scales, "train_zero_points": cfg.train_zero_points, "alpha": cfg.alpha,
        "distilled_from": (teacher.manifest.get("name") if teacher is not None else
                           reference.manifest.get("name") if cfg.alpha > 0 else None),
        "weight_bits": quantized_by.get("weight_bits", 8), "simulation_parity_db": parity,
        **({"float_layers": list(cfg.float_layers)} if cfg.float_layers else {}),
        **({"patch_size": cfg.patch_size} if cfg.patch_size else {}),
        **({"runtime_self_agreement_db": self_db} if self_db is not None else {}),
        **({"parity_per_quantizer": per_quantizer} if per_quantizer is not None else {}),
        **({"degradation": degradation_record(ctx.degradation)[0]} if ctx.degradation != "bicubic" else {}),
        "kept_input": "training did not beat the input graph on the validation images" if kept_input else None,
        **report}]
    manifest["metrics"] = {"ptq_val_psnr": round(ptq_psnr, 4), "qat_gain_db": round(psnr - ptq_psnr, 4),
                           "qat_torch_val_psnr": round(result.best_psnr, 4), "train_seconds": round(result.seconds, 1),
                           "history": result.history,
                           **({"fp32_val_psnr": round(parent_psnr, 4)} if parent_psnr is not None else {})}
    cand = Candidate(ctx.staging, path.name, manifest, Quality(f"qat_onnx {name}", psnr, parent_psnr))
    cand.gentler = lambda: _float_activations(cand, ctx, runtime, cfg.max_psnr_drop_db)
    return cand


def _check_qat_onnx_inputs(cfg: QatOnnxConfig, name: str, input: Artifact, reference: Artifact | None,
                           teacher: Artifact | None) -> None:
    if input.kind != "onnx" or "int8" not in input.manifest["precision"]:
        raise QuantizeError(f"{input.path}: qat_onnx trains an INT8 Q/DQ graph (a quantize stage's output), got "
                            f"{input.kind} {input.manifest.get('precision')}")
    if cfg.max_psnr_drop_db is not None and reference is None:
        raise QuantizeError(f"qat_onnx {name}: max_psnr_drop_db is measured against the FP32 graph; name it as "
                            "reference")
    if cfg.on_budget_exceeded == "fallback" and cfg.max_psnr_drop_db is None:
        raise QuantizeError(f"qat_onnx {name}: on_budget_exceeded: fallback needs max_psnr_drop_db")
    if cfg.patch_size is not None and cfg.patch_size < 8:
        raise QuantizeError(f"qat_onnx {name}: patch_size {cfg.patch_size} is too small to train on; give 8 or "
                            "more LR pixels, or leave it out for data.patch_size")
    if cfg.alpha > 0 and reference is None and teacher is None:
        raise QuantizeError(f"qat_onnx {name}: alpha > 0 distils from reference or teacher; name one")


def _float_activations(cand: Candidate, ctx: StageContext, runtime: str, max_drop_db: float) -> Candidate:
    """Mixed precision after training (``on_budget_exceeded: fallback``): the trained graph's activation Q/DQ
    pairs, each removed alone, are ranked by the validation PSNR that gives back (measured on ``runtime``); the
    costliest are removed, most first, until the drop against the FP32 parent is within ``max_drop_db``.
    Rewrites the candidate's payload; the weights stay INT8."""
    import onnx

    from edgesr.budget import float_until_within

    from .common import activation_groups, float_activations

    path, q = cand.staging / cand.payload, cand.quality
    proto = onnx.load(str(path))

    def quality(graph: onnx.ModelProto, file: Path) -> float:
        onnx.save_model(graph, str(file))
        return onnx_quality(Artifact(file.parent, {**cand.manifest, "payload": file.name}), ctx.val_pairs, ctx.scale,
                            ctx.threads, runtime)

    from edgesr.progress import console

    trial = path.with_name("float_activation.onnx")
    groups = {members[0]: members for members in activation_groups(proto)}  # go to float together
    tensors = [t for members in groups.values() for t in members]
    floor = quality(float_activations(proto, tensors), trial)
    if q.parent_psnr - floor > max_drop_db:  # the INT8 weights alone are over budget: nothing to gain here
        trial.unlink(missing_ok=True)
        console.print(f"  {q.step}: with every activation in float the graph still loses {q.parent_psnr - floor:.3f} dB "
                      f"(its INT8 weights' own loss), over max_psnr_drop_db {max_drop_db:g}: mixed precision cannot meet "
                      "the budget; train longer or loosen it")
        return cand
    gain = {k: round(quality(float_activations(proto, members), trial) - q.psnr, 4) for k, members in groups.items()}
    trial.unlink(missing_ok=True)
    members_of = lambda keys: [t for k in keys for t in groups[k]]  # noqa: E731
    kept_groups, psnr = float_until_within(gain, q.parent_psnr, q.psnr, max_drop_db,
                                           lambda keys: quality(float_activations(proto, members_of(keys)), path))
    kept = members_of(kept_groups)
    console.print(f"  {q.step}: {len(kept)} of {len(tensors)} activations back in float ({len(kept_groups)} of "
                  f"{len(groups)} groups), val PSNR {q.psnr:.3f} -> {psnr:.3f} dB (FP32 {q.parent_psnr:.3f})")
    report = check_qdq(path)
    manifest = {**cand.manifest, "precision": "int8+fp32" if kept else cand.manifest["precision"],
                "ops": report.pop("ops")}
    manifest["transforms"] = cand.manifest["transforms"][:-1] + [{**cand.manifest["transforms"][-1], **report,
        "mixed_precision": {
            "float_activations": kept, "psnr": round(psnr, 4), "int8_psnr": round(q.psnr, 4),
            "gain_db": dict(sorted(gain.items(), key=lambda kv: -kv[1])),
            "groups": {k: members for k, members in groups.items() if len(members) > 1},
            "reason": "activation Q/DQ pairs removed after training, costliest first (validation PSNR given back "
                      "when removed alone, or with the pairs that re-quantize the same values on the same grid: "
                      "groups, named by their first), until the drop fits max_psnr_drop_db; weights stay INT8"}}]
    return Candidate(cand.staging, cand.payload, manifest, dataclasses.replace(q, psnr=psnr))


def _simulation_parity(graph, path: Path, manifest: dict, min_parity_db: float,
                       threads: int) -> tuple[float, float | None, dict | None]:
    """What trained must be what runs: ONNX Runtime's output of the written graph against the PyTorch simulation's
    on the parity image, in dB (peak 1.0); below ``min_parity_db``, ONNX Runtime's agreement with itself; and below
    both, the per-quantizer check's record (accepted when it finds only flips after float convolutions)."""
    import numpy as np
    import torch

    from edgesr.data.datasets import parity_image
    from edgesr.imaging import image_to_tensor
    from edgesr.qdq_graph import where_onnx_runtime_differs
    from edgesr.runtime.base import saturation_risk
    from edgesr.runtime.onnxruntime_backend import ort_session

    x = image_to_tensor(parity_image())
    graph.eval()  # the integer kernels' values (a training step takes the float path's)
    with torch.no_grad():
        sim = graph(x)
    sim = (sim if isinstance(sim, tuple) else (sim,))[0].numpy()
    sess = ort_session(str(path), threads=threads, exact_u8s8=saturation_risk(manifest))
    run = sess.run(None, {"lr": x.numpy()})[0]
    db = lambda a, b: round(float(10 * np.log10(1.0 / max(float(np.mean((a - b) ** 2)), 1e-20))), 2)  # noqa: E731
    parity = db(run, sim)
    if parity >= min_parity_db:
        return parity, None, None
    # A graph without an image skip (RLFN, IMDN-RTC) carries the image through every quantizer, and one value
    # rounded the other way anywhere moves its output: ONNX Runtime disagrees with itself between its fused integer
    # kernels and its node-by-node execution at that level (RLFN x4: 44.9 dB). The simulation is held to that: as
    # close to the runtime as the runtime is to itself (1 dB margin).
    plain = ort_session(str(path), threads=threads, optimize=False,
                        exact_u8s8=saturation_risk(manifest)).run(None, {"lr": x.numpy()})[0]
    self_db = db(run, plain)
    if parity >= self_db - 1.0:
        return parity, self_db, None
    # Below both: each quantizer's piece of graph, run by ONNX Runtime on the simulation's own inputs, must give the
    # simulation's integers. Where it does but for isolated flips after float convolutions (MLAS's summation order,
    # which nothing reproduces), the simulation computes what runs and the output's gap is the graph amplifying
    # those flips (RLFN x4 with fused activations: 49.998 dB): accepted, recorded.
    found = where_onnx_runtime_differs(graph, path, x, threads)
    if found.float_order_only:
        return parity, self_db, {"accepted": "every quantizer agrees given the same inputs, but for isolated flips "
                                             "after float convolutions", "flips": list(found.flips)}
    raise QuantizeError(f"{path}: ONNX Runtime runs the trained graph differently from the PyTorch simulation that "
                        f"trained it ({parity} dB < min_parity_db {min_parity_db}, and below ONNX Runtime's own "
                        f"agreement between its fused and node-by-node execution, {self_db} dB): {found.message}")
