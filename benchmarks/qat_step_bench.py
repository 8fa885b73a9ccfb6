"""The cost of one qat_onnx training step (forward and backward of the Q/DQ simulation on a batch of LR patches),
with its DQ -> Conv -> Q convolutions computed as ONNX Runtime's integer kernel (as validation and the parity
check compute them: eval mode) against the float path's values (what a training step uses: train mode), timed
side by side in one interleaved run; the speed-up is the ratio of medians with a 95 % bootstrap interval.

    python -m edgesr.benchmarks.qat_step_bench runs/imported_rtc_x2/rtc_int8_w8f --patch 48 --batch 16 \
        --threads 2 --out benchmarks/results/qat_step
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from edgesr.artifacts import read_artifact

from .devices import device_info, device_label
from .latency import measure_interleaved, speedup


class _Step:
    """``run(x)``: one forward and backward (L1 against zeros) of ``graph`` in the given mode."""

    def __init__(self, graph, train: bool):
        self.graph, self.train = graph, train

    def run(self, x):
        import torch

        self.graph.train(self.train)
        self.graph.zero_grad(set_to_none=True)
        out = self.graph(torch.from_numpy(x))
        out = out[0] if isinstance(out, tuple) else out
        out.abs().mean().backward()
        return out.detach().numpy()


def main(argv: list[str] | None = None) -> int:
    import onnx
    import torch

    from edgesr.qdq_graph import QdqGraph

    p = argparse.ArgumentParser(prog="python -m edgesr.benchmarks.qat_step_bench")
    p.add_argument("artifacts", nargs="+", help="Q/DQ ONNX artifacts (a quantize or qat_onnx stage's output)")
    p.add_argument("--patch", type=int, default=48, help="LR patch side (the recipe's patch_size)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=12)
    p.add_argument("--out")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    steps, counts = {}, {}
    for name in args.artifacts:
        art = read_artifact(name)
        graph = QdqGraph(onnx.load(str(art.payload)), tuple(art.manifest["scales"]))
        counts[art.path.name] = (len(graph.integer_conv_names()),
                                 sum(n.op_type == "Conv" for n in graph.proto.graph.node))
        steps[f"{art.path.name}:integer"] = _Step(graph, train=False)
        steps[f"{art.path.name}:float"] = _Step(graph, train=True)
    res = measure_interleaved(steps, (args.patch, args.patch), batch=args.batch, rounds=args.rounds,
                              max_seconds=3600, warmup=2)
    rows, record = [], {"device": device_info(), "threads": args.threads, "batch": args.batch,
                        "patch": args.patch, "rounds": res["rounds"], "models": {}}
    for name, (n_int, n_conv) in counts.items():
        a, b = res["times_ms"][f"{name}:integer"], res["times_ms"][f"{name}:float"]
        s = speedup(a, b)
        ma, mb = (res["latency"][f"{name}:{k}"]["p50_ms"] for k in ("integer", "float"))
        record["models"][name] = {"integer_convs": n_int, "convs": n_conv, "integer_ms": ma, "float_ms": mb,
                                  "speedup": s}
        rows.append(f"| {name} | {n_int} of {n_conv} | {ma:.0f} | {mb:.0f} | "
                    f"{s['ratio']:.2f}x [{s['ci95'][0]:.2f}-{s['ci95'][1]:.2f}] |")
    table = "\n".join(["| graph | integer-kernel convs | step, integer kernel ms | step, float path ms | "
                       "speed-up |", "|---|---|---|---|---|", *rows])
    print(f"{device_label(record['device'])}; {args.threads} threads; batch {args.batch} x "
          f"{args.patch}x{args.patch} LR; {res['rounds']} interleaved rounds, medians\n{table}")
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps(record, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
