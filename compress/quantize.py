"""INT8 post-training quantisation into standard QuantizeLinear/DequantizeLinear (QDQ) ONNX.

ONNX Runtime's static quantiser calibrates activation ranges on real images (MinMax, Entropy or Percentile)
and writes a QDQ graph: weights INT8 symmetric per output channel; activations either UINT8 asymmetric
(``target: onnxruntime``, fastest on x86 CPUs) or INT8 symmetric with zero point 0
(``target: tensorrt``, what TensorRT's explicit quantisation accepts, with biases left in float). The result contains only standard
ONNX operators, never OpenVINO ``FakeQuantize``, and is checked for that.

The PSNR drop against the FP32 parent graph is measured on the validation set through ONNX Runtime and
held to the quality budget.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path
from typing import Iterable

import numpy as np
import onnx
from onnx import numpy_helper

from edgesr.artifacts import Artifact, write_artifact
from edgesr.config import Fp16Config, QatConfig, QuantizeConfig
from edgesr.data.datasets import ImagePair
from edgesr.errors import EdgesrError
from edgesr.imaging import to_float
from edgesr.metrics import evaluate_pairs
from edgesr.runtime import Upscaler, open_backend

from .budget import check_budget

__all__ = ["calibration_batches", "quantize_onnx", "check_qdq", "quantize_stage", "QuantizeError",
           "activation_ranges", "fp16_onnx", "fp16_stage", "FP16_MAX", "qat_stage"]

STANDARD_DOMAINS = {"", "ai.onnx"}


class QuantizeError(EdgesrError, RuntimeError):
    """A quantisation or FP16 step that cannot run or failed its checks; the message names the fix."""


def calibration_batches(pairs: list[ImagePair], n: int, patch: int, seed: int = 0) -> list[np.ndarray]:
    """``n`` LR crops (1 x 3 x patch x patch float32) from the training images, most textured first picked
    at random positions (seeded)."""
    rng = np.random.default_rng([seed, 77])
    out = []
    usable = [p for p in pairs if min(p.lr.shape[:2]) >= patch]
    if not usable:
        raise QuantizeError(f"no calibration image is at least {patch} px; lower calibration_patch")
    for i in range(n):
        p = usable[i % len(usable)]
        h, w = p.lr.shape[:2]
        y, x = int(rng.integers(0, h - patch + 1)), int(rng.integers(0, w - patch + 1))
        out.append(np.ascontiguousarray(to_float(p.lr[y:y + patch, x:x + patch]).transpose(2, 0, 1)[None]))
    return out


def quantize_onnx(src: Path, dst: Path, calibration: Iterable[np.ndarray], *, method: str = "minmax",
                  per_channel: bool = True, target: str = "onnxruntime", exclude: tuple[str, ...] = ()) -> None:
    """Static INT8 QDQ quantisation of ``src`` into ``dst`` with ONNX Runtime's quantiser."""
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    batches = list(calibration)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._it = iter(batches)

        def get_next(self):
            b = next(self._it, None)
            return None if b is None else {"lr": b}

        def rewind(self):
            self._it = iter(batches)

    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    symmetric = target == "tensorrt"
    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        quantize_static(str(pre), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=per_channel,
                        activation_type=QuantType.QInt8 if symmetric else QuantType.QUInt8,
                        weight_type=QuantType.QInt8, calibrate_method=methods[method],
                        nodes_to_exclude=list(exclude) or None,
                        extra_options={"ActivationSymmetric": symmetric, "WeightSymmetric": True,
                                       "CalibMovingAverage": False,
                                       # TensorRT takes biases in float and fuses them; it has no INT32 Q/DQ.
                                       "QuantizeBias": not symmetric})


