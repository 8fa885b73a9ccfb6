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

__all__ = ["EVAL_DEGRADATIONS", "TRAIN_DEGRADATIONS", "GENERAL_MIX", "RESIZE_KINDS", "DegradationError", "DegradationSpec",
           "degrade", "opencv_resize", "gaussian_blur", "general_degradation", "resolve_mix", "mix_of",
           "degradation_record", "training_record", "degraded_sets"]

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


def _taps(n_in: int, n_out: int, kernel: str, a: float = -0.75) -> tuple[np.ndarray, np.ndarray]:
    """(source indices, fixed-point weights) per output position along one axis, as OpenCV's resizeGeneric
    computes them: centre (d + 0.5) * n_in / n_out - 0.5 in float32, indices clamped to the image (replicated
    border), weights rounded to 11 bits."""
    scale = n_in / n_out
    f = ((np.arange(n_out, dtype=np.float64) + 0.5) * scale - 0.5).astype(np.float32)
    s = np.floor(f).astype(np.int64)
    frac = (f - s.astype(np.float32)).astype(np.float32)
    if kernel == "cubic":
        w = _cubic_coeffs(frac, a)
        idx = s[:, None] + np.arange(-1, 3)[None, :]
    else:  # linear: OpenCV clamps the position itself at the borders (weight 1 on the edge pixel)
        low, high = s < 0, s >= n_in - 1
        frac = np.where(low | high, np.float32(0), frac)
        s = np.where(low, 0, np.where(high, n_in - 1, s))
        w = np.stack([np.float32(1) - frac, frac], axis=-1)
        idx = s[:, None] + np.arange(0, 2)[None, :]
    iw = np.rint(w.astype(np.float32) * np.float32(_COEF_SCALE)).astype(np.int64)  # saturate_cast<short>: nearest
    return np.clip(idx, 0, n_in - 1), iw


def opencv_resize(img: np.ndarray, out_hw: tuple[int, int], kernel: str = "cubic", a: float = -0.75) -> np.ndarray:
    """``cv2.resize(img, (w, h), interpolation=INTER_CUBIC or INTER_LINEAR)`` of an 8-bit H x W x C image:
    horizontal pass in integers, vertical pass as OpenCV's vectorised code rounds it (cubic: float, nearest;
    linear: 16-bit high products). Equal to OpenCV's output, or one grey level off where its scalar tail
    rounds a value differently (tested against vectors made with OpenCV). ``a``: the cubic's parameter
    (OpenCV's is -0.75; -0.5 is the Keys / MATLAB / Pillow kernel, here without antialiasing)."""
    if img.dtype != np.uint8 or img.ndim != 3:
        raise DegradationError(f"opencv_resize takes 8-bit H x W x C images, got {img.dtype} {img.shape}")
    if kernel not in ("cubic", "linear"):
        raise DegradationError(f"kernel {kernel!r}: use 'cubic' or 'linear'")
    h, w = out_hw
    xi, xw = _taps(img.shape[1], w, kernel, a)
    yi, yw = _taps(img.shape[0], h, kernel, a)
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


# --- training: a seeded random mix of what real frames go through ------------------------------------------

TRAIN_DEGRADATIONS = ("bicubic", "general")
"""``data.degradation`` values for training: ``bicubic`` (the protocol, the default) or ``general``, the mix
of :func:`general_degradation`."""

GENERAL_MIX = {
    "blur": 0.15, "blur_sigma": (0.2, 2.0), "anisotropic": 0.5,
    "resize": {"bicubic": 0.35, "cubic-aliased": 0.25, "cubic-aliased-0.5": 0.1, "bilinear-aliased": 0.1,
               "area": 0.1, "nearest": 0.1},
    "noise": 0.15, "noise_sigma": (1.0, 10.0), "poisson": 0.3, "poisson_peak": (30.0, 300.0),
    "jpeg": 0.15, "jpeg_quality": (40, 95),
}
"""The ``general`` mix, in the order applied (first-order, as the real-world SR literature degrades): a blur
(isotropic or anisotropic Gaussian, sigma in HR pixels), one downscale drawn from the kernels named, noise
(Gaussian in grey levels, or Poisson at a peak count), a JPEG round trip; each image 8-bit between steps.
Recorded in the manifest of every model trained on it."""


