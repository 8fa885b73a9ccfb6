"""Frame in, frame out against the bare graph: per (artifact, backend), one interleaved run times

* ``bare``: the graph alone, a float32 N x 3 x H x W tensor in and out (what the latency columns time);
* ``frames``: ``Upscaler.upscale`` of an 8-bit H x W x 3 frame to the 8-bit SR frame, the default path
  (the 8-bit form, conversions inside the runtime: :mod:`edgesr.runtime.uint8_io`);
* ``frames_numpy``: the same call with ``io="float"``, the conversions in NumPy around the float graph (the
  path before the 8-bit form);

and reports medians, the ratios to ``bare`` with 95 % bootstrap intervals, and the machine's ISA.

    python -m edgesr.benchmarks.uint8_io_bench msrep-s-x2-int8 msrep-s-x2-int8-ov --backends onnxruntime openvino \
        --size 360x640 --rounds 80 --threads 2 --out benchmarks/results/uint8_io_x2
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from edgesr.files import atomic_write_text

from .devices import device_info
from .latency import FrameInFrameOut, measure_interleaved, speedup

__all__ = ["main"]


def main(argv=None) -> int:
    from edgesr.runtime import open_backend

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("artifacts", nargs="+", help="artifact directories or pretrained names (ONNX)")
    ap.add_argument("--backends", nargs="+", default=["onnxruntime", "openvino"])
    ap.add_argument("--size", default="360x640", help="LR input HxW")
    ap.add_argument("--rounds", type=int, default=80)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--out", required=True, help="directory for results.json and README.md")
    args = ap.parse_args(argv)
    h, w = (int(v) for v in args.size.split("x"))
    timed, opened = {}, []
    for art in args.artifacts:
        for b in args.backends:
            backend = open_backend(art, b, threads=args.threads, spin=False) if b == "onnxruntime" else \
                open_backend(art, b, threads=args.threads)
            opened.append(backend)
            key = f"{Path(str(art)).name}@{b}"
            timed[f"{key} bare"] = backend
            timed[f"{key} frames"] = FrameInFrameOut(backend, (h, w))
            timed[f"{key} frames_numpy"] = FrameInFrameOut(backend, (h, w), io="float")
    res = measure_interleaved(timed, (h, w), warmup=5, rounds=args.rounds, max_seconds=600, min_rounds=args.rounds)
    rows = []
    for key in dict.fromkeys(k.rsplit(" ", 1)[0] for k in timed):
        t = {m: res["times_ms"][f"{key} {m}"] for m in ("bare", "frames", "frames_numpy")}
        row = {"pair": key, **{f"{m}_p50_ms": res["latency"][f"{key} {m}"]["p50_ms"] for m in t},
               "frames_over_bare": speedup(t["frames"], t["bare"]),
               "frames_numpy_over_bare": speedup(t["frames_numpy"], t["bare"]),
               "frames_numpy_over_frames": speedup(t["frames_numpy"], t["frames"])}
        rows.append(row)
    machine = device_info()
    command = "python -m edgesr.benchmarks.uint8_io_bench " + " ".join(argv if argv is not None else sys.argv[1:])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "results.json", json.dumps(
        {"command": command, "input_hw": [h, w], "rounds": res["rounds"], "machine": machine,
         "backends": [b.describe() for b in opened], "rows": rows, "times_ms": res["times_ms"]}, indent=1) + "\n")
    lines = [f"# Frame in, frame out vs the bare graph ({w}x{h} -> x{opened[0].scale})", "",
             f"Command: `{command}`", "",
             f"Machine: {machine.get('cpu') or '?'}, {machine.get('logical_cores', '?')} logical cores, ISA "
             f"{', '.join(machine.get('isa') or []) or '?'}; {args.threads or 'all'} threads; one interleaved run of "
             f"{res['rounds']} rounds, every row's three timings in each round in a shuffled order; medians.", "",
             "*bare*: the graph, float32 N x 3 x H x W in and out. *frame in/out*: `Upscaler.upscale`, uint8 H x W x 3 "
             "in and out, conversions inside the runtime (the default). *NumPy*: the same call with `io='float'`, the "
             "conversions in NumPy around the float graph (before the 8-bit form). Ratios: median over the bare "
             "graph's median, 95 % bootstrap interval over rounds.", "",
             "| artifact @ backend | bare ms | frame in/out ms | x bare | NumPy ms | x bare | NumPy / frame in/out |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        f, n, nf = r["frames_over_bare"], r["frames_numpy_over_bare"], r["frames_numpy_over_frames"]
        lines.append(f"| {r['pair']} | {r['bare_p50_ms']:.1f} | {r['frames_p50_ms']:.1f} | {f['ratio']:.2f}x "
                     f"[{f['ci95'][0]:.2f}-{f['ci95'][1]:.2f}] | {r['frames_numpy_p50_ms']:.1f} | {n['ratio']:.2f}x | "
                     f"{nf['ratio']:.2f}x [{nf['ci95'][0]:.2f}-{nf['ci95'][1]:.2f}] |")
    print("\n".join(lines))
    atomic_write_text(out / "README.md", "\n".join(lines) + "\n")
    for b in opened:
        b.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