def quantize_onnx_nncf(src: Path, dst: Path, calibration: Iterable[np.ndarray], *, target: str = "onnxruntime",
                       exclude: tuple[str, ...] = ()) -> None:
    """Static INT8 quantisation of ``src`` with NNCF's ONNX backend (MinMax statistics + fast bias correction).

    NNCF quantizes the ONNX graph directly and writes standard QuantizeLinear/DequantizeLinear; quantizing
    the PyTorch model and exporting it would leave OpenVINO FakeQuantize nodes that neither ONNX Runtime nor
    TensorRT runs. ``target: tensorrt`` uses the PERFORMANCE preset (symmetric INT8 activations), otherwise
    MIXED (asymmetric activations)."""
    import logging

    import nncf

    logging.getLogger("nncf").setLevel(logging.ERROR)
    batches = [{"lr": b} for b in calibration]
    preset = nncf.QuantizationPreset.PERFORMANCE if target == "tensorrt" else nncf.QuantizationPreset.MIXED
    model = onnx.load(str(src))
    quantized = nncf.quantize(model, nncf.Dataset(batches), preset=preset, subset_size=len(batches),
                              fast_bias_correction=True,
                              ignored_scope=nncf.IgnoredScope(names=list(exclude), validate=False) if exclude else None)
    onnx.save_model(quantized, str(dst))


def quantize_graph(src: Path, dst: Path, batches: list[np.ndarray], cfg: QuantizeConfig,
                   exclude: tuple[str, ...] = ()) -> None:
    """Quantize with the tool the config names; ``exclude`` adds nodes kept in floating point."""
    keep = tuple(cfg.exclude) + tuple(exclude)
    if cfg.tool == "nncf":
        quantize_onnx_nncf(src, dst, batches, target=cfg.target, exclude=keep)
    else:
        quantize_onnx(src, dst, batches, method=cfg.method, per_channel=cfg.per_channel, target=cfg.target,
                      exclude=keep)


_SHAPE_OPS = {"Shape", "Constant", "Reshape", "Unsqueeze", "Squeeze", "Expand", "Gather", "Cast", "Concat",
              "Slice", "Range", "ConstantOfShape"}


def quantizable_nodes(path: Path) -> list[str]:
    """Names of the nodes INT8 can apply to (compute and elementwise ops, not shape arithmetic), graph order."""
    return [n.name for n in onnx.load(str(path)).graph.node if n.op_type not in _SHAPE_OPS]


def check_qdq(path: Path) -> dict:
    """Inspect a QDQ graph: operator inventory, non-standard operators, and whether TensorRT can build it
    (INT8 Q/DQ with zero point 0 everywhere, no INT32 bias Q/DQ)."""
    proto = onnx.load(str(path))
    ops = Counter((n.domain or "", n.op_type) for n in proto.graph.node)
    nonstandard = sorted(f"{d}.{t}" for d, t in ops if d not in STANDARD_DOMAINS)
    if any(t == "FakeQuantize" for _, t in ops):
        nonstandard.append("FakeQuantize")
    inits = {i.name: i for i in proto.graph.initializer}
    zero_points = []
    for n in proto.graph.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear") and len(n.input) > 2 and n.input[2] in inits:
            zero_points.append(numpy_helper.to_array(inits[n.input[2]]))
    trt_ok = bool(zero_points) and all(z.dtype == np.int8 and not np.any(z) for z in zero_points)
    return {"ops": {t if d in STANDARD_DOMAINS else f"{d}.{t}": c for (d, t), c in sorted(ops.items())},
            "nonstandard_ops": nonstandard, "qdq_pairs": ops.get(("", "QuantizeLinear"), 0),
            "tensorrt_explicit_int8": trt_ok,
            "tensorrt_note": "INT8 symmetric Q/DQ (zero point 0)" if trt_ok else
            "UINT8/asymmetric activations: ONNX Runtime CPU only; use target: tensorrt for TensorRT"}


