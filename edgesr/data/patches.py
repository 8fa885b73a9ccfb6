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

from ..errors import EdgesrError
from ..imaging import to_float
from .bicubic import imresize
from .datasets import ImagePair

__all__ = ["PatchSampler", "PatchError", "MARGIN"]

MARGIN = 4
"""LR pixels of context kept around a patch that is degraded from its HR patch (blur kernels reach 6 HR pixels,
MATLAB's antialiased x4 cubic 8), so that the patch's border is degraded as the inside of an image is."""


class PatchError(EdgesrError, ValueError):
    """Patches that the training images cannot give (a patch size larger than an image)."""


class PatchSampler:
    def __init__(self, pairs: list[ImagePair], scale: int, lr_patch: int, batch_size: int, seed: int = 0,
                 augment: bool = True, min_std: float = 0.0, max_tries: int = 10,
                 targets: tuple[int, ...] | None = None, degradation: str = "bicubic"):
        """``degradation``: ``bicubic`` crops the pairs' LR images (the protocol); ``general`` makes each LR
        patch from its HR patch (with a margin of :data:`MARGIN` LR pixels for the kernels' reach, then cropped)
        by one draw of :func:`edgesr.data.degradations.general_degradation` (of the mix a
        :class:`~edgesr.data.degradations.DegradationSpec` carries, else the default), from the batch's
        generator: the same batches for the same (seed, step)."""
        from .degradations import TRAIN_DEGRADATIONS

        if degradation not in TRAIN_DEGRADATIONS:
            raise ValueError(f"degradation {degradation!r}: use one of {', '.join(TRAIN_DEGRADATIONS)}")
        self.degradation = degradation
        if not pairs:
            raise ValueError("PatchSampler needs at least one image")
        small = [p for p in pairs if min(p.lr.shape[:2]) < lr_patch]
        if small:
            fits = min(min(p.lr.shape[:2]) for p in pairs)
            listed = ", ".join(f"{p.name} ({p.lr.shape[1]}x{p.lr.shape[0]})" for p in small[:4])
            raise PatchError(f"data.patch_size {lr_patch} (LR pixels) is larger than {len(small)} of the {len(pairs)} "
                             f"training images at x{scale} LR: {listed}{', ...' if len(small) > 4 else ''}. Lower "
                             f"data.patch_size to at most {fits}, or leave those images out of the training folder.")
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

    def _one(self, rng: np.random.Generator, drng: np.random.Generator | None) -> tuple[np.ndarray, list[np.ndarray]]:
        p = self.lr_patch
        for _ in range(self.max_tries):
            i = int(rng.choice(len(self.pairs), p=self.weights))
            pair = self.pairs[i]
            h, w = pair.lr.shape[:2]
            y, x = int(rng.integers(0, h - p + 1)), int(rng.integers(0, w - p + 1))
            lr = to_float(pair.lr[y:y + p, x:x + p])
            if self.min_std <= 0 or lr.std() >= self.min_std:
                break
        if drng is not None:  # the patch is chosen on the protocol's LR, so both forms share positions
            lr = to_float(self._degraded(pair.hr, y, x, drng))
        hrs = [to_float(self.levels[i][t][y * t:(y + p) * t, x * t:(x + p) * t]) for t in self.targets]
        if self.augment:
            k = int(rng.integers(0, 4))
            flip = bool(rng.integers(0, 2))
            lr, hrs = np.rot90(lr, k), [np.rot90(hr, k) for hr in hrs]
            if flip:
                lr, hrs = lr[:, ::-1], [hr[:, ::-1] for hr in hrs]
        return lr, hrs

    def _degraded(self, hr: np.ndarray, y: int, x: int, rng: np.random.Generator) -> np.ndarray:
        """The LR patch at (y, x) made from the HR image by the degradation mix, with context around it."""
        from .degradations import general_degradation, mix_of

        p, s, m = self.lr_patch, self.scale, MARGIN
        h, w = hr.shape[0] // s, hr.shape[1] // s
        y0, x0 = max(y - m, 0), max(x - m, 0)
        y1, x1 = min(y + p + m, h), min(x + p + m, w)
        lr, _ = general_degradation(np.ascontiguousarray(hr[y0 * s:y1 * s, x0 * s:x1 * s]), s, rng,
                                    mix_of(self.degradation))
        return lr[y - y0:y - y0 + p, x - x0:x - x0 + p]

    def batch(self, step: int, part: tuple[int, int] = (0, 1), clean: bool = False):
        """The batch for training step ``step``: (lr B x 3 x p x p, hr B x 3 x sp x sp), float32 in [0, 1].

        With several target scales ``hr`` is a dict {scale: tensor}. ``part=(rank, world)`` returns that
        process's contiguous slice of the global batch. The patches (positions, flips) depend on (seed, step)
        only; a degradation draws from a generator of its own, and ``clean=True`` gives the same patches with the
        protocol's LR (what a teacher sees when a student learns from degraded LR)."""
        rank, world = part
        if self.batch_size % world:
            raise ValueError(f"batch size {self.batch_size} does not split over {world} processes")
        rng = np.random.default_rng([self.seed, step])
        drng = np.random.default_rng([self.seed, step, 1]) if self.degradation != "bicubic" and not clean else None
        draws = [self._one(rng, drng) for _ in range(self.batch_size)]
        per = self.batch_size // world
        draws = draws[rank * per:(rank + 1) * per]
        to_t = lambda xs: torch.from_numpy(np.ascontiguousarray(np.stack(xs).transpose(0, 3, 1, 2)))
        lr = to_t([d[0] for d in draws])
        hrs = {t: to_t([d[1][j] for d in draws]) for j, t in enumerate(self.targets)}
        return lr, (hrs[self.scale] if len(self.targets) == 1 else hrs)
