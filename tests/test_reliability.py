"""Every bad input tried against edgesr, with the message and exit code it gives: one parametrized table.

Each case does what a user would (a CLI call, a Python API call, a second run, a killed run) on real
files and asserts the outcome. ``docs/reliability.md`` is generated from these cases and their actual
messages; ``test_reliability_table_is_current`` fails when the document and the code disagree. Regenerate
it with ``EDGESR_WRITE_RELIABILITY=1 .venv/bin/python -m pytest tests/test_reliability.py``.
"""

from __future__ import annotations

import contextlib
import importlib.resources
import io
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import yaml
from PIL import Image

from conftest import call_stage
from edgesr.artifacts import content_hash, read_artifact
from edgesr.modelio import save_model
from edgesr.cli import main
from edgesr.export.onnx import ExportConfig, export_stage
from edgesr.models import build_model

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "reliability.md"
SKIMAGE = Path(str(importlib.resources.files("skimage.data")))
SPEC = {"type": "abpn", "scale": 2, "channels": 8, "n_body": 1}


# --------------------------------------------------------------------------------------------- context

class Ctx:
    """A scratch directory with a tiny model artifact, its ONNX export and a real photograph."""

    def __init__(self, root: Path):
        import torch

        self.root = root
        torch.manual_seed(0)
        self.model = save_model(root / "model", build_model(SPEC).eval(), name="model", arch=SPEC).path
        self.onnx = call_stage(export_stage, ExportConfig(input="model"), name="onnx", out=root / "onnx",
                                 source=read_artifact(self.model)).path
        self.photo = root / "photo.png"
        Image.open(SKIMAGE / "chelsea.png").crop((0, 0, 64, 48)).save(self.photo)
        self.n = 0

    def fresh(self, name: str) -> Path:
        self.n += 1
        d = self.root / f"case{self.n:02d}"
        d.mkdir()
        return d / name

    def copy(self, art: Path) -> Path:
        dst = self.fresh(art.name)
        shutil.copytree(art, dst)
        return dst

    def cli(self, *argv: str) -> tuple[int, str]:
        err, out = io.StringIO(), io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            try:
                code = main([str(a) for a in argv])
            except SystemExit as exc:  # argparse
                code = exc.code
        lines = [ln for ln in err.getvalue().splitlines() if ln.startswith("edgesr: error:")]
        text = " ".join(err.getvalue().split("edgesr: error:", 1)[1].split()) if lines else out.getvalue().strip()
        return code, text

    def upscale(self, src: Path, *extra: str, art: Path | None = None) -> tuple[int, str]:
        return self.cli("upscale", art or self.onnx, src, self.fresh("out.png"), *extra)


@dataclass(frozen=True)
class Case:
    id: str
    group: str
    tried: str
    run: Callable[[Ctx], tuple[object, str]]
    outcome: object  # an exit code, or the exception class name for Python API calls
    expect: str  # regex the message must match
    slow: bool = False


# ----------------------------------------------------------------------------------------- image files

def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _bomb_png(path: Path, w: int, h: int) -> Path:
    """A 70-byte PNG whose header declares a w x h 8-bit grey image (a decompression bomb's header)."""
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr)
                     + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + _png_chunk(b"IEND", b""))
    return path


def _video_bytes(ctx: Ctx) -> bytes:
    """A real 10-frame H.264 clip with audio, made once per scratch directory."""
    from edgesr.benchmarks.video_bench import make_test_video

    p = ctx.root / "clip_source.mp4"
    if not p.exists():
        make_test_video(p, frames=10, size=(36, 64))
    return p.read_bytes()


def _image(ctx: Ctx, name: str, make: Callable[[Path], None]) -> Path:
    p = ctx.fresh(name)
    make(p)
    return p


def _photo_array(ctx: Ctx) -> np.ndarray:
    return np.asarray(Image.open(ctx.photo).convert("RGB"))


def _save(arr: np.ndarray, mode: str | None = None, **kw) -> Callable[[Path], None]:
    return lambda p: Image.fromarray(arr, mode).save(p, **kw) if mode else Image.fromarray(arr).save(p, **kw)


def _ok_upscale(ctx: Ctx, src: Path) -> tuple[int, str]:
    out = ctx.fresh("sr.png")
    code, text = ctx.cli("upscale", ctx.onnx, src, out)
    if code == 0:
        from edgesr.imaging import read_picture

        pic = read_picture(out)
        text = (f"accepted: written {pic.rgb.shape[1]}x{pic.rgb.shape[0]} {'RGBA' if pic.alpha is not None else 'RGB'} "
                f"{pic.bits}-bit")
    return code, text


def _clip(ctx: Ctx, **kw) -> Path:
    from edgesr.benchmarks.video_bench import make_test_video

    return make_test_video(ctx.fresh("clip.mp4"), frames=12, size=(36, 64), fps=30, **kw)


def _frame_times(path: Path) -> list[float]:
    import av

    with av.open(str(path)) as c:
        return [round(f.time, 3) for f in c.decode(video=0)]


def _video_ok(ctx: Ctx, src: Path, name: str, *extra: str) -> tuple[object, str]:
    """Upscale a clip; on success describe what was written: frames, declared rate and frame times."""
    import av

    out = ctx.fresh(name)
    code, text = ctx.cli("upscale", ctx.onnx, src, out, *extra)
    if code == 0:
        with av.open(str(out)) as c:
            v = c.streams.video[0]
            declared = f"declares {float(v.average_rate):g} fps, {v.frames or 'no'} frame count"
        got, want = _frame_times(out), _frame_times(src)
        same = "the input's frame times" if got == want else f"frame times from {got[0]} s (input {want[0]} s)"
        text = f"accepted: {len(got)} frames, {declared}, {same}"
    return code, text


def _video_killed(ctx: Ctx) -> tuple[object, str]:
    """A video upscale killed with SIGKILL leaves its temporary; the next run of the same output."""
    src = _clip(ctx)
    out = src.parent / "out.mp4"
    (src.parent / ".out.mp4.k1lled0x.tmp").write_bytes(b"\0" * 4096)  # what the killed encoder left
    code, text = ctx.cli("upscale", ctx.onnx, src, out)
    left = sorted(p.name for p in src.parent.iterdir() if p.name.startswith("."))
    first = re.sub(r"[\d.]+ fps", "<n> fps", text.splitlines()[0] if text else "")  # speeds differ run to run
    return code, f"{first}; temporaries left: {left or 'none'}"


