"""Image I/O at the edge of the toolchain: read, validate, convert, write.

Every image that enters edgesr comes through :func:`read_image`, which turns the ways a file can be wrong
(missing, corrupt, truncated, a mode that cannot be converted without losing information) into an
:class:`ImageError` naming the file and the fix. Grey images become three equal channels (lossless);
an opaque alpha channel is dropped (lossless); a translucent one is refused rather than guessed at.
16-bit grey images are kept at 16 bits; 16-bit colour PNGs are refused because the decoder (Pillow)
would silently cut them to 8 bits.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

__all__ = [
    "ImageError", "read_image", "write_image", "modcrop", "to_float", "to_uint8",
    "image_to_tensor", "tensor_to_image", "IMAGE_SUFFIXES",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


class ImageError(ValueError):
    """An image file that edgesr cannot use as it is; the message names the file and the fix."""


def _png_bit_depth_and_colour(path: Path) -> tuple[int, int] | None:
    with open(path, "rb") as fh:
        head = fh.read(26)
    if len(head) < 26 or head[:8] != b"\x89PNG\r\n\x1a\n":
        return None
    return head[24], head[25]


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image as an H x W x 3 array: ``uint8``, or ``uint16`` for 16-bit grey files."""
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path}: no such image file. Check the path (relative paths start at {Path.cwd()}).")
    png = _png_bit_depth_and_colour(path)
    if png is not None and png[0] == 16 and png[1] in (2, 6):
        raise ImageError(
            f"{path}: 16-bit colour PNG. Its decoder would cut it to 8 bits without telling; convert it "
            "to 8-bit yourself (e.g. `convert in.png -depth 8 out.png`) so the loss is your choice.")
    try:
        with Image.open(path) as im:
            im.load()
            mode = im.mode
            if mode == "P":
                im = im.convert("RGBA")
                mode = "RGBA"
            elif mode == "1":
                im = im.convert("L")
                mode = "L"
            arr = np.asarray(im)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageError(
            f"{path}: cannot decode this image ({exc}). The file is corrupt, truncated or not an image: "
            "re-export or re-copy it, or remove it from the folder.") from exc
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


def write_image(path: str | os.PathLike, img: np.ndarray) -> Path:
    """Write an H x W x 3 ``uint8`` image atomically (a crash never leaves half a file)."""
    path = Path(path)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"write_image expects an HxWx3 uint8 array, got {img.dtype} {img.shape}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG"}.get(path.suffix.lower(), None)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix or ".png")
    os.close(fd)
    try:
        Image.fromarray(img).save(tmp, format=fmt or Image.registered_extensions().get(path.suffix.lower(), "PNG"))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


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


def image_to_tensor(img: np.ndarray) -> torch.Tensor:
    """H x W x 3 image to a 1 x 3 x H x W float32 tensor in [0, 1] (the model input convention)."""
    return torch.from_numpy(np.ascontiguousarray(to_float(img).transpose(2, 0, 1)))[None]


def tensor_to_image(t: torch.Tensor | np.ndarray) -> np.ndarray:
    """1 x 3 x H x W (or 3 x H x W) float output to an H x W x 3 ``uint8`` image."""
    arr = t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)
    if arr.ndim == 4:
        if arr.shape[0] != 1:
            raise ValueError(f"expected a batch of one image, got {arr.shape}")
        arr = arr[0]
    return to_uint8(arr.transpose(1, 2, 0))
