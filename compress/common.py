"""What the INT8/FP16 stages share: calibration crops from real images, the quality of an ONNX graph
through ONNX Runtime (the protocol), the Q/DQ form check, and the stage error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from edgesr.artifacts import Artifact
from edgesr.data.datasets import ImagePair
from edgesr.errors import EdgesrError
from edgesr.imaging import to_float
from edgesr.metrics import evaluate_pairs
from edgesr.onnxutil import INT16_MAX, op_counts, u8s8_pair_sum_max
from edgesr.runtime import Upscaler, open_backend

__all__ = ["QuantizeError", "calibration_batches", "onnx_quality", "check_qdq", "require_tensorrt_form",
           "u8s8_pair_sum_max", "activation_quantizers", "activation_groups", "float_activations",
           "keep_layers_float", "dequantize_layers"]


class QuantizeError(EdgesrError, RuntimeError):
    """A quantisation or FP16 step that cannot run or failed its checks; the message names the fix."""


def calibration_batches(pairs: list[ImagePair], n: int, patch, seed: int = 0, *,
                        input_size=None, degradation: str = "bicubic", scale: int = 0) -> list[np.ndarray]:
    """``n`` LR crops (1 x 3 x patch x patch float32) from the training images, most textured first picked
    at random positions (seeded). ``input_size`` (a graph bound to one input size): crops of exactly that
    size instead, images smaller than it mirrored out to it (as the Upscaler feeds such a graph).
    ``degradation`` other than the protocol's (a recipe's ``data.degradation: general``): LR patches made from
    the HR images by that mix, as the model was trained, so that the activation ranges are those of the frames
    it is meant for (seeded by ``seed``; ``scale``: the pairs' scale)."""
    if degradation != "bicubic" and not input_size:
        from edgesr.data.patches import PatchSampler

        sampler = PatchSampler(pairs, scale, patch, 1, seed=seed + 77, min_std=0.04, degradation=degradation)
        return [np.ascontiguousarray(sampler.batch(i)[0].numpy()) for i in range(n)]
    rng = np.random.default_rng([seed, 77])
    out = []
    ph, pw = (int(input_size[0]), int(input_size[1])) if input_size else (patch, patch)
    usable = [p for p in pairs if p.lr.shape[0] >= ph and p.lr.shape[1] >= pw] or (pairs if input_size else [])
    if not usable:
        raise QuantizeError(f"no calibration image is at least {patch} px; lower calibration_patch")
    for i in range(n):
        p = usable[i % len(usable)]
        h, w = p.lr.shape[:2]
        y, x = int(rng.integers(0, max(h - ph, 0) + 1)), int(rng.integers(0, max(w - pw, 0) + 1))
        crop = p.lr[y:y + ph, x:x + pw]
        if crop.shape[:2] != (ph, pw):
            crop = np.pad(crop, ((0, ph - crop.shape[0]), (0, pw - crop.shape[1]), (0, 0)), mode="reflect")
        out.append(np.ascontiguousarray(to_float(crop).transpose(2, 0, 1)[None]))
    return out


def check_qdq(path: Path) -> dict:
    """Inspect a QDQ graph: operator inventory, non-standard operators, and whether TensorRT can build it
    (INT8 Q/DQ with zero point 0 everywhere, no INT32 bias Q/DQ)."""
    proto = onnx.load(str(path))
    ops = op_counts(proto)
    nonstandard = sorted(k for k in ops if "." in k)  # op_counts names non-standard operators domain.Type
    if any(k.split(".")[-1] == "FakeQuantize" for k in ops) and "FakeQuantize" not in nonstandard:
        nonstandard.append("FakeQuantize")
    inits = {i.name: i for i in proto.graph.initializer}
    zero_points = []
    for n in proto.graph.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear") and len(n.input) > 2 and n.input[2] in inits:
            zero_points.append(numpy_helper.to_array(inits[n.input[2]]))
    trt_ok = bool(zero_points) and all(z.dtype == np.int8 and not np.any(z) for z in zero_points)
    pair_max = u8s8_pair_sum_max(proto)
    return {"ops": ops, "nonstandard_ops": nonstandard, "qdq_pairs": ops.get("QuantizeLinear", 0),
            "u8s8_pair_sum_max": pair_max, "exact_without_vnni": pair_max <= INT16_MAX,
            "tensorrt_explicit_int8": trt_ok,
            "tensorrt_note": "INT8 symmetric Q/DQ (zero point 0)" if trt_ok else
            "UINT8/asymmetric activations: ONNX Runtime CPU only; use target: tensorrt for TensorRT"}


def nncf_options(target: str) -> dict:
    """NNCF quantize() keywords for a target: PERFORMANCE (symmetric activations) for TensorRT, MIXED
    (asymmetric activations) for ONNX Runtime. NNCF quantizes non-negative tensors (the input, ReLU outputs)
    as UINT8 with zero point 0 even then, and its hardware configs refuse forcing them signed (tried: every
    target device and mode); TensorRT for RTX builds that form, the readiness rules flag it as a warning."""
    import nncf

    return {"preset": nncf.QuantizationPreset.PERFORMANCE if target == "tensorrt" else nncf.QuantizationPreset.MIXED}


def require_tensorrt_form(path: Path, stage: str) -> list[dict]:
    """For ``target: tensorrt``: the written graph must pass the TensorRT readiness rules (INT8 form,
    operators); the findings (warnings included) are returned for the manifest, errors raise."""
    from edgesr.trtrules import graph_findings

    findings = graph_findings(onnx.load(str(path)), "int8")
    errors = [f for f in findings if f["severity"] == "error"]
    if errors:
        listed = "; ".join(f"{f['node']}: {f['problem']}" for f in errors[:5])
        raise QuantizeError(f"{stage}: target tensorrt, but the graph is not in the form TensorRT takes ({listed}); "
                            f"fix: {errors[0]['fix']}")
    return findings


def onnx_quality(art: Artifact, pairs: list[ImagePair], scale: int, threads: int = 0,
                 backend_name: str = "onnxruntime") -> float:
    """Mean PSNR-Y of an ONNX artifact on ``pairs`` through a backend (ONNX Runtime unless the stage targets
    another runtime: the same INT8 file can score differently on two runtimes)."""
    backend = open_backend(art, backend_name, threads=threads)
    up = Upscaler(backend, size_multiple=art.manifest.size_multiple)
    try:
        return evaluate_pairs(up.upscale_float, ((p.name, p.lr, p.hr) for p in pairs), scale, with_ssim=False).psnr
    finally:
        backend.close()


def activation_quantizers(proto: onnx.ModelProto) -> list[str]:
    """The tensors a Q/DQ graph quantizes between two operators: each QuantizeLinear whose input an operator
    computes (not the graph's input, not an initializer) and whose DequantizeLinear nodes do not give a graph
    output, by its input tensor's name, in graph order."""
    g = proto.graph
    produced = {o for n in g.node for o in n.output}
    outputs = {o.name for o in g.output}
    dqs = {}
    for n in g.node:
        if n.op_type == "DequantizeLinear":
            dqs.setdefault(n.input[0], []).append(n)
    return [q.input[0] for q in g.node if q.op_type == "QuantizeLinear" and q.input[0] in produced
            and dqs.get(q.output[0]) and not any(d.output[0] in outputs for d in dqs[q.output[0]])]


#: Operators that only select, move or reorder their input's values: an output of one of them that is quantized
#: again on its input's grid holds the same integers.
_GRID_PRESERVING = frozenset({"Split", "Slice", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Identity",
                              "MaxPool", "DepthToSpace", "SpaceToDepth", "Gather"})


def activation_groups(proto: onnx.ModelProto) -> list[list[str]]:
    """:func:`activation_quantizers` in groups that go to float together. A quantizer whose dequantized tensor
    feeds only value-moving operators (Split, Slice, Reshape, MaxPool, ...), each output of which is read by
    nothing but a quantizer on the same grid (scale and zero point), is grouped with those quantizers: removing
    any one of them alone changes no value (the others quantize the same values to the same grid; a fused
    Conv+LeakyReLU feeding a Split is quantized three times so), only the group together does. Groups in graph
    order of their first member; most are one tensor."""
    g = proto.graph
    names = activation_quantizers(proto)
    quantizer = {n.input[0]: n for n in g.node if n.op_type == "QuantizeLinear" and n.input[0] in set(names)}
    inits = {i.name: i for i in g.initializer}
    consumers: dict[str, list] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)

    def grid(q) -> tuple | None:
        ins = [q.input[1], q.input[2] if len(q.input) > 2 else ""]
        if any(i and i not in inits for i in ins):
            return None
        return tuple(numpy_helper.to_array(inits[i]).tobytes() if i else b"" for i in ins)

    parent = {t: t for t in names}

    def root(t: str) -> str:
        while parent[t] != t:
            t = parent[t]
        return t

    for t in names:
        dqs = [d for d in consumers.get(quantizer[t].output[0], []) if d.op_type == "DequantizeLinear"]
        users = [c for d in dqs for c in consumers.get(d.output[0], [])]
        outs = [o for c in users for o in c.output if o]
        if not users or any(c.op_type not in _GRID_PRESERVING for c in users) or grid(quantizer[t]) is None:
            continue
        if all(o in quantizer and consumers.get(o) == [quantizer[o]] and grid(quantizer[o]) == grid(quantizer[t])
               for o in outs):
            for o in outs:
                parent[root(o)] = root(t)
    groups: dict[str, list[str]] = {}
    for t in names:
        groups.setdefault(root(t), []).append(t)
    return list(groups.values())


