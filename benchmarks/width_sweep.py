"""Which channel widths run fast on this CPU: a stack of 3x3 convolutions (C -> C, ReLU) at a 640x360 input, for
a range of widths C, timed on ONNX Runtime (and OpenVINO where installed) in one interleaved run. Achieved
GMAC/s per width shows the kernels' channel blocking (ONNX Runtime's NCHWc convolutions block channels by 16
with AVX-512 and by 8 with AVX2; other widths fall back to slower kernels), which is what a pruning that must
speed up has to respect (``round_to`` of the prune stage).

    python -m edgesr.benchmarks.width_sweep --out benchmarks/results/widths [--widths 8,12,16,...] [--rounds 20]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from edgesr.files import atomic_write_text

from .latency import machine_info, measure_interleaved

__all__ = ["conv_stack", "sweep"]


def conv_stack(c: int, depth: int = 4, seed: int = 0) -> bytes:
    """An ONNX graph: a 3->C conv, ``depth`` C->C 3x3 convs with ReLU, all padded 'same' (opset 17)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    nodes, inits, prev, cin = [], [], "x", 3
    for i in range(depth + 1):
        w = (rng.standard_normal((c, cin, 3, 3)) * (2 / (9 * cin)) ** 0.5).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(np.zeros(c, np.float32), f"b{i}")]
        nodes.append(helper.make_node("Conv", [prev, f"w{i}", f"b{i}"], [f"c{i}"], pads=[1, 1, 1, 1]))
        nodes.append(helper.make_node("Relu", [f"c{i}"], [f"r{i}"]))
        prev, cin = f"r{i}", c
    g = helper.make_graph(nodes, f"stack{c}", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, "h", "w"])],
                          [helper.make_tensor_value_info(prev, TensorProto.FLOAT, [1, c, "h", "w"])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=9).SerializeToString()


def _runners(model: bytes, backends: list[str], threads: int) -> dict:
    out = {}
    if "onnxruntime" in backends:
        from edgesr.runtime.onnxruntime_backend import ort_session

        sess = ort_session(model, threads=threads, spin=False)
        out["onnxruntime"] = type("R", (), {"run": lambda self, x: sess.run(None, {"x": x})[0]})()
    if "openvino" in backends:
        try:
            import openvino as ov
        except ImportError:
            return out
        core = ov.Core()
        compiled = core.compile_model(core.read_model(model), "CPU", {"INFERENCE_NUM_THREADS": threads or 0,
                                                                      "INFERENCE_PRECISION_HINT": "f32"})
        out["openvino"] = type("R", (), {"run": lambda self, x: compiled(x)[0]})()
    return out


def sweep(widths: list[int], input_hw: tuple[int, int] = (360, 640), depth: int = 4, rounds: int = 20,
          threads: int = 0, backends: tuple[str, ...] = ("onnxruntime", "openvino")) -> dict:
    """Time every (width, backend) pair interleaved; rows with median ms, GMAC/s and ms per GMAC."""
    runners = {}
    for c in widths:
        for b, r in _runners(conv_stack(c, depth), list(backends), threads).items():
            runners[(c, b)] = r
    keyed = {f"{c}@{b}": r for (c, b), r in runners.items()}
    res = measure_interleaved(keyed, input_hw, rounds=rounds, max_seconds=30 * len(keyed), min_rounds=5)
    h, w = input_hw
    rows = []
    for (c, b) in runners:
        lat = res["latency"][f"{c}@{b}"]
        macs = h * w * 9 * (3 * c + depth * c * c)
        rows.append({"width": c, "backend": b, "p50_ms": lat["p50_ms"], "min_ms": lat["min_ms"], "spread": lat["spread"],
                     "gmacs": round(macs / 1e9, 3), "gmac_per_s": round(macs / 1e9 / (lat["p50_ms"] / 1e3), 1)})
    return {"input": list(input_hw), "depth": depth, "rounds": res["rounds"], "machine": machine_info(), "rows": rows}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--widths", default="8,12,16,20,24,28,32,40,48,64")
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--threads", type=int, default=0)
    args = p.parse_args(argv)
    res = sweep([int(v) for v in args.widths.split(",")], rounds=args.rounds, threads=args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "results.json", json.dumps(res, indent=2) + "\n")
    lines = [f"# Channel widths on {res['machine']['cpu']} ({', '.join(res['machine']['isa'])})", "",
             f"{res['depth']} 3x3 conv+ReLU layers C->C after a 3->C conv, LR {res['input'][0]}x{res['input'][1]}, "
             f"{res['rounds']} interleaved rounds.", "",
             "| width | backend | median ms | min ms | GMAC | GMAC/s |", "|---|---|---|---|---|---|"]
    for r in sorted(res["rows"], key=lambda r: (r["backend"], r["width"])):
        lines.append(f"| {r['width']} | {r['backend']} | {r['p50_ms']:.2f} | {r['min_ms']:.2f} | {r['gmacs']:.2f} | "
                     f"{r['gmac_per_s']:.1f} |")
    atomic_write_text(out / "report.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
