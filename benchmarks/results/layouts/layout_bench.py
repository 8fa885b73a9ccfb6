"""Frame in / frame out of one artifact with the Upscaler's pixel layouts, one interleaved run.

    python benchmarks/results/layouts/layout_bench.py msrep-s-x2-int8 --rounds 30 --threads 2 > OUT.md

Each round times ``upscale`` of one 640x360 frame once per (backend, layout) pair, in a shuffled order; the
table gives medians and each layout's frame time over ``rgb``'s (median ratio, 95 % bootstrap interval over rounds).
"""

import argparse
import platform
import random
import time

import numpy as np

from edgesr.benchmarks.latency import speedup
from edgesr.data.datasets import load_pairs
from edgesr.hostinfo import cpu_model_and_flags
from edgesr.runtime import Upscaler


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("artifact")
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--backends", nargs="+", default=["onnxruntime", "openvino"])
    ap.add_argument("--layouts", nargs="+", default=["rgb", "bgr", "bgrx"])
    a = ap.parse_args()
    lr = load_pairs("builtin", 2, split="valid")[0].lr
    rgb = np.ascontiguousarray(np.resize(lr, (360, 640, 3)))  # a 640x360 frame of real pixels
    frames, ups = {}, {}
    for lay in a.layouts:
        f = np.full((360, 640, len(lay)), 255, np.uint8)
        f[..., [lay.index(c) for c in "rgb"]] = rgb
        frames[lay] = f
        for b in a.backends:
            ups[(b, lay)] = Upscaler.open(a.artifact, b, threads=a.threads, layout=lay)
    for (b, lay), up in ups.items():  # warm-up
        for _ in range(3):
            up.upscale(frames[lay])
    times = {k: [] for k in ups}
    rng = random.Random(0)
    for _ in range(a.rounds):
        keys = list(ups)
        rng.shuffle(keys)
        for k in keys:
            t0 = time.perf_counter()
            ups[k].upscale(frames[k[1]])
            times[k].append((time.perf_counter() - t0) * 1e3)
    print(f"# Frame in / frame out by pixel layout: {a.artifact}, 640x360 -> x2\n")
    model, flags = cpu_model_and_flags()
    isa = ", ".join(f for f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16") if f in flags)
    print(f"Machine: {model} ({isa}); Python {platform.python_version()}; {a.threads} threads; one interleaved run of "
          f"{a.rounds} rounds.\n")
    print("| backend | layout | median ms | x rgb's time [95 % CI] |\n|---|---|---|---|")
    for (b, lay), t in times.items():
        r = speedup(times[(b, "rgb")], t)  # rgb's median over this layout's: < 1 where the layout costs time
        ratio = f"{1 / r['ratio']:.3f}x [{1 / r['ci95'][1]:.3f}, {1 / r['ci95'][0]:.3f}]" if lay != "rgb" else "-"
        print(f"| {b} | {lay} | {np.median(t):.1f} | {ratio} |")


if __name__ == "__main__":
    main()