IMAGE_CASES = [
    Case("video-vfr", "image", "a variable-frame-rate MP4 as phones record (every third frame twice as long)",
         lambda c: _video_ok(c, _clip(c, vfr=True), "out.mp4"), 0, r"accepted: 12 frames, .*the input's frame times"),
    Case("video-avi-rate", "image", "an MP4 (1/15360 clock) upscaled into `.avi`",
         lambda c: _video_ok(c, _clip(c), "out.avi"), 0, r"accepted: 12 frames, declares 30 fps, 12 frame count"),
    Case("video-mkv-start", "image", "lossless `.mkv` from an MP4 with AAC audio",
         lambda c: _video_ok(c, _clip(c), "out.mkv", "--lossless"), 0, r"the input's frame times"),
    Case("video-webm-aac", "image", "`.webm` output from an MP4 with AAC audio",
         lambda c: c.cli("upscale", c.onnx, _clip(c), c.fresh("out.webm")), 2,
         r"audio is aac, which a \.webm file cannot hold .*--no-audio"),
    Case("video-bad-codec", "image", "`--codec h265x` (no such encoder)",
         lambda c: c.cli("upscale", c.onnx, _clip(c), c.fresh("out.mp4"), "--codec", "h265x"), 2,
         r"--codec h265x: this FFmpeg .* has no encoder of that name"),
    Case("video-bad-pix-fmt", "image", "`--pix-fmt rgb48` for H.264",
         lambda c: c.cli("upscale", c.onnx, _clip(c), c.fresh("out.mp4"), "--pix-fmt", "rgb48"), 2,
         r"--pix-fmt rgb48: libx264 does not encode it"),
    Case("video-killed-temp", "image", "a temporary file as a killed (SIGKILL) video upscale leaves it (`.out.mp4.XXXXXXXX.tmp`), at the next run of that output",
         _video_killed, 0, r"temporaries left: none"),
    Case("video-truncated", "image", "a video cut after 300 bytes (interrupted download)",
         lambda c: c.cli("upscale", c.onnx, _image(c, "clip.mp4", lambda p: p.write_bytes(_video_bytes(c)[:300])),
                         c.fresh("out.mp4")), 2, r"clip\.mp4: (cannot open this video|decoding failed)"),
    Case("video-output-suffix", "image", "a video upscaled into a `.gif` name",
         lambda c: c.cli("upscale", c.onnx, _image(c, "clip.mp4", lambda p: p.write_bytes(_video_bytes(c))),
                         c.fresh("out.gif")), 2, r"out\.gif: the suffix '\.gif' names no video container"),
    Case("image-missing", "image", "input image that does not exist",
         lambda c: c.upscale(c.root / "nope.png"), 2, r"nope\.png: no such image file"),
    Case("image-directory", "image", "a folder as the input and an image file name as the output",
         lambda c: c.upscale(c.root), 2, r"out\.png: names an image file, but .* is a folder of images; give an output folder"),
    Case("image-zero-bytes", "image", "zero-byte image file",
         lambda c: c.upscale(_image(c, "empty.png", lambda p: p.write_bytes(b""))), 2, r"empty\.png: is empty \(0 bytes\)"),
    Case("image-truncated", "image", "PNG cut in half (interrupted copy)",
         lambda c: c.upscale(_image(c, "cut.png", lambda p: p.write_bytes(c.photo.read_bytes()[: c.photo.stat().st_size // 2]))),
         2, r"cut\.png: cannot decode this image .*corrupt, truncated"),
    Case("image-corrupt", "image", "PNG with its pixel data overwritten by garbage",
         lambda c: c.upscale(_image(c, "garbage.png", lambda p: p.write_bytes(
             c.photo.read_bytes()[:60] + bytes(range(256)) * 8))), 2, r"garbage\.png: cannot decode this image"),
    Case("image-wrong-format", "image", "a text file named .png",
         lambda c: c.upscale(_image(c, "notes.png", lambda p: p.write_text("meeting notes"))), 2,
         r"notes\.png: cannot decode this image .*not an image"),
    Case("image-16bit-colour", "image", "16-bit RGB PNG",
         lambda c: _ok_upscale(c, _image(c, "rgb16.png", lambda p: _write_png16_rgb(p, _photo_array(c)))), 0,
         r"accepted: written 128x96 RGB 16-bit"),
    Case("image-16bit-grey", "image", "16-bit grey PNG",
         lambda c: _ok_upscale(c, _image(c, "grey16.png", _save(_photo_array(c)[..., 0].astype(np.uint16) * 257))),
         0, r"accepted: written 128x96 RGB 16-bit"),
    Case("image-grey", "image", "8-bit grey PNG",
         lambda c: _ok_upscale(c, _image(c, "grey.png", _save(_photo_array(c)[..., 0]))), 0, r"accepted"),
    Case("image-palette", "image", "palette (indexed) PNG",
         lambda c: _ok_upscale(c, _image(c, "palette.png", lambda p: Image.open(c.photo).convert("P").save(p))),
         0, r"accepted"),
    Case("image-cmyk", "image", "CMYK JPEG",
         lambda c: c.upscale(_image(c, "print.jpg", lambda p: Image.open(c.photo).convert("CMYK").save(p))), 2,
         r"print\.jpg: CMYK image.*Convert it to RGB"),
    Case("image-rgba-translucent", "image", "RGBA PNG with transparent pixels",
         lambda c: _ok_upscale(c, _image(c, "logo.png", _save(np.dstack([_photo_array(c), np.full((48, 64), 128, np.uint8)])))),
         0, r"accepted: written 128x96 RGBA 8-bit"),
    Case("image-rgba-opaque", "image", "RGBA PNG, fully opaque",
         lambda c: _ok_upscale(c, _image(c, "opaque.png", _save(np.dstack([_photo_array(c), np.full((48, 64), 255, np.uint8)])))),
         0, r"accepted"),
    Case("image-1x1", "image", "1x1 image",
         lambda c: _ok_upscale(c, _image(c, "dot.png", _save(np.full((1, 1, 3), 200, np.uint8)))), 0,
         r"accepted: written 2x2"),
    Case("image-animated", "image", "animated GIF (3 frames)",
         lambda c: c.upscale(_image(c, "anim.gif", lambda p: Image.open(c.photo).save(
             p, save_all=True, append_images=[Image.open(c.photo).rotate(90), Image.open(c.photo).rotate(180)]))), 2,
         r"anim\.gif: has 3 frames"),
    Case("image-bomb", "image", "70-byte PNG declaring 100000x100000 pixels (decompression bomb)",
         lambda c: c.upscale(_image(c, "bomb.png", lambda p: _bomb_png(p, 100_000, 100_000))), 2,
         r"bomb\.png: declares 100000x100000 = 10,000,000,000 pixels, over the limit.*--max-pixels"),
    Case("cli-max-pixels-negative", "cli", "`--max-pixels -1`",
         lambda c: c.upscale(c.photo, "--max-pixels", "-1"), 2,
         r"-1 pixels: give the largest image size to accept in pixels \(a positive number\)"),
    Case("cli-max-pixels-zero", "cli", "`--max-pixels 0`",
         lambda c: c.upscale(c.photo, "--max-pixels", "0"), 2, r"0 pixels: give the largest image size"),
    Case("image-over-limit", "image", "a real photo over a lowered --max-pixels",
         lambda c: c.upscale(c.photo, "--max-pixels", "1000"), 2, r"declares 64x48 = 3,072 pixels, over the limit of 1,000"),
]


def _write_png16_rgb(path: Path, rgb8: np.ndarray) -> None:
    """A real 16-bit RGB PNG (Pillow cannot write one), written chunk by chunk."""
    h, w, _ = rgb8.shape
    raw = b"".join(b"\x00" + (rgb8[y].astype(">u2") * 257).tobytes() for y in range(h))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
                     + _png_chunk(b"IDAT", zlib.compress(raw)) + _png_chunk(b"IEND", b""))


# ------------------------------------------------------------------------------------------ CLI values

def _existing_output(c: Ctx) -> tuple[int, str]:
    out = c.fresh("keep.png")
    out.write_bytes(b"precious")
    code, text = c.cli("upscale", c.onnx, c.photo, out)
    assert out.read_bytes() == b"precious"
    return code, text


def _input_as_output(c: Ctx) -> tuple[int, str]:
    src = c.fresh("in.png")
    shutil.copy(c.photo, src)
    before = src.read_bytes()
    code, text = c.cli("upscale", c.onnx, src, src, "--overwrite")
    assert src.read_bytes() == before
    return code, text


CLI_CASES = [
    Case("cli-run-threads-negative", "cli", "`edgesr run --threads -3`",
         lambda c: c.cli("run", "--threads", "-3"), 2, r"argument --threads: -3: give 0 \(all \d+ cores\) or a count from 1"),
    Case("cli-upscale-threads-negative", "cli", "`edgesr upscale ... --threads -1`",
         lambda c: c.upscale(c.photo, "--threads", "-1"), 2, r"argument --threads: -1: give 0 \(all \d+ cores\)"),
    Case("cli-tile-too-small", "cli", "`edgesr upscale ... --tile 16`",
         lambda c: c.upscale(c.photo, "--tile", "16"), 2, r"argument --tile: 16 is too small"),
    Case("cli-tile-negative", "cli", "`edgesr upscale ... --tile -5`",
         lambda c: c.upscale(c.photo, "--tile", "-5"), 2, r"argument --tile: -5 is too small"),
    Case("cli-tile-not-a-number", "cli", "`edgesr upscale ... --tile big`",
         lambda c: c.upscale(c.photo, "--tile", "big"), 2, r"argument --tile: 'big' is not an integer"),
    Case("cli-output-is-input", "cli", "output path = input path (even with --overwrite)",
         _input_as_output, 2, r"in\.png: is the input image; refusing to overwrite it"),
    Case("cli-output-exists", "cli", "output file exists, no --overwrite",
         _existing_output, 2, r"keep\.png: exists; refusing to overwrite it\. Pass --overwrite"),
    Case("cli-output-suffix", "cli", "output `out.xyz`",
         lambda c: c.cli("upscale", c.onnx, c.photo, c.fresh("out.xyz")), 2,
         r"out\.xyz: the output suffix '\.xyz' names no image format; use one of"),
    Case("cli-output-directory", "cli", "output is an existing directory",
         lambda c: c.cli("upscale", c.onnx, c.photo, c.root), 2, r"is a directory; give the output image's file name"),
    Case("cli-backend-mismatch", "cli", "ONNX artifact with `--backend torch`",
         lambda c: c.upscale(c.photo, "--backend", "torch"), 2, r"the torch backend runs 'model' artifacts; this is 'onnx'"),
    Case("cli-eval-missing-set", "cli", "`edgesr eval ART --set missing/`",
         lambda c: c.cli("eval", c.onnx, "--set", c.root / "missing"), 2, r"missing: no such data folder"),
]


# ------------------------------------------------------------------------------------------- artifacts

def _zero_64_bytes(art: Path) -> Path:
    payload = art / json.loads((art / "manifest.json").read_text())["payload"]
    data = bytearray(payload.read_bytes())
    mid = len(data) // 2
    data[mid:mid + 64] = bytes(64)
    payload.write_bytes(bytes(data))
    return art


def _edit_manifest(art: Path, **fields) -> Path:
    m = json.loads((art / "manifest.json").read_text())
    m.update(fields)
    (art / "manifest.json").write_text(json.dumps(m))
    return art


def _foreign_weights(c: Ctx) -> Path:
    """A model artifact whose weights (and recorded hash) come from another architecture."""
    import torch

    art = c.copy(c.model)
    other = c.fresh("other")
    torch.manual_seed(1)
    save_model(other, build_model({**SPEC, "channels": 12}), name="other", arch={**SPEC, "channels": 12})
    shutil.copy(other / "model.safetensors", art / "model.safetensors")
    return _edit_manifest(art, hash=content_hash(art / "model.safetensors"))


def _foreign_directory(c: Ctx) -> Path:
    d = c.fresh("hf_model")
    d.mkdir()
    (d / "config.json").write_text("{}")
    shutil.copy(c.model / "model.safetensors", d / "model.safetensors")
    return d


ARTIFACT_CASES = [
    Case("artifact-pretrained-typo", "artifact", "a pretrained model's name misspelt (`msrep-s-x2-int7`)",
         lambda c: c.upscale(c.photo, art=Path("msrep-s-x2-int7")), 2,
         r"msrep-s-x2-int7: not an edgesr artifact \(no such directory\).*Did you mean the pretrained model 'msrep-s-x2-int8'"),
    Case("explain-onnx-artifact", "artifact", "`edgesr explain` given an ONNX artifact (no gradients)",
         lambda c: c.cli("explain", c.onnx, c.photo, "--out", c.fresh("maps")), 2,
         r"is a 'onnx' artifact; explain needs gradients, which only the PyTorch model has"),
    Case("explain-region-outside", "artifact", "`edgesr explain` with a region outside the image",
         lambda c: c.cli("explain", "msrep-s-x2", c.photo, "--out", c.fresh("maps"), "--region", "60,40,16,16"), 2,
         r"region x=60, y=40, 16x16 is not inside the 64x48 input; give --region X,Y,W,H in input pixels"),
    Case("artifact-onnx-64-bytes-zeroed", "artifact", "64 bytes zeroed inside `model.onnx` (`edgesr eval`)",
         lambda c: c.cli("eval", _zero_64_bytes(c.copy(c.onnx)), "--set", "builtin"), 2,
         r"onnx/model\.onnx: content hash [0-9a-f]{16} differs from the [0-9a-f]{16} recorded in .*manifest\.json.*Re-run"),
    Case("artifact-safetensors-64-bytes-zeroed", "artifact", "64 bytes zeroed inside `model.safetensors` (`edgesr upscale`)",
         lambda c: c.upscale(c.photo, art=_zero_64_bytes(c.copy(c.model))), 2,
         r"model/model\.safetensors: content hash [0-9a-f]{16} differs"),
    Case("artifact-truncated", "artifact", "payload truncated to half",
         lambda c: c.cli("eval", _truncate_payload(c.copy(c.onnx)), "--set", "builtin"), 2, r"content hash .* differs"),
    Case("artifact-payload-missing", "artifact", "payload file deleted",
         lambda c: c.cli("eval", _delete_payload(c.copy(c.onnx)), "--set", "builtin"), 2,
         r"model\.onnx: payload named in the manifest is missing"),
    Case("artifact-manifest-corrupt", "artifact", "manifest.json cut short",
         lambda c: c.cli("eval", _cut_manifest(c.copy(c.onnx)), "--set", "builtin"), 2, r"manifest\.json: corrupt manifest"),
    Case("artifact-path-traversal", "artifact", "manifest payload `../../secret.onnx`",
         lambda c: c.cli("eval", _edit_manifest(c.copy(c.onnx), payload="../../secret.onnx"), "--set", "builtin"), 2,
         r"payload '\.\./\.\./secret\.onnx' is not a file name inside the artifact directory"),
    Case("artifact-newer-schema", "artifact", "manifest from a newer edgesr (schema 99)",
         lambda c: c.cli("eval", _edit_manifest(c.copy(c.onnx), schema_version=99), "--set", "builtin"), 2,
         r"schema 99 is newer than this edgesr.*upgrade edgesr"),
    Case("artifact-foreign-directory", "artifact", "a directory from another tool (config.json + model.safetensors)",
         lambda c: c.cli("eval", _foreign_directory(c), "--set", "builtin"), 2, r"not an edgesr artifact \(no manifest\.json\)"),
    Case("artifact-mismatched-weights", "artifact", "weights of another architecture under a manifest (hash rewritten)",
         lambda c: c.upscale(c.photo, art=_foreign_weights(c)), 2,
         r"weights do not fit the architecture.*shape mismatch.*copy both from the same artifact"),
    Case("artifact-missing", "artifact", "artifact path that does not exist",
         lambda c: c.cli("eval", c.root / "nowhere", "--set", "builtin"), 2, r"nowhere: not an edgesr artifact \(no such directory\)"),
]


def _truncate_payload(art: Path) -> Path:
    p = art / "model.onnx"
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    return art


def _delete_payload(art: Path) -> Path:
    (art / "model.onnx").unlink()
    return art


def _cut_manifest(art: Path) -> Path:
    m = art / "manifest.json"
    m.write_text(m.read_text()[:100])
    return art


# --------------------------------------------------------------------------------------------- recipes

def _recipe(c: Ctx, text_or_dict) -> Path:
    p = c.fresh("recipe.yaml")
    p.write_text(text_or_dict if isinstance(text_or_dict, str) else yaml.safe_dump(text_or_dict, sort_keys=False))
    return p


def _tiny(**model) -> dict:
    return {"name": "t", "scale": 2, "threads": 1, "data": {"patch_size": 16},
            "stages": [{"name": "teacher", "stage": "train", "model": {"type": "edsr", "n_resblocks": 1, "n_feats": 8},
                        "steps": 5},
                       {"name": "student", "stage": "distill", "teacher": "teacher", "steps": 5,
                        "model": {"type": "abpn", "channels": 8, "n_body": 1, **model}}],
            "benchmark": {"variants": []}}


def _run_bad_recipe(c: Ctx, recipe) -> tuple[int, str]:
    path = _recipe(c, recipe)
    out = path.parent / "run"
    code, text = c.cli("run", path, "--out", out)
    assert not (out / "teacher").exists()  # refused before any stage ran
    return code, text


def _cjk_report(c: Ctx) -> tuple[int, str]:
    """The report's Pareto plot of variants named in Chinese and Japanese: hundreds of Matplotlib warnings
    (one per glyph per draw) flooded the log."""
    import warnings

    from edgesr.benchmarks.report import _plot

    rows = [{"latency": {"p50_ms": 10.0 + i}, "quality": {"Set5": {"psnr": 30.0 + i}}, "backend": "onnxruntime",
             "precision": "fp32", "variant": v} for i, v in enumerate(["学生", "教師モデル", "int8"])]
    out, err = io.StringIO(), io.StringIO()
    with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(out), \
            contextlib.redirect_stderr(err):
        warnings.simplefilter("always")
        _plot(rows, "Set5", c.fresh("pareto.png"), "蒸馏 x2")
    notes = " ".join((out.getvalue() + err.getvalue()).split())
    return 0, f"{len(caught)} warnings; printed: {notes}"


RECIPE_CASES = [
    Case("recipe-cjk-names", "recipe", "variants and a recipe named in Chinese/Japanese (the report's plot)",
         _cjk_report, 0, r"^0 warnings; printed: note: pareto\.png: the plot's font cannot draw 9 character\(s\)"),
    Case("recipe-unknown-architecture", "recipe", "student `model: {type: edsrr}`",
         lambda c: _run_bad_recipe(c, {**_tiny(), "stages": [_tiny()["stages"][0], {**_tiny()["stages"][1], "model": {"type": "edsrr"}}]}),
         2, r"stages\[1\] \(student\)\.model\.type: unknown architecture 'edsrr' \(did you mean 'edsr'\?\)"),
    Case("recipe-unknown-model-keyword", "recipe", "teacher model keyword `n_feat` (EDSR's is `n_feats`)",
         lambda c: _run_bad_recipe(c, {**_tiny(), "stages": [{**_tiny()["stages"][0], "model": {"type": "edsr", "n_feat": 8}},
                                                               _tiny()["stages"][1]]}), 2,
         r"\(teacher\)\.model\.n_feat: edsr has no keyword 'n_feat' \(did you mean 'n_feats'\?\); its keywords"),
    Case("recipe-model-keyword-type", "recipe", "student model `channels: many`",
         lambda c: _run_bad_recipe(c, _tiny(channels="many")), 2, r"\(student\)\.model\.channels: expected an integer, got 'many'"),
    Case("recipe-model-value", "recipe", "student model `channels: 0` (rejected by the architecture)",
         lambda c: _run_bad_recipe(c, _tiny(channels=0)), 2, r"\(student\)\.model: abpn does not accept .*channels >= 1"),
    Case("recipe-model-scale", "recipe", "model `scale: 4` in an x2 recipe",
         lambda c: _run_bad_recipe(c, _tiny(scale=4)), 2, r"model\.scale: 4 differs from the recipe's scale 2"),
    Case("recipe-unknown-stage-key", "recipe", "stage key `stpes`",
         lambda c: _run_bad_recipe(c, {**_tiny(), "stages": [{**_tiny()["stages"][0], "stpes": 3}]}), 2,
         r"unknown key 'stpes' \(did you mean 'steps'\?\)"),
    Case("recipe-unknown-stage-kind", "recipe", "`stage: trian`",
         lambda c: _run_bad_recipe(c, {**_tiny(), "stages": [{**_tiny()["stages"][0], "stage": "trian"}]}), 2,
         r"unknown stage 'trian' \(did you mean 'train'\?\)"),
    Case("recipe-dangling-reference", "recipe", "`teacher: teachr`",
         lambda c: _run_bad_recipe(c, {**_tiny(), "stages": [_tiny()["stages"][0], {**_tiny()["stages"][1], "teacher": "teachr"}]}),
         2, r"teacher: 'teachr' is not a stage defined before 'student' \(did you mean 'teacher'\?\)"),
    Case("recipe-wrong-input-kind", "recipe", "quantize stage whose input is a PyTorch model stage",
         lambda c: _run_bad_recipe(c, {**_tiny(), "stages": _tiny()["stages"] + [{"name": "q", "stage": "quantize", "input": "student"}]}),
         2, r"\(q\)\.input: 'student' is a distill stage; a quantize stage's input must be an FP32 ONNX graph \(made by a stage of kind bicubic, export, import_onnx, load\)$"),
    Case("recipe-fallback-without-budget", "recipe", "`on_budget_exceeded: fallback` with no `max_psnr_drop_db`",
         lambda c: _run_bad_recipe(c, {**_tiny(), "stages": _tiny()["stages"] + [
             {"name": "f", "stage": "export", "input": "student"},
             {"name": "q", "stage": "quantize", "input": "f", "on_budget_exceeded": "fallback"}]}), 2,
         r"\(q\)\.on_budget_exceeded: fallback works towards a budget and there is none; give max_psnr_drop_db"),
    Case("recipe-bad-yaml", "recipe", "recipe that is not valid YAML",
         lambda c: _run_bad_recipe(c, "name: t\nstages: [unclosed\n"), 2, r"recipe\.yaml: not valid YAML"),
    Case("recipe-missing", "recipe", "recipe file that does not exist",
         lambda c: c.cli("run", c.root / "missing.yaml"), 2, r"missing\.yaml: no such recipe file"),
    Case("recipe-only-unknown", "recipe", "`--only studnet`",
         lambda c: c.cli("run", _recipe(c, _tiny()), "--only", "studnet", "--out", c.fresh("o")), 2,
         r"--only names no stage \['studnet'\]"),
]


# --------------------------------------------------------------------------------------- Python API

def _api(fn: Callable[[], object]) -> tuple[str, str]:
    try:
        fn()
    except Exception as exc:  # the case asserts which class
        return type(exc).__name__, " ".join(str(exc).split())
    return "no error", ""


def _subfolder_without_recursive(c: Ctx) -> tuple[int, str]:
    src = c.fresh("album2")
    (src / "more").mkdir(parents=True)
    shutil.copy(c.photo, src / "a.png")
    shutil.copy(c.photo, src / "more" / "b.png")
    return c.cli("upscale", c.onnx, src, src.parent / "album2_sr")


def _one_pixel_set(c: Ctx) -> tuple[int, str]:
    folder = c.fresh("one_pixel_set")
    folder.mkdir()
    Image.new("RGB", (1, 1)).save(folder / "one.png")
    return c.cli("eval", c.onnx, "--set", folder)


def _bare_onnx(c: Ctx) -> tuple[int, str]:
    bare = c.fresh("bare")
    bare.mkdir()
    shutil.copy(c.onnx / "model.onnx", bare / "model.onnx")
    return c.upscale(c.photo, art=bare / "model.onnx")


def _open_with_threads(c: Ctx, threads: int):
    from edgesr.runtime import open_backend

    return open_backend(c.onnx, threads=threads)


def _backend(c: Ctx):
    from edgesr.runtime import open_backend

    return open_backend(c.onnx, threads=1)


def _lr(value=None, shape=(1, 3, 8, 8), dtype=np.float32) -> np.ndarray:
    x = np.full(shape, 0.5, dtype=dtype)
    if value is not None:
        x[0, 1, 2, 3] = value
    return x


API_CASES = [
    Case("api-nan", "api", "`backend.run` on an input holding a NaN",
         lambda c: _api(lambda: _backend(c).run(_lr(np.nan))), "InputError", r"NaN or Inf"),
    Case("api-inf", "api", "`backend.run` on an input holding +Inf",
         lambda c: _api(lambda: _backend(c).run(_lr(np.inf))), "InputError", r"NaN or Inf"),
    Case("api-out-of-range", "api", "`backend.run` on values up to 255 (8-bit scale)",
         lambda c: _api(lambda: _backend(c).run(_lr(255.0))), "InputError", r"outside \[0, 1\].*divide 8-bit images by 255"),
    Case("api-hwc", "api", "`backend.run` on an H x W x 3 image",
         lambda c: _api(lambda: _backend(c).run(np.zeros((8, 8, 3), np.float32))), "InputError", r"N x 3 x H x W.*transpose"),
    Case("api-empty", "api", "`backend.run` on an empty batch (0 x 3 x 8 x 8)",
         lambda c: _api(lambda: _backend(c).run(np.zeros((0, 3, 8, 8), np.float32))), "InputError",
         r"the input array is empty \(shape \(0, 3, 8, 8\)\)"),
    Case("api-empty-frames", "api", "`backend.run_uint8` on frames 0 pixels high",
         lambda c: _api(lambda: _backend(c).run_uint8(np.zeros((1, 0, 8, 3), np.uint8))), "InputError",
         r"the frames array is empty"),
    Case("api-uint8", "api", "`backend.run` on a uint8 array",
         lambda c: _api(lambda: _backend(c).run(_lr(dtype=np.uint8))), "InputError", r"dtype uint8.*divide 8-bit images"),
    Case("api-size-multiple", "api", "`backend.run` on 9x9 for a model whose manifest says sizes are multiples of 4",
         lambda c: _api(lambda: _padded_model(c).run(_lr(shape=(1, 3, 9, 9)))), "InputError",
         r"needs H and W to be multiples of 4 .*got 9x9.*Upscaler, which pads"),
    Case("api-torch-nan", "api", "`TorchBackend.run` on an input holding a NaN",
         lambda c: _api(lambda: _torch_backend(c).run(_lr(np.nan))), "InputError", r"NaN or Inf"),
]


def _padded_model(c: Ctx):
    """An ONNX artifact declaring size_multiple 4; the Upscaler pads its inputs (checked), run() refuses."""
    from edgesr.runtime import Upscaler, open_backend

    backend = open_backend(_edit_manifest(c.copy(c.onnx), size_multiple=4), threads=1)
    assert Upscaler(backend).upscale(np.zeros((9, 9, 3), np.uint8)).shape == (18, 18, 3)
    return backend


def _torch_backend(c: Ctx):
    from edgesr.runtime import open_backend

    return open_backend(c.model, "torch", threads=1)


# ----------------------------------------------------------------------------------------------- runs

RUN_RECIPE = {
    "name": "crash", "scale": 2, "threads": 1, "data": {"patch_size": 16},
    "stages": [
        {"name": "teacher", "stage": "train", "model": {"type": "edsr", "n_resblocks": 1, "n_feats": 8, "anchor": "nearest"},
         "steps": 30, "val_every": 15, "checkpoint_every": 5},
        {"name": "student", "stage": "distill", "teacher": "teacher", "model": {"type": "abpn", "channels": 8, "n_body": 2},
         "steps": 120, "val_every": 40, "checkpoint_every": 5},
        {"name": "pruned", "stage": "prune", "input": "student", "ratio": 0.25, "teacher": "teacher", "finetune_steps": 120},
        {"name": "student_onnx", "stage": "export", "input": "student"},
        {"name": "int8", "stage": "quantize", "input": "student_onnx", "calibration_images": 4, "calibration_patch": 32},
    ],
    "benchmark": {"variants": ["student", "int8"], "input_size": [24, 24], "runs": 5, "max_seconds": 1, "peak": False},
}

# (where, trigger): a file the run writes, or a line it prints; the run is killed with SIGKILL right then.
KILL_POINTS = [
    ("mid-training", "file:student.ckpt/last.pt"),
    ("mid-prune fine-tune", "file:pruned.ckpt1/last.pt"),
    ("mid-export", "line:stage student_onnx (export)"),
    ("mid-quantization", "line:stage int8 (quantize)"),
    ("mid-benchmark", "line:benchmark student"),
]


def _spawn(recipe: Path, out: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}
    return subprocess.Popen([sys.executable, "-m", "edgesr.cli", "run", str(recipe), "--out", str(out), "--eval", "builtin"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)


def _run_until(recipe: Path, out: Path, trigger: str, timeout: float = 300) -> bool:
    """Start a run and SIGKILL it when ``trigger`` happens; True if it was killed there."""
    import threading

    proc = _spawn(recipe, out)
    kind, what = trigger.split(":", 1)
    seen = threading.Event()

    def read():
        for line in proc.stderr:
            if kind == "line" and what in line:
                seen.set()
    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    t_end = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < t_end:
        if seen.is_set() or (kind == "file" and (out / what).is_file()):
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.005)
    proc.kill()
    proc.wait()
    return False


def _hashes(out: Path) -> dict[str, str]:
    return {s["name"]: read_artifact(out / s["name"]).hash for s in RUN_RECIPE["stages"]}


def _crash_and_resume(c: Ctx) -> tuple[int, str]:
    recipe = _recipe(c, RUN_RECIPE)
    ref, out = recipe.parent / "reference", recipe.parent / "killed"
    done = subprocess.run([sys.executable, "-m", "edgesr.cli", "run", str(recipe), "--out", str(ref), "--eval", "builtin"],
                          capture_output=True, text=True, cwd=REPO, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    killed = [where for where, trigger in KILL_POINTS if _run_until(recipe, out, trigger)]
    final = subprocess.run([sys.executable, "-m", "edgesr.cli", "run", str(recipe), "--out", str(out), "--eval", "builtin"],
                           capture_output=True, text=True, cwd=REPO, timeout=600)
    assert final.returncode == 0, final.stderr[-3000:]
    same = _hashes(out) == _hashes(ref)
    leftovers = sorted(p.name for p in out.iterdir() if p.name.startswith(".") and p.name not in (".edgesr.lock", ".teacher_cache"))
    return final.returncode, (f"killed (SIGKILL) {', '.join(killed)}; the next run completed and "
                              f"{'all' if same else 'NOT all'} {len(RUN_RECIPE['stages'])} artifact hashes equal an "
                              f"uninterrupted run's; temporary files left: {leftovers or 'none'}")


def _second_writer(c: Ctx) -> tuple[int, str]:
    from edgesr.files import RunLock

    out = c.fresh("busy")
    with RunLock(out):
        return c.cli("run", _recipe(c, _tiny()), "--out", out)


def _crashed_lock_holder(c: Ctx) -> tuple[int, str]:
    """A process takes the run lock and is killed with SIGKILL; the next run takes the lock at once."""
    from edgesr.files import RunLock

    out = c.fresh("crashed")
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from pathlib import Path; "
                               "from edgesr.files import RunLock; l = RunLock(Path(sys.argv[1])).__enter__(); "
                               "print('locked', flush=True); time.sleep(600)", str(out)],
                              stdout=subprocess.PIPE, text=True, cwd=REPO)
    assert holder.stdout.readline().strip() == "locked"
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    with RunLock(out):
        return 0, "the lock of a killed run is free: the next run takes it at once"


def _concurrent_batches(c: Ctx) -> tuple[int, str]:
    """A folder upscale writing into OUT (another process, holding the folder as a batch does) and a second
    `--skip-existing` batch into the same folder: it used to redo every image beside the first."""
    src = c.fresh("shots")
    src.mkdir()
    for i in range(3):
        shutil.copy(c.photo, src / f"s{i}.png")
    out = src.parent / "out"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from edgesr.files import folder_lock; "
                               "l = folder_lock(sys.argv[1], 'edgesr upscale'); l.__enter__(); print('locked', "
                               "flush=True); time.sleep(600)", str(out)], stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert holder.stdout.readline().strip() == "locked"
        code, text = c.cli("upscale", c.onnx, src, out, "--skip-existing")
    finally:
        holder.kill()
        holder.wait()
    return code, f"{text} [outputs written by the second: {len(list(out.glob('*.png')))}]"


def _eval_set(c: Ctx) -> Path:
    hr = c.fresh("set") / "HR"
    hr.mkdir(parents=True)
    for i in range(4):
        Image.open(SKIMAGE / "chelsea.png").crop((8 * i, 0, 8 * i + 60, 44)).save(hr / f"i{i}.png")
    return hr.parent


def _banded_png(c: Ctx) -> tuple[int, str]:
    """An output over the in-memory limit (edgesr.imaging.STREAM_PIXELS, lowered here to 10,000 pixels so a small
    photo stands for a 196 MP one): assembled on disk, written in bands; the same pixels as in memory."""
    from edgesr import imaging

    ram = c.fresh("ram.png")
    code, _ = c.cli("upscale", c.onnx, c.photo, ram)
    old = imaging.STREAM_PIXELS
    imaging.STREAM_PIXELS = 10_000
    try:
        disk = c.fresh("disk.png")
        code2, text = c.cli("upscale", c.onnx, c.photo, disk)
    finally:
        imaging.STREAM_PIXELS = old
    same = np.array_equal(np.asarray(Image.open(ram)), np.asarray(Image.open(disk)))
    left = sorted(p.name for p in disk.parent.iterdir() if p.name != "disk.png")
    return code2, (f"written in bands: {'the same pixels as in memory' if same and code == 0 else 'DIFFERENT'}; "
                   f"left beside it: {left or 'nothing'}")


def _progress_lines(c: Ctx, *argv: str) -> tuple[int, str]:
    """A CLI call whose stderr is a log (not a terminal): the progress lines it printed."""
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        code = main([str(a) for a in argv])
    lines = [ln for ln in err.getvalue().splitlines() if re.match(r"^(upscale|eval) .*: \d+/\d+ ", ln)]
    last = re.sub(r"\(\d+ s(, eta [^)]*)?\)", "(<t>)", lines[-1]) if lines else "none"
    return code, f"{len(lines)} progress lines, the last: {last}"


RUN_CASES = [
    Case("run-progress-large-image", "run", "a large image, tiled (`--tile 40` on 64x48: 48 tiles), logged to a file",
         lambda c: _progress_lines(c, "upscale", c.onnx, c.photo, c.fresh("out.png"), "--tile", "40"), 0,
         r"^\d+ progress lines, the last: upscale photo\.png: 48/48 \(<t>\) 48/48 tiles"),
    Case("run-large-png-banded", "run", "an 8-bit PNG output larger than memory should hold (limit lowered for the "
         "test; a 196 MP input reached 6.4 GB)", _banded_png, 0,
         r"written in bands: the same pixels as in memory; left beside it: nothing"),
    Case("run-progress-eval", "run", "`edgesr eval` over a folder, logged to a file",
         lambda c: _progress_lines(c, "eval", c.onnx, "--set", _eval_set(c)), 0,
         r"^\d+ progress lines, the last: eval set: 4/4 \(<t>\)"),
    Case("run-concurrent-batches", "run", "two `edgesr upscale FOLDER OUT --skip-existing` into one folder at once",
         _concurrent_batches, 2, r"out: another `edgesr upscale` is writing into this folder now; wait for it.*"
         r"\[outputs written by the second: 0\]"),
    Case("run-second-writer", "run", "a second `edgesr run` on a run directory in use",
         _second_writer, 2, r"another edgesr run is writing this run directory \(pid \d+, started .*\)\. Wait for it"),
    Case("run-lock-after-crash", "run", "the run holding the lock is killed (SIGKILL)",
         _crashed_lock_holder, 0, r"lock of a killed run is free"),
    Case("run-killed-and-resumed", "run", "`edgesr run` killed at 5 points in turn, then run again",
         _crash_and_resume, 0,
         r"killed \(SIGKILL\) mid-training, mid-prune fine-tune, mid-export, mid-quantization, mid-benchmark; the next "
         r"run completed and all 5 artifact hashes equal an uninterrupted run's; temporary files left: none", slow=True),
]

# ------------------------------------------------------------------------- data loss and silent errors

def _tree(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def _engine_into_user_folder(c: Ctx) -> tuple[int, str]:
    """build-engine --out a folder holding a user's photos and notes: refused, every file kept."""
    d = c.fresh("holiday")
    d.mkdir()
    shutil.copy(c.photo, d / "beach.png")
    shutil.copy(c.photo, d / "hotel.png")
    (d / "notes.txt").write_text("do not lose")
    before = _tree(d)
    code, text = c.cli("build-engine", c.onnx, "--out", d, "--shapes", "16x16:24x24:32x32")
    assert _tree(d) == before
    return code, text


def _engine_onto_its_input(c: Ctx) -> tuple[int, str]:
    art = c.copy(c.onnx)
    before = _tree(art)
    code, text = c.cli("build-engine", art, "--out", art, "--shapes", "16x16:24x24:32x32")
    assert _tree(art) == before
    return code, text


def _format_collision(c: Ctx) -> tuple[int, str]:
    src = c.fresh("shots")
    src.mkdir()
    img = Image.open(c.photo).convert("RGB")
    for suffix in ("jpg", "png", "webp"):
        img.save(src / f"shot.{suffix}")
    out = src.parent / "out"
    code, text = c.cli("upscale", c.onnx, src, out, "--format", "png")
    assert not out.exists()  # refused before any work
    return code, text


def _output_inside_input(c: Ctx) -> tuple[int, str]:
    """The output folder inside the input folder, --recursive, run twice: the second run does not upscale the
    first run's outputs."""
    src = c.fresh("album")
    src.mkdir()
    shutil.copy(c.photo, src / "a.png")
    out = src / "out"
    first = c.cli("upscale", c.onnx, src, out, "--recursive")
    code, text = c.cli("upscale", c.onnx, src, out, "--recursive", "--skip-existing")
    assert first[0] == 0 and sorted(str(p.relative_to(out)) for p in out.rglob("*.png")) == ["a.png"]
    return code, text


def _glob_symlink_loop(c: Ctx) -> tuple[int, str]:
    src = c.fresh("loop")
    src.mkdir()
    shutil.copy(c.photo, src / "a.png")
    (src / "again").symlink_to(src, target_is_directory=True)
    out = src.parent / "out"
    code, text = c.cli("upscale", c.onnx, f"{src}/**/*.png", out)
    assert [p.name for p in out.rglob("*.png")] == ["a.png"]
    return code, text


def _nan_weights(c: Ctx) -> Path:
    """A model artifact whose weights hold NaN (a diverged training written by an older edgesr), hash rewritten."""
    from safetensors.torch import load_file, save_file

    art = c.copy(c.model)
    state = load_file(str(art / "model.safetensors"))
    first = sorted(state)[0]
    state[first] = state[first] * float("nan")
    save_file(state, str(art / "model.safetensors"), metadata={"format": "pt"})
    return _edit_manifest(art, hash=content_hash(art / "model.safetensors"))


def _diverging_run(c: Ctx) -> tuple[int, str]:
    recipe = _tiny()
    recipe["stages"][0] = {**recipe["stages"][0], "lr": 1e30, "steps": 20}
    path = _recipe(c, recipe)
    out = path.parent / "run"
    code, text = c.cli("run", path, "--out", out)
    assert not (out / "teacher").exists()  # no artifact shipped
    return code, text


def _nan_output(c: Ctx) -> tuple[str, str]:
    """A backend whose output holds NaN (what a diverged model gives): the Upscaler refuses to make an image
    (here on its float path, converting in NumPy)."""
    from edgesr.runtime import Upscaler

    backend = _backend(c)
    real = backend.run
    backend.run = lambda x: real(x) * np.float32("nan")
    return _api(lambda: Upscaler(backend, io="float").upscale(_photo_array(c)))


def _nan_graph(c: Ctx) -> Path:
    """An ONNX artifact whose last convolution's bias is NaN (a diverged model exported), hash rewritten."""
    import onnx
    from onnx import numpy_helper

    art = c.copy(c.onnx)
    proto = onnx.load(str(art / "model.onnx"))
    last_conv = [n for n in proto.graph.node if n.op_type == "Conv" and len(n.input) > 2][-1]
    init = next(i for i in proto.graph.initializer if i.name == last_conv.input[2])
    init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * np.float32("nan"), init.name))
    onnx.save(proto, str(art / "model.onnx"))
    return _edit_manifest(art, hash=content_hash(art / "model.onnx"))


