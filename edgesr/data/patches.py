"""Random aligned LR/HR patches with flips and rotations, reproducible from (seed, step).

Each batch is drawn from a generator seeded by ``(seed, step)``, so a run resumed at step N draws exactly
the batches the uninterrupted run would have drawn. Patches whose LR standard deviation is under
``min_std`` are redrawn (up to a few times): smooth patches teach an SR network almost nothing.
"""

from __future__ import annotations

import numpy as np
import torch

from ..imaging import to_float
from .datasets import ImagePair

__all__ = ["PatchSampler"]


class PatchSampler:
    def __init__(self, pairs: list[ImagePair], scale: int, lr_patch: int, batch_size: int, seed: int = 0,
                 augment: bool = True, min_std: float = 0.0, max_tries: int = 10):
        if not pairs:
            raise ValueError("PatchSampler needs at least one image")
        small = [p.name for p in pairs if min(p.lr.shape[:2]) < lr_patch]
        if small:
            raise ValueError(f"images smaller than the LR patch size {lr_patch}: {small}; lower patch_size")
        self.pairs, self.scale, self.lr_patch = pairs, scale, lr_patch
        self.batch_size, self.seed, self.augment = batch_size, seed, augment
        self.min_std, self.max_tries = min_std, max_tries
        # Sample images in proportion to their area, so big images are not under-represented.
        areas = np.array([p.lr.shape[0] * p.lr.shape[1] for p in pairs], dtype=np.float64)
        self.weights = areas / areas.sum()

    def _one(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        p, s = self.lr_patch, self.scale
        for _ in range(self.max_tries):
            pair = self.pairs[rng.choice(len(self.pairs), p=self.weights)]
            h, w = pair.lr.shape[:2]
            y, x = int(rng.integers(0, h - p + 1)), int(rng.integers(0, w - p + 1))
            lr = to_float(pair.lr[y:y + p, x:x + p])
            if self.min_std <= 0 or lr.std() >= self.min_std:
                break
        hr = to_float(pair.hr[y * s:(y + p) * s, x * s:(x + p) * s])
        if self.augment:
            k = int(rng.integers(0, 4))
            flip = bool(rng.integers(0, 2))
            lr, hr = np.rot90(lr, k), np.rot90(hr, k)
            if flip:
                lr, hr = lr[:, ::-1], hr[:, ::-1]
        return lr, hr

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch for training step ``step``: (lr B x 3 x p x p, hr B x 3 x sp x sp), float32 in [0, 1]."""
        rng = np.random.default_rng([self.seed, step])
        lrs, hrs = zip(*(self._one(rng) for _ in range(self.batch_size)))
        to_t = lambda xs: torch.from_numpy(np.ascontiguousarray(np.stack(xs).transpose(0, 3, 1, 2)))
        return to_t(lrs), to_t(hrs)
