"""FP16 ONNX with an overflow guard: the FP32 graph is run on calibration crops with every tensor exposed, and
nodes whose activations come near FP16's largest finite value stay in FP32 (or the stage fails naming
them). FP32 inputs and outputs are kept by default; the PSNR drop is held to the quality budget."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import onnx

from edgesr.artifacts import Artifact, Candidate, Quality, derived_manifest
from edgesr.data.datasets import ImagePair
from edgesr.imaging import to_float
from edgesr.metrics import evaluate_pairs
from edgesr.onnxutil import op_counts
from edgesr.runtime.onnxruntime_backend import ort_session
from edgesr.stages import ONNX, ONNX_FP32, StageContext, register_stage

from .common import QuantizeError, calibration_batches, onnx_quality

__all__ = ["Fp16Config", "FP16_MAX", "activation_ranges", "fp16_onnx", "fp16_stage"]


@dataclass(frozen=True)
class Fp16Config:
    input: str
    """An ONNX artifact (FP32) to convert."""
    keep_io_types: bool = True
    """Keep FP32 inputs and outputs (Casts inside the graph); false: the graph takes and returns FP16."""
    calibration_images: int = 16
    calibration_patch: int = 96
    saturation: float = 0.25
    """Overflow guard: a node whose FP32 activations exceed saturation x 65504 on the calibration crops is
    an overflow risk (4x headroom: FP16 kernels may accumulate partial sums above the output value)."""
    on_overflow: Literal["fallback", "fail"] = "fallback"
    """fallback: keep the risky nodes in FP32 (named in the manifest); fail: stop and name them."""
    max_psnr_drop_db: float | None = None
    on_budget_exceeded: Literal["fail", "warn"] = "fail"


FP16_MAX = 65504.0


def activation_ranges(src: Path, batches: list[np.ndarray]) -> dict[str, tuple[str, float]]:
    """Largest |value| of every node output of an FP32 graph over ``batches``: {tensor: (node, max_abs)}."""
    proto = onnx.load(str(src))
    producers = {o: n.name or n.op_type for n in proto.graph.node for o in n.output}
    known = {o.name for o in proto.graph.output}
    for n in proto.graph.node:
        for o in n.output:
            if o and o not in known:
                proto.graph.output.append(onnx.helper.make_empty_tensor_value_info(o))
                known.add(o)
    sess = ort_session(proto.SerializeToString(), optimize=False)  # unoptimised: every tensor stays observable
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


@register_stage("fp16", Fp16Config, makes=ONNX, takes={"input": ONNX_FP32}, lossy=True)
def fp16_stage(cfg: Fp16Config, ctx: StageContext, input: Artifact) -> Candidate:
    """The ``fp16`` stage: FP32 ONNX -> FP16 ONNX with an overflow guard and the quality budget.

    The guard runs the FP32 graph on the calibration crops and finds every node whose output exceeds
    ``saturation`` x 65504 (FP16's largest finite value); with ``on_overflow: fallback`` those nodes stay in
    FP32, with ``fail`` the stage stops and names them. The FP16 graph is then run on the same crops and
    must produce no Inf/NaN."""
    source, name, scale, threads = input, ctx.name, ctx.scale, ctx.threads
    val_pairs = ctx.val_pairs
    if source.kind != "onnx" or source.manifest["precision"] != "fp32":
        raise QuantizeError(f"{source.path}: fp16 takes an FP32 ONNX artifact (an export stage's output), got "
                            f"{source.kind} {source.manifest['precision']}")
    batches = calibration_batches(ctx.train_pairs, cfg.calibration_images, cfg.calibration_patch, ctx.seed,
                                  input_size=source.manifest.input_size, degradation=ctx.degradation,
                                  scale=ctx.scale)
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
    parent_psnr = onnx_quality(source, val_pairs, scale, threads)
    path = ctx.staging / "model.onnx"
    fp16_onnx(source.payload, path, keep_io_types=cfg.keep_io_types, node_block_list=tuple(hot))
    sess = ort_session(path, threads=threads)
    in_type = np.float32 if cfg.keep_io_types else np.float16
    bad = [i for i, b in enumerate(batches)
           if not all(np.isfinite(o).all() for o in sess.run(None, {"lr": b.astype(in_type)}))]
    if bad:
        raise QuantizeError(f"{path}: the FP16 graph gives Inf/NaN on calibration crops {bad[:5]} (FP32 kept for "
                            f"{hot or 'no node'}); lower saturation or keep this model in FP32.")
    manifest = derived_manifest(source, kind="onnx", name=name, precision="fp16", transform={
        "type": "fp16", "tool": "onnxconverter_common.float16", "keep_io_types": cfg.keep_io_types,
        "fp32_nodes": hot, "fp32_reason": f"activation above {limit:.0f} on calibration crops" if hot else "",
        "peak_activation": round(peak_all, 3), "calibration_images": cfg.calibration_images})
    manifest["ops"] = op_counts(path)
    if cfg.keep_io_types:
        psnr = onnx_quality(Artifact(path.parent, {**manifest, "payload": path.name}), val_pairs, scale, threads)
    else:  # FP16 I/O: the protocol feeds FP32, so convert at the edges for measuring only
        psnr = _fp16_io_quality(path, val_pairs, scale, threads)
    return Candidate(ctx.staging, path.name, manifest, Quality(f"fp16 {name}", psnr, parent_psnr))


def _fp16_io_quality(path: Path, pairs: list[ImagePair], scale: int, threads: int) -> float:
    sess = ort_session(path, threads=threads)

    def run(lr: np.ndarray) -> np.ndarray:
        x = to_float(lr).transpose(2, 0, 1)[None].astype(np.float16)
        return np.clip(sess.run(None, {"lr": x})[0][0].astype(np.float32), 0, 1).transpose(1, 2, 0)
    return evaluate_pairs(run, ((p.name, p.lr, p.hr) for p in pairs), scale, with_ssim=False).psnr