def _nan_output_uint8(c: Ctx) -> tuple[str, str]:
    """The same through the 8-bit form (conversions in the graph, where rounding to bytes would hide NaN)."""
    from edgesr.runtime import Upscaler

    up = Upscaler.open(_nan_graph(c), "onnxruntime", threads=1)
    assert up.backend.uint8_native
    return _api(lambda: up.upscale(_photo_array(c)))


def _exif_rotated_with_profile(c: Ctx) -> tuple[int, str]:
    """A JPEG stored landscape with EXIF Orientation=6 (portrait when displayed) and an sRGB ICC profile."""
    from PIL import ImageCms

    src = c.fresh("portrait.jpg")
    im = Image.open(c.photo).convert("RGB")  # 64x48 as stored
    exif = im.getexif()
    exif[0x0112] = 6
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    im.save(src, exif=exif.tobytes(), icc_profile=icc)
    out = src.with_name("portrait_sr.png")
    code, text = c.cli("upscale", c.onnx, src, out)
    if code == 0:
        res = Image.open(out)
        text = (f"written {res.size[0]}x{res.size[1]} (displayed orientation), ICC profile "
                f"{len(res.info.get('icc_profile', b''))} of {len(icc)} bytes kept")
    return code, text


def _env_max_pixels(c: Ctx) -> tuple[int, str]:
    os.environ["EDGESR_MAX_PIXELS"] = "abc"
    try:
        return c.upscale(c.photo)
    finally:
        del os.environ["EDGESR_MAX_PIXELS"]


