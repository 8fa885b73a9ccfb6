"""Upscaling as users do it: transparency and 16-bit images kept, folders and patterns with a mirrored output
tree, resuming an interrupted batch, bad files reported without stopping the batch. Real images
(scikit-image's), a tiny exported network."""

import importlib.resources
from pathlib import Path

import numpy as np
import png
import pytest
import torch
from PIL import Image

from conftest import call_stage
from edgesr.runtime.batch import plan_jobs, run_batch
from edgesr.cli import main
from edgesr.data.bicubic import imresize
from edgesr.export.onnx import ExportConfig, export_stage
from edgesr.imaging import ImageError, Picture, read_picture, to_uint8, to_uint16, write_picture
from edgesr.modelio import save_model
from edgesr.models import build_model
from edgesr.runtime import Upscaler, open_backend

SKIMAGE = Path(str(importlib.resources.files("skimage.data")))


@pytest.fixture(scope="module")
def student(tiny_student):
    return tiny_student


def _photo(size=48, name="astronaut.png"):
    return np.asarray(Image.open(SKIMAGE / name).convert("RGB"))[100:100 + size, 120:120 + size].copy()


def test_rgba_keeps_its_transparency(student, tmp_path):
    rgb = _photo()
    yy, xx = np.mgrid[:48, :48]
    alpha = np.clip(xx * 6 - yy, 0, 255).astype(np.uint8)  # a soft diagonal edge, fully clear to fully opaque
    src = tmp_path / "logo.png"
    Image.fromarray(np.dstack([rgb, alpha]), "RGBA").save(src)
    assert main(["upscale", str(student.path), str(src), str(tmp_path / "out.png")]) == 0
    out = Image.open(tmp_path / "out.png")
    assert out.mode == "RGBA" and out.size == (96, 96)
    got = np.asarray(out)
    up = Upscaler(open_backend(student, threads=1))
    np.testing.assert_array_equal(got[..., :3], up.upscale(rgb))  # colour: the network, as without alpha
    expected_alpha = to_uint8(np.clip(imresize(alpha.astype(np.float32) / 255, 2), 0, 1))
    np.testing.assert_array_equal(got[..., 3], expected_alpha)  # alpha: bicubic, apart
    assert got[..., 3].min() == 0 and got[..., 3].max() == 255
    # A format without transparency is refused with the fix, and nothing is written.
    with pytest.raises(ImageError, match=r"JPEG cannot store transparency.*out\.png"):
        write_picture(tmp_path / "out.jpg", read_picture(tmp_path / "out.png"))
    assert not (tmp_path / "out.jpg").exists()


def test_16_bit_png_comes_back_at_16_bits(student, tmp_path):
    rng = np.random.default_rng(0)
    rgb16 = (_photo().astype(np.uint32) * 257 + rng.integers(0, 257, (48, 48, 3))).astype(np.uint16)
    src = tmp_path / "scan16.png"
    with open(src, "wb") as fh:
        png.Writer(48, 48, greyscale=False, bitdepth=16).write(fh, rgb16.reshape(48, -1))
    assert Image.open(src).mode != "I;16"  # Pillow alone would decode it to 8 bits
    pic = read_picture(src)
    assert pic.bits == 16 and np.array_equal(pic.rgb, rgb16)
    assert main(["upscale", str(student.path), str(src), str(tmp_path / "out.png")]) == 0
    w, h, rows, info = png.Reader(filename=str(tmp_path / "out.png")).asDirect()
    assert (w, h, info["bitdepth"], info["planes"]) == (96, 96, 16, 3)
    got = np.vstack([np.asarray(r, dtype=np.uint16) for r in rows]).reshape(96, 96, 3)
    up = Upscaler(open_backend(student, threads=1))
    np.testing.assert_array_equal(got, to_uint16(up.upscale_float(rgb16)))
    assert np.any(got % 257 != 0)  # values between the 8-bit levels: precision was kept
    # The strict reader of training data still refuses it, and says that upscale takes it.
    from edgesr.imaging import read_image
    with pytest.raises(ImageError, match="16-bit colour PNG.*edgesr upscale"):
        read_image(src)


def test_16_bit_rgba_round_trips(tmp_path):
    rgb = np.arange(4 * 5 * 3, dtype=np.uint16).reshape(4, 5, 3) * 1000
    alpha = np.full((4, 5), 40000, np.uint16)
    write_picture(tmp_path / "a.png", Picture(rgb, alpha))
    back = read_picture(tmp_path / "a.png")
    assert np.array_equal(back.rgb, rgb) and np.array_equal(back.alpha, alpha)
    with pytest.raises(ImageError, match="16-bit PNG only"):
        write_picture(tmp_path / "a.tif", Picture(rgb))