def float_activations(proto: onnx.ModelProto, tensors) -> onnx.ModelProto:
    """A copy of ``proto`` with the Q/DQ pairs of ``tensors`` (names from :func:`activation_quantizers`) replaced
    by a Clip to each quantizer's range, ``[(qmin - z) s, (qmax - z) s]``: the operators that read the dequantized
    tensor read it in float (mixed precision: an integer runtime runs them in floating point), and the clamp the
    quantizer applied stays (ONNX Runtime's quantizer folds a ReLU into a quantizer whose range starts at 0).
    Refuses a name that is not such a quantizer."""
    from onnx import helper

    proto = onnx.ModelProto.FromString(proto.SerializeToString())
    known = set(activation_quantizers(proto))
    if unknown := sorted(set(tensors) - known):
        raise QuantizeError(f"no activation quantizer on {unknown} (quantized activations: {sorted(known)})")
    g = proto.graph
    inits = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    for q in [q for q in g.node if q.op_type == "QuantizeLinear" and q.input[0] in set(tensors)]:
        lo, hi = _quantizer_range(q, inits)
        clipped = f"{q.input[0]}_float_clip"
        g.initializer.extend([numpy_helper.from_array(np.asarray(lo, np.float32), f"{clipped}_min"),
                              numpy_helper.from_array(np.asarray(hi, np.float32), f"{clipped}_max")])
        at = list(g.node).index(q)
        for d in [d for d in g.node if d.op_type == "DequantizeLinear" and d.input[0] == q.output[0]]:
            for c in g.node:
                c.input[:] = [clipped if i == d.output[0] else i for i in c.input]
            g.node.remove(d)
        g.node.remove(q)
        g.node.insert(at, helper.make_node("Clip", [q.input[0], f"{clipped}_min", f"{clipped}_max"], [clipped],
                                           name=f"{q.input[0]}_float_clip"))
    used = {i for n in g.node for i in n.input}
    for init in [i for i in g.initializer if i.name not in used]:  # the removed pairs' scales and zero points
        g.initializer.remove(init)
    return proto


