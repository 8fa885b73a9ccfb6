"""TensorRT readiness rules on an ONNX graph, without TensorRT: what its ONNX parser imports and the INT8
form its explicit quantization takes. Used by the quantize/qat stages (``target: tensorrt``: the graph they
write must pass) and by ``edgesr check`` (which adds the profile and, where installed, the real RTX
parser and builder). Each finding names the node, the problem and the fix."""

from __future__ import annotations

__all__ = ["PARSER_OPS", "graph_findings", "finding"]

PARSER_OPS = {
    "Abs", "Add", "And", "ArgMax", "ArgMin", "AveragePool", "BatchNormalization", "Cast", "Ceil", "Clip", "Concat",
    "Constant", "ConstantOfShape", "Conv", "ConvTranspose", "Cos", "CumSum", "DepthToSpace", "DequantizeLinear",
    "Div", "Einsum", "Elu", "Equal", "Erf", "Exp", "Expand", "Flatten", "Floor", "Gather", "GatherElements", "Gelu",
    "Gemm", "GlobalAveragePool", "GlobalMaxPool", "Greater", "GreaterOrEqual", "HardSigmoid", "HardSwish",
    "Identity", "InstanceNormalization", "LayerNormalization", "LeakyRelu", "Less", "LessOrEqual", "Log", "MatMul",
    "Max", "MaxPool", "Mean", "Min", "Mish", "Mod", "Mul", "Neg", "Not", "Or", "Pad", "Pow", "PRelu",
    "QuantizeLinear", "Range", "Reciprocal", "ReduceL2", "ReduceMax", "ReduceMean", "ReduceMin", "ReduceSum",
    "Relu", "Reshape", "Resize", "Round", "Selu", "Shape", "Sigmoid", "Sign", "Sin", "Size", "Slice", "Softmax",
    "Softplus", "SpaceToDepth", "Split", "Sqrt", "Squeeze", "Sub", "Sum", "Tanh", "Tile", "TopK", "Transpose",
    "Unsqueeze", "Upsample", "Where", "Xor",
}
"""Operators TensorRT 10's ONNX parser imports (onnx-tensorrt's operator matrix), restricted to what image
networks use; an operator outside it is reported (TensorRT 10 on Jetson is what this check speaks for)."""


def finding(severity: str, node: str, problem: str, fix: str) -> dict:
    return {"severity": severity, "node": node, "problem": problem, "fix": fix}


def graph_findings(proto, precision: str = "fp32", transforms: list | None = None) -> list[dict]:
    """Rule findings for an ONNX ``ModelProto``: operators, DepthToSpace mode, the INT8 Q/DQ form
    (symmetric INT8, zero point 0, no INT32 bias quantizers, weights per output channel on axis 0) and, for
    FP16 graphs, the overflow guard's record."""
    import numpy as np
    from onnx import numpy_helper

    findings: list[dict] = []
    g = proto.graph
    inits = {i.name: i for i in g.initializer}
    consts = {n.output[0]: next((a.t for a in n.attribute if a.name == "value"), None)
              for n in g.node if n.op_type == "Constant"}

    def array(name):
        t = inits.get(name) if name in inits else consts.get(name)
        return numpy_helper.to_array(t) if t is not None else None

    for n in g.node:
        label = n.name or f"{n.op_type}#{list(g.node).index(n)}"
        if n.domain not in ("", "ai.onnx"):
            findings.append(finding("error", label, f"operator {n.domain}.{n.op_type} is not a standard ONNX operator",
                                     "export with standard operators only (no vendor domains, no FakeQuantize)"))
        elif n.op_type not in PARSER_OPS:
            findings.append(finding("error", label, f"operator {n.op_type} is not imported by TensorRT's ONNX parser",
                                     "replace it in the model, or keep this model on ONNX Runtime"))
        if n.op_type == "DepthToSpace":
            mode = next((a.s.decode() for a in n.attribute if a.name == "mode"), "DCR")
            if mode != "CRD":
                findings.append(finding("error", label, f"DepthToSpace mode {mode}; PixelShuffle is CRD",
                                         "export PixelShuffle through the PyTorch exporter (mode CRD)"))
        if n.op_type in ("QuantizeLinear", "DequantizeLinear"):
            zp = array(n.input[2]) if len(n.input) > 2 and n.input[2] else None
            src = array(n.input[0]) if n.op_type == "DequantizeLinear" else None
            if zp is not None and zp.dtype == np.int32:
                findings.append(finding("error", label, "INT32 quantizer (ONNX Runtime's quantized bias)",
                                         "quantize with target: tensorrt (biases stay float)"))
            elif zp is not None and zp.dtype == np.uint8 and np.any(zp):
                findings.append(finding("error", label, f"UINT8 asymmetric quantizer (zero point "
                                        f"{zp.ravel()[:4].tolist()})",
                                        "quantize with target: tensorrt (symmetric INT8 activations)"))
            elif zp is not None and zp.dtype == np.uint8:
                findings.append(finding("warning", label, "UINT8 quantizer with zero point 0 (TensorRT for RTX builds "
                                        "it; TensorRT 10 documents signed INT8 Q/DQ: verify on the device)",
                                        "prefer signed INT8 (the onnxruntime tool with target: tensorrt writes it)"))
            elif zp is not None and np.any(zp):
                findings.append(finding("error", label, f"non-zero zero point {zp.ravel()[:4].tolist()}",
                                         "TensorRT takes symmetric INT8 only: zero point 0 (target: tensorrt)"))
            if src is not None and src.ndim == 4:  # a weight quantizer: per output channel
                scale = array(n.input[1])
                axis = next((a.i for a in n.attribute if a.name == "axis"), 1)
                users = [u.op_type for u in g.node if n.output[0] in u.input]
                want = 1 if "ConvTranspose" in users else 0  # ConvTranspose weights are (in, out, kh, kw)
                if scale is None or scale.size == 1:
                    findings.append(finding("error", label, "per-tensor weight quantizer",
                                            "quantize weights per channel (per_channel: true)"))
                elif axis != want or scale.size != src.shape[want]:
                    findings.append(finding("error", label, f"weight scales on axis {axis} ({scale.size} values) for "
                                            f"{src.shape[want]} output channels on axis {want}",
                                            f"quantize weights per output channel (axis {want})"))
    if precision == "fp16" and not any(t.get("type") == "fp16" for t in (transforms or [])):
        findings.append(finding("warning", "graph", "FP16 graph without the fp16 stage's overflow-guard record",
                                "convert with the fp16 stage, which checks activations against FP16's range"))
    return findings
