"""Image I/O at the edge of the toolchain: read, validate, convert, write.

Every image that enters edgesr comes through :func:`read_image`, which turns the ways a file can be wrong
(missing, corrupt, truncated, a mode that cannot be converted without losing information) into an
:class:`ImageError` naming the file and the fix. Grey images become three equal channels (lossless);
for training and evaluation (:func:`read_image`) an opaque alpha channel is dropped (lossless), a translucent
one is refused rather than guessed at, and 16-bit colour is refused; for upscaling (:func:`read_picture`)
transparency is kept as a separate alpha channel and 16-bit files stay 16-bit (16-bit colour PNGs are
decoded by pypng, since Pillow would cut them to 8 bits).
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import EdgesrError
from .files import atomic_write_bytes

if TYPE_CHECKING:  # imported lazily: reading images needs no torch
    import torch

__all__ = [
    "ImageError", "Picture", "read_image", "read_picture", "write_image", "write_picture", "modcrop", "to_float",
    "to_uint8", "to_uint16",
    "image_to_tensor", "IMAGE_SUFFIXES", "DEFAULT_MAX_PIXELS", "env_max_pixels",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


class ImageError(EdgesrError, ValueError):
    """An image file that edgesr cannot use as it is; the message names the file and the fix."""


def env_max_pixels() -> int:
    """``EDGESR_MAX_PIXELS`` when it is set (checked: a positive whole number), else 200 million."""
    text = os.environ.get("EDGESR_MAX_PIXELS", "").strip().replace("_", "")
    if not text:
        return 200_000_000
    if not text.isdigit() or int(text) < 1:
        raise ImageError(f"EDGESR_MAX_PIXELS={os.environ['EDGESR_MAX_PIXELS']!r}: not a positive whole number of "
                         "pixels; set it to e.g. 400000000, or unset it (default 200,000,000).")
    return int(text)


try:
    DEFAULT_MAX_PIXELS = env_max_pixels()
except EdgesrError:  # the CLI reports it with the fix before any command runs; importing never fails on it
    DEFAULT_MAX_PIXELS = 200_000_000
"""Images with more pixels than this are refused before decoding (a small file can declare a huge image:
a decompression bomb). ``edgesr upscale --max-pixels N`` or the ``EDGESR_MAX_PIXELS`` variable raise it."""


def _png_bit_depth_and_colour(path: Path) -> tuple[int, int] | None:
    with open(path, "rb") as fh:
        head = fh.read(26)
    if len(head) < 26 or head[:8] != b"\x89PNG\r\n\x1a\n":
        return None
    return head[24], head[25]


def _decode(path: Path, max_pixels: int | None) -> tuple[np.ndarray, str, bytes | None]:
    """Checked decode: the file exists, is not empty, declares at most ``max_pixels`` pixels, is one frame and
    not CMYK. Returns the array and its mode (Pillow's names; 16-bit colour PNGs, which Pillow would cut to
    8 bits, are decoded by pypng as ``RGB;16`` / ``RGBA;16``)."""
    max_pixels = DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels
    if path.is_dir():
        raise ImageError(f"{path}: is a directory, not an image file. Name an image inside it.")
    if not path.is_file():
        raise ImageError(f"{path}: no such image file. Check the path (relative paths start at {Path.cwd()}).")
    if path.stat().st_size == 0:
        raise ImageError(f"{path}: is empty (0 bytes); the copy or download did not finish. Copy it again.")
    png16 = _png_bit_depth_and_colour(path)
    png16 = png16 is not None and png16[0] == 16 and png16[1] in (2, 6)
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
            if png16:
                return (_read_png16(path), "RGBA;16" if _png_bit_depth_and_colour(path)[1] == 6 else "RGB;16",
                        im.info.get("icc_profile") or None)
            im.load()
            icc = im.info.get("icc_profile") or None
            if im.getexif().get(0x0112, 1) != 1:  # EXIF Orientation: apply it, as every viewer does
                im = ImageOps.exif_transpose(im)
            mode = im.mode
            if mode == "CMYK":
                raise ImageError(f"{path}: CMYK image (a print colour space); converting it to RGB needs its colour "
                                 "profile. Convert it to RGB yourself (e.g. `convert in.jpg -colorspace sRGB out.png`).")
            if mode == "P":  # palette: RGBA only when the palette has transparency
                mode = "RGBA" if "transparency" in im.info else "RGB"
                im = im.convert(mode)
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
        return arr.astype(np.uint16), "L;16", icc
    if mode not in ("L", "LA", "RGB", "RGBA"):
        raise ImageError(f"{path}: image mode {mode!r} is not supported (use 8-bit RGB or grey, or 16-bit grey). "
                         "Convert it to an 8-bit RGB PNG.")
    return arr, mode, icc


def _read_png16(path: Path) -> np.ndarray:
    """A 16-bit colour PNG as H x W x 3 or 4 ``uint16`` (pypng: Pillow decodes these to 8 bits)."""
    import png

    try:
        w, h, rows, info = png.Reader(filename=str(path)).asDirect()
        planes = info["planes"]
        arr = np.vstack([np.asarray(r, dtype=np.uint16) for r in rows])
    except (png.Error, OSError, ValueError, EOFError) as exc:
        raise ImageError(f"{path}: cannot decode this 16-bit PNG ({exc}). The file is corrupt or truncated: "
                         "re-export or re-copy it.") from exc
    if arr.size != w * h * planes:
        raise ImageError(f"{path}: 16-bit PNG is truncated ({arr.size} of {w * h * planes} samples). Re-copy it.")
    return arr.reshape(h, w, planes)


def read_image(path: str | os.PathLike, max_pixels: int | None = None) -> np.ndarray:
    """Read an image as an H x W x 3 array: ``uint8``, or ``uint16`` for 16-bit grey files (the strict reader
    of training and evaluation data). Images with more than ``max_pixels`` (default
    :data:`DEFAULT_MAX_PIXELS`) pixels are refused before decoding. For upscaling, :func:`read_picture` also
    takes transparency and 16-bit colour."""
    path = Path(path)
    arr, mode, _ = _decode(path, max_pixels)
    if mode in ("RGB;16", "RGBA;16"):
        raise ImageError(
            f"{path}: 16-bit colour PNG. Training and evaluation data are 8-bit; convert it to 8-bit yourself "
            "(e.g. `convert in.png -depth 8 out.png`) so the loss is your choice. (`edgesr upscale` takes it at "
            "16 bits.)")
    if mode in ("L", "L;16"):
        return np.repeat(arr[:, :, None], 3, axis=2)
    if mode in ("LA", "RGBA"):
        alpha = arr[..., -1]
        if alpha.min() < 255:
            raise ImageError(
                f"{path}: has a transparent alpha channel ({mode}); super-resolving colour behind "
                "transparency is undefined for training and evaluation. Flatten it onto a background first (e.g. "
                "`convert in.png -background white -flatten out.png`). (`edgesr upscale` keeps transparency.)")
        colour = arr[..., :-1]
        return np.repeat(colour, 3, axis=2) if mode == "LA" else np.ascontiguousarray(colour)
    return arr


@dataclass
class Picture:
    """An image as a user has it: colour (H x W x 3), an optional alpha channel (H x W), both ``uint8`` or
    both ``uint16`` (16-bit files stay 16-bit)."""

    rgb: np.ndarray
    alpha: np.ndarray | None = None
    icc: bytes | None = None
    """The colour profile (ICC) of the file it was read from, written with it (8-bit PNG, JPEG, WebP, TIFF)."""

    @property
    def bits(self) -> int:
        return 16 if self.rgb.dtype == np.uint16 else 8


def read_picture(path: str | os.PathLike, max_pixels: int | None = None) -> Picture:
    """Read an image for upscaling: grey and palette images become RGB, transparency is kept as a separate
    alpha channel, 16-bit files (grey or colour) stay 16-bit. Same checks and errors as :func:`read_image`."""
    path = Path(path)
    arr, mode, icc = _decode(path, max_pixels)
    if mode in ("L", "L;16"):
        return Picture(np.repeat(arr[:, :, None], 3, axis=2), icc=None)  # a grey profile does not fit RGB
    if mode == "LA":
        return Picture(np.repeat(arr[..., :1], 3, axis=2), np.ascontiguousarray(arr[..., 1]), icc=None)
    if mode in ("RGBA", "RGBA;16"):
        return Picture(np.ascontiguousarray(arr[..., :3]), np.ascontiguousarray(arr[..., 3]), icc=icc)
    return Picture(np.ascontiguousarray(arr), icc=icc)


WRITE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP", ".tif": "TIFF", ".tiff": "TIFF",
                 ".webp": "WEBP"}


def write_image(path: str | os.PathLike, img: np.ndarray) -> Path:
    """Write an H x W x 3 ``uint8`` image atomically (a crash never leaves half a file), in the format its
    suffix names, with the user's umask."""
    path = Path(path)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"write_image expects an HxWx3 uint8 array, got {img.dtype} {img.shape}")
    return write_picture(path, Picture(img))


