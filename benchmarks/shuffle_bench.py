"""Pixel shuffle as DepthToSpace (as exported) against the bit-exact ConvTranspose that the onnxruntime
backend runs instead (:func:`edgesr.onnxutil.shuffle_as_conv_transpose`), for ONNX artifacts on ONNX
Runtime and OpenVINO: all (artifact, form, runtime) triples timed in one interleaved run; speed-ups are
ratios of medians of the same rounds with a 95 % bootstrap interval.

    python -m edgesr.benchmarks.shuffle_bench msrep-s-x2-fp32 msrep-s-x2-int8 ... --out benchmarks/results/shuffle
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

from edgesr.artifacts import MANIFEST, content_hash, read_artifact
from edgesr.runtime import BACKENDS, open_backend

from .devices import device_info, device_label
from .latency import measure_interleaved, speedup


def _rewritten(art, root: Path):
    """A copy of ``art`` whose graph runs its pixel shuffles as ConvTranspose."""
    import onnx

    from edgesr.onnxutil import shuffle_as_conv_transpose

    dst = root / f"{art.path.name}-ct"
    shutil.copytree(art.path, dst)
    proto = onnx.load(str(art.payload))
    n = shuffle_as_conv_transpose(proto)
    onnx.save(proto, str(dst / art.payload.name))
    m = json.loads((dst / MANIFEST).read_text())
    m["hash"] = content_hash(dst / art.payload.name)
    (dst / MANIFEST).write_text(json.dumps(m))
    return read_artifact(dst), n


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m edgesr.benchmarks.shuffle_bench")
    p.add_argument("artifacts", nargs="+")
    p.add_argument("--input", default="360x640")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=40)
    p.add_argument("--backends", default="onnxruntime,openvino")
    p.add_argument("--out")
    args = p.parse_args(argv)
    h, w = (int(v) for v in args.input.split("x"))
    backends = [b for b in args.backends.split(",") if BACKENDS.get(b).available()[0]]
    opened, keys = {}, []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.artifacts:
            art = read_artifact(name)
            ct, n = _rewritten(art, Path(tmp))
            if n == 0:
                print(f"{name}: no DepthToSpace, skipped", file=sys.stderr)
                continue
            for b in backends:
                extra = {"fast_shuffle": False, "spin": False} if b == "onnxruntime" else {}
                opened[(name, "DepthToSpace", b)] = open_backend(art, b, threads=args.threads, **extra)
                opened[(name, "ConvTranspose", b)] = open_backend(ct, b, threads=args.threads, **extra)
        x = np.random.default_rng(0).random((1, 3, h, w), dtype=np.float32)
        for (name, form, b), be in opened.items():
            if form == "ConvTranspose":
                ref = opened[(name, "DepthToSpace", b)].run(x)
                diff = float(np.abs(be.run(x) - ref).max())
                print(f"{name} {b}: ConvTranspose vs DepthToSpace max |diff| {diff:.2e}")
        timing = measure_interleaved({"|".join(k): v for k, v in opened.items()}, (h, w), rounds=args.rounds,
                                     max_seconds=3600)
        for be in opened.values():
            be.close()
    rows = []
    for name in dict.fromkeys(k[0] for k in opened):
        for b in backends:
            d2s, ct = (timing["times_ms"][f"{name}|{f}|{b}"] for f in ("DepthToSpace", "ConvTranspose"))
            sp = speedup(d2s, ct)
            rows.append({"artifact": name, "backend": b, "depth_to_space_p50_ms": float(np.median(d2s)),
                         "conv_transpose_p50_ms": float(np.median(ct)), "speedup": sp})
    machine = device_info()
    lines = [f"# Pixel shuffle: DepthToSpace vs ConvTranspose ({h}x{w} -> x, {args.threads} threads, "
             f"{timing['rounds']} interleaved rounds)", "", f"Machine: {device_label(machine)}; ISA: "
             f"{', '.join(machine.get('isa') or [])}", "",
             "| artifact | runtime | DepthToSpace p50 (ms) | ConvTranspose p50 (ms) | speed-up [95 % CI] |",
             "|---|---|---|---|---|"]
    for r in rows:
        s = r["speedup"]
        lines.append(f"| {r['artifact']} | {r['backend']} | {r['depth_to_space_p50_ms']:.2f} | "
                     f"{r['conv_transpose_p50_ms']:.2f} | {s['ratio']:.3f}x [{s['ci95'][0]:.3f}, {s['ci95'][1]:.3f}] |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "shuffle.md").write_text(text)
        (out / "shuffle.json").write_text(json.dumps({"rows": rows, "machine": machine, "rounds": timing["rounds"],
                                                      "command": " ".join(["python -m edgesr.benchmarks.shuffle_bench",
                                                                           *(argv or sys.argv[1:])])}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
