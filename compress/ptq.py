"""INT8 post-training quantisation into standard QuantizeLinear/DequantizeLinear (QDQ) ONNX.

ONNX Runtime's static quantiser calibrates activation ranges on real images (MinMax, Entropy or Percentile)
and writes a QDQ graph: weights INT8 symmetric per output channel; activations either UINT8 asymmetric
(``target: onnxruntime``, fastest on x86 CPUs) or INT8 symmetric with zero point 0
(``target: tensorrt``, what TensorRT's explicit quantisation accepts, with biases left in float). NNCF's ONNX
backend (``tool: nncf``) is the alternative quantiser. The result contains only standard ONNX operators,
never OpenVINO ``FakeQuantize``, and is checked for that.

The PSNR drop against the FP32 parent graph is measured on the validation set through ONNX Runtime and
held to the quality budget; ``on_budget_exceeded: fallback`` makes the graph mixed precision.
"""

from __future__ import annotations

import dataclasses
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Literal

import numpy as np
import onnx

from edgesr.artifacts import Artifact, Candidate, Quality, derived_manifest
from edgesr.budget import float_until_within
from edgesr.stages import ONNX, ONNX_FP32, StageContext, register_stage

from .common import (QuantizeError, calibration_batches, check_qdq, keep_layers_float, nncf_options, onnx_quality,
                     require_tensorrt_form)

__all__ = ["QuantizeConfig", "weight_bits_for", "fuse_activations", "quantize_onnx", "quantize_onnx_nncf", "quantize_graph", "quantizable_nodes",
           "quantize_stage", "quality_backend"]


@dataclass(frozen=True)
class QuantizeConfig:
    input: str
    """An ONNX artifact (FP32) to quantise."""
    tool: Literal["onnxruntime", "nncf"] = "onnxruntime"
    """onnxruntime: quantize_static (method below); nncf: NNCF's post-training quantization (ONNX backend)."""
    method: Literal["minmax", "entropy", "percentile", "auto"] = "minmax"
    """How activation ranges are calibrated (ONNX Runtime's MinMax, Entropy or Percentile 99.999 %). auto:
    MinMax and Percentile are tried and the one scoring best on the validation images (on the runtime the
    target names) is kept; the manifest records each one's PSNR. Percentile clips rare extremes: on IMDN-RTC
    (no image skip) it scored 0.58 dB more than MinMax after post-training quantization, on RLFN 0.26 dB
    (benchmarks/results/imported_rtc_x2). Entropy, as ONNX Runtime's quantize_static runs it (128 histogram
    bins searched for 128 quantized bins: one candidate, the whole range), writes MinMax's ranges (measured:
    every scale identical on IMDN-RTC and RLFN), so auto does not try it."""
    per_channel: bool = True
    weight_bits: Literal[7, 8] | None = None
    """Weight range: 7 bits ([-64, 64]) or 8 ([-127, 127]). None: 7 for the CPU targets (onnxruntime, openvino),
    8 for tensorrt. x86 CPUs without VNNI/AMX (AVX2 and plain AVX-512 hosts) add pairs of uint8 x int8 products
    in a saturating int16 (:func:`edgesr.hostinfo.u8s8_saturates`); with 8-bit weights those sums overflow and
    the same INT8 file scores lower there, on ONNX Runtime and OpenVINO alike (measured on an AVX2 host,
    benchmarks/results/int8_host: -0.19 to -1.48 dB more than on a VNNI host). 7-bit weights cannot overflow,
    so the file computes the same on every CPU, for 0.01-0.06 dB (measured) that ``qat_onnx`` wins back.
    8 bits is for graphs that only run on VNNI/AMX CPUs or GPUs. (ONNX Runtime's reduce_range; NNCF's
    overflow_fix.)"""
    target: Literal["onnxruntime", "tensorrt", "openvino"] = "onnxruntime"
    """onnxruntime: UINT8 asymmetric activations (fast on x86); tensorrt: INT8 symmetric (explicit Q/DQ);
    openvino: the onnxruntime form, with the quality budget (and the mixed-precision fallback's layer
    sensitivities) measured on OpenVINO, the runtime that will run it: OpenVINO's fused INT8 kernels can
    score lower than ONNX Runtime on the same file (measured: -0.29 dB on the quickstart student), and
    the fallback then finds the layers to keep in float on OpenVINO itself."""
    fuse_activations: bool = field(default=False, metadata={"fingerprint": "when_set"})
    """No Q/DQ pair between a convolution and the LeakyReLU or PReLU that alone consumes its output: the pair
    after the activation quantizes both, the form TensorRT and OpenVINO fuse into one kernel (Conv +
    activation). ONNX Runtime's quantizer puts a pair between them, whose range spans the convolution's
    negative outputs that the activation then shrinks (IMDN-RTC: -31 .. 10 before a LeakyReLU of slope 0.05),
    and OpenVINO then runs the graph slower than its FP32 form. Measured on IMDN-RTC's trained INT8 graph
    (benchmarks/results/imported_rtc_x2): +0.09 dB on Set5 without retraining, OpenVINO 1.7x faster, ONNX
    Runtime unchanged (it runs those convolutions in float)."""
    calibration_images: int = 32
    calibration_patch: int = 96
    exclude: tuple[str, ...] = ()
    """ONNX node names kept in floating point."""
    max_psnr_drop_db: float | None = None
    min_agreement_db: float = 50.0
    """target openvino: the lowest PSNR (peak 1.0) allowed between OpenVINO's output and ONNX Runtime's
    output of the same INT8 file on the validation images (ONNX Runtime computes the Q/DQ graph as written).
    Below it, the layers OpenVINO runs least faithfully are kept in float until it passes."""
    on_budget_exceeded: Literal["fail", "warn", "fallback"] = "fail"
    """fallback: accuracy-aware mixed precision, keeping the most sensitive layers in floating point until
    the drop fits max_psnr_drop_db."""