ALPHA_FORMATS = {"PNG", "WEBP", "TIFF"}


def write_picture(path: str | os.PathLike, pic: Picture) -> Path:
    """Write a :class:`Picture` atomically in the format its suffix names: 8-bit through Pillow (alpha in
    PNG, WebP and TIFF), 16-bit (with or without alpha) as PNG through pypng."""
    path = Path(path)
    fmt = WRITE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ImageError(f"{path}: the suffix {path.suffix or '(none)'!r} names no image format edgesr writes; use "
                         f"one of {', '.join(sorted(WRITE_FORMATS))}.")
    rgb, alpha = pic.rgb, pic.alpha
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"write_picture expects HxWx3 uint8 or uint16 colour, got {rgb.dtype} {rgb.shape}")
    if alpha is not None and (alpha.shape != rgb.shape[:2] or alpha.dtype != rgb.dtype):
        raise ValueError(f"write_picture: alpha {alpha.dtype} {alpha.shape} does not match colour {rgb.dtype} {rgb.shape}")
    if alpha is not None and fmt not in ALPHA_FORMATS:
        raise ImageError(f"{path}: {fmt} cannot store transparency, and the image has an alpha channel; write "
                         f"{path.with_suffix('.png').name} (or .webp/.tif) instead.")
    buf = io.BytesIO()
    if rgb.dtype == np.uint16:
        if fmt != "PNG":
            raise ImageError(f"{path}: a 16-bit image is written as 16-bit PNG only; write "
                             f"{path.with_suffix('.png').name} instead.")
        import png

        planes = 3 if alpha is None else 4
        data = rgb if alpha is None else np.dstack([rgb, alpha])
        h, w = rgb.shape[:2]
        png.Writer(w, h, greyscale=False, alpha=alpha is not None, bitdepth=16).write(
            buf, data.reshape(h, w * planes))
    else:
        im = Image.fromarray(rgb) if alpha is None else Image.fromarray(np.dstack([rgb, alpha]), "RGBA")
        im.save(buf, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}),
                **({"lossless": True} if fmt == "WEBP" else {}), **({"icc_profile": pic.icc} if pic.icc else {}))
    return atomic_write_bytes(path, buf.getvalue())


