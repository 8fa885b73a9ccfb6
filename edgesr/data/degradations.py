"""Named degradations: how a low-resolution frame was made from the high-resolution one.

The SR protocol makes LR with MATLAB's antialiased bicubic (:func:`edgesr.data.bicubic.imresize`); the frames
users upscale are mostly made otherwise. Each name here is one reproducible way, applied to the HR image
mod-cropped to the scale, returning 8-bit LR:

* ``bicubic``: the protocol (MATLAB bicubic, antialiased, a = -0.5);
* ``cubic-aliased``: OpenCV's ``cv2.resize(..., INTER_CUBIC)`` (a = -0.75, no antialiasing: every output pixel
  from the 4 x 4 input pixels nearest its centre), the most common resize in Python code;
* ``bilinear-aliased``: OpenCV's ``INTER_LINEAR`` (2 x 2 input pixels, no antialiasing), what most GPU and
  video scalers do;
* ``blur``: a Gaussian blur (sigma 1.2, 9 x 9, mirrored borders) before the protocol's bicubic (an optical
  low-pass or a soft camera);
* ``noise``: the protocol's LR plus Gaussian noise of sigma 5 grey levels, seeded by the image's name and the
  scale (sensor noise);
* ``jpeg``: the protocol's LR saved as JPEG at quality 75 (Pillow, 4:2:0) and decoded (web images, thumbnails).

The two OpenCV resizes are computed here in NumPy, in OpenCV's own fixed-point arithmetic (11-bit
coefficients, the half-pixel centres, replicated borders), and checked against vectors made once with OpenCV
4.14 and 5.1 (tests/data/opencv_resize.npz): OpenCV is not a dependency.
"""

from __future__ import annotations

import hashlib
import io

import numpy as np

from ..errors import EdgesrError
from ..imaging import modcrop
from .bicubic import imresize

__all__ = ["EVAL_DEGRADATIONS", "DegradationError", "degrade", "opencv_resize", "gaussian_blur"]

EVAL_DEGRADATIONS = ("bicubic", "cubic-aliased", "bilinear-aliased", "blur", "noise", "jpeg")
"""The named degradations, in the order reports list them."""

BLUR_SIGMA = 1.2
NOISE_SIGMA = 5.0
JPEG_QUALITY = 75

_COEF_BITS = 11
_COEF_SCALE = 1 << _COEF_BITS


class DegradationError(EdgesrError, ValueError):
    """An unknown degradation name, or an image it cannot be applied to."""


def _cubic_coeffs(x: np.ndarray, a: float = -0.75) -> np.ndarray:
    """OpenCV's ``interpolateCubic`` in float32: weights of the pixels at -1, 0, +1, +2 from the fraction ``x``."""
    x = x.astype(np.float32)
    a = np.float32(a)
    one = np.float32(1.0)
    c0 = ((a * (x + one) - np.float32(5) * a) * (x + one) + np.float32(8) * a) * (x + one) - np.float32(4) * a
    c1 = ((a + np.float32(2)) * x - (a + np.float32(3))) * x * x + one
    c2 = ((a + np.float32(2)) * (one - x) - (a + np.float32(3))) * (one - x) * (one - x) + one
    c3 = one - c0 - c1 - c2
    return np.stack([c0, c1, c2, c3], axis=-1)


def _taps(n_in: int, n_out: int, kernel: str) -> tuple[np.ndarray, np.ndarray]:
    """(source indices, fixed-point weights) per output position along one axis, as OpenCV's resizeGeneric
    computes them: centre (d + 0.5) * n_in / n_out - 0.5 in float32, indices clamped to the image (replicated
    border), weights rounded to 11 bits."""
    scale = n_in / n_out
    f = ((np.arange(n_out, dtype=np.float64) + 0.5) * scale - 0.5).astype(np.float32)
    s = np.floor(f).astype(np.int64)
    frac = (f - s.astype(np.float32)).astype(np.float32)
    if kernel == "cubic":
        w = _cubic_coeffs(frac)
        idx = s[:, None] + np.arange(-1, 3)[None, :]
    else:  # linear: OpenCV clamps the position itself at the borders (weight 1 on the edge pixel)
        low, high = s < 0, s >= n_in - 1
        frac = np.where(low | high, np.float32(0), frac)
        s = np.where(low, 0, np.where(high, n_in - 1, s))
        w = np.stack([np.float32(1) - frac, frac], axis=-1)
        idx = s[:, None] + np.arange(0, 2)[None, :]
    iw = np.rint(w.astype(np.float32) * np.float32(_COEF_SCALE)).astype(np.int64)  # saturate_cast<short>: nearest
    return np.clip(idx, 0, n_in - 1), iw