def weight_bits_for(target: str, weight_bits: int | None) -> int:
    """The weight range a quantize config asks for: given, or 7 for CPU targets and 8 for TensorRT."""
    return int(weight_bits) if weight_bits is not None else (8 if target == "tensorrt" else 7)


def quantize_onnx(src: Path, dst: Path, calibration: Iterable[np.ndarray], *, method: str = "minmax",
                  per_channel: bool = True, target: str = "onnxruntime", exclude: tuple[str, ...] = (),
                  weight_bits: int | None = None) -> None:
    """Static INT8 QDQ quantisation of ``src`` into ``dst`` with ONNX Runtime's quantiser (``weight_bits``: see
    :class:`QuantizeConfig`)."""
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
        exclude = list(exclude) + (_scalar_arithmetic(pre) if symmetric else [])
        quantize_static(str(pre), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=per_channel,
                        reduce_range=weight_bits_for(target, weight_bits) == 7,
                        activation_type=QuantType.QInt8 if symmetric else QuantType.QUInt8,
                        weight_type=QuantType.QInt8, calibrate_method=methods[method],
                        nodes_to_exclude=exclude or None,
                        extra_options={"ActivationSymmetric": symmetric, "WeightSymmetric": True,
                                       "CalibMovingAverage": False,
                                       # TensorRT takes biases in float and fuses them; it has no INT32 Q/DQ.
                                       "QuantizeBias": not symmetric})


def _scalar_arithmetic(path: Path) -> list[str]:
    """Element-wise nodes with a one-value constant operand (an imported graph's ``x * 255`` / ``y / 255``): left
    in float for TensorRT, whose builder refuses the one-value INT8 constant ONNX Runtime's quantizer would make
    of it ("Quantized constant ... is only allowed before DQ"; measured on an imported RLFN); TensorRT fuses
    such scaling into the neighbouring INT8 layers anyway."""
    import onnx

    proto = onnx.load(str(path))
    scalars = {i.name for i in proto.graph.initializer if int(np.prod(i.dims)) == 1}
    scalars |= {n.output[0] for n in proto.graph.node if n.op_type == "Constant"
                and all(int(np.prod(a.t.dims)) == 1 for a in n.attribute if a.name == "value")}
    return [n.name for n in proto.graph.node
            if n.op_type in ("Mul", "Div", "Add", "Sub") and any(i in scalars for i in n.input) and n.name]