def _folder(root: Path, n: int) -> list[Path]:
    names = ["astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg"]
    paths = []
    for i in range(n):
        sub = root / ("" if i % 3 else f"set{i % 2}")
        sub.mkdir(parents=True, exist_ok=True)
        img = np.asarray(Image.open(SKIMAGE / names[i % 4]).convert("RGB"))
        crop = img[(7 * i) % 100:(7 * i) % 100 + 24, (11 * i) % 100:(11 * i) % 100 + 32]
        p = sub / f"img{i:03d}.png"
        Image.fromarray(crop).save(p)
        paths.append(p)
    return paths


@pytest.mark.slow
def test_a_folder_of_100_images_interrupted_and_resumed(student, tmp_path, capsys):
    inputs = _folder(tmp_path / "in", 100)
    jobs = plan_jobs(str(tmp_path / "in"), tmp_path / "out", recursive=True)
    assert len(jobs) == 100 and {j.dst.relative_to(tmp_path / "out") for j in jobs} == {
        p.relative_to(tmp_path / "in") for p in inputs}  # the tree is mirrored
    up = Upscaler(open_backend(student, threads=1))

    class Interrupted(Upscaler):  # the user presses Ctrl-C after the 37th image
        calls = 0

        def upscale_picture(self, pic):
            Interrupted.calls += 1
            if Interrupted.calls > 37:
                raise KeyboardInterrupt
            return super().upscale_picture(pic)

    with pytest.raises(KeyboardInterrupt):
        run_batch(Interrupted(open_backend(student, threads=1)), jobs, show_progress=False)
    done = sorted((tmp_path / "out").rglob("*.png"))
    assert len(done) == 37 and not list((tmp_path / "out").rglob("*.tmp*"))  # only whole files
    before = {p: p.stat().st_mtime_ns for p in done}
    # Resuming without saying so is refused (nothing would be overwritten silently) ...
    assert main(["upscale", str(student.path), str(tmp_path / "in"), str(tmp_path / "out"), "--recursive"]) == 2
    assert "--skip-existing to resume" in capsys.readouterr().err
    # ... and with --skip-existing the 63 others are made, the 37 kept as they were.
    assert main(["upscale", str(student.path), str(tmp_path / "in"), str(tmp_path / "out"), "--recursive",
                 "--skip-existing"]) == 0
    assert "63 upscaled x2, 37 already there, 0 failed" in capsys.readouterr().out
    assert len(list((tmp_path / "out").rglob("*.png"))) == 100
    assert all(p.stat().st_mtime_ns == t for p, t in before.items())
    for j in jobs[::17]:
        np.testing.assert_array_equal(np.asarray(Image.open(j.dst)), up.upscale(np.asarray(Image.open(j.src))))


def test_a_pattern_with_a_bad_file_goes_on_and_reports_it(student, tmp_path, capsys):
    _folder(tmp_path / "in", 6)
    (tmp_path / "in" / "broken.png").write_bytes((tmp_path / "in" / "img001.png").read_bytes()[:60])
    pattern = str(tmp_path / "in" / "**" / "*.png")
    assert main(["upscale", str(student.path), pattern, str(tmp_path / "out"), "--format", "webp"]) == 1
    captured = capsys.readouterr()
    assert "6 upscaled x2, 0 already there, 1 failed" in captured.out
    assert "broken.png: cannot decode this image" in " ".join(captured.err.split())
    made = sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*.webp"))
    assert made == ["img001.webp", "img002.webp", "img004.webp", "img005.webp", "set0/img000.webp", "set1/img003.webp"]
    # Lossless WebP: the output is exactly the network's uint8 result.
    up = Upscaler(open_backend(student, threads=1))
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "out" / "img002.webp").convert("RGB")),
                                  up.upscale(np.asarray(Image.open(tmp_path / "in" / "img002.png"))))


