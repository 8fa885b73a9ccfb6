"""Upscaler: images in, images out, through any Backend — padding, tiling, clamping and rounding.

Large images are cut into LR tiles with an overlap margin on each side; each tile's SR is cropped back to
its core before it is pasted, so tile seams carry no border artefacts (with a margin at least the network's
receptive radius, the output equals the untiled one). With ``tile=0`` (the default) an image runs whole
unless it has more than ``max_pixels`` LR pixels; larger ones are tiled automatically, so an image too large
for the network's activations in memory still upscales. The ``uint8`` output is assembled tile by tile,
never as a full-size float array. 16-bit images come back at 16 bits; :meth:`Upscaler.upscale_picture`
also carries an alpha channel (resized apart with bicubic). ``layout`` takes frames as capture and decoders give them
(OpenCV's BGR, BGRx / RGBx 4-byte pixels) and returns them the same way; the network sees RGB.
"""

from __future__ import annotations

import numpy as np

from edgesr.imaging import Picture, to_float, to_uint8, to_uint16

from .base import Backend, OutputError, check_finite

__all__ = ["Upscaler", "DEFAULT_OVERLAP", "AUTO_TILE", "AUTO_MAX_PIXELS", "LAYOUTS"]

LAYOUTS = ("rgb", "bgr", "rgbx", "bgrx", "xrgb", "xbgr")
"""Pixel layouts of the frames an Upscaler takes and returns: the colour order, and where a 4-byte pixel keeps its
padding byte (``x``: ignored on the way in, 255 on the way out; an alpha channel is not this: see
:meth:`Upscaler.upscale_picture`)."""