def _holdout_one_photo(c: Ctx) -> tuple[int, str]:
    d = c.fresh("crops")
    d.mkdir()
    img = np.asarray(Image.open(SKIMAGE / "chelsea.png").convert("RGB"))
    Image.fromarray(img[:64, :64]).save(d / "p_0_0.png")
    Image.fromarray(img[:64, 64:128]).save(d / "p_0_64.png")
    return _run_bad_recipe(c, {**_tiny(), "data": {"patch_size": 16, "train": str(d), "valid": "holdout"}})


def _tiny_eval_set(c: Ctx) -> Path:
    d = c.fresh("tinyset")
    (d / "HR").mkdir(parents=True)
    Image.fromarray(np.full((5, 5, 3), 100, np.uint8)).save(d / "HR" / "dot.png")
    return d


def _same_stem_set(c: Ctx) -> tuple[int, str]:
    """An evaluation folder holding shot.png and shot.jpg: the two shared one name and one score was lost."""
    d = c.fresh("shots")
    d.mkdir()
    Image.open(c.photo).save(d / "shot.png")
    Image.open(c.photo).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(d / "shot.jpg", quality=90)
    return c.cli("eval", c.onnx, "--set", d)


def _cuda_without_gpu(c: Ctx) -> tuple[int, str]:
    """A stage asking for device: cuda where PyTorch sees no GPU (made so on a GPU host too)."""
    import torch

    recipe = _tiny()
    recipe["stages"][0] = {**recipe["stages"][0], "device": "cuda"}
    real = torch.cuda.is_available
    torch.cuda.is_available = lambda: False
    try:
        return _run_bad_recipe(c, recipe)
    finally:
        torch.cuda.is_available = real