def test_batch_refusals_name_the_fix(student, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["upscale", str(student.path), str(tmp_path / "empty"), str(tmp_path / "out")]) == 2
    assert "no images" in capsys.readouterr().err
    _folder(tmp_path / "in", 2)
    assert main(["upscale", str(student.path), str(tmp_path / "in"), str(tmp_path / "in")]) == 2
    assert "would overwrite its own input" in capsys.readouterr().err
    assert main(["upscale", str(student.path), str(tmp_path / "in"), str(tmp_path / "o"), "--format", "gif"]) == 2
    assert "--format gif: not a format" in capsys.readouterr().err


def test_python_api_in_three_lines(student):
    img = _photo(40)
    with Upscaler.open(student.path, "onnxruntime", threads=1) as up:
        sr = up.upscale(img)
        frames = list(up.frames((_photo(40, n) for n in ("astronaut.png", "chelsea.png", "coffee.png")), batch=2))
    assert sr.shape == (80, 80, 3) and sr.dtype == np.uint8
    with Upscaler.open(student.path, "onnxruntime", threads=1) as ref:
        assert len(frames) == 3 and np.array_equal(frames[0], ref.upscale(img))
        assert np.array_equal(frames[2], ref.upscale(_photo(40, "coffee.png")))
    with pytest.raises(Exception, match="no such|not an artifact|manifest"):
        Upscaler.open(student.path.parent / "missing")


def test_scale_picks_an_output_of_a_multi_scale_student(tmp_path, capsys):
    torch.manual_seed(0)
    spec = {"type": "msrep", "scale": 2, "heads": [2, 4], "size": "s"}
    src = save_model(tmp_path / "ms", build_model(spec), name="ms", arch=spec)
    onnx_art = call_stage(export_stage, ExportConfig(input="ms", scales=(2, 4)), name="ms_onnx",
                          out=tmp_path / "ms_onnx", source=src)
    photo = tmp_path / "p.png"
    Image.fromarray(_photo(24)).save(photo)
    for art, backend in ((onnx_art, "onnxruntime"), (src, "torch")):
        for scale, side in ((None, 48), (2, 48), (4, 96)):
            out = tmp_path / f"{backend}{scale}.png"
            extra = ["--scale", str(scale)] if scale else []
            assert main(["upscale", str(art.path), str(photo), str(out), "--backend", backend, *extra]) == 0
            assert Image.open(out).size == (side, side)
    # The x4 output of the ONNX graph equals the x4 output of the PyTorch model (the same network).
    x4 = [np.asarray(Image.open(tmp_path / f"{b}4.png")).astype(int) for b in ("onnxruntime", "torch")]
    assert np.abs(x4[0] - x4[1]).max() <= 1
    assert main(["upscale", str(onnx_art.path), str(photo), str(tmp_path / "x3.png"), "--scale", "3"]) == 2
    assert "emits x[2, 4], not x3" in capsys.readouterr().err
    # A selected head runs alone (the other head's layers are not computed): the same numbers as the whole graph's
    # output, float and 8-bit, on both CPU runtimes.
    from edgesr.runtime import open_backend

    lr = np.ascontiguousarray(_photo(24).transpose(2, 0, 1)[None] / 255.0, dtype=np.float32)
    frames = _photo(24)[None]
    with open_backend(onnx_art, "onnxruntime", threads=1) as whole:
        full = whole.session.run(None, {"lr": lr})
        full_u8 = [whole.run_uint8(frames)]
    for backend in ("onnxruntime", "openvino"):
        for scale, ref in ((2, full[0]), (4, full[1])):
            opts = {"precision": "f32"} if backend == "openvino" else {}  # not BF16 where the CPU has it
            with open_backend(onnx_art, backend, threads=1, scale=scale, **opts) as one:
                n_out = len(one.session.get_outputs()) if backend == "onnxruntime" else len(one.compiled.outputs)
                assert n_out == 1, backend
                assert np.abs(one.run(lr) - ref).max() < 1e-4, (backend, scale)
                u8 = one.run_uint8(frames)
                assert u8.shape == (1, 24 * scale, 24 * scale, 3)
                if scale == 2 and backend == "onnxruntime":
                    assert np.array_equal(u8, full_u8[0])


def test_onnxruntime_providers_by_name_with_the_fix_when_missing(student, tmp_path, capsys):
    import onnxruntime as ort

    photo = tmp_path / "p.png"
    Image.fromarray(_photo(24)).save(photo)
    assert main(["upscale", str(student.path), str(photo), str(tmp_path / "o.png"), "--providers", "cpu"]) == 0
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        assert main(["upscale", str(student.path), str(photo), str(tmp_path / "o2.png"), "--providers", "cuda,cpu"]) == 2
        assert "no CUDAExecutionProvider (CUDAExecutionProvider: install onnxruntime-gpu" in capsys.readouterr().err
        assert not (tmp_path / "o2.png").exists()
    assert main(["upscale", str(student.path), str(photo), str(tmp_path / "o3.png"), "--backend", "openvino",
                 "--providers", "cpu"]) == 2
    assert "--providers chooses ONNX Runtime's execution providers" in capsys.readouterr().err