def onnx_quality(art: Artifact, pairs: list[ImagePair], scale: int, threads: int = 0) -> float:
    """Mean PSNR-Y of an ONNX artifact on ``pairs`` through ONNX Runtime."""
    backend = open_backend(art, "onnxruntime", threads=threads)
    up = Upscaler(backend, size_multiple=art.manifest.get("size_multiple", 1))
    try:
        return evaluate_pairs(up.upscale_float, ((p.name, p.lr, p.hr) for p in pairs), scale, with_ssim=False).psnr
    finally:
        backend.close()


def onnx_manifest(source: Artifact, name: str, precision: str, **overrides) -> dict:
    """The manifest of an ONNX artifact derived from ``source`` (same architecture and scales unless overridden)."""
    return {"kind": "onnx", "name": name, "arch": source.manifest["arch"], "scales": source.manifest["scales"],
            "precision": precision, "params": source.manifest.get("params"),
            "size_multiple": source.manifest.get("size_multiple", 1),
            "parent": {"name": source.manifest.get("name"), "hash": source.hash, "path": str(source.path)},
            **overrides}


def quantize_stage(cfg: QuantizeConfig, *, name: str, out: Path, source: Artifact, calib_pairs: list[ImagePair],
                   val_pairs: list[ImagePair], scale: int, seed: int, threads: int = 0) -> Artifact:
    """The ``quantize`` stage: FP32 ONNX artifact -> INT8 QDQ ONNX artifact, budget-checked.

    With ``on_budget_exceeded: fallback`` a graph over budget becomes mixed precision: each quantizable
    layer is quantized alone and its PSNR drop measured (its sensitivity); the most sensitive layers are
    then kept in floating point, one more at a time, until the drop is within ``max_psnr_drop_db``. The
    manifest names the layers kept and their measured sensitivities."""
    if source.kind != "onnx" or source.manifest["precision"] != "fp32":
        raise QuantizeError(f"{source.path}: quantize takes an FP32 ONNX artifact (an export stage's output), got "
                            f"{source.kind} {source.manifest['precision']}")
    if cfg.tool == "nncf" and (cfg.method != "minmax" or not cfg.per_channel):
        raise QuantizeError(f"quantize {name}: tool nncf calibrates with its own MinMax statistics and per-channel "
                            "weights; method and per_channel apply to tool onnxruntime only")
    if cfg.on_budget_exceeded == "fallback" and cfg.max_psnr_drop_db is None:
        raise QuantizeError(f"quantize {name}: on_budget_exceeded: fallback needs max_psnr_drop_db")
    batches = calibration_batches(calib_pairs, cfg.calibration_images, cfg.calibration_patch, seed)
    manifest = onnx_manifest(source, name, "int8")

    def quality(path: Path) -> float:
        return onnx_quality(Artifact(path.parent, {**manifest, "payload": path.name}), val_pairs, scale, threads)

    def writer(path: Path) -> None:
        quantize_graph(source.payload, path, batches, cfg)
        psnr = quality(path)
        mixed = None
        if cfg.on_budget_exceeded == "fallback" and parent_psnr - psnr > cfg.max_psnr_drop_db:
            mixed = _mixed_precision(source.payload, path, batches, cfg, parent_psnr, psnr, quality)
            psnr = mixed["psnr"]
        report = check_qdq(path)
        if report["nonstandard_ops"]:
            raise QuantizeError(f"{path}: quantised graph has non-standard operators {report['nonstandard_ops']}; "
                                "neither ONNX Runtime nor TensorRT can run it")
        manifest["ops"] = report.pop("ops")
        manifest["precision"] = "int8" if not mixed or not mixed["fp_layers"] else "int8+fp32"
        manifest["transforms"] = source.manifest.get("transforms", []) + [{
            "type": "quantize", "format": "QDQ",
            "tool": "nncf.quantize (ONNX backend)" if cfg.tool == "nncf" else "onnxruntime.quantization.quantize_static",
            "method": cfg.method if cfg.tool == "onnxruntime" else "nncf minmax + fast bias correction",
            "per_channel": cfg.per_channel, "target": cfg.target,
            "weights": "int8 symmetric" + (" per-channel" if cfg.per_channel else " per-tensor"),
            "activations": "int8 symmetric" if cfg.target == "tensorrt" else "uint8/int8 asymmetric",
            "calibration_images": cfg.calibration_images, "calibration_patch": cfg.calibration_patch,
            "excluded_nodes": list(cfg.exclude), "mixed_precision": mixed, **report}]
        # Measured before the artifact is moved into place: a graph over budget never lands.
        policy = "warn" if cfg.on_budget_exceeded == "warn" else "fail"
        budget = check_budget(f"quantize {name}", parent_psnr, psnr, cfg.max_psnr_drop_db, policy)
        manifest["metrics"] = {"val_psnr": round(psnr, 4), "budget": budget}

    parent_psnr = onnx_quality(source, val_pairs, scale, threads)
    return write_artifact(out, writer, "model.onnx", manifest)