def _load_other_scale(c: Ctx) -> tuple[int, str]:
    recipe = {**_tiny(), "scale": 3, "stages": [{"name": "teacher", "stage": "load", "path": "msrep-m-x2"},
                                                {**_tiny()["stages"][1], "teacher": "teacher"}]}
    return _run_bad_recipe(c, recipe)


def _model_variant_on_ort(c: Ctx) -> tuple[int, str]:
    return _run_bad_recipe(c, {**_tiny(), "benchmark": {"variants": ["student"], "backends": ["onnxruntime"]}})


LATE_CASES = [
    Case("artifact-bare-onnx", "artifact", "`edgesr upscale model.onnx ...` with an ONNX file from elsewhere (no manifest)",
         _bare_onnx, 2, r"model\.onnx looks like a model file from elsewhere: bring it in with `edgesr import .*model\.onnx --out DIR`"),
    Case("eval-set-is-a-file", "cli", "`edgesr eval ARTIFACT --set photo.png` (a file, not a folder)",
         lambda c: c.cli("eval", c.onnx, "--set", c.photo), 2,
         r"photo\.png: is a file; data sets are folders\. Put the image\(s\) in a folder"),
    Case("eval-1x1-image", "cli", "`edgesr eval` on a folder holding a 1x1 image",
         _one_pixel_set, 2, r"one\.png: 1x1 is too small for scale 2; remove it from the folder"),
    Case("batch-subfolders-not-recursive", "cli", "a folder with one photo and a subfolder of photos, no `--recursive`",
         _subfolder_without_recursive, 0, r"note: 1 subfolder\(s\) of .* hold images that were not included \(more\); add --recursive"),
    Case("cli-threads-1000", "cli", "`edgesr upscale ... --threads 1000` on a small machine",
         lambda c: c.upscale(c.photo, "--threads", "1000"), 2,
         r"argument --threads: 1000: give 0 \(all \d+ cores\) or a count from 1 to \d+ \(more threads than cores"),
    Case("cli-crf-99", "cli", "`edgesr upscale IN.mp4 OUT.mp4 --crf 99`",
         lambda c: c.cli("upscale", c.onnx, c.fresh("in.mp4"), c.fresh("out.mp4"), "--crf", "99"), 2,
         r"argument --crf: 99: a CRF runs from 0 \(lossless\) to 51 for H\.264"),
    Case("api-threads-negative", "api", "`open_backend(artifact, threads=-2)`",
         lambda c: _api(lambda: _open_with_threads(c, -2)), "ValueError",
         r"threads=-2: give 0 \(all cores\) or a positive number of threads"),
    Case("recipe-patch-larger-than-images", "recipe", "`patch_size: 400` with the built-in training images (most are 256 px)",
         lambda c: _run_bad_recipe(c, {**_tiny(), "data": {"patch_size": 400}}), 2,
         r"data\.patch_size 400 \(LR pixels\) is larger than 10 of the 12 training images at x2 LR: astronaut "
         r"\(256x256\).*Lower data\.patch_size to at most 151"),
    Case("recipe-degradation-unknown", "recipe", "`data: {degradation: real}`",
         lambda c: _run_bad_recipe(c, {**_tiny(), "data": {"patch_size": 16, "degradation": "real"}}), 2,
         r"data\.degradation: 'real' is not one; use one of bicubic, general"),
    Case("recipe-degradation-mix-probability", "recipe", "`data: {degradation: general, degradation_mix: {jpeg: 30}}`",
         lambda c: _run_bad_recipe(c, {**_tiny(), "data": {"patch_size": 16, "degradation": "general",
                                                           "degradation_mix": {"jpeg": 30}}}), 2,
         r"data\.degradation_mix\.jpeg: 30 is a probability; give a number in \[0, 1\]"),
    Case("recipe-valid-degradation-unknown", "recipe", "`data: {valid_degradations: [opencv]}`",
         lambda c: _run_bad_recipe(c, {**_tiny(), "data": {"patch_size": 16, "valid_degradations": ["opencv"]}}), 2,
         r"data\.valid_degradations: 'opencv' is not one; use any of bicubic, cubic-aliased"),
    Case("recipe-valid-holdout-builtin", "recipe", "`data: {valid: holdout}` with the built-in training images",
         lambda c: _run_bad_recipe(c, {**_tiny(), "data": {"patch_size": 16, "valid": "holdout"}}), 2,
         r"data\.valid: holdout takes photographs out of data\.train, but the built-in training images"),
    Case("recipe-valid-holdout-one-photo", "recipe",
         "`data: {valid: holdout}` on a folder of crops of one photograph (`p_0_0.png`, `p_0_64.png`)",
         _holdout_one_photo, 2, r"crops of one photograph \(p\); nothing would be left to train on"),
    Case("env-max-pixels-text", "cli", "`EDGESR_MAX_PIXELS=abc edgesr upscale ...`", _env_max_pixels, 2,
         r"EDGESR_MAX_PIXELS='abc': not a positive whole number of pixels"),
    Case("artifact-manifest-other-scale", "artifact", "ONNX artifact whose manifest was edited to `scales: [4]` (graph is x2)",
         lambda c: c.upscale(c.photo, art=_edit_manifest(c.copy(c.onnx), scales=[4])), 2,
         r"the model returned 128x96 for a 64x48 input, not the x4 its manifest\.json declares"),
    Case("artifact-manifest-size-multiple-0", "artifact", "manifest edited to `size_multiple: 0`",
         lambda c: c.upscale(c.photo, art=_edit_manifest(c.copy(c.onnx), size_multiple=0)), 2,
         r"size_multiple 0 is not a whole number from 1 to 256"),
    Case("eval-image-too-small", "cli", "`edgesr eval` on a set holding a 5x5 image",
         lambda c: c.cli("eval", c.onnx, "--set", _tiny_eval_set(c)), 2,
         r"dot: 4x4 is too small to evaluate at x2: .*Remove it from the evaluation set"),
    Case("check-model-artifact", "artifact", "`edgesr check` on a model artifact (not ONNX)",
         lambda c: c.cli("check", c.model), 2, r"model: is a 'model' artifact; export it first"),
    Case("eval-same-stem", "artifact", "`edgesr eval` on a folder holding `shot.png` and `shot.jpg`",
         _same_stem_set, 0, r"shots: PSNR-Y .* \(2 images\)"),
    Case("recipe-heads-x3-x4", "recipe", "a multi-scale student with x2, x3 and x4 heads (checked at load; it was a "
         "ValueError traceback from the patch sampler when training started)",
         lambda c: _run_bad_recipe(c, {**_tiny(), "stages": [{"name": "teacher", "stage": "train", "steps": 5,
                                                             "model": {"type": "msrep", "size": "s", "heads": [2, 3, 4]}}]}),
         2, r"msrep emits x\[2, 3, 4\], which cannot train together.*Use heads \[2, 4\]"),
    Case("recipe-cuda-without-gpu", "recipe", "`device: cuda` on a machine where PyTorch sees no GPU (checked before "
         "any stage runs, for the stages that must run: one trained on a GPU and brought into the run directory is "
         "reused; it was a RuntimeError traceback when the stage started)", _cuda_without_gpu, 2,
         r"stages\[0\] \(teacher\)\.device: cuda, but PyTorch sees no CUDA GPU here; use device: auto"),
    Case("recipe-load-other-scale", "recipe", "x3 recipe loading an x2 teacher (checked at load, not when distill starts)",
         _load_other_scale, 2, r"msrep-m-x2 is a x2 model artifact and the recipe's scale is 3"),
    Case("recipe-variant-wrong-kind", "recipe", "a model stage benchmarked on ONNX Runtime with no export stage",
         _model_variant_on_ort, 2, r"benchmark variant 'student' is a distill stage .* add an export stage with input: student"),
]


