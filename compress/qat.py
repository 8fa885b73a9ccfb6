"""Quantization-aware training through NNCF, exported to standard Q/DQ ONNX."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from edgesr.artifacts import Artifact, derived_manifest, write_artifact
from edgesr.stages import MODEL, ONNX, StageContext, register_stage

from .budget import check_budget
from .common import (QuantizeError, calibration_batches, check_qdq, nncf_options, onnx_quality,
                     require_tensorrt_form)

__all__ = ["QatConfig", "qat_stage"]


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
def qat_stage(cfg: QatConfig, ctx: StageContext, input: Artifact, teacher: Artifact | None = None) -> Artifact:
    """The ``qat`` stage: PyTorch model artifact -> INT8 Q/DQ ONNX artifact trained with fake quantization.

    1. ``nncf.quantize`` on the PyTorch model (deploy form) with calibration crops: the PTQ starting point.
    2. Fine-tune the NNCF model (fake quantizers on weights and activations, their ranges trainable)
       against HR, or HR and a teacher, with the edgesr fit loop (best validation PSNR kept).
    3. ``nncf.strip`` turns NNCF's quantizers into standard quantize/dequantize ops, and the TorchScript
       ONNX exporter writes QuantizeLinear/DequantizeLinear (no FakeQuantize), checked like every INT8 graph.
    The ONNX Runtime PSNR of the result is held to the budget against the FP32 parent.
    """
    import logging

    import nncf
    import torch

    from edgesr.data.datasets import parity_image
    from edgesr.fitting import config_fingerprint, fit, sampler_for, validate
    from edgesr.imaging import image_to_tensor
    from edgesr.losses import LOSSES, distill_loss
    from edgesr.modelio import load_model
    from edgesr.models import deploy_form, model_scales
    from edgesr.onnxutil import output_names, strip_source_locations

    source, name, out, scale, seed = input, ctx.name, ctx.out, ctx.scale, ctx.seed
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
    sampler = sampler_for(model, train_pairs, scale, ctx.patch_size, cfg.batch_size, seed + 3, ctx.min_patch_std)
    loss_fn = distill_loss(LOSSES.build({"type": "l1"}), load_model(teacher) if teacher else None, cfg.alpha,
                           tuple(scales))
    result = fit(qmodel, sampler, steps=cfg.steps, lr=cfg.lr, loss_fn=loss_fn, val_pairs=val_pairs, scale=scale,
                 val_every=cfg.val_every, fingerprint=config_fingerprint(source.hash, cfg, seed),
                 desc=f"qat {name}")
    example = image_to_tensor(parity_image())
    stripped = nncf.strip(result.model.eval(), do_copy=True, example_input=example)
    manifest = derived_manifest(source, kind="onnx", name=name, precision="int8", arch=arch, scales=scales,
                                params=sum(p.numel() for p in model.parameters()))

    def writer(path: Path) -> None:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(stripped, (example,), str(path), input_names=["lr"], output_names=output_names(scales),
                              opset_version=cfg.opset, dynamo=False,
                              dynamic_axes={"lr": {0: "batch", 2: "height", 3: "width"}})
        import onnx

        proto = onnx.load(str(path))
        if strip_source_locations(proto):
            onnx.save_model(proto, str(path))
        report = check_qdq(path)
        if report["nonstandard_ops"] or report["qdq_pairs"] == 0:
            raise QuantizeError(f"{path}: the QAT export is not a standard Q/DQ graph (non-standard ops "
                                f"{report['nonstandard_ops']}, {report['qdq_pairs']} Q/DQ pairs)")
        if cfg.target == "tensorrt":
            report["tensorrt_readiness"] = require_tensorrt_form(path, f"qat {name}")
        manifest["ops"] = report.pop("ops")
        draft = Artifact(path.parent, {**manifest, "payload": path.name})
        psnr = onnx_quality(draft, val_pairs, scale, threads)
        manifest["transforms"] = manifest["transforms"] + [{
                "type": "qat", "tool": f"nncf {nncf.__version__} (quantize + fine-tune + strip)", "format": "QDQ",
                "target": cfg.target, "preset": str(preset.value), "steps": result.steps, "lr": cfg.lr,
                "teacher": teacher.manifest.get("name") if teacher else None,
                "calibration_images": cfg.calibration_images, **report}]
        budget = check_budget(f"qat {name}", parent_psnr, psnr, cfg.max_psnr_drop_db, cfg.on_budget_exceeded)
        manifest["metrics"] = {"val_psnr": round(psnr, 4), "budget": budget, "fp32_val_psnr": round(parent_psnr, 4),
                               "ptq_val_psnr": round(ptq_psnr, 4), "qat_torch_val_psnr": round(result.best_psnr, 4),
                               "train_seconds": round(result.seconds, 1), "history": result.history}

    return write_artifact(out, writer, "model.onnx", manifest)
