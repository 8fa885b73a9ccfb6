"""Probe (not in edgesr): does the real-time student gain from a bilinear anchor instead of the nearest one?

MSRep adds its tail's output to the LR image upsampled by repetition (nearest: `repeat_interleave` then the pixel
shuffle). Here the same network adds it to the bilinear upsampling (PyTorch's, half-pixel; as cheap as a 3x3
grouped conv at LR). Trained exactly as deep_cpu_x2.yaml's `b3` control (the luma arm, 8,000 steps, IMDN x2's outputs,
l1_luma, same seed and batches) in this process, where the variant is registered; then Set5 / Set14 in FP32 with the
trained (branch) form in PyTorch (the runtimes' deploy form would rebuild a plain MSRep, nearest anchor):

    PYTHONPATH=. python benchmarks/results/anchor_probe/anchor_probe.py runs/anchor_probe > anchor_probe.txt
"""

import sys
from pathlib import Path

import torch.nn.functional as F

import numpy as np
import torch

from edgesr.config import parse_recipe
from edgesr.data.datasets import load_pairs
from edgesr.metrics import evaluate_pairs
from edgesr.modelio import load_model
from edgesr.models import MODELS
from edgesr.models.msrep import MSRep
from edgesr.pipeline import run_recipe


@MODELS.register("msrep_bilinear_anchor")
class BilinearAnchorMSRep(MSRep):
    """MSRep (one scale, no space-to-depth) whose residual is added to the bilinear upsampling of its input."""

    def _run(self, lr, branches: bool):
        conv = (lambda m, x: m.forward_branches(x)) if branches else (lambda m, x: m(x))
        x = self.act(conv(self.head, lr))
        for blk in self.blocks[: self.depth[0]]:
            x = self.act(conv(blk, x))
        up = F.interpolate(lr, scale_factor=self.scale, mode="bilinear", align_corners=False)
        return self.shuffles[0](conv(self.tails[0], x)) + up


RECIPE = {
    "name": "anchor_probe", "scale": 2, "seed": 0,
    "data": {"train": "runs/teacher_targets/imdn_x2", "valid": "builtin", "patch_size": 48, "min_patch_std": 0.04},
    "stages": [
        {"name": "luma", "stage": "load", "path": "runs/luma_cpu_x2_luma/luma"},
        {"name": "bl", "stage": "train", "model": {"type": "msrep_bilinear_anchor", "size": "s"}, "init_from": "luma",
         "loss": "l1_luma", "steps": 8000, "lr": 2.0e-4, "batch_size": 16, "warmup_steps": 300, "ema_decay": 0.999,
         "val_every": 2000, "checkpoint_every": 2000, "device": "cpu"},
    ],
    "benchmark": {"variants": []},
}

if __name__ == "__main__":
    out = Path(sys.argv[1])
    run_recipe(parse_recipe(RECIPE, "anchor_probe"), out, only=["bl"])
    torch.set_num_threads(2)
    for name, path in (("bl", out / "bl"), ("b3 (control)", Path("runs/deep_cpu_x2_b3/b3"))):
        model = load_model(path).eval()

        def upscale(lr: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                x = torch.from_numpy(lr.astype(np.float32) / 255.0).permute(2, 0, 1)[None]
                return model(x)[0].clamp(0, 1).permute(1, 2, 0).numpy()

        for s in ("Set5", "Set14"):
            pairs = [(p.name, p.lr, p.hr) for p in load_pairs(f"../shared/data/benchmark/{s}", 2, split="eval")]
            q = evaluate_pairs(upscale, pairs, 2)
            print(f"{name} {s}: PSNR-Y {q.psnr:.3f} dB  SSIM-Y {q.ssim:.4f}")