def _layout(layout: str) -> tuple[list[int] | None, int | None]:
    """(where R, G and B sit in a pixel, or None for plain RGB; where the padding byte sits, or None)."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout {layout!r}: use one of {', '.join(LAYOUTS)} (OpenCV frames are 'bgr'; GStreamer's "
                         "BGRx is 'bgrx', RGBx 'rgbx'; an RGBA picture with real transparency goes through "
                         "upscale_picture)")
    rgb = [layout.index(c) for c in "rgb"]
    return (None if layout == "rgb" else rgb), (layout.index("x") if "x" in layout else None)

DEFAULT_OVERLAP = 16
AUTO_TILE = 1024
"""LR tile side used when an image is tiled automatically."""
AUTO_MAX_PIXELS = 2048 * 2048
"""LR images with more pixels than this are tiled automatically (``tile=0``)."""


class Upscaler:
    def __init__(self, backend: Backend, *, tile: int = 0, overlap: int = DEFAULT_OVERLAP,
                 size_multiple: int | None = None, max_pixels: int = AUTO_MAX_PIXELS, io: str = "auto",
                 layout: str = "rgb"):
        """``size_multiple``: pad inputs to multiples of it (default: what the loaded artifact's manifest says).
        ``io``: ``auto`` (default) runs 8-bit images through the backend's 8-bit form where it has one
        (:meth:`Backend.run_uint8`: conversions inside the runtime, the same output values), ``float`` always
        converts in NumPy around the float graph (the older path, kept for comparison). ``layout``: the pixel
        layout of the images given and returned (:data:`LAYOUTS`; default ``rgb``)."""
        if tile < 0 or (tile and tile <= 2 * overlap):
            raise ValueError(f"tile ({tile}) must be 0 (automatic) or exceed twice the overlap ({overlap})")
        if io not in ("auto", "float"):
            raise ValueError(f"io {io!r}: use 'auto' (8-bit in the runtime where it can) or 'float'")
        self.io = io
        self.layout = layout
        self._order, self._pad = _layout(layout)
        art = getattr(backend, "artifact", None)
        if size_multiple is None:
            size_multiple = art.manifest.size_multiple if art is not None else 1
        fixed = art.manifest.input_size if art is not None else None
        self.input_size = tuple(int(v) for v in fixed) if fixed else None
        """A graph bound to one input size (an imported ONNX file): every image is cut into (or padded to)
        tiles of exactly that size."""
        self.backend, self.tile, self.overlap, self.size_multiple = backend, tile, overlap, size_multiple
        self.max_pixels = max_pixels
        self.scale = backend.scale
        self.last_tile = 0
        """The tile side the last image was cut into (0: it ran whole)."""
        self.on_tile = None
        """Called as ``on_tile(done, total)`` after each tile of a tiled image (a progress bar for large
        images); ``None``: nothing is called."""

    @classmethod
    def open(cls, artifact, backend: str | None = None, *, threads: int = 0, tile: int = 0, io: str = "auto",
             layout: str = "rgb", **backend_options) -> "Upscaler":
        """An Upscaler on an artifact directory (model or ONNX) in one call::

            up = Upscaler.open("runs/quickstart/int8")          # the first available backend for it
            sr = up.upscale(image)                               # H x W x 3 uint8 -> 2H x 2W x 3 uint8
            for sr in up.frames(video_frames): ...               # any iterable of frames, batched

        ``backend``: onnxruntime, openvino, torch, ...; ``backend_options`` go to it (e.g. ``precision``);
        ``layout``: the frames' pixel layout (e.g. ``bgr`` for OpenCV's)."""
        _layout(layout)  # a wrong layout is named before a runtime is started
        from .base import open_backend

        b = open_backend(artifact, backend, threads=threads, **backend_options)
        return cls(b, tile=tile, io=io, layout=layout)

    def frames(self, frames, batch: int = 4):
        """Upscale an iterable of H x W x 3 frames lazily, ``batch`` at a time through the backend; yields each
        SR frame in order (memory: one batch)."""
        pending = []
        for f in frames:
            pending.append(f)
            if len(pending) >= batch:
                yield from self.upscale_batch(pending)
                pending = []
        if pending:
            yield from self.upscale_batch(pending)

    def close(self) -> None:
        self.backend.close()

    def __enter__(self) -> "Upscaler":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _run_padded(self, lr: np.ndarray) -> np.ndarray:
        """CHW float -> CHW float SR, padding (reflect) to the model's size multiple and cropping back."""
        _, h, w = lr.shape
        m = self.size_multiple
        ph, pw = (-h) % m, (-w) % m
        x = np.pad(lr, ((0, 0), (0, ph), (0, pw)), mode="reflect") if (ph or pw) else lr
        sr = self._checked(self.backend.run(x[None]), x.shape[1:])[0]
        return sr[:, : h * self.scale, : w * self.scale]

    def _checked(self, sr: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
        """The output has the size the artifact's scale says (a manifest edited to another scale, or one that
        belongs to another model, is named instead of failing in a broadcast) and finite values."""
        self._check_size(tuple(sr.shape[-2:]), hw)
        return self._finite(sr)

    def _check_size(self, got: tuple[int, int], hw: tuple[int, int]) -> None:
        if got != (hw[0] * self.scale, hw[1] * self.scale):
            name = getattr(getattr(self.backend, "artifact", None), "path", None) or type(self.backend).__name__
            raise OutputError(f"{name}: the model returned {got[1]}x{got[0]} for a {hw[1]}x{hw[0]} input, "
                              f"not the x{self.scale} its manifest.json declares: the manifest was edited or belongs "
                              "to another model. Copy the artifact again, or re-run the stage that wrote it.")

    def _bytes_path(self, img: np.ndarray) -> bool:
        """8-bit image, 8-bit output, and a backend that converts inside the runtime."""
        return self.io == "auto" and img.dtype == np.uint8 and getattr(self.backend, "uint8_native", False)

    def _run_padded_uint8(self, frames: np.ndarray) -> np.ndarray:
        """N x H x W x 3 uint8 -> N x sH x sW x 3 uint8 SR through the backend's 8-bit form, padding (reflect)
        to the model's size multiple and cropping back."""
        _, h, w, _ = frames.shape
        m = self.size_multiple
        ph, pw = (-h) % m, (-w) % m
        x = np.pad(frames, ((0, 0), (0, ph), (0, pw), (0, 0)), mode="reflect") if (ph or pw) else frames
        sr = self.backend.run_uint8(x)
        self._check_size(tuple(sr.shape[1:3]), x.shape[1:3])
        return sr[:, : h * self.scale, : w * self.scale] if (ph or pw) else sr

    def _finite(self, sr: np.ndarray) -> np.ndarray:
        """A backend output holding NaN or Inf (a diverged model, an FP16 overflow) is an error, never an
        image: clamping would turn it into black or white pixels. One reduction over the output."""
        return check_finite(self.backend, sr)

    def _tile_for(self, h: int, w: int) -> int:
        if self.input_size:
            return 0 if (h, w) == self.input_size else max(self.input_size)
        if self.tile:
            return self.tile if (h > self.tile or w > self.tile) else 0
        return AUTO_TILE if h * w > self.max_pixels else 0

    def _upscale_into(self, img: np.ndarray, out: np.ndarray, convert) -> np.ndarray:
        if img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(f"Upscaler expects an HxWx3 image, got shape {img.shape}")
        h, w = img.shape[:2]
        s = self.scale
        tile = self.last_tile = self._tile_for(h, w)
        if convert is None:  # the 8-bit path: bytes in, bytes out, nothing converted here
            run = lambda part: self._run_padded_uint8(part[None])[0]  # noqa: E731
        else:
            run = lambda part: convert(self._run_padded(to_float(part).transpose(2, 0, 1))).transpose(1, 2, 0)  # noqa: E731
        if tile and self.input_size:
            return self._upscale_fixed(img, out, run)
        if not tile:
            if convert is None:  # the runtime's own output array, not a copy into ``out``
                return np.ascontiguousarray(run(img))
            # converted channels-first (contiguous), then transposed: the same values, half the time at 720p
            out[:] = convert(self._run_padded(to_float(img).transpose(2, 0, 1))).transpose(1, 2, 0)
            return out
        core = tile - 2 * self.overlap
        total, done = -(-h // core) * -(-w // core), 0
        for y0 in range(0, h, core):
            for x0 in range(0, w, core):
                y1, x1 = min(y0 + core, h), min(x0 + core, w)
                ya, xa = max(y0 - self.overlap, 0), max(x0 - self.overlap, 0)
                yb, xb = min(y1 + self.overlap, h), min(x1 + self.overlap, w)
                sr = run(img[ya:yb, xa:xb])
                out[y0 * s:y1 * s, x0 * s:x1 * s] = sr[(y0 - ya) * s:(y1 - ya) * s, (x0 - xa) * s:(x1 - xa) * s]
                done += 1
                if self.on_tile is not None:
                    self.on_tile(done, total)
        return out

    def _upscale_fixed(self, img: np.ndarray, out: np.ndarray, run) -> np.ndarray:
        """Tiles of exactly the graph's input size: an image smaller than it (in a dimension) is mirrored out to
        it and cropped back; a larger one is cut into tiles that overlap by a margin on each inner side, the
        last one moved back inside the image, and each tile's output pasted from the end of the previous tile's
        (so that every pasted row and column is at least the margin away from an inner tile edge)."""
        th, tw = self.input_size
        h, w = img.shape[:2]
        s = self.scale
        ph, pw = max(th - h, 0), max(tw - w, 0)
        src = np.pad(img, ((0, ph), (0, pw), (0, 0)), mode="reflect") if (ph or pw) else img  # (NumPy reflects
        # again and again where the pad is longer than the image)

        def spans(n: int, t: int) -> list[tuple[int, int, int]]:
            margin = min(self.overlap, (t - 1) // 4)
            core = t - 2 * margin
            starts = list(range(0, n - t + 1, core))
            if starts[-1] != n - t:
                starts.append(n - t)
            out, begin = [], 0
            for k, a in enumerate(starts):
                end = n if k == len(starts) - 1 else a + t - margin
                out.append((a, begin, end))  # tile start, first and last+1 row it pastes
                begin = end
            return out

        H, W = src.shape[:2]
        full = out if (H, W) == (h, w) else np.empty((H * s, W * s, 3), out.dtype)
        rows, cols = spans(H, th), spans(W, tw)
        done = 0
        for y0, ya, yb in rows:
            for x0, xa, xb in cols:
                sr = run(src[y0:y0 + th, x0:x0 + tw])
                full[ya * s:yb * s, xa * s:xb * s] = sr[(ya - y0) * s:(yb - y0) * s, (xa - x0) * s:(xb - x0) * s]
                done += 1
                if self.on_tile is not None:
                    self.on_tile(done, len(rows) * len(cols))
        if full is not out:
            out[:] = full[: h * s, : w * s]
        return out

    def _to_rgb(self, img: np.ndarray) -> np.ndarray:
        """An image in the Upscaler's layout -> H x W x 3 RGB (a copy unless the layout is ``rgb``)."""
        n = len(self.layout)
        if img.ndim != 3 or img.shape[2] != n:
            hint = (f"; open the Upscaler with the layout the images have (layout=...: {', '.join(LAYOUTS)})"
                    if img.ndim == 3 and img.shape[2] in (3, 4) else "")
            raise ValueError(f"Upscaler expects an HxWx{n} image ({self.layout!r} pixels), got shape {img.shape}{hint}")
        return img if self._order is None else img[..., self._order]

    def _from_rgb(self, sr: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """H x W x 3 RGB SR -> the Upscaler's layout (into ``out`` where given); a padding byte is the range's top."""
        if self._order is None:
            if out is not None and out is not sr:
                out[:] = sr
                return out
            return sr
        res = np.empty(sr.shape[:2] + (len(self.layout),), sr.dtype) if out is None else out
        res[..., self._order] = sr
        if self._pad is not None:
            res[..., self._pad] = 1.0 if sr.dtype.kind == "f" else np.iinfo(sr.dtype).max
        return res

    def _out_shape(self, img: np.ndarray) -> tuple[int, int, int]:
        return img.shape[0] * self.scale, img.shape[1] * self.scale, len(self.layout)

    def upscale_float(self, img: np.ndarray) -> np.ndarray:
        """H x W x 3 (uint8/uint16/float in [0, 1]; the Upscaler's ``layout``) -> sH x sW x 3 float32 SR, clamped
        to [0, 1], in that layout (a padding byte: 1.0)."""
        rgb = self._to_rgb(img)
        h, w = rgb.shape[:2]
        out = np.empty((h * self.scale, w * self.scale, 3), dtype=np.float32)
        return self._from_rgb(self._upscale_into(rgb, out, lambda x: np.clip(x, 0.0, 1.0)))

    def upscale(self, img: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """H x W x 3 image (x 4 for a 4-byte ``layout``) -> sH x sW x 3 (4), ``uint16`` for ``uint16`` input, else
        ``uint8`` (clamped and rounded tile by tile), in the Upscaler's layout. 8-bit images take the backend's
        8-bit form where it has one (``io``). ``out``: the array to fill (a memory map, for an output larger than
        memory), returned."""
        shape, dtype = self._out_shape(img), np.uint16 if img.dtype == np.uint16 else np.uint8
        if out is not None and (out.shape != shape or out.dtype != dtype):
            raise ValueError(f"out is {out.dtype} {out.shape}; this image needs {np.dtype(dtype)} {shape}")
        rgb = self._to_rgb(img)
        if self._order is None:
            return self._upscale_rgb(rgb, out)
        return self._from_rgb(self._upscale_rgb(rgb, None), out)

    def _upscale_rgb(self, img: np.ndarray, out: np.ndarray | None) -> np.ndarray:
        h, w = img.shape[:2]
        wide = img.dtype == np.uint16
        shape, dtype = (h * self.scale, w * self.scale, 3), np.uint16 if wide else np.uint8
        given = out
        out = np.empty(shape, dtype=dtype) if out is None else out
        res = self._upscale_into(img, out, None if self._bytes_path(img) else to_uint16 if wide else to_uint8)
        if given is not None and res is not given:  # the 8-bit path returned the runtime's own array
            given[:] = res
            return given
        return res

    def upscale_batch(self, frames: list[np.ndarray]) -> list[np.ndarray]:
        """Several H x W x 3 images of one size (video frames; the Upscaler's ``layout``) -> their
        ``uint8``/``uint16`` SR images, in one backend call when they run whole (tiled images run one by one).
        Each result equals ``upscale`` of the same image."""
        if self._order is not None:
            return [self._from_rgb(sr) for sr in self._upscale_batch_rgb([self._to_rgb(f) for f in frames])]
        for f in frames:
            self._to_rgb(f)  # the shape named here, as upscale() names it
        return self._upscale_batch_rgb(frames)

    def _upscale_batch_rgb(self, frames: list[np.ndarray]) -> list[np.ndarray]:
        if not frames:
            return []
        h, w = frames[0].shape[:2]
        if len(frames) == 1 or self._tile_for(h, w) or any(f.shape != frames[0].shape for f in frames):
            return [self._upscale_rgb(f, None) for f in frames]
        if self._bytes_path(frames[0]):
            return [np.ascontiguousarray(f) for f in self._run_padded_uint8(np.stack(frames))]
        m = self.size_multiple
        ph, pw = (-h) % m, (-w) % m
        x = np.stack([to_float(f).transpose(2, 0, 1) for f in frames])
        if ph or pw:
            x = np.pad(x, ((0, 0), (0, 0), (0, ph), (0, pw)), mode="reflect")
        sr = self._checked(self.backend.run(x), x.shape[2:])[:, :, : h * self.scale, : w * self.scale]
        convert = to_uint16 if frames[0].dtype == np.uint16 else to_uint8
        # converted channels-first (contiguous), then transposed: the same values as upscale(), in half the
        # time at 720p (20.6 -> 10.6 ms a frame: the float64 rounding over a strided view was the cost)
        return [np.ascontiguousarray(convert(s).transpose(1, 2, 0)) for s in sr]

    def upscale_picture(self, pic: Picture) -> Picture:
        """A :class:`Picture` upscaled: colour through the network (at 16 bits for 16-bit pictures), the alpha
        channel resized apart with MATLAB-style bicubic (networks are trained on colour; transparency is a
        mask), clamped to its range."""
        rgb = self._upscale_rgb(pic.rgb, None)  # a Picture's colour is RGB, whatever the frames' layout
        alpha = None
        if pic.alpha is not None:
            from edgesr.data.bicubic import imresize

            a = imresize(to_float(pic.alpha), self.scale)
            alpha = (to_uint16 if pic.alpha.dtype == np.uint16 else to_uint8)(np.clip(a, 0.0, 1.0))
        return Picture(rgb, alpha, icc=pic.icc)