def opencv_resize(img: np.ndarray, out_hw: tuple[int, int], kernel: str = "cubic") -> np.ndarray:
    """``cv2.resize(img, (w, h), interpolation=INTER_CUBIC or INTER_LINEAR)`` of an 8-bit H x W x C image:
    horizontal pass in integers, vertical pass as OpenCV's vectorised code rounds it (cubic: float, nearest;
    linear: 16-bit high products). Equal to OpenCV's output, or one grey level off where its scalar tail
    rounds a value differently (tested against vectors made with OpenCV)."""
    if img.dtype != np.uint8 or img.ndim != 3:
        raise DegradationError(f"opencv_resize takes 8-bit H x W x C images, got {img.dtype} {img.shape}")
    if kernel not in ("cubic", "linear"):
        raise DegradationError(f"kernel {kernel!r}: use 'cubic' or 'linear'")
    h, w = out_hw
    xi, xw = _taps(img.shape[1], w, kernel)
    yi, yw = _taps(img.shape[0], h, kernel)
    src = img.astype(np.int64)
    rows = np.einsum("hwkc,wk->hwc", src[:, xi, :], xw)  # H x w x C, ints scaled by 2^11
    if kernel == "cubic":
        acc = np.einsum("hkwc,hk->hwc", rows[yi, :, :].astype(np.float64), yw.astype(np.float64))
        out = np.rint(acc / float(_COEF_SCALE * _COEF_SCALE))
    else:
        r = rows[yi, :, :] >> 4  # the 32-bit sums brought to 16 bits, then products' high halves
        hi = (r * yw[:, :, None, None]) >> 16
        out = (hi.sum(axis=1) + 2) >> 2
    return np.clip(out, 0, 255).astype(np.uint8)


def gaussian_blur(img: np.ndarray, sigma: float = BLUR_SIGMA, radius: int = 4) -> np.ndarray:
    """Separable Gaussian blur (normalised (2 radius + 1)-tap kernel, mirrored borders) of an 8-bit image,
    rounded back to 8 bits."""
    t = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-0.5 * (t / sigma) ** 2)
    k /= k.sum()
    x = np.pad(img.astype(np.float64), ((radius, radius), (radius, radius), (0, 0)), mode="symmetric")
    x = sum(k[i] * x[:, i:i + img.shape[1]] for i in range(2 * radius + 1))
    x = sum(k[i] * x[i:i + img.shape[0]] for i in range(2 * radius + 1))
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def _seed(name: str, scale: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{name}/x{scale}".encode()).digest()[:8], "little")


def degrade(hr: np.ndarray, scale: int, degradation: str, *, name: str = "") -> np.ndarray:
    """The 8-bit LR image that ``degradation`` makes from ``hr`` (mod-cropped to ``scale`` first). ``name``
    seeds the random ones (``noise``), so every image of a set gets its own, reproducible, noise."""
    if degradation not in EVAL_DEGRADATIONS:
        raise DegradationError(f"degradation {degradation!r}: use one of {', '.join(EVAL_DEGRADATIONS)}")
    if hr.dtype != np.uint8:
        raise DegradationError(f"{name or 'image'}: degradations take 8-bit images, got {hr.dtype}")
    hr = modcrop(hr, scale)
    size = (hr.shape[0] // scale, hr.shape[1] // scale)
    if degradation == "cubic-aliased":
        return opencv_resize(hr, size, "cubic")
    if degradation == "bilinear-aliased":
        return opencv_resize(hr, size, "linear")
    if degradation == "blur":
        return imresize(gaussian_blur(hr), 1.0 / scale)
    lr = imresize(hr, 1.0 / scale)
    if degradation == "noise":
        rng = np.random.default_rng(_seed(name, scale))
        noisy = lr.astype(np.float64) + rng.normal(0.0, NOISE_SIGMA, lr.shape)
        return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
    if degradation == "jpeg":
        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray(lr).save(buf, format="JPEG", quality=JPEG_QUALITY)
        return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
    return lr