STREAM_PIXELS = 64_000_000
"""8-bit PNG outputs with more pixels than this (192 MB and up) are assembled in a memory-mapped file and written
a band of rows at a time (:func:`write_png_rows`), so memory stays bounded however large the image."""


def write_png_rows(path: str | os.PathLike, rgb: np.ndarray, icc: bytes | None = None, rows_per_chunk: int = 64) -> Path:
    """Write an 8-bit H x W x 3 image (any array: a memory map of an output larger than RAM included) as PNG,
    a band of rows at a time (each row Sub-filtered, deflated as it goes): memory stays at one band however large
    the image. Keeps the ICC profile (an iCCP chunk). Atomic, as every writer here."""
    import struct
    import zlib

    from .files import atomic_path

    h, w = rgb.shape[:2]
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"write_png_rows expects H x W x 3 uint8, got {rgb.dtype} {rgb.shape}")

    def chunk(fh, kind: bytes, data: bytes) -> None:
        fh.write(struct.pack(">I", len(data)) + kind + data)
        fh.write(struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fh.write(b"\x89PNG\r\n\x1a\n")
        chunk(fh, b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))  # 8-bit RGB, deflate, no interlace
        if icc:
            chunk(fh, b"iCCP", b"ICC profile\x00\x00" + zlib.compress(icc))
        z = zlib.compressobj(6)
        for y0 in range(0, h, rows_per_chunk):
            band = np.asarray(rgb[y0:y0 + rows_per_chunk]).reshape(-1, w * 3)
            sub = band.copy()
            sub[:, 3:] -= band[:, :-3]  # filter type 1 (Sub): each byte minus the one a pixel to its left (mod 256)
            data = np.concatenate([np.ones((len(sub), 1), np.uint8), sub], axis=1)
            out = z.compress(data.tobytes())
            if out:
                chunk(fh, b"IDAT", out)
        chunk(fh, b"IDAT", z.flush())
        chunk(fh, b"IEND", b"")
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


def to_uint16(img: np.ndarray) -> np.ndarray:
    """Float image in [0, 1] to ``uint16``: clamp, scale, round."""
    return np.clip(np.round(np.asarray(img, dtype=np.float64) * 65535.0), 0, 65535).astype(np.uint16)


def to_uint8(img: np.ndarray) -> np.ndarray:
    """Float image in [0, 1] to ``uint8``: clamp, scale, round (the protocol's quantisation of SR output)."""
    return np.clip(np.round(np.asarray(img, dtype=np.float64) * 255.0), 0, 255).astype(np.uint8)


def image_to_tensor(img: np.ndarray) -> "torch.Tensor":
    """H x W x 3 image to a 1 x 3 x H x W float32 tensor in [0, 1] (the model input convention)."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(to_float(img).transpose(2, 0, 1)))[None]