def quantize_onnx_nncf(src: Path, dst: Path, calibration: Iterable[np.ndarray], *, target: str = "onnxruntime",
                       exclude: tuple[str, ...] = (), weight_bits: int | None = None) -> None:
    """Static INT8 quantisation of ``src`` with NNCF's ONNX backend (MinMax statistics + fast bias correction).

    NNCF quantizes the ONNX graph directly and writes standard QuantizeLinear/DequantizeLinear; quantizing
    the PyTorch model and exporting it would leave OpenVINO FakeQuantize nodes that neither ONNX Runtime nor
    TensorRT runs. ``target: tensorrt`` uses the PERFORMANCE preset (symmetric INT8 activations), otherwise
    MIXED (asymmetric activations)."""
    import logging

    import nncf
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters

    logging.getLogger("nncf").setLevel(logging.ERROR)
    batches = [{"lr": b} for b in calibration]
    overflow = nncf.OverflowFix.ENABLE if weight_bits_for(target, weight_bits) == 7 else nncf.OverflowFix.DISABLE
    options = nncf_options(target)
    model = onnx.load(str(src))
    quantized = nncf.quantize(model, nncf.Dataset(batches), **options, subset_size=len(batches),
                              fast_bias_correction=True,
                              advanced_parameters=AdvancedQuantizationParameters(overflow_fix=overflow),
                              ignored_scope=nncf.IgnoredScope(names=list(exclude), validate=False) if exclude else None)
    onnx.save_model(quantized, str(dst))


def quantize_graph(src: Path, dst: Path, batches: list[np.ndarray], cfg: QuantizeConfig,
                   exclude: tuple[str, ...] = ()) -> None:
    """Quantize with the tool the config names; ``exclude`` adds nodes kept in floating point. Pixel shuffles
    written as ConvTranspose (0/1 weights: the export stage's ``tail_channels``) always stay in float: they
    are exact rearrangements of the image, and quantizing their output would round the image itself."""
    from edgesr.onnxutil import shuffle_nodes

    keep = tuple(cfg.exclude) + tuple(exclude) + tuple(shuffle_nodes(onnx.load(str(src))))
    if cfg.tool == "nncf":
        quantize_onnx_nncf(src, dst, batches, target=cfg.target, exclude=keep, weight_bits=cfg.weight_bits)
    else:
        quantize_onnx(src, dst, batches, method=cfg.method, per_channel=cfg.per_channel, target=cfg.target,
                      exclude=keep, weight_bits=cfg.weight_bits)
    proto = onnx.load(str(dst))
    fused = cfg.fuse_activations and fuse_activations(proto)
    if keep_layers_float(proto, tuple(cfg.exclude) + tuple(exclude)) or fused:  # float on ONNX Runtime too (not
        # the shuffles: 0/1 weights, exact on any grid, and measured as they are)
        onnx.save_model(proto, str(dst))


FUSED_ACTIVATIONS = ("LeakyRelu", "PRelu")


def fuse_activations(proto: onnx.ModelProto) -> int:
    """Remove, in place, every activation Q/DQ pair between a Conv and a :data:`FUSED_ACTIVATIONS` node that is
    the only consumer of its output, where the activation's output has a pair of its own (so that the pair
    after the activation quantizes both); returns how many were removed."""
    g = proto.graph
    consumers: dict[str, list] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    producer = {o: n for n in g.node for o in n.output}
    outputs = {o.name for o in g.output}
    removed = []
    for q in g.node:
        conv = producer.get(q.input[0]) if q.op_type == "QuantizeLinear" else None
        if conv is None or conv.op_type != "Conv" or len(consumers.get(q.input[0], [])) != 1:
            continue
        dqs = consumers.get(q.output[0], [])
        if len(dqs) != 1 or dqs[0].op_type != "DequantizeLinear" or dqs[0].output[0] in outputs:
            continue
        users = consumers.get(dqs[0].output[0], [])
        if len(users) != 1 or users[0].op_type not in FUSED_ACTIVATIONS or users[0].input[0] != dqs[0].output[0]:
            continue
        after = consumers.get(users[0].output[0], [])
        if not after or any(a.op_type != "QuantizeLinear" for a in after):
            continue
        users[0].input[0] = q.input[0]
        removed += [q, dqs[0]]
    for n in removed:
        g.node.remove(n)
    used = {i for n in g.node for i in n.input}
    for init in [i for i in g.initializer if i.name not in used]:
        g.initializer.remove(init)
    return len(removed) // 2


_SHAPE_OPS = {"Shape", "Constant", "Reshape", "Unsqueeze", "Squeeze", "Expand", "Gather", "Cast", "Concat",
              "Slice", "Range", "ConstantOfShape"}


