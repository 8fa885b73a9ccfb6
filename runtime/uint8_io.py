"""8-bit frames in, 8-bit frames out, inside the graph.

An edgesr ONNX graph takes ``lr`` (N x 3 x H x W float RGB in [0, 1]) and returns ``sr`` (N x 3 x sH x sW
float, unclamped). A user has 8-bit H x W x 3 frames. :func:`uint8_io` derives from any such graph (FP32,
FP16 with float32 I/O, INT8 Q/DQ, one or several outputs) the form that takes ``frames`` (N x H x W x 3
uint8) and returns ``frames_sr`` (``frames_x2``, ``frames_x4`` ... for several scales: N x sH x sW x 3
uint8), with the conversions as graph nodes the runtime runs on its own threads:

* in: Transpose (NHWC -> NCHW, on bytes), Cast, Div by 255: the same float32 values as
  :func:`edgesr.imaging.to_float` (one IEEE division each);
* out: Mul by 255, then ``QuantizeLinear`` with scale 1 and a uint8 zero point of 0, which is exactly
  round-half-to-even and clamp to [0, 255] (the protocol's quantisation, :func:`edgesr.imaging.to_uint8`),
  then Transpose (NCHW -> NHWC) on bytes. Today's NumPy path multiplies in float64 and this graph in
  float32, so an output value can differ by one grey level where the float32 product rounds onto or across
  a half: tests count them (none on the test images so far; see tests/test_uint8_io.py).
  (The shuffle could run on bytes after the rounding instead, as one 6-D byte transpose: measured slower
  on ONNX Runtime, 20.1 vs 13.9 ms at 640x360 -> x2, and OpenVINO computed it wrongly on an INT8 graph.)
* a second output ``finite`` (one float per call: the sum of every output value before rounding) lets the
  caller refuse an output that held NaN or Inf, which rounding to bytes would hide (a diverged model, an FP16
  overflow): one reduction.

The graph between is not touched (Q/DQ placement, 7-bit weights, FP16 blocks stay as they are). Needs the
``onnx`` package; numpy; no torch.
"""

from __future__ import annotations

import numpy as np

from edgesr.errors import EdgesrError

__all__ = ["uint8_io", "UINT8_INPUT", "uint8_output_names", "FINITE_OUTPUT", "Uint8IoError"]

UINT8_INPUT = "frames"
FINITE_OUTPUT = "finite"


class Uint8IoError(EdgesrError, ValueError):
    """A graph that does not follow the model I/O convention (one N x 3 x H x W float input)."""


def uint8_output_names(names: list[str]) -> list[str]:
    """``sr`` -> ``frames_sr``; ``sr_x2`` -> ``frames_x2`` (the float names mapped to the 8-bit ones)."""
    return ["frames_sr" if n == "sr" else "frames_" + n.split("_", 1)[-1] if n.startswith("sr_") else f"frames_{n}"
            for n in names]