def _mixed_precision(src: Path, dst: Path, batches: list[np.ndarray], cfg: QuantizeConfig, parent_psnr: float,
                     full_psnr: float, quality) -> dict:
    """Keep the most sensitive layers in floating point until the drop fits the budget; rewrites ``dst``."""
    layers = [n for n in quantizable_nodes(src) if n not in cfg.exclude]
    trial = dst.with_name("sensitivity.onnx")
    sensitivity = {}
    for layer in layers:  # quantize this layer alone: exclude every other one
        quantize_graph(src, trial, batches, cfg, exclude=tuple(x for x in layers if x != layer))
        sensitivity[layer] = round(parent_psnr - quality(trial), 4)
    ranked = sorted(layers, key=lambda n: sensitivity[n], reverse=True)
    kept: list[str] = []
    psnr = full_psnr
    for layer in ranked:
        if parent_psnr - psnr <= cfg.max_psnr_drop_db:
            break
        kept.append(layer)
        quantize_graph(src, dst, batches, cfg, exclude=tuple(kept))
        psnr = quality(dst)
    trial.unlink(missing_ok=True)
    return {"fp_layers": kept, "psnr": psnr, "full_int8_drop_db": round(parent_psnr - full_psnr, 4),
            "sensitivity_db": sensitivity,
            "reason": "kept in floating point, most sensitive first (PSNR drop when quantized alone), until the "
                      "drop fits max_psnr_drop_db"}


# ------------------------------------------------------------------------------------------------ FP16

FP16_MAX = 65504.0


def activation_ranges(src: Path, batches: list[np.ndarray]) -> dict[str, tuple[str, float]]:
    """Largest |value| of every node output of an FP32 graph over ``batches``: {tensor: (node, max_abs)}."""
    import onnxruntime as ort

    proto = onnx.load(str(src))
    producers = {o: n.name or n.op_type for n in proto.graph.node for o in n.output}
    known = {o.name for o in proto.graph.output}
    for n in proto.graph.node:
        for o in n.output:
            if o and o not in known:
                proto.graph.output.append(onnx.helper.make_empty_tensor_value_info(o))
                known.add(o)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep every tensor observable
    opts.log_severity_level = 3
    sess = ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    peak: dict[str, float] = {}
    for b in batches:
        for name, value in zip(names, sess.run(None, {"lr": b})):
            if value.dtype.kind == "f" and value.size:
                peak[name] = max(peak.get(name, 0.0), float(np.nanmax(np.abs(value))))
    return {t: (producers.get(t, t), v) for t, v in peak.items()}