def quantizable_nodes(path: Path) -> list[str]:
    """Names of the nodes INT8 can apply to (compute and elementwise ops, not shape arithmetic), graph order."""
    from edgesr.onnxutil import shuffle_nodes

    proto = onnx.load(str(path))
    shuffles = set(shuffle_nodes(proto))
    return [n.name for n in proto.graph.node if n.op_type not in _SHAPE_OPS and n.name not in shuffles]


@register_stage("quantize", QuantizeConfig, makes=ONNX, takes={"input": ONNX_FP32}, lossy=True)
def quantize_stage(cfg: QuantizeConfig, ctx: StageContext, input: Artifact) -> Candidate:
    """The ``quantize`` stage: FP32 ONNX artifact -> INT8 QDQ ONNX artifact, budget-checked; calibrated on
    crops of the training images.

    With ``on_budget_exceeded: fallback`` a graph over budget becomes mixed precision: each quantizable
    layer is quantized alone and its PSNR drop measured (its sensitivity); the most sensitive layers are
    then kept in floating point, one more at a time, until the drop is within ``max_psnr_drop_db``. The
    manifest names the layers kept and their measured sensitivities."""
    source, name, scale, threads = input, ctx.name, ctx.scale, ctx.threads
    val_pairs = ctx.val_pairs
    if source.kind != "onnx" or source.manifest["precision"] != "fp32":
        raise QuantizeError(f"{source.path}: quantize takes an FP32 ONNX artifact (an export stage's output), got "
                            f"{source.kind} {source.manifest['precision']}")
    if cfg.tool == "nncf" and (cfg.method != "minmax" or not cfg.per_channel):
        raise QuantizeError(f"quantize {name}: tool nncf calibrates with its own MinMax statistics and per-channel "
                            "weights; method and per_channel apply to tool onnxruntime only")
    if cfg.on_budget_exceeded == "fallback" and cfg.max_psnr_drop_db is None:
        raise QuantizeError(f"quantize {name}: on_budget_exceeded: fallback needs max_psnr_drop_db")
    runtime = quality_backend(cfg.target, f"quantize {name}")
    batches = calibration_batches(ctx.train_pairs, cfg.calibration_images, cfg.calibration_patch, ctx.seed,
                                  input_size=source.manifest.input_size, degradation=ctx.degradation,
                                  scale=ctx.scale)
    parent_psnr = onnx_quality(source, val_pairs, scale, threads, runtime)
    # Drafts (graphs measured before the artifact is written) carry their weight range, so that the runtimes
    # judge them as they will judge the written artifact (no 8-bit overflow warning for a 7-bit draft).
    draft = {**derived_manifest(source, kind="onnx", name=name, precision="int8"), "transforms": source.manifest.get(
        "transforms", []) + [{"type": "quantize", "weight_bits": weight_bits_for(cfg.target, cfg.weight_bits)}]}

    def quality(path: Path) -> float:
        return onnx_quality(Artifact(path.parent, {**draft, "payload": path.name}), val_pairs, scale, threads,
                            runtime)

    path = ctx.staging / "model.onnx"
    if cfg.method == "entropy":
        from edgesr.progress import console

        console.print(f"[yellow]quantize {name}: {ENTROPY_NOTE}[/]")
    cfg, trials = _calibrate(source.payload, path, batches, cfg, quality)
    agreement = None
    if cfg.target == "openvino":
        agreement = _runtime_agreement(source.payload, path, batches, cfg, draft, val_pairs, threads)
    q = Quality(f"quantize {name}", quality(path), parent_psnr)

    def gentler() -> Candidate:
        """Mixed precision: the most sensitive layers kept in floating point until the drop fits the budget."""
        mixed = _mixed_precision(source.payload, path, batches, dataclasses.replace(cfg, exclude=tuple(cfg.exclude) + tuple(
            (agreement or {}).get("fp_layers", ()))), parent_psnr, q.psnr, quality)
        return _int8_candidate(cfg, ctx, source, path, runtime, dataclasses.replace(q, psnr=mixed["psnr"]),
                               agreement, mixed, trials)

    cand = _int8_candidate(cfg, ctx, source, path, runtime, q, agreement, None, trials)
    cand.gentler = gentler
    return cand


CALIBRATION_METHODS = ("minmax", "percentile")
ENTROPY_NOTE = ("ONNX Runtime's Entropy calibration, as quantize_static runs it (128 histogram bins searched for "
                "128 quantized bins: one candidate), writes the same ranges as MinMax; use percentile or auto")