LOSS_CASES = [
    Case("image-exif-orientation-icc", "loss", "JPEG with EXIF Orientation=6 and an sRGB ICC profile",
         _exif_rotated_with_profile, 0, r"written 96x128 \(displayed orientation\), ICC profile (\d+) of \1 bytes kept"),
    Case("engine-out-user-folder", "loss", "`edgesr build-engine ART --out DIR`, DIR holding two photos and notes.txt",
         _engine_into_user_folder, 2, r"holiday: holds 3 file\(s\) \(beach\.png, hotel\.png, notes\.txt\) and is not an "
         r"edgesr artifact; writing an artifact there would replace them"),
    Case("engine-out-is-input", "loss", "`edgesr build-engine ART --out ART` (the source ONNX artifact)",
         _engine_onto_its_input, 2, r"onnx: is the input artifact; refusing to write over it"),
    Case("batch-format-collision", "loss", "folder with `shot.jpg`, `shot.png`, `shot.webp`, `--format png`",
         _format_collision, 2, r"out/shot\.png: would be written by 3 inputs .* Nothing was written\. Leave out --format"),
    Case("batch-output-inside-input", "loss", "output folder inside the input folder, `--recursive`, run twice",
         _output_inside_input, 0, r"1 already there, 0 failed"),
    Case("batch-glob-symlink-loop", "loss", "`'DIR/**/*.png'` where DIR holds one photo and a symlink to itself",
         _glob_symlink_loop, 0, r": 1 upscaled x2"),
    Case("recipe-name-path", "loss", "recipe `name: ../../escaped` (no --out)",
         lambda c: c.cli("run", _recipe(c, {**_tiny(), "name": "../../escaped"})), 2,
         r"name: '\.\./\.\./escaped' is not a plain name"),
    Case("recipe-steps-zero", "loss", "`steps: 0` (would ship an untrained model)",
         lambda c: _run_bad_recipe(c, {**_tiny(), "stages": [{**_tiny()["stages"][0], "steps": 0}, _tiny()["stages"][1]]}), 2,
         r"\(teacher\)\.steps: 0; it must be at least 1"),
    Case("recipe-steps-negative", "loss", "`steps: -5`",
         lambda c: _run_bad_recipe(c, {**_tiny(), "stages": [{**_tiny()["stages"][0], "steps": -5}, _tiny()["stages"][1]]}), 2,
         r"\(teacher\)\.steps: -5; it must be at least 1"),
    Case("recipe-lr-inf", "loss", "`lr: .inf`",
         lambda c: _run_bad_recipe(c, {**_tiny(), "stages": [{**_tiny()["stages"][0], "lr": float("inf")}, _tiny()["stages"][1]]}), 2,
         r"\(teacher\)\.lr: inf; a learning rate must be a finite number above 0"),
    Case("recipe-lr-nan", "loss", "`lr: .nan`",
         lambda c: _run_bad_recipe(c, {**_tiny(), "stages": [{**_tiny()["stages"][0], "lr": float("nan")}, _tiny()["stages"][1]]}), 2,
         r"\(teacher\)\.lr: nan; a learning rate must be a finite number above 0"),
    Case("recipe-lr-negative", "loss", "`lr: -1`",
         lambda c: _run_bad_recipe(c, {**_tiny(), "stages": [{**_tiny()["stages"][0], "lr": -1.0}, _tiny()["stages"][1]]}), 2,
         r"\(teacher\)\.lr: -1\.0; a learning rate must be a finite number above 0"),
    Case("run-training-diverges", "loss", "`lr: 1e30`: the loss becomes NaN during training",
         _diverging_run, 2, r"the loss became (nan|inf) at step \d+ .*the training diverged.*Lower lr"),
    Case("artifact-nan-weights", "loss", "`edgesr upscale` with a model artifact whose weights hold NaN",
         lambda c: c.upscale(c.photo, art=_nan_weights(c)), 2, r"weights hold NaN or Inf in 1 tensor"),
    Case("api-nan-output", "loss", "`Upscaler(io='float').upscale` when the backend returns NaN",
         _nan_output, "OutputError", r"output holds 9,216 NaN or Inf value\(s\) of 9,216.*never|output holds .*NaN or Inf"),
    Case("api-nan-output-uint8", "loss", "`Upscaler.upscale` (8-bit form, rounding in the graph) of an ONNX artifact "
         "whose last bias is NaN", _nan_output_uint8, "OutputError", r"output holds NaN or Inf among its [\d,]+ values"),
]

