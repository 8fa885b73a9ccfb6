"""8-bit frames in and out inside the runtime (edgesr.runtime.uint8_io, Backend.run_uint8, the Upscaler's
default path): the same pixels as the float path, on every CPU backend installed here, at odd sizes, tiled,
batched, multi-scale and FP16; every value that differs is named and explained (a float32 tie)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from PIL import Image

from edgesr.artifacts import read_artifact
from edgesr.runtime.uint8_io import Uint8IoError, uint8_io
from edgesr.imaging import to_float, to_uint8
from edgesr.runtime import BACKENDS, Upscaler, open_backend
from edgesr.runtime.base import InputError

from conftest import REPO, SHARED

PRETRAINED = REPO / "edgesr" / "pretrained"
CPU_BACKENDS = [b for b in ("onnxruntime", "openvino") if BACKENDS.get(b).available()[0]]


def _photo(h: int = 77, w: int = 101) -> np.ndarray:
    """A crop of a real photograph at an odd size (no multiple of 2, 4 or 8)."""
    img = np.asarray(Image.open(SHARED / "benchmark/Set14/HR/baboon.png").convert("RGB"))
    return np.ascontiguousarray(img[40:40 + h, 60:60 + w])


def _ties(slow: Upscaler, img: np.ndarray, got: np.ndarray, want: np.ndarray) -> int:
    """Where the 8-bit form and today's float path differ, assert it is by one grey level at a value the
    float32 product x * 255 puts exactly on a half (the graph multiplies in float32, to_uint8 in float64);
    return how many. ``slow``: the float-path Upscaler that made ``want`` (its float values, tile by tile)."""
    diff = np.nonzero(got != want)
    if not diff[0].size:
        return 0
    sr = slow.upscale_float(img)
    assert np.abs(got.astype(int) - want.astype(int)).max() == 1
    products = (sr[diff] * np.float32(255.0)).astype(np.float32)
    assert np.all(products - np.floor(products) == 0.5), products
    return int(diff[0].size)


@pytest.mark.parametrize("backend", CPU_BACKENDS + ["torch"])
@pytest.mark.parametrize("tile", [0, 48])
def test_uint8_path_gives_the_float_paths_pixels(backend, tile):
    """The shipped real-time student (INT8 ONNX; its PyTorch model for torch) through the Upscaler's 8-bit path
    and its float path, whole and tiled, one image and a batch: the same pixels except float32 ties."""
    art = f"{PRETRAINED}/msrep-s-x2" if backend == "torch" else f"{PRETRAINED}/msrep-s-x2-int8"
    fast = Upscaler.open(art, backend, threads=2, tile=tile)
    slow = Upscaler(fast.backend, tile=tile, io="float")
    assert fast.backend.uint8_native and fast.backend.describe().get("uint8_io", "in the graph") == "in the graph"
    img = _photo()
    got, want = fast.upscale(img), slow.upscale(img)
    assert got.shape == want.shape == (154, 202, 3) and got.dtype == np.uint8 and got.flags.c_contiguous
    assert fast.last_tile == tile
    ties = _ties(slow, img, got, want)
    other = np.ascontiguousarray(img[::-1])
    batch_fast, batch_slow = fast.upscale_batch([img, other]), slow.upscale_batch([img, other])
    assert np.array_equal(batch_fast[0], got)
    ties += _ties(slow, other, batch_fast[1], batch_slow[1])
    print(f"{backend} tile={tile}: {ties} value(s) of {2 * got.size:,} differ (float32 ties)")
    assert ties <= 8


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_fp32_graph_and_backend_level_rounding(backend):
    """FP32 graph, run_uint8 against run: exactly round-half-even(clamp(float32(x * 255))), no tolerance."""
    b = open_backend(f"{PRETRAINED}/msrep-s-x2-fp32", backend, threads=2)
    img = _photo(50, 63)
    got = b.run_uint8(img[None])
    sr = b.run(to_float(img).transpose(2, 0, 1)[None].copy())
    want = np.clip(np.round(sr * np.float32(255.0)), 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)
    assert np.array_equal(got, want)
    assert _ties(Upscaler(b, io="float"), img, got[0], to_uint8(sr[0]).transpose(1, 2, 0)) <= 4


def test_multi_scale_and_fp16_graphs(tiny_student, tmp_path):
    """A graph with two outputs (x2 and x4) and an FP16 graph with float16 I/O: each output in bytes, the
    ``finite`` output sums them all."""
    import onnxruntime as ort
    from onnxconverter_common import float16

    base = onnx.load(str(tiny_student.payload))
    two = onnx.ModelProto()
    two.CopyFrom(base)
    sr = two.graph.output[0].name
    scales = helper.make_tensor("x4_scales", TensorProto.FLOAT, [4], [1, 1, 2, 2])
    two.graph.initializer.append(scales)
    two.graph.node.append(helper.make_node("Resize", [sr, "", "x4_scales"], ["sr_x4"], mode="nearest"))
    two.graph.output.append(helper.make_tensor_value_info("sr_x4", TensorProto.FLOAT, None))
    two.graph.output[0].name = sr  # unchanged: 'sr' and 'sr_x4'
    u8 = uint8_io(two)
    assert [o.name for o in u8.graph.output] == ["frames_sr", "frames_x4", "finite"]
    img = _photo(31, 45)
    s = ort.InferenceSession(u8.SerializeToString(), providers=["CPUExecutionProvider"])
    x2, x4, total = s.run(None, {"frames": img[None]})
    f = ort.InferenceSession(two.SerializeToString(), providers=["CPUExecutionProvider"])
    y2, y4 = f.run(None, {"lr": to_float(img).transpose(2, 0, 1)[None].copy()})
    assert x2.shape == (1, 62, 90, 3) and x4.shape == (1, 124, 180, 3)
    assert np.array_equal(x4[0], np.clip(np.round(y4[0] * np.float32(255)), 0, 255).astype(np.uint8).transpose(1, 2, 0))
    assert np.isclose(total, y2.sum(dtype=np.float64) + y4.sum(dtype=np.float64), rtol=1e-4)

    half = float16.convert_float_to_float16(base, keep_io_types=False)
    u8h = uint8_io(half)
    sh = ort.InferenceSession(u8h.SerializeToString(), providers=["CPUExecutionProvider"])
    fh = ort.InferenceSession(half.SerializeToString(), providers=["CPUExecutionProvider"])
    got = sh.run(None, {"frames": img[None]})[0][0]
    ref = fh.run(None, {"lr": (to_float(img).transpose(2, 0, 1)[None]).astype(np.float16)})[0][0].astype(np.float32)
    want = np.clip(np.round(ref * np.float32(255)), 0, 255).astype(np.uint8).transpose(1, 2, 0)
    # ONNX Runtime's CPU provider has no FP16 kernels for most ops and computes the FP16 body through casts it
    # places itself, differently once the graph has other nodes around it (the body's own fp16 output already
    # differs, before any conversion; measured: ~2.5 % of values by one level): one grey level at most.
    assert np.abs(got.astype(int) - want).max() <= 1 and np.count_nonzero(got != want) < 0.05 * got.size


def test_graphs_outside_the_convention_are_refused(tiny_student):
    base = onnx.load(str(tiny_student.payload))
    luma = onnx.ModelProto()
    luma.CopyFrom(base)
    luma.graph.input[0].type.tensor_type.shape.dim[1].dim_value = 1
    with pytest.raises(Uint8IoError, match="not N x 3 x H x W float"):
        uint8_io(luma)
    with pytest.raises(Uint8IoError, match="an 8-bit form already"):
        uint8_io(uint8_io(base))


def test_float_fallback_and_wrong_frames(tiny_student, monkeypatch):
    """Without the onnx package (a runtime-only install) the backend converts around the float graph, with the
    same pixels; run_uint8 refuses what is not N x H x W x 3 uint8, naming the fix; 16-bit and float images
    keep the float path."""
    from edgesr.runtime import onnxruntime_backend

    img = _photo(30, 41)
    with open_backend(tiny_student, "onnxruntime", threads=1) as b:
        assert b.uint8_native
        native = Upscaler(b).upscale(img)
        with pytest.raises(InputError, match="N x H x W x 3 uint8"):
            b.run_uint8(img)
        with pytest.raises(InputError, match="N x H x W x 3 uint8"):
            b.run_uint8(img[None].astype(np.float32))
        wide = Upscaler(b).upscale((img.astype(np.uint16) * 257))
        assert wide.dtype == np.uint16
    monkeypatch.setattr(onnxruntime_backend, "uint8_form", lambda source: None)
    with open_backend(tiny_student, "onnxruntime", threads=1) as b:
        assert not b.uint8_native and b.describe()["uint8_io"] == "NumPy"
        fallback = b.run_uint8(img[None])[0]
        through = Upscaler(b).upscale(img)
    assert np.array_equal(through, fallback)
    assert np.count_nonzero(native != through) <= 2


def test_the_benchmark_times_frames_beside_the_bare_graph(tiny_student, tmp_path):
    """FrameInFrameOut has the backend contract the interleaved timer needs and returns the SR frame's size."""
    from edgesr.benchmarks.latency import FrameInFrameOut, measure_interleaved

    with open_backend(tiny_student, "onnxruntime", threads=1) as b:
        res = measure_interleaved({"bare": b, "frames": FrameInFrameOut(b, (24, 40))}, (24, 40), warmup=1, rounds=3,
                                  min_rounds=3)
    assert res["latency"]["frames"]["output"] == [1, 3, 48, 80] == res["latency"]["bare"]["output"]
    assert len(res["times_ms"]["frames"]) == 3