def _calibrate(src: Path, dst: Path, batches: list[np.ndarray], cfg: QuantizeConfig, quality) -> tuple[QuantizeConfig, dict | None]:
    """Quantize ``src`` into ``dst`` with the config's calibration method; ``method: auto``: with each of
    :data:`CALIBRATION_METHODS`, keeping the best on the validation images (ties: the first). Returns the config
    with the method used, and the PSNR of each method tried (None unless auto)."""
    if cfg.method != "auto":
        quantize_graph(src, dst, batches, cfg)
        return cfg, None
    trials, trial = {}, dst.with_name("calibration.onnx")
    for method in CALIBRATION_METHODS:
        quantize_graph(src, trial, batches, dataclasses.replace(cfg, method=method))
        trials[method] = round(quality(trial), 4)
        if trials[method] == max(trials.values()):
            trial.replace(dst)
    trial.unlink(missing_ok=True)
    best = next(m for m in CALIBRATION_METHODS if trials[m] == max(trials.values()))
    return dataclasses.replace(cfg, method=best), {"tried_db": trials, "kept": best}


def _int8_candidate(cfg: QuantizeConfig, ctx: StageContext, source: Artifact, path: Path, runtime: str, quality: Quality,
                    agreement: dict | None, mixed: dict | None, calibration: dict | None = None) -> Candidate:
    """The quantized graph at ``path`` checked (standard Q/DQ, TensorRT's form for that target) and described."""
    name = ctx.name
    report = check_qdq(path)
    if report["nonstandard_ops"]:
        raise QuantizeError(f"{path}: quantised graph has non-standard operators {report['nonstandard_ops']}; "
                            "neither ONNX Runtime nor TensorRT can run it")
    if cfg.target == "tensorrt":
        report["tensorrt_readiness"] = require_tensorrt_form(path, f"quantize {name}")
    ops = report.pop("ops")
    kept = (mixed or {}).get("fp_layers", []) + (agreement or {}).get("fp_layers", [])
    manifest = derived_manifest(source, kind="onnx", name=name, precision="int8+fp32" if kept else "int8", transform={
        "type": "quantize", "format": "QDQ",
        "tool": "nncf.quantize (ONNX backend)" if cfg.tool == "nncf" else "onnxruntime.quantization.quantize_static",
        "method": cfg.method if cfg.tool == "onnxruntime" else "nncf minmax + fast bias correction",
        **({"calibration_auto": calibration} if calibration else {}),
        **({"method_note": ENTROPY_NOTE} if cfg.method == "entropy" and cfg.tool == "onnxruntime" else {}),
        **({"fused_activations": list(FUSED_ACTIVATIONS)} if cfg.fuse_activations else {}),
        "per_channel": cfg.per_channel, "target": cfg.target,
        "weights": "int8 symmetric" + (" per-channel" if cfg.per_channel else " per-tensor"),
        "weight_bits": weight_bits_for(cfg.target, cfg.weight_bits),
        "activations": "int8 symmetric" if cfg.target == "tensorrt" else "uint8/int8 asymmetric",
        "calibration_images": cfg.calibration_images, "calibration_patch": cfg.calibration_patch,
        **({"calibration_lr": ctx.degradation} if ctx.degradation != "bicubic" else {}),
        "excluded_nodes": list(cfg.exclude), "mixed_precision": mixed, "quality_measured_on": runtime,
        "runtime_agreement": agreement, **report})
    manifest["ops"] = ops
    return Candidate(path.parent, path.name, manifest, quality)


def quality_backend(target: str, stage: str) -> str:
    """The backend a quantize stage measures its quality on: the runtime its target names (ONNX Runtime for
    the onnxruntime and tensorrt forms, which ONNX Runtime simulates exactly); refused if not installed."""
    if target != "openvino":
        return "onnxruntime"
    from edgesr.runtime import BACKENDS

    ok, why = BACKENDS.get("openvino").available()
    if not ok:
        raise QuantizeError(f"{stage}: target openvino measures quality on OpenVINO, which is not available here "
                            f"({why})")
    return "openvino"


