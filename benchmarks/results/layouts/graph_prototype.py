"""Prototype (not in edgesr): the layout inside the 8-bit form, a Gather on the NCHW bytes after the input Transpose
and a Gather (+ a Pad of 255 for 4-byte pixels) before the output one, checked equal to the RGB form and timed beside
the NumPy reordering on ONNX Runtime, one interleaved run of 40 rounds. PYTHONPATH=. python graph_prototype.py"""
import time, random, numpy as np, onnx, onnxruntime as ort
from onnx import helper, numpy_helper, TensorProto
from edgesr.runtime.uint8_io import uint8_io
from edgesr.artifacts import read_artifact
from edgesr.data.datasets import load_pairs

art = read_artifact("msrep-s-x2-int8")
base = uint8_io(onnx.load(str(art.payload)))

def with_layout(proto, order, pad):
    m = onnx.ModelProto(); m.CopyFrom(proto); g = m.graph
    g.initializer.append(numpy_helper.from_array(np.array(order, np.int64), "lay_idx"))
    nodes = list(g.node)
    # input: rename the transpose output, gather channels
    for n in nodes:
        if n.name == "u8io_in_layout":
            n.output[0] = "lay_nchw_all"
    gin = helper.make_node("Gather", ["lay_nchw_all", "lay_idx"], ["u8io_nchw"], axis=1, name="lay_in")
    # output: before the final transpose
    out_nodes = []
    for n in nodes:
        if n.name == "u8io_0_layout":
            src = n.input[0]
            inv = np.argsort(order) if False else None
            # output channel c (in layout, excluding pad) must hold rgb[order^-1]: res[..., order[k]] = sr[..., k]
            outord = [0] * 3
            for k, o in enumerate(order): outord[o if pad is None or o < pad else o - 1] = k
            g.initializer.append(numpy_helper.from_array(np.array(outord, np.int64), "lay_oidx"))
            out_nodes.append(helper.make_node("Gather", [src, "lay_oidx"], ["lay_o3"], axis=1, name="lay_out"))
            cur = "lay_o3"
            if pad is not None:
                pads = [0, 1 if pad == 0 else 0, 0, 0, 0, 1 if pad == 3 else 0, 0, 0]
                g.initializer.append(numpy_helper.from_array(np.array(pads, np.int64), "lay_pads"))
                g.initializer.append(numpy_helper.from_array(np.array(255, np.uint8), "lay_255"))
                out_nodes.append(helper.make_node("Pad", [cur, "lay_pads", "lay_255"], ["lay_o4"], mode="constant", name="lay_pad"))
                cur = "lay_o4"
            n.input[0] = cur
    newnodes = []
    for n in nodes:
        if n.name == "u8io_0_layout":
            newnodes += out_nodes
        newnodes.append(n)
        if n.name == "u8io_in_layout":
            newnodes.append(gin)
    del g.node[:]; g.node.extend(newnodes)
    c = 3 if pad is None else 4
    g.input[0].type.tensor_type.shape.dim[3].dim_value = c
    g.output[0].type.tensor_type.shape.dim[3].dim_value = c
    onnx.checker.check_model(m)
    return m

def sess(m):
    o = ort.SessionOptions(); o.intra_op_num_threads = 2; o.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(m.SerializeToString(), o, providers=["CPUExecutionProvider"])

rgb = np.ascontiguousarray(np.resize(load_pairs("builtin", 2, split="valid")[0].lr, (360, 640, 3)))[None]
bgrx = np.full((1, 360, 640, 4), 255, np.uint8); bgrx[..., [2, 1, 0]] = rgb
bgr = np.ascontiguousarray(rgb[..., ::-1])
s_rgb = sess(base); s_bgr = sess(with_layout(base, [2, 1, 0], None)); s_bgrx = sess(with_layout(base, [2, 1, 0], 3))
ref = s_rgb.run(None, {"frames": rgb})[0]
o_bgr = s_bgr.run(None, {"frames": bgr})[0]; o_bgrx = s_bgrx.run(None, {"frames": bgrx})[0]
assert np.array_equal(o_bgr[..., ::-1], ref) and np.array_equal(o_bgrx[..., [2, 1, 0]], ref) and (o_bgrx[..., 3] == 255).all()
def numpy_bgrx():
    x = bgrx[..., [2, 1, 0]]
    sr = s_rgb.run(None, {"frames": x})[0]
    r = np.empty(sr.shape[:3] + (4,), np.uint8); r[..., [2, 1, 0]] = sr; r[..., 3] = 255; return r
def numpy_bgr():
    sr = s_rgb.run(None, {"frames": bgr[..., [2, 1, 0]]})[0]
    r = np.empty_like(sr); r[..., [2, 1, 0]] = sr; return r
cases = {"rgb": lambda: s_rgb.run(None, {"frames": rgb}), "bgr graph": lambda: s_bgr.run(None, {"frames": bgr}),
         "bgr numpy": numpy_bgr, "bgrx graph": lambda: s_bgrx.run(None, {"frames": bgrx}), "bgrx numpy": numpy_bgrx}
for f in cases.values():
    for _ in range(3): f()
t = {k: [] for k in cases}
for _ in range(40):
    ks = list(cases); random.shuffle(ks)
    for k in ks:
        t0 = time.perf_counter(); cases[k](); t[k].append((time.perf_counter() - t0) * 1e3)
from edgesr.benchmarks.latency import speedup
for k, v in t.items():
    r = speedup(t["rgb"], v)
    print(f"{k:12s} {np.median(v):6.1f} ms  x rgb {1/r['ratio']:.3f} [{1/r['ci95'][1]:.3f}, {1/r['ci95'][0]:.3f}]")