def test_the_8_bit_form_as_a_file_for_ones_own_application(tmp_path, capsys):
    """`edgesr uint8-onnx` writes what the runtimes run: loaded in a bare ONNX Runtime session it gives the
    backend's run_uint8 bytes; it never overwrites without --overwrite, nor takes a model artifact."""
    import onnxruntime as ort

    from edgesr.cli import main

    out = tmp_path / "msrep_u8.onnx"
    assert main(["uint8-onnx", "msrep-s-x2-int8", str(out)]) == 0
    assert "input frames (uint8 N x H x W x 3 RGB), outputs frames_sr, finite" in capsys.readouterr().out
    img = _photo(31, 45)
    got, total = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"frames": img[None]})
    b = open_backend(PRETRAINED / "msrep-s-x2-int8", "onnxruntime", threads=1)
    assert np.array_equal(got, b.run_uint8(img[None])) and np.isfinite(total)
    meta = {m.key: m.value for m in onnx.load(str(out)).metadata_props}
    assert meta["edgesr.source_hash"] == b.artifact.hash and '"layout": "NHWC"' in meta["edgesr.io"]
    before = out.read_bytes()
    assert main(["uint8-onnx", "msrep-s-x2-int8", str(out)]) == 2
    assert "exists; refusing to overwrite it" in capsys.readouterr().err and out.read_bytes() == before
    assert main(["uint8-onnx", "msrep-s-x2", str(tmp_path / "m.onnx")]) == 2
    assert "is a 'model' artifact" in capsys.readouterr().err