def _mixed_precision(src: Path, dst: Path, batches: list[np.ndarray], cfg: QuantizeConfig, parent_psnr: float,
                     full_psnr: float, quality) -> dict:
    """Keep the most sensitive layers in floating point until the drop fits the budget; rewrites ``dst``."""
    layers = [n for n in quantizable_nodes(src) if n not in cfg.exclude]
    trial = dst.with_name("sensitivity.onnx")
    sensitivity = {}
    for layer in layers:  # quantize this layer alone: exclude every other one
        quantize_graph(src, trial, batches, cfg, exclude=tuple(x for x in layers if x != layer))
        sensitivity[layer] = round(parent_psnr - quality(trial), 4)

    def keep_float(kept: list[str]) -> float:
        quantize_graph(src, dst, batches, cfg, exclude=tuple(kept))
        return quality(dst)

    kept, psnr = float_until_within(sensitivity, parent_psnr, full_psnr, cfg.max_psnr_drop_db, keep_float)
    trial.unlink(missing_ok=True)
    return {"fp_layers": kept, "psnr": psnr, "full_int8_drop_db": round(parent_psnr - full_psnr, 4),
            "sensitivity_db": sensitivity,
            "reason": "kept in floating point, most sensitive first (PSNR drop when quantized alone), until the "
                      "drop fits max_psnr_drop_db"}


def agreement_db(path: Path, manifest: dict, pairs, threads: int = 0) -> float:
    """How faithfully OpenVINO runs a Q/DQ graph: the lowest PSNR (peak 1.0), over ``pairs``' LR images, of
    OpenVINO's output (FP32 inference precision, so that only its INT8 execution differs) against ONNX
    Runtime's output of the same file."""
    from edgesr.imaging import to_float
    from edgesr.runtime import open_backend

    art = Artifact(path.parent, {**manifest, "payload": path.name})
    worst = float("inf")
    with open_backend(art, "onnxruntime", threads=threads) as ref, \
            open_backend(art, "openvino", threads=threads, precision="f32") as ov:
        for p in pairs:
            x = np.ascontiguousarray(to_float(p.lr).transpose(2, 0, 1)[None])
            mse = float(np.mean((ref.run(x).astype(np.float64) - ov.run(x)) ** 2))
            worst = min(worst, 10 * np.log10(1.0 / max(mse, 1e-20)))
    return round(worst, 2)


def _runtime_agreement(src: Path, dst: Path, batches: list[np.ndarray], cfg: QuantizeConfig, manifest: dict,
                       pairs, threads: int) -> dict:
    """``target: openvino``: check OpenVINO against ONNX Runtime on the written graph; below
    ``min_agreement_db``, quantize each layer alone to find those OpenVINO runs unfaithfully (on the quickstart
    student: the first activation, between the head convolution and the next one, 46 dB against 55 dB
    elsewhere), and keep them in float, least faithful first, until the graph passes; rewrites ``dst``."""
    full = agreement_db(dst, manifest, pairs, threads)
    result = {"min_db": cfg.min_agreement_db, "full_int8_db": full, "fp_layers": [], "agreement_db": full}
    if full >= cfg.min_agreement_db:
        return result
    layers = [n for n in quantizable_nodes(src) if n not in cfg.exclude]
    trial = dst.with_name("agreement.onnx")
    per_layer = {}
    for layer in layers:
        quantize_graph(src, trial, batches, cfg, exclude=tuple(x for x in layers if x != layer))
        per_layer[layer] = agreement_db(trial, manifest, pairs, threads)
    trial.unlink(missing_ok=True)
    kept, score = [], full
    for layer in sorted(layers, key=lambda n: per_layer[n]):
        if score >= cfg.min_agreement_db or per_layer[layer] >= cfg.min_agreement_db:
            break
        kept.append(layer)
        quantize_graph(src, dst, batches, cfg, exclude=tuple(kept))
        score = agreement_db(dst, manifest, pairs, threads)
    if score < cfg.min_agreement_db:
        raise QuantizeError(f"{dst}: OpenVINO's output of this INT8 graph agrees with ONNX Runtime's to {score} dB "
                            f"only (min_agreement_db {cfg.min_agreement_db}), even with {kept} in float; "
                            "use target: onnxruntime and run it on ONNX Runtime, or lower min_agreement_db")
    result.update(fp_layers=kept, agreement_db=score, per_layer_db=per_layer,
                  reason="kept in float, least faithful on OpenVINO first (agreement with ONNX Runtime when "
                         "quantized alone), until OpenVINO's output agrees with the Q/DQ graph")
    return result
