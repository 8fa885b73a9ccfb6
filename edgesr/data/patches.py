"""Random aligned LR/HR patches with flips and rotations, reproducible from (seed, step).

Each batch is drawn from a generator seeded by ``(seed, step)``, so a run resumed at step N draws exactly
the batches the uninterrupted run would have drawn. Patches whose LR standard deviation is under
``min_std`` are redrawn (up to a few times): smooth patches teach an SR network almost nothing.

Multi-output networks (x2 and x4 from one LR input) get one target per scale: the pairs are made at the
largest scale, and each smaller target is the HR image reduced by MATLAB bicubic (the LapSRN pyramid).
Under data parallelism each process takes its slice of the same global batch, so N processes train on
exactly the batches one process would.
"""

from __future__ import annotations

import numpy as np
import torch

from ..imaging import to_float
from .bicubic import imresize
from .datasets import ImagePair

__all__ = ["PatchSampler"]


class PatchSampler:
    def __init__(self, pairs: list[ImagePair], scale: int, lr_patch: int, batch_size: int, seed: int = 0,
                 augment: bool = True, min_std: float = 0.0, max_tries: int = 10,
                 targets: tuple[int, ...] | None = None):
        if not pairs:
            raise ValueError("PatchSampler needs at least one image")
        small = [p.name for p in pairs if min(p.lr.shape[:2]) < lr_patch]
        if small:
            raise ValueError(f"images smaller than the LR patch size {lr_patch}: {small}; lower patch_size")
        self.pairs, self.scale, self.lr_patch = pairs, scale, lr_patch
        self.batch_size, self.seed, self.augment = batch_size, seed, augment
        self.min_std, self.max_tries = min_std, max_tries
        self.targets = tuple(sorted(targets)) if targets else (scale,)
        if self.targets[-1] != scale or any(scale % t for t in self.targets):
            raise ValueError(f"target scales {self.targets} must divide the pairs' scale x{scale} and include it")
        # Smaller targets: the HR image reduced by scale / t (uint8, as the protocol stores images).
        self.levels = [{t: (p.hr if t == scale else imresize(p.hr, 1 / (scale // t))) for t in self.targets}
                       for p in pairs]
        # Sample images in proportion to their area, so big images are not under-represented.
        areas = np.array([p.lr.shape[0] * p.lr.shape[1] for p in pairs], dtype=np.float64)
        self.weights = areas / areas.sum()

    def _one(self, rng: np.random.Generator) -> tuple[np.ndarray, list[np.ndarray]]:
        p = self.lr_patch
        for _ in range(self.max_tries):
            i = int(rng.choice(len(self.pairs), p=self.weights))
            pair = self.pairs[i]
            h, w = pair.lr.shape[:2]
            y, x = int(rng.integers(0, h - p + 1)), int(rng.integers(0, w - p + 1))
            lr = to_float(pair.lr[y:y + p, x:x + p])
            if self.min_std <= 0 or lr.std() >= self.min_std:
                break
        hrs = [to_float(self.levels[i][t][y * t:(y + p) * t, x * t:(x + p) * t]) for t in self.targets]
        if self.augment:
            k = int(rng.integers(0, 4))
            flip = bool(rng.integers(0, 2))
            lr, hrs = np.rot90(lr, k), [np.rot90(hr, k) for hr in hrs]
            if flip:
                lr, hrs = lr[:, ::-1], [hr[:, ::-1] for hr in hrs]
        return lr, hrs

    def batch(self, step: int, part: tuple[int, int] = (0, 1)):
        """The batch for training step ``step``: (lr B x 3 x p x p, hr B x 3 x sp x sp), float32 in [0, 1].

        With several target scales ``hr`` is a dict {scale: tensor}. ``part=(rank, world)`` returns that
        process's contiguous slice of the global batch."""
        rank, world = part
        if self.batch_size % world:
            raise ValueError(f"batch size {self.batch_size} does not split over {world} processes")
        rng = np.random.default_rng([self.seed, step])
        draws = [self._one(rng) for _ in range(self.batch_size)]
        per = self.batch_size // world
        draws = draws[rank * per:(rank + 1) * per]
        to_t = lambda xs: torch.from_numpy(np.ascontiguousarray(np.stack(xs).transpose(0, 3, 1, 2)))
        lr = to_t([d[0] for d in draws])
        hrs = {t: to_t([d[1][j] for d in draws]) for j, t in enumerate(self.targets)}
        return lr, (hrs[self.scale] if len(self.targets) == 1 else hrs)
