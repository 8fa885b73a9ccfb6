"""The evaluation protocol of SR papers, defined once for all of edgesr.

* LR images are MATLAB bicubic downscales of the HR image mod-cropped to the scale
  (:func:`edgesr.data.bicubic.imresize`), or the benchmark's own LR files where they exist.
* The SR output is clamped to [0, 1] and rounded to 8 bits (what would be saved or shown).
* PSNR and SSIM are computed on the Y channel of BT.601 YCbCr,
  ``Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255`` with RGB in [0, 255], in float64,
  with a border of ``scale`` pixels cropped, peak 255.
* SSIM: 11 x 11 Gaussian window, sigma 1.5, K1 = 0.01, K2 = 0.03 (Wang et al. 2004), via scikit-image.

Training validation, every stage's metrics and the benchmark report call these functions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np
from skimage.metrics import structural_similarity

from .errors import EdgesrError
from .imaging import to_uint8

__all__ = ["rgb_to_y", "psnr_y", "ssim_y", "QualityResult", "evaluate_pairs"]


def rgb_to_y(img: np.ndarray) -> np.ndarray:
    """BT.601 luma of an H x W x 3 ``uint8`` image (values in [16, 235]), float64, not rounded."""
    if img.dtype != np.uint8:
        raise TypeError(f"rgb_to_y expects a uint8 image, got {img.dtype}; quantise with imaging.to_uint8")
    x = img.astype(np.float64)
    return 16.0 + (65.481 * x[..., 0] + 128.553 * x[..., 1] + 24.966 * x[..., 2]) / 255.0


def _check_pair(sr: np.ndarray, hr: np.ndarray) -> None:
    if sr.shape != hr.shape:
        raise ValueError(f"SR {sr.shape} and HR {hr.shape} differ in shape; was HR mod-cropped to the scale?")


def psnr_y(sr: np.ndarray, hr: np.ndarray, border: int) -> float:
    """PSNR-Y in dB between two ``uint8`` RGB images, ``border`` pixels cropped on each side."""
    _check_pair(sr, hr)
    diff = rgb_to_y(sr) - rgb_to_y(hr)
    if border:
        diff = diff[border:-border, border:-border]
    mse = float(np.mean(diff * diff))
    if mse == 0.0:
        return float("inf")
    return 10.0 * np.log10(255.0 ** 2 / mse)


def ssim_y(sr: np.ndarray, hr: np.ndarray, border: int) -> float:
    """SSIM on Y (Gaussian 11x11, sigma 1.5), ``border`` pixels cropped on each side."""
    _check_pair(sr, hr)
    ys, yh = rgb_to_y(sr), rgb_to_y(hr)
    if border:
        ys, yh = ys[border:-border, border:-border], yh[border:-border, border:-border]
    return float(structural_similarity(ys, yh, data_range=255.0, gaussian_weights=True, sigma=1.5,
                                       use_sample_covariance=False, K1=0.01, K2=0.03))


class EvaluationError(EdgesrError, ValueError):
    """An evaluation set the protocol cannot score; the message names the image and the fix."""


@dataclass
class QualityResult:
    """Mean PSNR-Y/SSIM-Y over a set, with the per-image values."""

    psnr: float
    ssim: float
    per_image: dict[str, tuple[float, float]] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"psnr": round(self.psnr, 4), "ssim": round(self.ssim, 5),
                "per_image": {k: [round(p, 4), round(s, 5)] for k, (p, s) in self.per_image.items()}}


def evaluate_pairs(upscale: Callable[[np.ndarray], np.ndarray], pairs: Iterable[tuple[str, np.ndarray, np.ndarray]],
                   scale: int, with_ssim: bool = True) -> QualityResult:
    """Run ``upscale`` (uint8 LR HxWx3 -> float [0,1] or uint8 SR) on each (name, lr, hr) pair and score it."""
    per = {}
    for name, lr, hr in pairs:
        need = 2 * scale + 7  # the border the protocol crops, and SSIM's 7-pixel minimum window
        if min(hr.shape[:2]) < need:
            raise EvaluationError(f"{name}: {hr.shape[1]}x{hr.shape[0]} is too small to evaluate at x{scale}: the "
                                  f"protocol crops {scale} pixels on each side and SSIM needs 7 more (at least "
                                  f"{need}x{need}). Remove it from the evaluation set.")
        if name in per:
            raise EvaluationError(f"{name}: two images of the set have this name; each would hide the other's score. "
                                  "Rename one.")
        sr = upscale(lr)
        if sr.dtype != np.uint8:
            sr = to_uint8(sr)
        p = psnr_y(sr, hr, scale)
        s = ssim_y(sr, hr, scale) if with_ssim else float("nan")
        per[name] = (p, s)
    if not per:
        raise ValueError("evaluate_pairs: the evaluation set is empty")
    return QualityResult(psnr=float(np.mean([v[0] for v in per.values()])),
                         ssim=float(np.mean([v[1] for v in per.values()])), per_image=per)