def fp16_onnx(src: Path, dst: Path, *, keep_io_types: bool = True, node_block_list: tuple[str, ...] = ()) -> None:
    """Convert an FP32 ONNX graph to FP16 (onnxconverter-common); ``keep_io_types`` keeps FP32 inputs and
    outputs (a Cast at each end), ``node_block_list`` keeps those nodes in FP32. The converter casts every
    kept node's output to FP16 even when the next node is kept too, which would still overflow between
    them: those Cast(FP16) -> Cast(FP32) round trips are removed, so a run of kept nodes stays FP32 inside."""
    from onnxconverter_common import float16

    proto = onnx.load(str(src))
    half = float16.convert_float_to_float16(proto, keep_io_types=keep_io_types,
                                            node_block_list=list(node_block_list) or None,
                                            max_finite_val=FP16_MAX, disable_shape_infer=False)
    _drop_cast_round_trips(half.graph)
    if keep_io_types:
        _fp16_consumers_of_outputs(half.graph, set(node_block_list))
    onnx.checker.check_model(half)
    onnx.save_model(half, str(dst))


def _fp16_consumers_of_outputs(graph: onnx.GraphProto, blocked: set[str]) -> None:
    """With FP32 outputs kept, an output that also feeds another node (MS-LapSRN's x2 image feeds the x4
    level) is read by that node after the Cast to FP32; FP16 nodes must read the FP16 tensor before it."""
    outputs = {o.name for o in graph.output}
    to_fp32 = {n.output[0]: n.input[0] for n in graph.node if n.op_type == "Cast" and n.output[0] in outputs
               and any(a.name == "to" and a.i == onnx.TensorProto.FLOAT for a in n.attribute)}
    for n in graph.node:
        if n.op_type == "Cast" or n.name in blocked:
            continue
        for i, name in enumerate(n.input):
            if name in to_fp32:
                n.input[i] = to_fp32[name]


def _drop_cast_round_trips(graph: onnx.GraphProto) -> None:
    """Rewire Cast(to FP32)(Cast(to FP16)(x)) to x, then delete Casts nothing reads."""
    to = lambda n: next((a.i for a in n.attribute if a.name == "to"), None)
    producer = {o: n for n in graph.node for o in n.output}
    alias = {}
    for n in graph.node:
        if n.op_type == "Cast" and to(n) == onnx.TensorProto.FLOAT:
            p = producer.get(n.input[0])
            if p is not None and p.op_type == "Cast" and to(p) == onnx.TensorProto.FLOAT16:
                alias[n.output[0]] = p.input[0]
    outputs = {o.name for o in graph.output}
    alias = {k: v for k, v in alias.items() if k not in outputs}
    for n in graph.node:
        for i, name in enumerate(n.input):
            if name in alias:
                n.input[i] = alias[name]
    while True:
        used = {i for n in graph.node for i in n.input} | outputs
        dead = [n for n in graph.node if n.op_type == "Cast" and not any(o in used for o in n.output)]
        if not dead:
            break
        for n in dead:
            graph.node.remove(n)


