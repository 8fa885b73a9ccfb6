"""Image I/O at the edge of the toolchain: read, validate, convert, write.

Every image that enters edgesr comes through :func:`read_image`, which turns the ways a file can be wrong
(missing, corrupt, truncated, a mode that cannot be converted without losing information) into an
:class:`ImageError` naming the file and the fix. Grey images become three equal channels (lossless);
an opaque alpha channel is dropped (lossless); a translucent one is refused rather than guessed at.
16-bit grey images are kept at 16 bits; 16-bit colour PNGs are refused because the decoder (Pillow)
would silently cut them to 8 bits.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import EdgesrError
from .files import atomic_write_bytes

if TYPE_CHECKING:  # imported lazily: reading images needs no torch
    import torch

__all__ = [
    "ImageError", "read_image", "write_image", "modcrop", "to_float", "to_uint8",
    "image_to_tensor", "IMAGE_SUFFIXES", "DEFAULT_MAX_PIXELS",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")

DEFAULT_MAX_PIXELS = int(os.environ.get("EDGESR_MAX_PIXELS", 200_000_000))
"""Images with more pixels than this are refused before decoding (a small file can declare a huge image:
a decompression bomb). ``edgesr upscale --max-pixels N`` or the ``EDGESR_MAX_PIXELS`` variable raise it."""


class ImageError(EdgesrError, ValueError):
    """An image file that edgesr cannot use as it is; the message names the file and the fix."""


def _png_bit_depth_and_colour(path: Path) -> tuple[int, int] | None:
    with open(path, "rb") as fh:
        head = fh.read(26)
    if len(head) < 26 or head[:8] != b"\x89PNG\r\n\x1a\n":
        return None
    return head[24], head[25]


def read_image(path: str | os.PathLike, max_pixels: int | None = None) -> np.ndarray:
    """Read an image as an H x W x 3 array: ``uint8``, or ``uint16`` for 16-bit grey files. Images with
    more than ``max_pixels`` (default :data:`DEFAULT_MAX_PIXELS`) pixels are refused before decoding."""
    path = Path(path)
    max_pixels = DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels
    if path.is_dir():
        raise ImageError(f"{path}: is a directory, not an image file. Name an image inside it.")
    if not path.is_file():
        raise ImageError(f"{path}: no such image file. Check the path (relative paths start at {Path.cwd()}).")
    if path.stat().st_size == 0:
        raise ImageError(f"{path}: is empty (0 bytes); the copy or download did not finish. Copy it again.")
    png = _png_bit_depth_and_colour(path)
    if png is not None and png[0] == 16 and png[1] in (2, 6):
        raise ImageError(
            f"{path}: 16-bit colour PNG. Its decoder would cut it to 8 bits without telling; convert it "
            "to 8-bit yourself (e.g. `convert in.png -depth 8 out.png`) so the loss is your choice.")
    pil_limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None  # edgesr's own limit, below, replaces Pillow's warning/error pair
    try:
        with Image.open(path) as im:
            w, h = im.size
            if w * h > max_pixels:
                raise ImageError(
                    f"{path}: declares {w}x{h} = {w * h:,} pixels, over the limit of {max_pixels:,} (a guard against "
                    "decompression bombs: small files that expand to huge images). If the image is genuine, raise "
                    f"the limit: edgesr upscale --max-pixels {w * h}, or EDGESR_MAX_PIXELS={w * h}.")
            if getattr(im, "n_frames", 1) > 1:
                raise ImageError(f"{path}: has {im.n_frames} frames (an animation or multi-page file); edgesr "
                                 "upscales single images. Extract the frame you want first.")
            im.load()
            mode = im.mode
            if mode == "CMYK":
                raise ImageError(f"{path}: CMYK image (a print colour space); converting it to RGB needs its colour "
                                 "profile. Convert it to RGB yourself (e.g. `convert in.jpg -colorspace sRGB out.png`).")
            if mode == "P":
                im = im.convert("RGBA")
                mode = "RGBA"
            elif mode == "1":
                im = im.convert("L")
                mode = "L"
            arr = np.asarray(im)
    except ImageError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageError(
            f"{path}: cannot decode this image ({exc}). The file is corrupt, truncated or not an image: "
            "re-export or re-copy it, or remove it from the folder.") from exc
    finally:
        Image.MAX_IMAGE_PIXELS = pil_limit
    if mode in ("I;16", "I;16B", "I;16L", "I") and arr.ndim == 2:
        if arr.max(initial=0) > 65535 or arr.min(initial=0) < 0:
            raise ImageError(f"{path}: 32-bit integer image; only 8- and 16-bit images are supported. "
                             "Convert it to 16-bit PNG.")
        arr = arr.astype(np.uint16)
        return np.repeat(arr[:, :, None], 3, axis=2)
    if mode == "L":
        return np.repeat(arr[:, :, None], 3, axis=2)
    if mode in ("LA", "RGBA"):
        alpha = arr[..., -1]
        if alpha.min() < 255:
            raise ImageError(
                f"{path}: has a transparent alpha channel ({mode}); super-resolving colour behind "
                "transparency is undefined. Flatten it onto a background first (e.g. "
                "`convert in.png -background white -flatten out.png`).")
        colour = arr[..., :-1]
        return np.repeat(colour, 3, axis=2) if mode == "LA" else np.ascontiguousarray(colour)
    if mode == "RGB":
        return arr
    raise ImageError(f"{path}: image mode {mode!r} is not supported (use 8-bit RGB or grey, or 16-bit grey). "
                     "Convert it to an 8-bit RGB PNG.")


WRITE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP", ".tif": "TIFF", ".tiff": "TIFF",
                 ".webp": "WEBP"}


def write_image(path: str | os.PathLike, img: np.ndarray) -> Path:
    """Write an H x W x 3 ``uint8`` image atomically (a crash never leaves half a file), in the format its
    suffix names, with the user's umask."""
    path = Path(path)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"write_image expects an HxWx3 uint8 array, got {img.dtype} {img.shape}")
    fmt = WRITE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ImageError(f"{path}: the suffix {path.suffix or '(none)'!r} names no image format edgesr writes; use "
                         f"one of {', '.join(sorted(WRITE_FORMATS))}.")
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return atomic_write_bytes(path, buf.getvalue())


def modcrop(img: np.ndarray, scale: int) -> np.ndarray:
    """Crop H and W to multiples of ``scale``, keeping the top-left corner (the benchmark convention)."""
    h, w = img.shape[:2]
    return img[: h - h % scale, : w - w % scale]


def to_float(img: np.ndarray) -> np.ndarray:
    """``uint8``/``uint16`` image to float32 in [0, 1]."""
    if img.dtype == np.uint8:
        return img.astype(np.float32) / 255.0
    if img.dtype == np.uint16:
        return img.astype(np.float32) / 65535.0
    if np.issubdtype(img.dtype, np.floating):
        return img.astype(np.float32)
    raise TypeError(f"unsupported image dtype {img.dtype}")


def to_uint8(img: np.ndarray) -> np.ndarray:
    """Float image in [0, 1] to ``uint8``: clamp, scale, round (the protocol's quantisation of SR output)."""
    return np.clip(np.round(np.asarray(img, dtype=np.float64) * 255.0), 0, 255).astype(np.uint8)


def image_to_tensor(img: np.ndarray) -> "torch.Tensor":
    """H x W x 3 image to a 1 x 3 x H x W float32 tensor in [0, 1] (the model input convention)."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(to_float(img).transpose(2, 0, 1)))[None]