def test_an_output_too_large_for_memory_is_assembled_on_disk_and_written_in_bands(tmp_path, monkeypatch):
    """Above edgesr.imaging.STREAM_PIXELS (lowered here) an 8-bit PNG output is assembled tile by tile in a
    memory-mapped temporary file and written a band of rows at a time: the same pixels as the in-memory path,
    the ICC profile kept, nothing left beside the output (issue 27: a 196 MP image reached 6.4 GB)."""
    from PIL import Image, ImageCms

    from edgesr import imaging
    from edgesr.cli import main

    src = tmp_path / "big.png"
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    Image.open(SKIMAGE / "astronaut.png").convert("RGB").crop((0, 0, 300, 220)).save(src, icc_profile=icc)
    assert main(["upscale", "msrep-s-x2-int8", str(src), str(tmp_path / "ram.png"), "--tile", "128"]) == 0
    monkeypatch.setattr(imaging, "STREAM_PIXELS", 10_000)
    assert main(["upscale", "msrep-s-x2-int8", str(src), str(tmp_path / "disk.png"), "--tile", "128"]) == 0
    ram, disk = Image.open(tmp_path / "ram.png"), Image.open(tmp_path / "disk.png")
    np.testing.assert_array_equal(np.asarray(disk), np.asarray(ram))
    assert disk.info.get("icc_profile") == icc == ram.info.get("icc_profile")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.png", "disk.png", "ram.png"]


@pytest.mark.parametrize("io", ["auto", "float"])
def test_frames_come_in_and_go_out_in_the_layout_capture_gives(io):
    """OpenCV's BGR and 4-byte BGRx / RGBx / xBGR pixels: the network sees the frame's RGB, and the SR frame comes
    back in the frame's layout (the padding byte 255, whatever it held), through the 8-bit path and the float
    one, whole, batched and tiled; a frame of the other width is named with the fix."""
    from edgesr.data.datasets import load_pairs

    rgb = np.ascontiguousarray(load_pairs("builtin", 2, split="valid")[0].lr[:48, :56])
    plain = Upscaler.open("msrep-s-x2-int8", "onnxruntime", threads=1, io=io)
    ref, ref_float = plain.upscale(rgb), plain.upscale_float(rgb)
    assert ref.std() > 20  # a real picture, not a flat test card
    for layout in ("bgr", "bgrx", "rgbx", "xbgr"):
        where = [layout.index(c) for c in "rgb"]
        frame = np.full(rgb.shape[:2] + (len(layout),), 9, np.uint8)
        frame[..., where] = rgb
        up = Upscaler.open("msrep-s-x2-int8", "onnxruntime", threads=1, io=io, layout=layout)
        sr = up.upscale(frame)
        assert sr.shape == ref.shape[:2] + (len(layout),) and sr.dtype == np.uint8
        assert np.array_equal(sr[..., where], ref), layout
        if "x" in layout:
            assert (sr[..., layout.index("x")] == 255).all()
        assert all(np.array_equal(b, sr) for b in up.upscale_batch([frame, frame]))
        assert np.array_equal(up.upscale_float(frame)[..., where], ref_float)
        out = np.zeros_like(sr)
        assert up.upscale(frame, out=out) is out and np.array_equal(out, sr)
        up.tile = 40  # tiled: the same as the tiled RGB frame
        plain.tile = 40
        assert np.array_equal(up.upscale(frame)[..., where], plain.upscale(rgb))
        plain.tile = 0
    with pytest.raises(ValueError, match=r"expects an HxWx3 image \('rgb' pixels\), got shape \(48, 56, 4\); open "
                                         r"the Upscaler with the layout the images have \(layout=\.\.\.: rgb, bgr"):
        plain.upscale(np.zeros((48, 56, 4), np.uint8))
    with pytest.raises(ValueError, match="layout 'rgba': use one of .*an RGBA picture with real transparency goes "
                                         "through upscale_picture"):
        Upscaler.open("msrep-s-x2-int8", "onnxruntime", layout="rgba")
