"""What verifying an artifact's payload on every load costs: ``read_artifact`` with and without the content
hash check, on the largest architecture in the zoo (EDSR full x4, 43M parameters), beside the time of the
load it guards (rebuilding the model and reading its weights). Interleaved repeats, medians.

    python -m edgesr.benchmarks.verify_cost [--out benchmarks/results/trust/verify_cost.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from edgesr.artifacts import read_artifact
from edgesr.modelio import load_model, save_model
from edgesr.models import build_model

from .latency import machine_info

SPEC = {"type": "edsr", "scale": 4, "n_resblocks": 32, "n_feats": 256, "res_scale": 0.1}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        art = save_model(Path(tmp) / "edsr", build_model(SPEC), name="edsr", arch=SPEC)
        size = art.payload.stat().st_size
        times = {"read_verified_s": [], "read_unverified_s": [], "load_model_s": []}
        for _ in range(args.repeats):
            t = time.perf_counter(); read_artifact(art.path); times["read_verified_s"].append(time.perf_counter() - t)
            t = time.perf_counter(); a = read_artifact(art.path, verify=False)
            times["read_unverified_s"].append(time.perf_counter() - t)
            t = time.perf_counter(); load_model(a); times["load_model_s"].append(time.perf_counter() - t)
    med = {k: round(statistics.median(v), 4) for k, v in times.items()}
    hash_s = med["read_verified_s"] - med["read_unverified_s"]
    result = {"artifact": SPEC, "payload_bytes": size, "repeats": args.repeats, **med,
              "hash_s": round(hash_s, 4), "hash_gb_per_s": round(size / hash_s / 1e9, 2),
              "hash_over_load": round(hash_s / med["load_model_s"], 3), "machine": machine_info()}
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"command": "python -m edgesr.benchmarks.verify_cost --out " + str(args.out),
                                        **result}, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
