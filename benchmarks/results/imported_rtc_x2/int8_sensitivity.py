"""Where IMDN-RTC's post-training INT8 loses (issue 26): Set5 x2 PSNR-Y through ONNX Runtime of the FP32 graph,
of the recipe's post-training Q/DQ graphs (rtc_int8: 7-bit weights, MinMax; rtc_int8_w8: 8-bit, Percentile;
calibrated on 64 crops of 96 px), of the same graphs with every activation Q/DQ pair removed (weights alone),
and of rtc_int8_w8 with one activation pair kept at a time (the rest float; first three Set5 images).

    python benchmarks/results/imported_rtc_x2/int8_sensitivity.py runs/imported_rtc_x2
"""
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from edgesr.imaging import modcrop, read_image, to_uint8
from edgesr.metrics import psnr_y

ort.set_default_logger_severity(3)
SET5 = Path("../shared/data/benchmark/Set5")


def set5(scale=2):
    return [(read_image(SET5 / f"LR_bicubic/X{scale}/{p.stem}x{scale}.png"), modcrop(read_image(p), scale))
            for p in sorted((SET5 / "HR").glob("*.png"))]


def psnr(model: onnx.ModelProto, pairs, scale=2) -> float:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    s = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    out = []
    for lr, hr in pairs:
        y = s.run(None, {"lr": (lr.astype(np.float32) / 255).transpose(2, 0, 1)[None]})[0][0].transpose(1, 2, 0)
        out.append(psnr_y(to_uint8(y), hr, scale))
    return float(np.mean(out))


def without_pairs(model: onnx.ModelProto, drop) -> onnx.ModelProto:
    """``model`` with the activation Q/DQ pairs whose input tensor ``drop(name)`` selects removed (float there)."""
    g = model.graph
    prod = {o: n for n in g.node for o in n.output}
    outputs = {o.name for o in g.output}
    cons = {}
    for n in g.node:
        for i in n.input:
            cons.setdefault(i, []).append(n)
    remove = []
    for q in list(g.node):
        dqs = cons.get(q.output[0], []) if q.op_type == "QuantizeLinear" else []
        if not dqs or q.input[0] not in prod or not drop(q.input[0]) or any(d.output[0] in outputs for d in dqs):
            continue
        for d in dqs:
            for c in cons.get(d.output[0], []):
                c.input[:] = [q.input[0] if i == d.output[0] else i for i in c.input]
            remove.append(d)
        remove.append(q)
    for n in remove:
        g.node.remove(n)
    return model


def main(run: str) -> None:
    pairs = set5()
    print(f"FP32: {psnr(onnx.load(Path(run) / 'rtc_onnx/model.onnx'), pairs):.3f}")
    for stage, what in (("rtc_int8", "7-bit weights, minmax"), ("rtc_int8_w8", "8-bit weights, percentile")):
        path = Path(run) / stage / "model.onnx"
        full, weights = psnr(onnx.load(path), pairs), psnr(without_pairs(onnx.load(path), lambda t: True), pairs)
        print(f"{stage} ({what}): INT8 {full:.3f}, weights alone {weights:.3f}")
    three = pairs[:3]
    base = psnr(without_pairs(onnx.load(path), lambda t: True), three)
    tensors = [n.input[0] for n in onnx.load(path).graph.node if n.op_type == "QuantizeLinear"]
    cost = sorted((psnr(without_pairs(onnx.load(path), lambda t, k=k: t != k), three) - base, k) for k in tensors)
    print("one activation quantized alone (rtc_int8_w8; dB against weights alone, 3 images):")
    for d, k in cost[:12]:
        print(f"  {d:+.3f} {k}")
    print(f"  ... sum over all {len(cost)}: {sum(d for d, _ in cost):+.2f}")


if __name__ == "__main__":
    main(sys.argv[1])