def _gaussian_kernel(rng: np.random.Generator, lo: float, hi: float, anisotropic: float) -> np.ndarray:
    s1 = rng.uniform(lo, hi)
    if rng.random() < anisotropic:
        s2, theta = rng.uniform(lo, hi), rng.uniform(0, np.pi)
    else:
        s2, theta = s1, 0.0
    r = min(6, int(np.ceil(3 * max(s1, s2))))
    y, x = np.mgrid[-r:r + 1, -r:r + 1].astype(np.float64)
    c, s = np.cos(theta), np.sin(theta)
    u, v = c * x + s * y, -s * x + c * y
    k = np.exp(-0.5 * ((u / s1) ** 2 + (v / s2) ** 2))
    return k / k.sum()


def _convolve(img: np.ndarray, k: np.ndarray) -> np.ndarray:
    r = k.shape[0] // 2
    x = np.pad(img.astype(np.float64), ((r, r), (r, r), (0, 0)), mode="symmetric")
    h, w = img.shape[:2]
    out = np.zeros(img.shape, np.float64)
    for i in range(k.shape[0]):
        for j in range(k.shape[1]):
            if k[i, j] > 1e-6:
                out += k[i, j] * x[i:i + h, j:j + w]
    return out


def _u8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def _downscale(hr: np.ndarray, scale: int, kind: str) -> np.ndarray:
    h, w = hr.shape[0] // scale, hr.shape[1] // scale
    if kind == "bicubic":
        return imresize(hr, 1.0 / scale)
    if kind == "cubic-aliased":
        return opencv_resize(hr, (h, w), "cubic")
    if kind == "cubic-aliased-0.5":
        return opencv_resize(hr, (h, w), "cubic", a=-0.5)
    if kind == "bilinear-aliased":
        return opencv_resize(hr, (h, w), "linear")
    if kind == "area":
        return _u8(hr[:h * scale, :w * scale].reshape(h, scale, w, scale, -1).mean(axis=(1, 3)))
    if kind == "nearest":  # OpenCV INTER_NEAREST: the pixel at floor(d * scale)
        return np.ascontiguousarray(hr[:h * scale:scale, :w * scale:scale])
    raise DegradationError(f"downscale {kind!r}")


def general_degradation(hr: np.ndarray, scale: int, rng: np.random.Generator, mix: dict = GENERAL_MIX) -> tuple[np.ndarray, dict]:
    """One draw of the ``general`` mix on an 8-bit HR image (its sides multiples of ``scale``): (8-bit LR, what
    was applied). Deterministic for a given ``rng`` state."""
    applied: dict = {}
    x = hr
    if rng.random() < mix["blur"]:
        k = _gaussian_kernel(rng, *mix["blur_sigma"], mix["anisotropic"])
        x = _u8(_convolve(x, k))
        applied["blur"] = k.shape[0]
    kinds = list(mix["resize"])
    kind = kinds[int(rng.choice(len(kinds), p=np.array([mix["resize"][k] for k in kinds]) / sum(mix["resize"].values())))]
    x = _downscale(x, scale, kind)
    applied["resize"] = kind
    if rng.random() < mix["noise"]:
        if rng.random() < mix["poisson"]:
            peak = rng.uniform(*mix["poisson_peak"])
            x = _u8(rng.poisson(x.astype(np.float64) / 255.0 * peak) / peak * 255.0)
            applied["noise"] = f"poisson {peak:.0f}"
        else:
            sigma = rng.uniform(*mix["noise_sigma"])
            x = _u8(x.astype(np.float64) + rng.normal(0.0, sigma, x.shape))
            applied["noise"] = f"gaussian {sigma:.1f}"
    if rng.random() < mix["jpeg"]:
        from PIL import Image

        q = int(rng.integers(mix["jpeg_quality"][0], mix["jpeg_quality"][1] + 1))
        buf = io.BytesIO()
        Image.fromarray(x).save(buf, format="JPEG", quality=q)
        x = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
        applied["jpeg"] = q
    return x, applied


RESIZE_KINDS = ("bicubic", "cubic-aliased", "cubic-aliased-0.5", "bilinear-aliased", "area", "nearest")
"""The downscales the ``general`` mix draws from (``resize`` weights)."""

_PROBABILITIES = ("blur", "anisotropic", "noise", "poisson", "jpeg")
_RANGES = {"blur_sigma": (0.05, 6.0), "noise_sigma": (0.0, 100.0), "poisson_peak": (1.0, 1e5), "jpeg_quality": (1, 100)}