def fp16_stage(cfg: Fp16Config, *, name: str, out: Path, source: Artifact, calib_pairs: list[ImagePair],
               val_pairs: list[ImagePair], scale: int, seed: int, threads: int = 0) -> Artifact:
    """The ``fp16`` stage: FP32 ONNX -> FP16 ONNX with an overflow guard and the quality budget.

    The guard runs the FP32 graph on the calibration crops and finds every node whose output exceeds
    ``saturation`` x 65504 (FP16's largest finite value); with ``on_overflow: fallback`` those nodes stay in
    FP32, with ``fail`` the stage stops and names them. The FP16 graph is then run on the same crops and
    must produce no Inf/NaN."""
    if source.kind != "onnx" or source.manifest["precision"] != "fp32":
        raise QuantizeError(f"{source.path}: fp16 takes an FP32 ONNX artifact (an export stage's output), got "
                            f"{source.kind} {source.manifest['precision']}")
    import onnxruntime as ort

    batches = calibration_batches(calib_pairs, cfg.calibration_images, cfg.calibration_patch, seed)
    ranges = activation_ranges(source.payload, batches)
    limit = cfg.saturation * FP16_MAX
    hot_tensors = {t for t, (_, peak) in ranges.items() if peak > limit}
    # A hot tensor must neither be produced nor consumed in FP16 (a Cast to FP16 in front of its consumer
    # would overflow just the same), so both ends stay in FP32.
    graph = onnx.load(str(source.payload)).graph
    hot = sorted({n.name for n in graph.node if hot_tensors & (set(n.output) | set(n.input))})
    peak_all = max((v for _, v in ranges.values()), default=0.0)
    if hot and cfg.on_overflow == "fail":
        raise QuantizeError(f"fp16 {name}: activations of {hot} exceed {limit:.0f} on the calibration crops (FP16 "
                            f"overflows at {FP16_MAX:.0f}); set on_overflow: fallback to keep them in FP32.")
    manifest = onnx_manifest(source, name, "fp16")

    def writer(path: Path) -> None:
        fp16_onnx(source.payload, path, keep_io_types=cfg.keep_io_types, node_block_list=tuple(hot))
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        in_type = np.float32 if cfg.keep_io_types else np.float16
        bad = [i for i, b in enumerate(batches)
               if not all(np.isfinite(o).all() for o in sess.run(None, {"lr": b.astype(in_type)}))]
        if bad:
            raise QuantizeError(f"{path}: the FP16 graph gives Inf/NaN on calibration crops {bad[:5]} (FP32 kept for "
                                f"{hot or 'no node'}); lower saturation or keep this model in FP32.")
        manifest["ops"] = op_counts(path)
        manifest["transforms"] = source.manifest.get("transforms", []) + [{
            "type": "fp16", "tool": "onnxconverter_common.float16", "keep_io_types": cfg.keep_io_types,
            "fp32_nodes": hot, "fp32_reason": f"activation above {limit:.0f} on calibration crops" if hot else "",
            "peak_activation": round(peak_all, 3), "calibration_images": cfg.calibration_images}]
        if cfg.keep_io_types:
            draft = Artifact(path.parent, {**manifest, "payload": path.name})
            psnr = onnx_quality(draft, val_pairs, scale, threads)
        else:  # FP16 I/O: the protocol feeds FP32, so convert at the edges for measuring only
            psnr = _fp16_io_quality(path, val_pairs, scale, threads)
        budget = check_budget(f"fp16 {name}", parent_psnr, psnr, cfg.max_psnr_drop_db, cfg.on_budget_exceeded)
        manifest["metrics"] = {"val_psnr": round(psnr, 4), "budget": budget}

    parent_psnr = onnx_quality(source, val_pairs, scale, threads)
    return write_artifact(out, writer, "model.onnx", manifest)


def _fp16_io_quality(path: Path, pairs: list[ImagePair], scale: int, threads: int) -> float:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or 0
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

    def run(lr: np.ndarray) -> np.ndarray:
        x = to_float(lr).transpose(2, 0, 1)[None].astype(np.float16)
        return np.clip(sess.run(None, {"lr": x})[0][0].astype(np.float32), 0, 1).transpose(1, 2, 0)
    return evaluate_pairs(run, ((p.name, p.lr, p.hr) for p in pairs), scale, with_ssim=False).psnr


def op_counts(path: Path) -> dict[str, int]:
    proto = onnx.load(str(path))
    return dict(sorted(Counter(n.op_type if n.domain in STANDARD_DOMAINS else f"{n.domain}.{n.op_type}"
                               for n in proto.graph.node).items()))


# ------------------------------------------------------------------------------------------------- QAT