def uint8_io(proto, *, finite: bool = True):
    """A new ``ModelProto``: ``proto`` with 8-bit NHWC frames at both ends (see the module's description).
    ``finite=False`` leaves out the ``finite`` output."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    src = onnx.ModelProto()
    src.CopyFrom(proto)
    g = src.graph
    if not any(o.domain in ("", "ai.onnx") and o.version >= 13 for o in src.opset_import):
        raise Uint8IoError("the graph's opset is below 13; re-export it (edgesr exports opset 18)")
    inits = {i.name for i in g.initializer}
    taken = {t for n in g.node for t in (*n.input, *n.output)} | inits
    clash = sorted(t for t in taken if t.startswith("u8io_") or t in (UINT8_INPUT, FINITE_OUTPUT))
    if clash:
        raise Uint8IoError(f"the graph already has tensors named {clash[:3]}: it is an 8-bit form already")
    real_inputs = [i for i in g.input if i.name not in inits]
    if len(real_inputs) != 1:
        raise Uint8IoError(f"the graph has {len(real_inputs)} inputs; the 8-bit form needs one image input")
    inp = real_inputs[0]
    dims = inp.type.tensor_type.shape.dim
    in_type = inp.type.tensor_type.elem_type
    if len(dims) != 4 or not dims[1].HasField("dim_value") or dims[1].dim_value != 3 \
            or in_type not in (TensorProto.FLOAT, TensorProto.FLOAT16):
        raise Uint8IoError(f"input {inp.name!r} is not N x 3 x H x W float; the 8-bit form needs the edgesr I/O "
                           "convention (import foreign graphs with edgesr import first)")

    def const(name, value, dtype=np.float32):
        g.initializer.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    # in: frames (N x H x W x 3 uint8) -> the float lr the graph reads; Div, not Mul by 1/255: to_float's values
    const("u8io_255", 255.0)
    head = [helper.make_node("Transpose", [UINT8_INPUT], ["u8io_nchw"], perm=[0, 3, 1, 2], name="u8io_in_layout"),
            helper.make_node("Cast", ["u8io_nchw"], ["u8io_float"], to=TensorProto.FLOAT, name="u8io_in_cast")]
    if in_type == TensorProto.FLOAT16:
        head += [helper.make_node("Div", ["u8io_float", "u8io_255"], ["u8io_div"], name="u8io_in_scale"),
                 helper.make_node("Cast", ["u8io_div"], [inp.name], to=TensorProto.FLOAT16, name="u8io_in_half")]
    else:
        head.append(helper.make_node("Div", ["u8io_float", "u8io_255"], [inp.name], name="u8io_in_scale"))
    # out: x 255, round half to even and clamp (QuantizeLinear, scale 1, uint8 zero point 0), NCHW -> NHWC bytes
    const("u8io_one", 1.0)
    const("u8io_zero", 0, np.uint8)
    tail, sums, outputs = [], [], []
    for k, (o, new) in enumerate(zip(list(g.output), uint8_output_names([o.name for o in g.output]))):
        p, value = f"u8io_{k}", o.name
        if o.type.tensor_type.elem_type == TensorProto.FLOAT16:
            tail.append(helper.make_node("Cast", [value], [f"{p}_float"], to=TensorProto.FLOAT, name=f"{p}_cast"))
            value = f"{p}_float"
        elif o.type.tensor_type.elem_type != TensorProto.FLOAT:
            raise Uint8IoError(f"output {o.name!r} is not float; the 8-bit form needs the edgesr I/O convention")
        if finite:
            tail.append(helper.make_node("ReduceSum", [value], [f"{p}_sum"], keepdims=0, name=f"{p}_sum"))
            sums.append(f"{p}_sum")
        tail += [helper.make_node("Mul", [value, "u8io_255"], [f"{p}_255"], name=f"{p}_scale"),
                 helper.make_node("QuantizeLinear", [f"{p}_255", "u8io_one", "u8io_zero"], [f"{p}_u8"],
                                  name=f"{p}_round"),
                 helper.make_node("Transpose", [f"{p}_u8"], [new], perm=[0, 2, 3, 1], name=f"{p}_layout")]
        outputs.append(helper.make_tensor_value_info(new, TensorProto.UINT8, ["batch", None, None, 3]))
    if finite:
        tail.append(helper.make_node("Sum" if len(sums) > 1 else "Identity", sums, [FINITE_OUTPUT], name="u8io_finite"))
        outputs.append(helper.make_tensor_value_info(FINITE_OUTPUT, TensorProto.FLOAT, []))
    body = list(g.node)
    del g.node[:]
    g.node.extend(head + body + tail)
    g.input.remove(inp)
    g.input.insert(0, helper.make_tensor_value_info(UINT8_INPUT, TensorProto.UINT8, ["batch", None, None, 3]))
    del g.output[:]
    g.output.extend(outputs)
    del g.value_info[:]
    onnx.checker.check_model(src)
    return src