# ------------------------------------------------------------------------------------ runtime-only install

def _bare(ctx: Ctx, *argv: str, allow: str = "", line: str = "") -> tuple[object, str]:
    """``edgesr ARGV`` in a process where the training extra's packages cannot be imported (``allow``: the ones
    an extra such as [rtx] brings); the message is the error line, or the last output line (holding ``line``)."""
    from conftest import without_extras

    r = without_extras(*argv, allow=allow)
    err = r.stderr.split("edgesr: error:", 1)
    text = " ".join(err[1].split()) if len(err) > 1 else [ln for ln in r.stdout.splitlines() if ln.strip() and
                                                           line in ln and not ln.startswith("LEAKED")][-1].strip()
    return r.returncode, text


def _stable_profile(result: tuple[object, str]) -> tuple[object, str]:
    """The profile line without what differs from run to run and host to host (times, the CPU)."""
    code, text = result
    text = re.sub(r"median [\d.]+ ms \(kernels [\d.]+ ms\)", "median <t> ms (kernels <t> ms)", text)
    return code, re.sub(r"\) on .*$", ") on <host>", text)


INSTALL_CASES = [
    Case("install-models-hint", "install", "`edgesr models` on the runtime-only install",
         lambda c: _bare(c, "models", line="architectures"), 0, r"architectures: need PyTorch \(pip install 'edgesr\[train\]'\)", slow=True),
    Case("install-rtx-check", "install", "`edgesr check ONNX_ARTIFACT` with the [rtx] extra alone (ONNX, no PyTorch)",
         lambda c: _bare(c, "check", c.onnx, allow="onnx"), 0, r"ready for TensorRT", slow=True),
    Case("install-rtx-build", "install", "`edgesr build-engine ONNX_ARTIFACT` with the [rtx] extra alone",
         lambda c: _bare(c, "build-engine", c.onnx, "--out", c.fresh("engine"), allow="onnx"), 0,
         r"-> .*engine \(rtx ", slow=True),
    Case("install-rtx-model", "install", "`edgesr build-engine MODEL_ARTIFACT` with the [rtx] extra alone",
         lambda c: _bare(c, "build-engine", c.model, "--out", c.fresh("engine"), allow="onnx"), 2,
         r"a model artifact: exported to ONNX first\)` needs the training extra.*pip install 'edgesr\[train\]'",
         slow=True),
    Case("install-profile", "install", "`edgesr profile ONNX_ARTIFACT` on the runtime-only install (no ONNX)",
         lambda c: _stable_profile(_bare(c, "profile", c.onnx, "--runs", "2", "--input", "24x32",
                                         line="runs, median")), 0,
         r"GOP/s not counted \(the MAC count needs the onnx package", slow=True),
    Case("install-check-no-onnx", "install", "`edgesr check` on the runtime-only install (no ONNX)",
         lambda c: _bare(c, "check", c.onnx), 2, r"needs the rtx extra.*\(missing: onnx\): pip install 'edgesr\[rtx\]'",
         slow=True),
]