def qat_stage(cfg: QatConfig, *, name: str, out: Path, source: Artifact, teacher: Artifact | None,
              train_pairs: list[ImagePair], val_pairs: list[ImagePair], scale: int, patch_size: int,
              min_patch_std: float, seed: int, threads: int = 0) -> Artifact:
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

    from edgesr.artifacts import load_model
    from edgesr.export.onnx import output_names, parity_image
    from edgesr.imaging import image_to_tensor
    from edgesr.models import deploy_form, model_scales
    from edgesr.train.loop import config_fingerprint, fit, sampler_for, validate
    from edgesr.train.losses import LOSSES

    from .distill import distill_loss

    if source.kind != "model":
        raise QuantizeError(f"{source.path}: qat takes a PyTorch model artifact (a train/distill/prune stage's "
                            f"output), got {source.kind!r}")
    logging.getLogger("nncf").setLevel(logging.ERROR)
    model, arch = deploy_form(load_model(source), source.manifest["arch"])
    scales = list(model_scales(model))
    parent_psnr = validate(model, val_pairs, scale)
    calib = [torch.from_numpy(b) for b in calibration_batches(train_pairs, cfg.calibration_images,
                                                              cfg.calibration_patch, seed)]
    preset = nncf.QuantizationPreset.PERFORMANCE if cfg.target == "tensorrt" else nncf.QuantizationPreset.MIXED
    qmodel = nncf.quantize(model.eval(), nncf.Dataset(calib), preset=preset, subset_size=len(calib),
                           fast_bias_correction=True)
    ptq_psnr = validate(qmodel, val_pairs, scale)
    sampler = sampler_for(model, train_pairs, scale, patch_size, cfg.batch_size, seed + 3, min_patch_std)
    loss_fn = distill_loss(LOSSES.build({"type": "l1"}), load_model(teacher) if teacher else None, cfg.alpha,
                           tuple(scales))
    result = fit(qmodel, sampler, steps=cfg.steps, lr=cfg.lr, loss_fn=loss_fn, val_pairs=val_pairs, scale=scale,
                 val_every=cfg.val_every, fingerprint=config_fingerprint(source.hash, cfg, seed),
                 desc=f"qat {name}")
    example = image_to_tensor(parity_image())
    stripped = nncf.strip(result.model.eval(), do_copy=True, example_input=example)
    manifest = onnx_manifest(source, name, "int8", arch=arch, scales=scales,
                             params=sum(p.numel() for p in model.parameters()))

    def writer(path: Path) -> None:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(stripped, (example,), str(path), input_names=["lr"], output_names=output_names(scales),
                              opset_version=cfg.opset, dynamo=False,
                              dynamic_axes={"lr": {0: "batch", 2: "height", 3: "width"}})
        report = check_qdq(path)
        if report["nonstandard_ops"] or report["qdq_pairs"] == 0:
            raise QuantizeError(f"{path}: the QAT export is not a standard Q/DQ graph (non-standard ops "
                                f"{report['nonstandard_ops']}, {report['qdq_pairs']} Q/DQ pairs)")
        manifest["ops"] = report.pop("ops")
        draft = Artifact(path.parent, {**manifest, "payload": path.name})
        psnr = onnx_quality(draft, val_pairs, scale, threads)
        manifest["transforms"] = source.manifest.get("transforms", []) + ([] if arch == source.manifest["arch"] else [
            {"type": "reparameterize", "arch": arch}]) + [{
                "type": "qat", "tool": f"nncf {nncf.__version__} (quantize + fine-tune + strip)", "format": "QDQ",
                "target": cfg.target, "preset": str(preset.value), "steps": result.steps, "lr": cfg.lr,
                "teacher": teacher.manifest.get("name") if teacher else None,
                "calibration_images": cfg.calibration_images, **report}]
        budget = check_budget(f"qat {name}", parent_psnr, psnr, cfg.max_psnr_drop_db, cfg.on_budget_exceeded)
        manifest["metrics"] = {"val_psnr": round(psnr, 4), "budget": budget, "fp32_val_psnr": round(parent_psnr, 4),
                               "ptq_val_psnr": round(ptq_psnr, 4), "qat_torch_val_psnr": round(result.best_psnr, 4),
                               "train_seconds": round(result.seconds, 1), "history": result.history}

    return write_artifact(out, writer, "model.onnx", manifest)
