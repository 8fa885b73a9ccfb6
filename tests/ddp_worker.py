"""Run by tests/test_train.py under ``torchrun --nproc_per_node 2``: a tiny data-parallel fit on CPU (gloo).

Each process saves its final weights; the test checks the processes agree and match one process trained
on the same global batches."""

import sys
from pathlib import Path

import torch

from edgesr.data.datasets import load_pairs
from edgesr.data.patches import PatchSampler
from edgesr.models import build_model
from edgesr.fitting import distributed, fit

SPEC = {"type": "abpn", "scale": 2, "channels": 8, "n_body": 1}


def run(out: Path) -> None:
    torch.set_num_threads(1)
    pairs = load_pairs("builtin", 2, "train")[:3]
    torch.manual_seed(0)
    model = build_model(SPEC)
    sampler = PatchSampler(pairs, 2, 16, 4, seed=3)
    fit(model, sampler, steps=6, lr=1e-3, loss_fn=lambda sr, lr, hr: (sr - hr).abs().mean(),
        val_pairs=pairs[:1], scale=2, val_every=1000, ema_decay=0.9)
    rank, world = distributed()
    torch.save({"world": world, "state": model.state_dict()}, out / f"rank{rank}.pt")


if __name__ == "__main__":
    run(Path(sys.argv[1]))
