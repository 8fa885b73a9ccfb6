"""Where an ONNX graph's time goes on ONNX Runtime (CPU): its per-node profiler over timed runs, summed by
operator and by node, with the layout reorders ONNX Runtime inserts for its blocked (NCHWc) convolution
kernels counted as their own operators. Achieved throughput is 2 x MACs per run over the median latency.

    edgesr profile ARTIFACT [--input 360x640] [--runs 20] [--threads N] [--out DIR]
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from edgesr.artifacts import Artifact
from edgesr.runtime.onnxruntime_backend import ort_session

__all__ = ["profile_onnx", "summarise_trace", "onnx_macs"]


def onnx_macs(path: str | Path, input_hw: tuple[int, int]) -> int:
    """Multiply-accumulates of the convolutions (Conv, QLinearConv, ConvInteger, ConvTranspose) of an ONNX
    graph for one 1 x 3 x H x W input, from its weights and the inferred output shapes."""
    import onnx
    from onnx import numpy_helper, shape_inference

    proto = onnx.load(str(path))
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    for d, v in zip(dims, (1, 3, *input_hw)):
        d.ClearField("dim_param")
        d.dim_value = v
    proto = shape_inference.infer_shapes(proto, data_prop=True)
    shapes = {vi.name: [d.dim_value for d in vi.type.tensor_type.shape.dim]
              for vi in (*proto.graph.value_info, *proto.graph.output)}
    weights = {i.name: list(i.dims) for i in proto.graph.initializer}
    # weights behind a DequantizeLinear (Q/DQ graphs) take the shape of the quantized initializer
    for n in proto.graph.node:
        if n.op_type == "DequantizeLinear" and n.input[0] in weights:
            weights[n.output[0]] = weights[n.input[0]]
    total = 0
    for n in proto.graph.node:
        w_in = {"Conv": 1, "ConvTranspose": 1, "ConvInteger": 1, "QLinearConv": 3}.get(n.op_type)
        if w_in is None or n.input[w_in] not in weights:
            continue
        w = weights[n.input[w_in]]
        if n.op_type == "ConvTranspose":  # weight: Cin x Cout/g x kh x kw; every input pixel meets the kernel
            src = shapes.get(n.input[0])
            if src and all(src):
                total += int(np.prod(src)) * int(np.prod(w[1:]))
            continue
        out = shapes.get(n.output[0])
        if out and all(out):
            total += int(np.prod(out)) * int(np.prod(w[1:]))
    return total


def summarise_trace(events: list[dict], runs: int) -> dict:
    """Per-operator and per-node totals from an ONNX Runtime profiler trace covering ``runs`` timed runs
    (node events: ``cat == "Node"``, names ending in ``_kernel_time``)."""
    by_op: dict[str, float] = defaultdict(float)
    by_node: dict[str, dict] = {}
    for e in events:
        if e.get("cat") != "Node" or not str(e.get("name", "")).endswith("_kernel_time"):
            continue
        op = e.get("args", {}).get("op_name", "?")
        node = e["name"][: -len("_kernel_time")]
        us = float(e.get("dur", 0))
        by_op[op] += us
        entry = by_node.setdefault(node, {"node": node, "op": op, "us": 0.0, "calls": 0,
                                          "output": e.get("args", {}).get("output_type_shape")})
        entry["us"] += us
        entry["calls"] += 1
    total = sum(by_op.values()) or 1.0
    ops = sorted(({"op": k, "ms_per_run": v / runs / 1000, "share": v / total} for k, v in by_op.items()),
                 key=lambda r: -r["ms_per_run"])
    nodes = sorted(({**n, "ms_per_run": n.pop("us") / runs / 1000} for n in by_node.values()),
                   key=lambda r: -r["ms_per_run"])
    for n in nodes:
        n["share"] = n["ms_per_run"] * runs * 1000 / total
    return {"kernel_ms_per_run": total / runs / 1000, "ops": ops, "nodes": nodes}


def profile_onnx(art: Artifact, *, input_hw: tuple[int, int] = (360, 640), runs: int = 20, warmup: int = 3,
                 threads: int = 0, macs: int | None = None, fast_shuffle: bool = True) -> dict:
    """Profile ``art`` (an ONNX artifact) at ``input_hw`` as the onnxruntime backend runs it (``fast_shuffle``:
    pixel shuffles as ConvTranspose): per-operator and per-node kernel time per run, the median wall time of
    the same runs, and achieved GOP/s when ``macs`` (per run) is given."""
    x = np.random.default_rng(0).random((1, 3, *input_hw), dtype=np.float32)
    source: str | bytes = str(art.payload)
    if fast_shuffle:
        import onnx

        from edgesr.onnxutil import shuffle_as_conv_transpose

        proto = onnx.load(str(art.payload))
        if shuffle_as_conv_transpose(proto):
            source = proto.SerializeToString()
    with tempfile.TemporaryDirectory() as tmp:
        sess = ort_session(source, threads=threads, profile_prefix=str(Path(tmp) / "ort"))
        for _ in range(warmup):
            sess.run(None, {"lr": x})
        walls = []
        for _ in range(runs):
            t = time.perf_counter()
            sess.run(None, {"lr": x})
            walls.append((time.perf_counter() - t) * 1000)
        trace = Path(sess.end_profiling())
        events = json.loads(trace.read_text())
    # the profiler records the warm-up runs too: keep the nodes inside the last ``runs`` model_run events
    model_runs = sorted(float(e["ts"]) for e in events if e.get("name") == "model_run")
    cutoff = model_runs[-runs] if len(model_runs) >= runs else 0.0
    timed = [e for e in events if float(e.get("ts", 0)) >= cutoff]
    summary = summarise_trace(timed, runs)
    median = statistics.median(walls)
    summary.update({"input_hw": list(input_hw), "runs": runs, "threads": threads, "median_ms": median,
                    "fast_shuffle": fast_shuffle,
                    "min_ms": min(walls), "artifact": str(art.path), "precision": art.manifest.get("precision")})
    if macs:
        summary["macs"] = macs
        summary["gops"] = 2 * macs / (median / 1000) / 1e9
    return summary
