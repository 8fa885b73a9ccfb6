"""Probe: does feeding the INT8 head conv 4 input channels (RGB + a zero plane) buy frame time on ONNX Runtime?

ONNX Runtime's INT8 convolution (NHWC) runs a 3-input-channel 3x3 conv far slower per MAC than a 4-channel one. This
rewrites the shipped msrep-s-x2-int8 in memory (exactly: zero weights for the extra channel) three ways and times
them against the original, interleaved, 2 threads, 640x360 -> x2:
  pad4        bare graph (float NCHW in), Pad on the float input before its QuantizeLinear;
  pad4_u8     the 8-bit frame form (runtime.uint8_io) of pad4: Pad after the byte -> float conversion;
  pad4b_u8    the 8-bit frame form with the Pad on the bytes (NHWC, last axis) before the layout Transpose.
Outputs are checked identical to the original's. Run from the repository root:
  PYTHONPATH=. python benchmarks/results/deep_cpu_x2/head_channels_probe.py > head_channels_probe.txt"""
import json
import os
import time

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper as h
from onnx import numpy_helper as nh

from edgesr.hostinfo import INT8_DOT_FLAGS, cpu_model_and_flags
from runtime.uint8_io import uint8_io

SRC = "edgesr/pretrained/msrep-s-x2-int8/model.onnx"
ROUNDS = 40


def padded() -> onnx.ModelProto:
    p = onnx.load(SRC)
    for n in p.graph.node:
        if n.op_type == "QuantizeLinear" and n.input[0] == "lr":
            n.input[0] = "lr4"
    p.graph.initializer.append(nh.from_array(np.array([0, 0, 0, 0, 0, 1, 0, 0], np.int64), "pad4"))
    p.graph.node.insert(0, h.make_node("Pad", ["lr", "pad4"], ["lr4"], mode="constant"))
    for i in p.graph.initializer:  # the two convs that read the input: the head and the anchor
        if i.name in ("head.conv.weight_quantized", "node_pixel_shuffle_anchor_weight_quantized"):
            a = nh.to_array(i)
            i.CopyFrom(nh.from_array(np.concatenate([a, np.zeros_like(a[:, :1])], axis=1), i.name))
    return p


def padded_bytes(p: onnx.ModelProto) -> onnx.ModelProto:
    q = uint8_io(p)
    pad = next(n for n in q.graph.node if n.op_type == "Pad")
    q.graph.node.remove(pad)
    for n in q.graph.node:
        if n.op_type == "QuantizeLinear" and n.input[0] == "lr4":
            n.input[0] = "lr"
        if n.op_type == "Transpose" and n.input[0] == "frames":
            n.input[0] = "frames4"
    keep = [i for i in q.graph.initializer if i.name != "pad4"]
    del q.graph.initializer[:]
    q.graph.initializer.extend(keep + [nh.from_array(np.array([0, 0, 0, 0, 0, 0, 0, 1], np.int64), "pad4h")])
    q.graph.node.insert(0, h.make_node("Pad", ["frames", "pad4h"], ["frames4"], mode="constant"))
    return q


def session(proto, profile=False):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    so.enable_profiling = profile
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")  # several sessions share 2 cores
    return ort.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"])


def head_ms(proto, feed) -> float:
    s = session(proto, profile=True)
    for _ in range(20):
        s.run(None, feed)
    path = s.end_profiling()
    ev = json.load(open(path))
    os.remove(path)
    return float(np.median([e["dur"] for e in ev if e.get("cat") == "Node" and e["name"].startswith("node_conv2d_token")
                            and e["name"].endswith("_kernel_time")]) / 1e3)


orig, p4 = onnx.load(SRC), padded()
protos = {"orig": orig, "pad4": p4, "orig_u8": uint8_io(orig), "pad4_u8": uint8_io(p4), "pad4b_u8": padded_bytes(p4)}
rng = np.random.default_rng(0)
frames = rng.integers(0, 256, (1, 360, 640, 3), dtype=np.uint8)
lr = frames.transpose(0, 3, 1, 2).astype(np.float32) / 255
feeds = {k: ({"frames": frames} if k.endswith("_u8") else {"lr": lr}) for k in protos}
sess = {k: session(v) for k, v in protos.items()}
ref = {False: sess["orig"].run(None, feeds["orig"])[0], True: sess["orig_u8"].run(None, feeds["orig_u8"])[0]}
for k, s in sess.items():
    assert np.array_equal(s.run(None, feeds[k])[0], ref[k.endswith("_u8")]), k
times = {k: [] for k in sess}
for r in range(ROUNDS):
    for k, s in sess.items():
        t0 = time.perf_counter()
        s.run(None, feeds[k])
        times[k].append(time.perf_counter() - t0)
cpu, flags = cpu_model_and_flags()
print(f"CPU: {cpu}; INT8 dot product: {sorted(flags & INT8_DOT_FLAGS) or 'none'}; onnxruntime {ort.__version__}; {ROUNDS} interleaved rounds, first 5 dropped")
for k in sess:
    print(f"{k:9s} p50 {np.median(times[k][5:]) * 1e3:6.2f} ms")
for a, b in (("orig", "pad4"), ("orig_u8", "pad4_u8"), ("orig_u8", "pad4b_u8")):
    print(f"speed-up {b} over {a}: {np.median(times[a][5:]) / np.median(times[b][5:]):.3f}x")
print("head conv alone (profiled, ms): " + ", ".join(f"{k} {head_ms(protos[k], feeds[k]):.2f}" for k in protos))