def _quantizer_range(node, inits: dict) -> tuple[np.float32, np.float32]:
    """The float range a per-tensor QuantizeLinear or DequantizeLinear node spans: [(qmin - z) s, (qmax - z) s]."""
    s = inits[node.input[1]].astype(np.float32)
    z = inits[node.input[2]] if len(node.input) > 2 and node.input[2] else np.uint8(0)
    info = np.iinfo(z.dtype)
    return np.float32((info.min - int(z)) * s), np.float32((info.max - int(z)) * s)


def dequantize_layers(proto: onnx.ModelProto, names) -> list[str]:
    """The layers ``names`` of a Q/DQ graph put in floating point, in place: each Conv/ConvTranspose/Gemm whose
    weights (and bias) a DequantizeLinear reads from integer initializers gets their dequantized values as float
    initializers instead, so the graph computes what it computed, and training (``qat_onnx``'s
    ``float_layers``) can move them off the grid; :func:`keep_layers_float` then keeps ONNX Runtime from
    quantizing them again. Refuses a name that is not such a layer, naming those that are. Returns ``names``."""
    g = proto.graph
    inits = {i.name: i for i in g.initializer}
    producer = {o: n for n in g.node for o in n.output}

    def quantized(n, idx: int):
        d = producer.get(n.input[idx]) if len(n.input) > idx and n.input[idx] else None
        return d if d is not None and d.op_type == "DequantizeLinear" and d.input[0] in inits else None

    layers = {n.name: n for n in g.node if n.op_type in ("Conv", "ConvTranspose", "Gemm") and quantized(n, 1)}
    if unknown := [n for n in names if n not in layers]:
        raise QuantizeError(f"float_layers: {unknown} are not layers with quantized weights in this graph; those "
                            f"are {sorted(layers)}")
    for n in (layers[name] for name in names):
        for idx in (1, 2):
            if (d := quantized(n, idx)) is not None:
                g.initializer.append(numpy_helper.from_array(_dequantized(d, inits), f"{n.input[idx]}_float"))
                n.input[idx] = f"{n.input[idx]}_float"
    used = {i for n in g.node for i in n.input}
    for d in [d for d in g.node if d.op_type == "DequantizeLinear" and d.output[0] not in used and d.input[0] in inits]:
        g.node.remove(d)
    used = {i for n in g.node for i in n.input}
    for init in [i for i in g.initializer if i.name not in used]:
        g.initializer.remove(init)
    keep_layers_float(proto, names)
    return list(names)