def resolve_mix(overrides: dict | None = None, where: str = "data.degradation_mix") -> dict:
    """:data:`GENERAL_MIX` with ``overrides`` (a recipe's ``data.degradation_mix``) applied, checked: the
    probabilities in [0, 1], each range (low, high) inside what its step can apply, ``resize`` a weight per
    downscale of :data:`RESIZE_KINDS` (it replaces the default weights: the kinds left out are not drawn).
    No override returns :data:`GENERAL_MIX` itself, so earlier manifests and fingerprints are unchanged."""
    if not overrides:
        return GENERAL_MIX
    mix = dict(GENERAL_MIX)
    for key, value in overrides.items():
        if key not in GENERAL_MIX:
            raise DegradationError(f"{where}: unknown key {key!r}; the mix has {', '.join(GENERAL_MIX)}")
        if key in _PROBABILITIES:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise DegradationError(f"{where}.{key}: {value!r} is a probability; give a number in [0, 1]")
            mix[key] = float(value)
        elif key in _RANGES:
            lo_ok, hi_ok = _RANGES[key]
            if (not isinstance(value, (list, tuple)) or len(value) != 2
                    or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
                    or not lo_ok <= value[0] <= value[1] <= hi_ok):
                raise DegradationError(f"{where}.{key}: {value!r}; give [low, high] with {lo_ok} <= low <= high <= "
                                       f"{hi_ok}")
            mix[key] = tuple(int(v) for v in value) if key == "jpeg_quality" else tuple(float(v) for v in value)
        else:  # resize
            if not isinstance(value, dict) or not value:
                raise DegradationError(f"{where}.resize: give a weight per downscale, e.g. {{bicubic: 0.5, "
                                       f"cubic-aliased: 0.5}}, from {', '.join(RESIZE_KINDS)}")
            for kind, weight in value.items():
                if kind not in RESIZE_KINDS:
                    raise DegradationError(f"{where}.resize: unknown downscale {kind!r}; use any of "
                                           f"{', '.join(RESIZE_KINDS)}")
                if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight < 0:
                    raise DegradationError(f"{where}.resize.{kind}: {weight!r}; weights are numbers >= 0")
            if sum(value.values()) <= 0:
                raise DegradationError(f"{where}.resize: every weight is 0; give at least one downscale a weight")
            mix[key] = {k: float(w) for k, w in value.items()}
    return mix


class DegradationSpec(str):
    """A ``data.degradation`` name that carries its mix: it is the name wherever a name is compared or printed
    (``"general"``), and ``.mix`` is what the patch sampler draws from (:func:`resolve_mix` of the recipe's
    ``data.degradation_mix``)."""

    mix: dict

    def __new__(cls, name: str, overrides: dict | None = None):
        obj = super().__new__(cls, name)
        obj.mix = resolve_mix(overrides) if name != "bicubic" else {}
        return obj


def mix_of(degradation: str) -> dict:
    """The mix a ``data.degradation`` value draws from: its own (a :class:`DegradationSpec`) or the default."""
    return getattr(degradation, "mix", None) or GENERAL_MIX


def degradation_record(name: str) -> list:
    """What a manifest (and a training fingerprint) records of ``data.degradation``: nothing for the protocol's
    bicubic (artifacts made before it existed keep their identity), else [{name, mix}] (the mix the recipe set,
    :func:`mix_of`)."""
    if name == "bicubic":
        return []
    return [{"name": str(name), "mix": mix_of(name)}]


def training_record(degradation: str, val_degraded: dict | None = None) -> list:
    """What a training checkpoint's fingerprint adds for the data's degradations: the training mix
    (:func:`degradation_record`) and the validation's LR kinds when not the protocol's alone (they choose the
    weights kept). Empty for the defaults, so that earlier checkpoints resume."""
    return degradation_record(degradation) + ([{"valid_degradations": list(val_degraded)}] if val_degraded else [])


def degraded_sets(sets: dict, scale: int, degradation: str) -> dict:
    """The same HR images (:class:`edgesr.data.datasets.ImagePair`) with LR made by ``degradation``; ``bicubic``
    keeps the sets as loaded (their LR files where they have them, the protocol's bicubic otherwise)."""
    from .datasets import ImagePair

    if degradation not in EVAL_DEGRADATIONS:
        raise DegradationError(f"degradation {degradation!r}: use one of {', '.join(EVAL_DEGRADATIONS)}")
    if degradation == "bicubic":
        return sets
    return {name: [ImagePair(p.name, degrade(p.hr, scale, degradation, name=p.name), p.hr) for p in pairs]
            for name, pairs in sets.items()}
