"""What OpenVINO's compiled-model cache saves: time to open an ONNX artifact on the openvino backend
without a cache, with an empty cache (compile + write), and with a warm cache (read), interleaved repeats.

    python -m edgesr.benchmarks.ov_cache ARTIFACT [ARTIFACT...] --out benchmarks/results/openvino/cache.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from edgesr.artifacts import read_artifact
from edgesr.files import atomic_write_text
from edgesr.runtime import open_backend

from .latency import machine_info


def first_result_seconds(art, **options) -> float:
    """Seconds from opening the backend to the first upscaled 64x64 tile (what a user waits for)."""
    x = np.random.default_rng(0).random((1, 3, 64, 64), dtype=np.float32)
    t0 = time.perf_counter()
    with open_backend(art, "openvino", threads=0, **options) as b:
        b.run(x)
    return time.perf_counter() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("artifacts", nargs="+")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    rows = []
    for path in args.artifacts:
        art = read_artifact(path)
        times = {"no_cache": [], "cold_cache": [], "warm_cache": []}
        for _ in range(args.repeats):
            with tempfile.TemporaryDirectory() as tmp:
                times["no_cache"].append(first_result_seconds(art))
                times["cold_cache"].append(first_result_seconds(art, cache_dir=tmp))
                times["warm_cache"].append(first_result_seconds(art, cache_dir=tmp))
                shutil.rmtree(tmp, ignore_errors=True)
        med = {k: round(float(np.median(v)), 4) for k, v in times.items()}
        rows.append({"artifact": path, "precision": art.manifest["precision"], "median_s": med,
                     "warm_speedup": round(med["no_cache"] / med["warm_cache"], 2), "times_s": times})
        print(f"{path}: no cache {med['no_cache']:.3f} s, empty cache {med['cold_cache']:.3f} s, "
              f"warm cache {med['warm_cache']:.3f} s ({rows[-1]['warm_speedup']}x)")
    result = {"command": "python -m edgesr.benchmarks.ov_cache " + " ".join(args.artifacts) + f" --out {args.out}",
              "machine": machine_info(), "repeats": args.repeats, "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(args.out), json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
