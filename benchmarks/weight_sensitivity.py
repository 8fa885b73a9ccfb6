"""Which layers' INT8 weights cost a network most: the FP32 graph with one convolution's weights at a time on
the quantize stage's grid (symmetric per output channel, ``[-(2^(b-1) - 1), 2^(b-1) - 1]``, scale max|w| / that),
every other value float, scored by the protocol on the given sets; each layer's PSNR-Y drop against the FP32
graph, most costly first, and every layer's weights on the grid together. What to name in ``quantize``'s
``exclude`` or ``qat_onnx``'s ``float_layers`` (one layer of RLFN, ``blocks.3.c5``, costs half of what all 39
cost: benchmarks/results/imported_rlfn_x4/).

    python -m edgesr.benchmarks.weight_sensitivity runs/imported_rlfn_x4/rlfn_onnx \
        --set ../shared/data/benchmark/Set5 --set builtin --threads 2 --out sensitivity.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from edgesr.artifacts import Artifact, ArtifactError, read_artifact
from edgesr.data.datasets import ImagePair, load_pairs, set_name
from edgesr.files import atomic_write_text
from edgesr.runtime.base import open_backend

from .quality import measure_quality

__all__ = ["weight_sensitivity", "weights_on_grid", "main"]


def weights_on_grid(proto: onnx.ModelProto, layers, bits: int = 8) -> onnx.ModelProto:
    """A copy of ``proto`` whose ``layers`` (Conv/ConvTranspose/Gemm node names) have their float weights
    rounded to a symmetric per-output-channel grid of ``bits`` bits (what the quantize stage's INT8 weights
    stand for), the rest unchanged."""
    out = onnx.ModelProto.FromString(proto.SerializeToString())
    weights = {n.input[1] for n in out.graph.node if n.name in set(layers)}
    qmax = 2 ** (bits - 1) - 1
    for init in out.graph.initializer:
        if init.name in weights:
            w = numpy_helper.to_array(init)
            s = np.abs(w).reshape(w.shape[0], -1).max(1) / qmax
            s = np.where(s > 0, s, 1).reshape(-1, *[1] * (w.ndim - 1))
            init.CopyFrom(numpy_helper.from_array((np.clip(np.round(w / s), -qmax, qmax) * s).astype(np.float32),
                                                  init.name))
    return out


def _layers(proto: onnx.ModelProto) -> list[str]:
    inits = {i.name for i in proto.graph.initializer}
    return [n.name for n in proto.graph.node
            if n.op_type in ("Conv", "ConvTranspose", "Gemm") and len(n.input) > 1 and n.input[1] in inits]


def weight_sensitivity(art: Artifact, sets: dict[str, list[ImagePair]], scale: int, bits: int = 8,
                       threads: int = 0, backend: str = "onnxruntime") -> dict:
    """{"fp32": {set: PSNR}, "layers": {layer: {set: drop}} most costly first (on the first set), "all": {set:
    drop}} for an FP32 ONNX artifact."""
    if art.kind != "onnx" or art.manifest["precision"] != "fp32":
        raise ArtifactError(f"{art.path}: weight sensitivity takes an FP32 ONNX artifact (an export stage's output), "
                            f"got {art.kind} {art.manifest['precision']}")
    proto = onnx.load(str(art.payload))
    with tempfile.TemporaryDirectory() as tmp:
        def psnr(model: onnx.ModelProto) -> dict[str, float]:
            onnx.save_model(model, str(Path(tmp) / "model.onnx"))
            b = open_backend(Artifact(Path(tmp), {**art.manifest, "payload": "model.onnx"}), backend, threads=threads)
            try:
                return {k: q["psnr"] for k, q in measure_quality(b, sets, scale, art.manifest.size_multiple).items()}
            finally:
                b.close()

        base = psnr(proto)
        layers = {n: {k: v - base[k] for k, v in psnr(weights_on_grid(proto, [n], bits)).items()} for n in _layers(proto)}
        every = psnr(weights_on_grid(proto, _layers(proto), bits))
    first = next(iter(sets))
    return {"fp32": base, "bits": bits, "layers": dict(sorted(layers.items(), key=lambda kv: kv[1][first])),
            "all": {k: v - base[k] for k, v in every.items()}}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m edgesr.benchmarks.weight_sensitivity", description=__doc__.split("\n\n")[0])
    ap.add_argument("artifact")
    ap.add_argument("--set", action="append", required=True, help="evaluation set (repeatable; 'builtin' = the "
                    "built-in validation photographs); layers are ranked on the first")
    ap.add_argument("--bits", type=int, default=8, choices=(7, 8))
    ap.add_argument("--backend", default="onnxruntime")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--out", type=Path, help="write the result as JSON here")
    a = ap.parse_args(argv)
    art = read_artifact(a.artifact)
    scale = int(art.manifest["scales"][0])
    sets = {set_name(s): load_pairs(s, scale, "valid" if s == "builtin" else "eval") for s in a.set}
    res = weight_sensitivity(art, sets, scale, a.bits, a.threads, a.backend)
    print(f"FP32: " + "  ".join(f"{k} {v:.3f}" for k, v in res["fp32"].items()))
    print(f"{'layer (' + str(a.bits) + '-bit weights alone)':32s} " + " ".join(f"{k[:10]:>10s}" for k in sets) + "  (dB)")
    for name, d in res["layers"].items():
        print(f"{name:32s} " + " ".join(f"{d[k]:+10.4f}" for k in sets))
    print(f"{'every layer':32s} " + " ".join(f"{res['all'][k]:+10.4f}" for k in sets))
    if a.out:
        atomic_write_text(a.out, json.dumps({"artifact": str(art.path), **res}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