def _dequantized(node, inits: dict) -> np.ndarray:
    """What a DequantizeLinear of an initializer outputs: ``(q - z) * s``, per ``axis`` where the scale is a vector."""
    q = numpy_helper.to_array(inits[node.input[0]]).astype(np.float64)
    s = numpy_helper.to_array(inits[node.input[1]]).astype(np.float64)
    z = numpy_helper.to_array(inits[node.input[2]]).astype(np.float64) if len(node.input) > 2 and node.input[2] else 0.0
    if np.ndim(s):
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1) % q.ndim
        shape = [1] * q.ndim
        shape[axis] = -1
        s, z = s.reshape(shape), np.reshape(z, shape) if np.ndim(z) else z
    return ((q - z) * s).astype(np.float32)


def keep_layers_float(proto: onnx.ModelProto, names) -> list[str]:
    """Make the layers ``names`` (kept in floating point: float weights) stay float in ONNX Runtime too, in place.
    ONNX Runtime's WeightBiasQuantization optimizer gives a Conv/ConvTranspose/Gemm with float weights that reads a
    DequantizeLinear and feeds a QuantizeLinear per-tensor INT8 weights and runs it as an integer kernel (measured:
    one such layer of a trained IMDN-RTC a step off at 5 % of its quantized outputs), while OpenVINO and TensorRT
    run it in float. A Clip to the DequantizeLinear's own range between the two (a no-op on its values) breaks
    that pattern. Returns the layers guarded this way."""
    from onnx import helper

    g = proto.graph
    inits = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    producer = {o: n for n in g.node for o in n.output}
    readers = {}
    for n in g.node:
        for i in n.input:
            readers.setdefault(i, []).append(n)
    guarded = []
    for n in [n for n in g.node if n.name in set(names) and n.op_type in ("Conv", "ConvTranspose", "Gemm")]:
        dq = producer.get(n.input[0])
        if dq is None or dq.op_type != "DequantizeLinear" or len(n.input) < 2 or n.input[1] not in inits or \
                inits[n.input[1]].dtype != np.float32 or np.ndim(inits[dq.input[1]]) or \
                not any(r.op_type == "QuantizeLinear" for r in readers.get(n.output[0], [])):
            continue
        lo, hi = _quantizer_range(dq, inits)
        guard = f"{n.name}_float_input"
        g.initializer.extend([numpy_helper.from_array(np.asarray(lo, np.float32), f"{guard}_min"),
                              numpy_helper.from_array(np.asarray(hi, np.float32), f"{guard}_max")])
        g.node.insert(list(g.node).index(n), helper.make_node("Clip", [n.input[0], f"{guard}_min", f"{guard}_max"],
                                                              [guard], name=guard))
        n.input[0] = guard
        guarded.append(n.name)
    return guarded
