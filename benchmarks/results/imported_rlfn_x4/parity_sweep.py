"""One-off diagnostic (outside edgesr): where does qat_onnx's simulation (QdqGraph) differ from ONNX Runtime?

For every QuantizeLinear of an INT8 Q/DQ graph, the piece of graph between the quantized tensors it depends on and
its own output is cut out (onnx.utils.extract_model), run by ONNX Runtime with full optimisation (its fused
integer kernels) on the simulation's own quantized values, and compared step for step with the simulation's
value there. An output-level parity number cannot say which op is off; this names it.

    python benchmarks/results/imported_rlfn_x4/parity_sweep.py GRAPH.onnx SCALE [CHECKPOINT.safetensors]

(the checkpoint: a qat_onnx stage's ``<stage>.ckpt/best.safetensors``, loaded into the simulation of GRAPH).
"""
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))
from edgesr.data.datasets import parity_image  # noqa: E402
from edgesr.imaging import image_to_tensor  # noqa: E402
from edgesr.qdq_graph import QdqGraph  # noqa: E402


def simulated_tensors(graph: QdqGraph, lr: torch.Tensor) -> dict:
    """Every tensor of the simulation's forward pass (the same plan as QdqGraph.forward)."""
    env = {graph.input_name: lr}
    for kind, n, _ in graph._plan:
        if kind == "param":
            env[n.output[0]] = graph.params[graph._keys[n.output[0]]]()
        elif kind == "act":
            out = graph.acts[graph._act_of[n.name]](env[n.input[0]])
            if n.name in graph._integer_conv:
                out = graph._integer_conv_value(env, n)
            env[n.output[0]] = out
        elif kind == "dq":
            env[n.output[0]] = env[n.input[0]]
        else:
            out = graph._op(n, [graph._tensor(env, i) for i in n.input])
            for name, t in zip(n.output, out if isinstance(out, tuple) else (out,)):
                env[name] = t
    return env


def main(path: str, scale: int, checkpoint: str | None = None) -> None:
    proto = onnx.load(path)
    graph = QdqGraph(proto, (scale,)).eval()
    if checkpoint:
        from safetensors.torch import load_file
        graph.load_state_dict(load_file(checkpoint))
    written = Path(tempfile.mkdtemp()) / "graph.onnx"
    onnx.save(graph.to_onnx(), str(written))
    with torch.no_grad():
        env = simulated_tensors(graph, image_to_tensor(parity_image()))
    producer = {o: n for n in proto.graph.node for o in n.output}
    inits = {i.name for i in proto.graph.initializer}

    def step(q_name: str):
        a = graph.acts[graph._act_of[q_name]]
        return float(a.scale().detach()), float(a.zp().detach())

    checked = differing = 0
    for q in (n for n in proto.graph.node if n.op_type == "QuantizeLinear"):
        inputs, ops, stack, seen = set(), [], [q.input[0]], set()
        while stack:  # back to the quantized tensors (or the graph's input) this quantizer depends on
            t = stack.pop()
            if not t or t in seen or t in inits:
                continue
            seen.add(t)
            p = producer.get(t)
            if p is None or p.op_type == "QuantizeLinear":
                inputs.add(t)
                continue
            ops.append(p.op_type)
            stack.extend(p.input)
        piece = written.with_name("piece.onnx")
        onnx.utils.extract_model(str(written), str(piece), sorted(inputs), [q.output[0]])
        feeds = {}
        for t in inputs:
            if t == graph.input_name:
                feeds[t] = env[t].numpy()
                continue
            s, z = step(producer[t].name)
            feeds[t] = np.clip(np.round(env[t].numpy() / s) + z, 0, 255).astype(np.uint8)
        got = ort.InferenceSession(str(piece), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
        s, z = step(q.name)
        sim = np.round(env[q.output[0]].numpy() / s) + z
        checked += 1
        n = int((sim != got).sum())
        if n:
            differing += 1
            kinds = sorted(set(ops) - {"DequantizeLinear"})
            print(f"{q.name}: {n} of {got.size} values a step off; ops between: {', '.join(kinds)}")
    print(f"{checked} quantizers checked, {differing} differ")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 else None)
