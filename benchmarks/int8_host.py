"""Does an INT8 file compute the same on this CPU as it is written? 8-bit against 7-bit weights, per runtime.

x86 CPUs without VNNI/AMX add pairs of uint8 x int8 products in a saturating int16 (``vpmaddubsw``); with 8-bit
weights a pair can reach 2 x 255 x 127 = 64,770 and is clipped at 32,767. For each model of a run directory
(``NAME=FP32,INT8,INT8...``: the stage names of an FP32 graph and of INT8 graphs made from it; the recipe
``benchmarks/recipes/int8_host_x2.yaml`` quantizes the shipped students with 8-bit and with 7-bit weights),
each INT8 file is scored on the evaluation sets through the protocol

* as written: the Q/DQ graph computed node by node in PyTorch (:class:`edgesr.qdq_graph.QdqGraph`), which is
  what a VNNI CPU (and ONNX Runtime with its fusions off) computes;
* ONNX Runtime with the fast uint8 x int8 kernels (``exact_int8=False``), and with the uint8 x uint8 kernels
  (``session.x64quantprecision``, what the backend picks for 8-bit files on such CPUs);
* OpenVINO (CPU plugin, its default precision);

and every (file, runtime) pair is timed in one interleaved run (640x360 LR, shuffled order per round), FP32
beside them. The CPU model and ISA are recorded: the overflow exists only where ``u8s8_saturates`` says so.

    edgesr run benchmarks/recipes/int8_host_x2.yaml --out runs/int8_host_x2
    python -m edgesr.benchmarks.int8_host --run runs/int8_host_x2 --out benchmarks/results/int8_host --threads 1 \
        --set ../shared/data/benchmark/Set5 --set ../shared/data/benchmark/Set14 \
        msrep-s=msrep_s,msrep_s_w8,msrep_s_w7 msrep-m=msrep_m,msrep_m_w8,msrep_m_w7 abpn=abpn,abpn_w8,abpn_w7
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from edgesr.files import atomic_write_text

from .latency import machine_info, measure_interleaved, speedup

__all__ = ["main"]


class _Simulated:
    """The graph as written, as a backend-like object for the quality harness."""

    def __init__(self, art):
        import onnx
        import torch

        from edgesr.qdq_graph import QdqGraph

        self.graph = QdqGraph(onnx.load(str(art.payload)), tuple(art.manifest["scales"]))
        self.scale = int(art.manifest["scales"][0])
        self.torch = torch

    def run(self, lr: np.ndarray) -> np.ndarray:
        with self.torch.no_grad():
            return self.graph(self.torch.from_numpy(lr)).numpy()


def main(argv=None) -> int:
    from edgesr.hostinfo import u8s8_saturates

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+", metavar="NAME=FP32,INT8[,INT8...]",
                    help="stage names in the run directory: an FP32 graph, then INT8 graphs quantized from it")
    ap.add_argument("--run", required=True, help="the run directory holding those stages")
    ap.add_argument("--out", required=True)
    ap.add_argument("--set", action="append", required=True)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--input", default="360x640")
    argv = list(sys.argv[1:] if argv is None else argv)
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    hw = tuple(int(v) for v in args.input.split("x"))
    machine = machine_info()
    machine["u8s8_saturates"] = u8s8_saturates()
    results = {"command": "python -m edgesr.benchmarks.int8_host " + " ".join(argv), "machine": machine,
               "threads": args.threads, "input_hw": list(hw), "models": {}}
    for spec in args.models:
        name, entry = _measure_model(spec, args, hw)
        results["models"][name] = entry
        atomic_write_text(out / "results.json", json.dumps(results, indent=2) + "\n")
    _write_readme(results, machine, args, hw, out)
    return 0


def _measure_model(spec: str, args, hw) -> tuple[str, dict]:
    """One NAME=FP32,INT8... group: quality of each file on each runtime (and as written), then their latency in
    one interleaved run."""
    import onnx

    from edgesr.artifacts import read_artifact
    from edgesr.data.datasets import load_pairs, set_name
    from edgesr.metrics import evaluate_pairs
    from edgesr.onnxutil import u8s8_pair_sum_max
    from edgesr.runtime import Upscaler, open_backend
    from edgesr.runtime.base import int8_weight_bits

    name, stages = spec.split("=", 1)
    fp32_stage, *int8_stages = stages.split(",")
    fp32 = read_artifact(Path(args.run) / fp32_stage)
    scale = fp32.scale
    sets = {set_name(s): load_pairs(s, scale, split="eval") for s in args.set}
    files = {"fp32": fp32}
    for st in int8_stages:
        art = read_artifact(Path(args.run) / st)
        files[f"int8_w{int8_weight_bits(art.manifest)}"] = art
    runs = {"fp32/onnxruntime": ("fp32", "onnxruntime", {}), "fp32/openvino": ("fp32", "openvino", {})}
    for k in (k for k in files if k != "fp32"):
        runs[f"{k}/as written"] = (k, "simulated", {})
        runs[f"{k}/onnxruntime fast"] = (k, "onnxruntime", {"exact_int8": False})
        runs[f"{k}/onnxruntime exact"] = (k, "onnxruntime", {"exact_int8": True})
        runs[f"{k}/openvino"] = (k, "openvino", {})
    entry = {"pair_sum_max": {k: u8s8_pair_sum_max(onnx.load(str(files[k].payload))) for k in files if k != "fp32"},
             "quality": {}, "latency": {}}
    backends = {}
    for key, (k, backend, opts) in runs.items():
        if backend == "simulated":
            runner = _Simulated(files[k])
        else:
            extra = {"spin": False} if backend == "onnxruntime" else {}
            runner = open_backend(files[k], backend, threads=args.threads, **opts, **extra)
            backends[key] = runner
        up = Upscaler(runner)
        entry["quality"][key] = {s: round(evaluate_pairs(up.upscale_float, ((p.name, p.lr, p.hr) for p in pairs),
                                                         scale, with_ssim=False).psnr, 4)
                                 for s, pairs in sets.items()}
        print(name, key, entry["quality"][key], flush=True)
    timed = measure_interleaved(backends, hw, rounds=args.rounds, max_seconds=600)
    entry["latency"] = timed["latency"]
    ref = timed["times_ms"]["fp32/onnxruntime"]
    entry["speedup_vs_fp32_onnxruntime"] = {k: speedup(ref, t) for k, t in timed["times_ms"].items()}
    entry["speedup_vs_fp32_openvino"] = {k: speedup(timed["times_ms"]["fp32/openvino"], t)
                                         for k, t in timed["times_ms"].items() if k.endswith("openvino")}
    for b in backends.values():
        b.close()
    return name, entry


def _write_readme(results: dict, machine: dict, args, hw, out: Path) -> None:
    lines = ["# INT8 on this CPU: 8-bit against 7-bit weights", "",
             f"Command: `{results['command']}`", "",
             f"Machine: {machine['cpu']} ({machine['logical_cores']} logical cores; ISA: {', '.join(machine['isa'])}); "
             f"uint8 x int8 pairs saturate in int16 here: **{machine['u8s8_saturates']}**. ONNX Runtime "
             f"{machine['onnxruntime']}, OpenVINO {machine['openvino']}; {args.threads} thread(s); latency at LR "
             f"{hw[1]}x{hw[0]}, one interleaved run of {args.rounds} rounds.", ""]
    sets = list(next(iter(results["models"].values()))["quality"]["fp32/onnxruntime"])
    for name, e in results["models"].items():
        lines += [f"## {name}", "", f"Largest pair of raw products: 8-bit {e['pair_sum_max']['int8_w8']:,}, "
                  f"7-bit {e['pair_sum_max']['int8_w7']:,} (int16 holds 32,767).", "",
                  "| file / runtime | " + " | ".join(f"{s} PSNR" for s in sets) + " | median ms | min ms | "
                  "speed-up vs FP32 ORT [95 % CI] |", "|---|" + "---|" * (len(sets) + 3)]
        for key, q in e["quality"].items():
            lat = e["latency"].get(key)
            sp = e["speedup_vs_fp32_onnxruntime"].get(key)
            lines.append(f"| {key} | " + " | ".join(f"{q[s]:.3f}" for s in sets) + " | " +
                         (f"{lat['p50_ms']:.1f} | {lat['min_ms']:.1f} | {sp['ratio']:.2f}x "
                          f"[{sp['ci95'][0]:.2f}-{sp['ci95'][1]:.2f}]" if lat else "– | – | –") + " |")
        lines.append("")
    atomic_write_text(out / "README.md", "\n".join(lines) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
