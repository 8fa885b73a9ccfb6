"""One-off diagnostic: where does qat_onnx's simulation (QdqGraph) differ from ONNX Runtime?

Runs the check qat_onnx makes when it refuses a trained graph (``edgesr.qdq_graph.where_onnx_runtime_differs``) on
any INT8 Q/DQ graph: every QuantizeLinear's piece of graph, cut out between the quantized tensors it depends on and
its output, run by ONNX Runtime fully optimised on the simulation's own quantized values and compared step for
step (and every output after the last pair, to 1e-4). Prints the first place they part, or the isolated flips
after float convolutions that are all that is left.

    python benchmarks/results/imported_rlfn_x4/parity_sweep.py GRAPH.onnx SCALE [CHECKPOINT.safetensors]

(the checkpoint: a qat_onnx stage's ``<stage>.ckpt/best.safetensors``, loaded into the simulation of GRAPH).
"""
import sys
import tempfile
from pathlib import Path

import onnx

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))
from edgesr.qdq_graph import QdqGraph, where_onnx_runtime_differs  # noqa: E402
from edgesr.data.datasets import parity_image  # noqa: E402
from edgesr.imaging import image_to_tensor  # noqa: E402


def main(path: str, scale: int, checkpoint: str | None = None) -> None:
    graph = QdqGraph(onnx.load(path), (scale,)).eval()
    if checkpoint:
        from safetensors.torch import load_file
        graph.load_state_dict(load_file(checkpoint))
    written = Path(tempfile.mkdtemp()) / "graph.onnx"
    onnx.save(graph.to_onnx(), str(written))
    found = where_onnx_runtime_differs(graph, written, image_to_tensor(parity_image()), 2)
    print(("the per-quantizer check accepts: " if found.float_order_only else "the per-quantizer check refuses: ") + found.message)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 else None)
