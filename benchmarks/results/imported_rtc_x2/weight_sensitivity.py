"""Which convolutions' 8-bit weights cost IMDN-RTC the most (issue 26: the INT8 weights are the floor)? The FP32
graph with one convolution's weights at a time on the quantize stage's grid (int8 symmetric per output channel,
[-127, 127], scale max|w| / 127), everything else float, scored through ONNX Runtime on the validation images
(the three built-in ones and the 8 photographs `data.valid: holdout` takes out of ../shared/data/train/photos)
and on Set5 / Set14, as PSNR-Y drops against the FP32 graph. Layers are picked by the validation columns only.
(The product's form of this, on any sets: python -m edgesr.benchmarks.weight_sensitivity.)

    python benchmarks/results/imported_rtc_x2/weight_sensitivity.py runs/imported_rtc_x2/rtc_onnx 2 \
        > benchmarks/results/imported_rtc_x2/weight_sensitivity.txt
    python benchmarks/results/imported_rtc_x2/weight_sensitivity.py runs/imported_rlfn_x4/rlfn_onnx 4 \
        > benchmarks/results/imported_rlfn_x4/weight_sensitivity.txt
"""
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from edgesr.benchmarks.weight_sensitivity import weights_on_grid
from edgesr.data.datasets import holdout_split, load_pairs
from edgesr.imaging import to_uint8
from edgesr.metrics import psnr_y

ort.set_default_logger_severity(3)
SHARED = Path("../shared/data")


def image_sets(scale: int) -> dict:
    _, held, _ = holdout_split(load_pairs(SHARED / "train" / "photos", scale, "train"), 8, SHARED / "train" / "photos")
    return {"valid": load_pairs("builtin", scale, "valid") + held,
            "Set5": load_pairs(SHARED / "benchmark" / "Set5", scale, "eval"),
            "Set14": load_pairs(SHARED / "benchmark" / "Set14", scale, "eval")}


def scores(model: onnx.ModelProto, sets: dict, scale: int) -> dict:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    s = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    out = {}
    for name, pairs in sets.items():
        vals = []
        for p in pairs:
            y = s.run(None, {"lr": (p.lr.astype(np.float32) / 255).transpose(2, 0, 1)[None]})[0][0]
            vals.append(psnr_y(to_uint8(y.transpose(1, 2, 0)), p.hr, scale))
        out[name] = float(np.mean(vals))
    return out


def main(root: str, scale: int) -> None:
    model = onnx.load(str(Path(root) / "model.onnx"))
    sets = image_sets(scale)
    base = scores(model, sets, scale)
    print("FP32 " + "  ".join(f"{k} {v:.3f}" for k, v in base.items()))
    rows = []
    for conv in [n for n in model.graph.node if n.op_type == "Conv"]:
        got = scores(weights_on_grid(model, [conv.name]), sets, scale)
        rows.append((conv.name, {k: got[k] - base[k] for k in base}))
    rows.sort(key=lambda r: r[1]["valid"])
    print(f"{'conv (8-bit weights alone)':28s} " + " ".join(f"{k:>8s}" for k in base) + "   (drop, dB)")
    for name, d in rows:
        print(f"{name:28s} " + " ".join(f"{d[k]:+8.4f}" for k in base))
    every = weights_on_grid(model, [n.name for n in model.graph.node if n.op_type == "Conv"])
    print("every conv 8-bit: " + "  ".join(f"{k} {v - base[k]:+.4f}" for k, v in scores(every, sets, scale).items()))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
