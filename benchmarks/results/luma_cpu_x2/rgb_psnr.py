"""PSNR-Y and RGB PSNR (all three channels, border = scale, outputs rounded to 8 bits as the protocol does) of
model artifacts (PyTorch) and ONNX artifacts (ONNX Runtime, 2 threads) on Set5 and Set14 x2. Run from the repository
root: python benchmarks/results/luma_cpu_x2/rgb_psnr.py ARTIFACT... > rgb_psnr.txt (a pretrained name or a path)."""
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from edgesr.artifacts import read_artifact
from edgesr.data.datasets import load_pairs
from edgesr.metrics import psnr_y
from edgesr.modelio import load_model


def runner(path: str):
    art = read_artifact(path if Path(path).exists() else f"edgesr/pretrained/{path}")
    if art.manifest["kind"] == "model":
        model = load_model(art).eval()
        return lambda x: model(torch.from_numpy(x)).detach().numpy()
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    sess = ort.InferenceSession(str(art.payload), so, providers=["CPUExecutionProvider"])
    return lambda x: sess.run(None, {"lr": x})[0]


torch.set_num_threads(2)
for name in ("Set5", "Set14"):
    pairs = load_pairs(f"../shared/data/benchmark/{name}", 2, "valid")
    for path in sys.argv[1:]:
        run, ys, rgbs = runner(path), [], []
        for p in pairs:
            with torch.no_grad():
                out = run(p.lr.transpose(2, 0, 1)[None].astype(np.float32) / 255)[0]
            sr = (np.clip(out, 0, 1).transpose(1, 2, 0) * 255).round().astype(np.uint8)
            d = sr[2:-2, 2:-2].astype(float) - p.hr[2:-2, 2:-2].astype(float)
            rgbs.append(10 * np.log10(255 ** 2 / np.mean(d * d)))
            ys.append(psnr_y(sr, p.hr, 2))
        print(name, path, "Y %.3f RGB %.3f" % (np.mean(ys), np.mean(rgbs)))