CASES = IMAGE_CASES + CLI_CASES + ARTIFACT_CASES + RECIPE_CASES + API_CASES + RUN_CASES + LOSS_CASES + LATE_CASES + INSTALL_CASES
GROUPS = {"image": "Image files (`edgesr upscale ARTIFACT IMAGE OUT`)", "cli": "Command-line values",
          "artifact": "Artifacts (`edgesr eval` / `edgesr upscale`)", "recipe": "Recipes (`edgesr run RECIPE`)",
          "api": "Python API (`edgesr.runtime` backends)", "run": "Runs: concurrency and interruption",
          "loss": "Data loss and silent errors (each failed on the code before it was fixed)",
          "install": "The runtime-only install and its extras (PyTorch and the training extra made unimportable)"}
RESULTS: dict[str, tuple[object, str]] = {}


# ------------------------------------------------------------------------------------ no code on load

PACKAGES = ["edgesr", "train", "compress", "export", "runtime", "benchmarks"]


def code_on_load(source: str, name: str = "<src>") -> list[str]:
    """Calls and imports that can run code hidden in data: pickle (and its relatives), torch.load without
    weights_only=True, TorchScript loading, eval/exec/compile, yaml's unsafe loaders, np.load(allow_pickle=True)."""
    import ast

    found = []
    for node in ast.walk(ast.parse(source, name)):
        where = f"{name}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            mods = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
            if any(m.split(".")[0] in ("pickle", "cPickle", "dill", "cloudpickle", "shelve", "marshal") for m in mods):
                found.append(f"{where}: imports {mods}")
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        dotted = ast.unparse(f)
        kw = {k.arg: k.value for k in node.keywords}
        if isinstance(f, ast.Name) and f.id in ("eval", "exec", "compile", "__import__"):
            found.append(f"{where}: {f.id}()")
        elif dotted in ("torch.load",) and not (isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True):
            found.append(f"{where}: torch.load without weights_only=True")
        elif dotted in ("torch.jit.load", "torch.package.PackageImporter"):
            found.append(f"{where}: {dotted} (runs serialised code)")
        elif dotted in ("yaml.load", "yaml.unsafe_load", "yaml.full_load", "yaml.load_all"):
            found.append(f"{where}: {dotted} (use yaml.safe_load)")
        elif isinstance(kw.get("allow_pickle"), ast.Constant) and kw["allow_pickle"].value is True:
            found.append(f"{where}: {dotted}(allow_pickle=True)")
    return found


def test_no_code_runs_on_load():
    planted = ["import pickle", "from dill import loads", "torch.load(p)", "torch.load(p, weights_only=False)",
               "eval('1')", "exec(s)", "yaml.load(t)", "np.load(p, allow_pickle=True)", "torch.jit.load(p)"]
    for src in planted:  # the scanner finds each kind of call it looks for
        assert code_on_load(src), src
    assert code_on_load("model.eval(); torch.load(p, weights_only=True); yaml.safe_load(t); np.load(p)") == []
    files = [p for pkg in PACKAGES for p in sorted((REPO / pkg).rglob("*.py"))]
    assert len(files) > 30
    hits = [h for p in files for h in code_on_load(p.read_text(), str(p.relative_to(REPO)))]
    assert hits == []


# ----------------------------------------------------------------------------------------------- tests

@pytest.fixture(scope="module")
def ctx(tmp_path_factory) -> Ctx:
    return Ctx(tmp_path_factory.mktemp("reliability"))


def _normalise(text: str, ctx: Ctx) -> str:
    text = text.replace(str(ctx.root), "…").replace(str(Path.cwd()), "<cwd>")
    text = re.sub(r"\bcase\d\d/", "", text)
    text = re.sub(r"\b[0-9a-f]{16}\b", "<hash>", text)
    text = re.sub(r"pid \d+, started [0-9T:+-]+", "pid <pid>, started <time>", text)
    text = re.sub(r"\bin \d+\.\d+ s\b", "in <t> s", text)  # elapsed times differ from run to run
    return text


def _check(case: Case, ctx: Ctx) -> None:
    outcome, message = case.run(ctx)
    assert outcome == case.outcome, f"{case.id}: outcome {outcome!r}, message: {message}"
    assert re.search(case.expect, message), f"{case.id}: {message!r} does not match {case.expect!r}"
    if outcome == 2:
        assert "Traceback" not in message
    RESULTS[case.id] = (outcome, _normalise(message, ctx))


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=[pytest.mark.slow] if c.slow else []) for c in CASES])
def test_bad_input(case: Case, ctx: Ctx) -> None:
    _check(case, ctx)


def render_table(results: dict[str, tuple[object, str]]) -> str:
    lines = ["# Reliability: every bad input tried, and what edgesr does", "",
             "Generated from `tests/test_reliability.py` (each row is a test case run in CI; the test fails when "
             "this page and the code disagree). Exit code 2: the input is wrong, nothing was written; 0: accepted. "
             "Messages are printed as `edgesr: error: <message>`, without a traceback (`edgesr --debug ...` "
             "shows it). `…` stands for the scratch directory, `<hash>` for a content hash.", ""]
    for group, title in GROUPS.items():
        lines += [f"## {title}", "", "| case | what was tried | exit code / exception | message |", "|---|---|---|---|"]
        for case in CASES:
            if case.group == group:
                outcome, message = results[case.id]
                lines.append(f"| `{case.id}` | {case.tried} | {outcome} | {message.replace('|', '/')} |")
        lines.append("")
    return "\n".join(lines)


@pytest.mark.slow
def test_reliability_table_is_current(ctx: Ctx) -> None:
    for case in CASES:  # cases deselected in this session run here, so the table is always complete
        if case.id not in RESULTS:
            _check(case, ctx)
    text = render_table(RESULTS)
    if os.environ.get("EDGESR_WRITE_RELIABILITY"):
        DOC.parent.mkdir(exist_ok=True)
        DOC.write_text(text)
    assert DOC.is_file() and DOC.read_text() == text, (
        "docs/reliability.md differs from what the cases produce; regenerate it with "
        "EDGESR_WRITE_RELIABILITY=1 .venv/bin/python -m pytest tests/test_reliability.py")
