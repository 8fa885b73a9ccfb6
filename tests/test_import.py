"""Import: authors' checkpoints and foreign ONNX files become artifacts that every stage takes.

The per-family checks (each file's layout, agreement with the authors' code, their Set5 numbers) are in
``test_import_<family>.py``; this file checks the importer itself: strictness and its messages, the CLI, the ONNX
wrapper (range, channel order, names, static -> dynamic, multi-output), and an imported graph going on through
quantization and upscaling. Published files come from ``../shared/weights`` (skipped without it)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from conftest import REPO, SHARED, WEIGHTS, call_stage, published_weights, set5_psnr
from edgesr.artifacts import read_artifact
from edgesr.cli import main
from edgesr.importing import ImportError_, detect_layouts, import_checkpoint, load_checkpoint_model, read_checkpoint

SET5 = SHARED / "benchmark" / "Set5"
needs_weights = pytest.mark.skipif(not (WEIGHTS / "imdn_rtc.pth").is_file() or not SET5.is_dir(),
                                   reason="../shared/weights or ../shared/data not present")

_RLFN_NTIRE = {"scale": 4, "channels": 46, "mid_channels": 48, "n_blocks": 4, "esa_channels": 16, "pool_padding": 0,
               "data_range": 255.0}
_SPAN_REF = {"scale": 4, "deploy": True, "img_range": 255.0, "rgb_mean": [0.4488, 0.4371, 0.4040], "c1_act": True}
PUBLISHED = {  # every file of ../shared/weights: (architecture, keywords its layout reads, values in the file)
    "imdn_x2.pth": ("imdn", {"scale": 2, "channels": 64, "n_blocks": 6}, 694_404),
    "imdn_x3.pth": ("imdn", {"scale": 3, "channels": 64, "n_blocks": 6}, 703_059),
    "imdn_x4.pth": ("imdn", {"scale": 4, "channels": 64, "n_blocks": 6}, 715_176),
    "imdn_rtc.pth": ("imdn_rtc", {"scale": 2, "channels": 12, "n_blocks": 5, "tail_kernel": 1}, 20_190),
    "imdn_rte.pth": ("imdn_rte", {"scale": 2, "channels": 20, "n_blocks": 6, "rgb_range": 255.0}, 89_748),
    "ntire22_imdn_baseline.pth": ("imdn_rtc", {"scale": 4, "channels": 64, "n_blocks": 8, "tail_kernel": 3}, 893_936),
    "carn_m.pth": ("carn_m", {"scales": [2, 3, 4], "channels": 64, "groups": 4, "n_blocks": 3}, 414_811),
    "ntire22_rfdn_baseline.pth": ("rfdn", {"scale": 4, "channels": 50, "n_blocks": 4, "esa_channels": 12,
                                           "data_range": 255.0}, 433_448),
    "ntire22_team04_rlfn.pth": ("rlfn", _RLFN_NTIRE, 317_218),
    "ntire24_team00_rlfn.pth": ("rlfn", _RLFN_NTIRE, 317_218),
    "ntire24_team38_span_ch28_slim.pth": ("span", {**_SPAN_REF, "channels": 28}, 150_688),
    "ntire24_team39_spantiny_ch26_slim.pth": ("span", {**_SPAN_REF, "channels": 26}, 130_828),
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_every_published_checkpoint_is_claimed_by_one_layout_and_loads_strictly(name):
    """Exactly one architecture of the whole registry recognises the file (so no family claims another's),
    reads the expected keywords, maps every tensor, and the strict load gives a module with the file's values
    (the importer's refusal of unused, missing or misshapen tensors is tested below)."""
    arch, keywords, values = PUBLISHED[name]
    path = published_weights(name)
    state, _ = read_checkpoint(path)
    assert sum(v.numel() for v in state.values()) == values
    found = detect_layouts(state)
    assert sorted(found) == [arch], sorted(found)
    detected, key_map = found[arch]
    assert detected == keywords and sorted(key_map) == sorted(state)
    imported = load_checkpoint_model(path)
    assert imported.arch == {"type": arch, **keywords}
    assert sum(p.numel() for p in imported.model.parameters()) == values
    assert all(torch.isfinite(v).all() for v in imported.model.state_dict().values())


def _cli(*argv) -> tuple[int, str, str]:
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in argv])
        except SystemExit as exc:
            code = exc.code
    return code, out.getvalue(), " ".join(err.getvalue().split())


# ------------------------------------------------------------------------------------------- checkpoints

@needs_weights
def test_checkpoint_import_records_its_source_and_refuses_a_wrong_keyword_naming_the_right_one(tmp_path):
    code, out, err = _cli("import", WEIGHTS / "imdn_rtc.pth", "--out", tmp_path / "rtc")
    assert code == 0, err
    art = read_artifact(tmp_path / "rtc")
    src = art.manifest["source"]
    assert art.manifest["arch"]["type"] == "imdn_rtc" and src["file_name"] == "imdn_rtc.pth" and len(src["sha256"]) == 64
    assert art.manifest["transforms"][0]["type"] == "import" and art.manifest["params"] == src["values"] == 20190
    # a keyword that contradicts the file: the message names the keyword that fits
    code, _, err = _cli("import", WEIGHTS / "imdn_rtc.pth", "channels=16", "--out", tmp_path / "bad")
    assert code == 2 and "shape mismatch" in err and "The file's shapes fit channels=12 (you gave channels=16)" in err
    assert not (tmp_path / "bad").exists()
    code, _, err = _cli("import", WEIGHTS / "imdn_rtc.pth", "--scale", "4", "--out", tmp_path / "bad")
    assert code == 2 and "scale" in err and not (tmp_path / "bad").exists()
    # the output directory is the import's: a second import there needs --overwrite
    code, _, err = _cli("import", WEIGHTS / "imdn_rtc.pth", "--out", tmp_path / "rtc")
    assert code == 2 and "pass --overwrite" in err
    assert _cli("import", WEIGHTS / "imdn_rtc.pth", "--out", tmp_path / "rtc", "--overwrite")[0] == 0


@needs_weights
def test_checkpoint_files_are_read_safely_and_wrappers_unwrapped(tmp_path):
    """A BasicSR-style file (weights under params_ema, DataParallel's module. prefix) of the authors' layout."""
    authors = torch.load(WEIGHTS / "imdn_rtc.pth", weights_only=True, map_location="cpu")
    state = {f"module.{k}": v for k, v in authors.items()}
    torch.save({"params_ema": state, "iter": torch.tensor(5)}, tmp_path / "wrapped.pth")
    got, steps = read_checkpoint(tmp_path / "wrapped.pth")
    assert steps == ["unwrapped 'params_ema'", "stripped 'module.'"] and set(got) == set(authors)
    art = import_checkpoint(tmp_path / "wrapped.pth", tmp_path / "art")  # --arch auto
    assert art.manifest["arch"]["type"] == "imdn_rtc"
    # a pickled object is never unpickled; a corrupt file, an empty one, NaN weights and foreign keys are named
    torch.save({"model": torch.nn.Conv2d(3, 3, 3)}, tmp_path / "pickled.pth")
    with pytest.raises(ImportError_, match=r"pickled\.pth: cannot read this checkpoint .*no code runs on load"):
        read_checkpoint(tmp_path / "pickled.pth")
    (tmp_path / "cut.pth").write_bytes((tmp_path / "wrapped.pth").read_bytes()[:200])
    with pytest.raises(ImportError_, match=r"cut\.pth: cannot read this checkpoint .*corrupt, truncated"):
        read_checkpoint(tmp_path / "cut.pth")
    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(ImportError_, match=r"empty\.pth: is empty"):
        read_checkpoint(tmp_path / "empty.pth")
    bad = dict(authors)
    first = sorted(bad)[0]
    bad[first] = bad[first] * float("nan")
    torch.save(bad, tmp_path / "nan.pth")
    with pytest.raises(ImportError_, match=r"nan\.pth: holds NaN or Inf values"):
        import_checkpoint(tmp_path / "nan.pth", tmp_path / "nan")
    torch.save({"backbone.w": torch.zeros(3)}, tmp_path / "foreign.pth")
    with pytest.raises(ImportError_, match=r"no edgesr architecture recognises .*architectures that import: .*imdn"):
        import_checkpoint(tmp_path / "foreign.pth", tmp_path / "f")
    with pytest.raises(ImportError_, match=r"--arch imdnn: not an architecture edgesr imports \(did you mean 'imdn'"):
        import_checkpoint(tmp_path / "wrapped.pth", tmp_path / "f", arch="imdnn")
    assert not any((tmp_path / n).exists() for n in ("nan", "f"))


# ------------------------------------------------------------------------------------------- foreign ONNX

@needs_weights
def test_the_authors_static_bgr_onnx_imports_dynamic_and_scores_what_its_checkpoint_scores(tmp_path):
    """IMDN-RTC as its authors' code exports it (BGR, 0-255, fixed 360x640, input.1/output): wrapped, made dynamic,
    37.31 dB Set5 x2 as the checkpoint (and the issue's independent measurement); the wrong range is refused."""
    onnx_file = WEIGHTS / "onnx" / "imdn_rtc_x2_bgr255_static_360x640.onnx"
    code, _, err = _cli("import", onnx_file, "--out", tmp_path / "wrong")
    assert code == 2 and "Import it with --range 0-255" in err and not (tmp_path / "wrong").exists()
    code, out, err = _cli("import", onnx_file, "--range", "0-255", "--channels", "bgr", "--out", tmp_path / "rtc")
    assert code == 0, err
    art = read_artifact(tmp_path / "rtc")
    m = art.manifest
    assert m["kind"] == "onnx" and m["scales"] == [2] and m["source"]["made_dynamic"]
    assert m["metrics"]["parity"]["max_abs"] < 1e-5 and m["metrics"]["parity"]["input_hw"] == [360, 640]
    g = onnx.load(str(art.payload)).graph
    assert [i.name for i in g.input] == ["lr"] and [o.name for o in g.output] == ["sr"]
    assert [d.dim_param for d in g.input[0].type.tensor_type.shape.dim] == ["batch", "", "height", "width"]
    assert set5_psnr(art.path, 2, "onnxruntime") == pytest.approx(37.315, abs=0.01)


@needs_weights
def test_a_multi_output_onnx_becomes_a_multi_scale_artifact(tmp_path):
    art = read_artifact(_cli_ok("import", WEIGHTS / "onnx" / "carn_m_x2x3x4_rgb01_dynamic.onnx", "--out", tmp_path / "c"))
    assert art.manifest["scales"] == [2, 3, 4] and art.manifest["source"]["outputs"] == ["up2", "up3", "up4"]
    assert [o.name for o in onnx.load(str(art.payload)).graph.output] == ["sr_x2", "sr_x3", "sr_x4"]
    one = read_artifact(_cli_ok("import", WEIGHTS / "onnx" / "carn_m_x2x3x4_rgb01_dynamic.onnx", "--output", "up3",
                                "--out", tmp_path / "x3"))
    assert one.manifest["scales"] == [3] and one.payload.stat().st_size < art.payload.stat().st_size
    code, out, _ = _cli("eval", art.path, "--set", SET5, "--scale", "2")
    assert code == 0 and out.startswith("Set5 x2: PSNR-Y 37.68")


def _cli_ok(*argv) -> Path:
    code, _, err = _cli(*argv)
    assert code == 0, err
    return Path(argv[argv.index("--out") + 1])


def _graph(tmp_path: Path, name: str, in_shape, out_shape, nodes, inits=(), inputs=None) -> Path:
    ins = inputs or [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)]
    g = helper.make_graph(nodes, name, ins, [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)], list(inits))
    p = tmp_path / f"{name}.onnx"
    onnx.save_model(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(p))
    return p


def _upsampler(tmp_path: Path, name: str = "up2", scale: int = 2) -> Path:
    """A real x``scale`` network in [0, 1] RGB that clamps its output to [0, 1]: cubic Resize, Clip."""
    consts = [numpy_helper.from_array(np.array([1, 1, scale, scale], np.float32), "scales"),
              numpy_helper.from_array(np.array(0.0, np.float32), "lo"), numpy_helper.from_array(np.array(1.0, np.float32), "hi")]
    return _graph(tmp_path, name, ["n", 3, "h", "w"], ["n", 3, "H", "W"],
                  [helper.make_node("Resize", ["x", "", "scales"], ["r"], mode="cubic"),
                   helper.make_node("Clip", ["r", "lo", "hi"], ["y"])], consts)


def test_bad_onnx_files_are_refused_naming_the_fix(tmp_path):
    from edgesr.export.onnx_import import OnnxImportError, import_onnx

    ok = import_onnx(_upsampler(tmp_path), tmp_path / "ok")
    assert ok.manifest["scales"] == [2] and ok.manifest["metrics"]["probe"]["psnr_y"] > 28
    nhwc = _graph(tmp_path, "nhwc", [1, "h", "w", 3], [1, "H", "W", 3], [helper.make_node("Identity", ["x"], ["y"])])
    two = _graph(tmp_path, "two", None, None, [helper.make_node("Add", ["x", "z"], ["y"])], inputs=[
        helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, "h", "w"]),
        helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 3, "h", "w"])])
    frac = numpy_helper.from_array(np.array([1, 1, 1.5, 1.5], np.float32), "scales")
    odd = _graph(tmp_path, "odd", [1, 3, "h", "w"], [1, 3, "H", "W"],
                 [helper.make_node("Resize", ["x", "", "scales"], ["y"], mode="nearest")], [frac])
    (tmp_path / "junk.onnx").write_bytes(b"\x08\x01garbage" * 10)
    cases = {nhwc: r"is N x H x W x 3 .*channels last; .*Export with channels first",
             two: r"has 2 inputs \(x, z\); edgesr imports image-to-image graphs with one image input",
             odd: r"is 43x55 for a 29x37 input: scale 1\.48\d* x 1\.48\d*, not one integer scale",
             tmp_path / "junk.onnx": r"junk\.onnx: cannot read it as an ONNX model"}
    for path, message in cases.items():
        with pytest.raises(OnnxImportError, match=message):
            import_onnx(path, tmp_path / f"out_{path.stem}")
        assert not (tmp_path / f"out_{path.stem}").exists()
    # 0-255 given for a 0-1 network: the probe photo shows it and names the flag
    with pytest.raises(OnnxImportError, match=r"below bicubic's .* Import it with --range 0-1"):
        import_onnx(_upsampler(tmp_path, "up2b"), tmp_path / "r", value_range="0-255")


@pytest.mark.slow
def test_an_imported_onnx_goes_on_through_int8_and_upscaling(tmp_path):
    """The wrapped graph is a graph like any export: quantized (7-bit Q/DQ) and run by the Upscaler."""
    from edgesr.compress.ptq import QuantizeConfig, quantize_stage
    from edgesr.data.datasets import load_pairs
    from edgesr.runtime import Upscaler

    src = read_artifact(_cli_ok("import", WEIGHTS / "onnx" / "imdn_x4_rgb01_dynamic.onnx", "--out", tmp_path / "x4")) \
        if (WEIGHTS / "onnx").is_dir() else None
    if src is None:
        pytest.skip("../shared/weights/onnx not present")
    pairs = load_pairs("builtin", 4, "train")[:2]
    q = call_stage(quantize_stage, QuantizeConfig(input="x4", calibration_images=2, calibration_patch=32),
                   name="q", out=tmp_path / "q", source=src, calib_pairs=pairs, val_pairs=pairs, scale=4)
    assert q.manifest["precision"].startswith("int8")
    ops = onnx.load(str(q.payload)).graph.node
    assert sum(n.op_type == "QuantizeLinear" for n in ops) > 10
    with Upscaler.open(q.path, threads=1) as up:
        out = up.upscale(np.full((20, 24, 3), 128, np.uint8))
    assert out.shape == (80, 96, 3)


def _luma_network_onnx(tmp_path: Path, fixed: tuple[int, int] | None = None) -> tuple[Path, object]:
    """A trained luminance network as its authors would export it: FSRCNN's Y core (N x 1 x H x W -> Y x2), in
    [0, 1]; with ``fixed``, a static input size and no dynamic axes."""
    import torch

    from edgesr.modelio import load_model

    model = load_model(read_artifact(REPO / "tests" / "data" / "int8_property" / "fsrcnn")).eval()
    h, w = fixed or (24, 32)
    p = tmp_path / ("y_fixed.onnx" if fixed else "y.onnx")
    dyn = None if fixed else {"y_in": {0: "n", 2: "h", 3: "w"}, "y_out": {0: "n", 2: "H", 3: "W"}}
    torch.onnx.export(model.network, torch.rand(1, 1, h, w), str(p), input_names=["y_in"], output_names=["y_out"],
                      dynamic_axes=dyn, opset_version=17, dynamo=False)
    return p, model


def test_a_luminance_network_imports_with_channels_y_and_scores_what_edgesr_scores_with_it(tmp_path):
    """SRCNN/FSRCNN/VDSR are published on Y: --channels y computes Y in the graph, runs the network on it and
    takes the colour from the bicubic-upscaled input; the network's Y is the output's Y, so PSNR-Y is the
    network's (measured: equal to edgesr's own Y wrapper of the same weights, whose chroma is bilinear)."""
    path, model = _luma_network_onnx(tmp_path)
    code, _, err = _cli("import", path, "--out", tmp_path / "rgb")
    assert code == 2 and "has one channel" in err and "--channels y" in err
    art = read_artifact(_cli_ok("import", path, "--channels", "y", "--out", tmp_path / "y"))
    assert art.manifest["source"]["channels"] == "y" and art.manifest["metrics"]["parity"]["max_abs"] < 1e-5
    got = set5_psnr(art.path, 2, backend="onnxruntime")
    ref = set5_psnr(REPO / "tests" / "data" / "int8_property" / "fsrcnn", 2)
    assert got == pytest.approx(ref, abs=0.02) and got > 33.70  # (bicubic: 33.68)


def _fixed_size_upsampler(tmp_path: Path) -> Path:
    """A real x2 upsampler bound to 1 x 3 x 24 x 32, as old exporters leave graphs: a Reshape to constant shapes
    (it fails at any other size or batch), then the cubic Resize and Clip of :func:`_upsampler`."""
    consts = [numpy_helper.from_array(np.array([1, 3, 24 * 32], np.int64), "flat"),
              numpy_helper.from_array(np.array([1, 3, 24, 32], np.int64), "shape"),
              numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales"),
              numpy_helper.from_array(np.array(0.0, np.float32), "lo"), numpy_helper.from_array(np.array(1.0, np.float32), "hi")]
    return _graph(tmp_path, "fixed", [1, 3, 24, 32], [1, 3, 48, 64],
                  [helper.make_node("Reshape", ["x", "flat"], ["f"]), helper.make_node("Reshape", ["f", "shape"], ["r"]),
                   helper.make_node("Resize", ["r", "", "scales"], ["u"], mode="cubic"),
                   helper.make_node("Clip", ["u", "lo", "hi"], ["y"])], consts)


def test_a_graph_bound_to_its_input_size_imports_and_the_runtime_tiles_to_it(tmp_path):
    """It was refused ('does not run at other sizes'); now its size is recorded, the backend refuses other sizes
    with the fix, and the Upscaler cuts every image into tiles of exactly that size (mirroring small ones)."""
    from edgesr.errors import EdgesrError
    from edgesr.runtime import Upscaler, open_backend

    art = read_artifact(_cli_ok("import", _fixed_size_upsampler(tmp_path), "--out", tmp_path / "fixed"))
    assert art.manifest["input_size"] == [24, 32] and art.manifest["max_batch"] == 1
    assert not art.manifest["source"]["made_dynamic"] and art.manifest["scales"] == [2]
    dyn = read_artifact(_cli_ok("import", _upsampler(tmp_path), "--out", tmp_path / "dyn"))  # the same cubic Resize
    from edgesr.data.datasets import builtin_images

    img = builtin_images("valid")[0][1][:50, :71]
    for backend in ("onnxruntime", "openvino"):
        b = open_backend(art, backend, threads=1)
        with pytest.raises(EdgesrError, match=r"runs at 32x24 only .*, got 20x20; use edgesr.runtime.Upscaler"):
            b.run(np.zeros((1, 3, 20, 20), np.float32))
        x = np.random.default_rng(0).random((3, 3, 24, 32), dtype=np.float32)
        whole = open_backend(dyn, backend, threads=1).run(x)
        np.testing.assert_allclose(b.run(x), whole, atol=1e-5)  # batch 3 through a batch-1 graph
        ref = Upscaler(open_backend(dyn, backend, threads=1))
        for io in ("auto", "float"):
            up = Upscaler(b, io=io)
            big = up.upscale(img)  # 50 x 71: 3 x 3 tiles, the last ones moved back inside the image
            assert up.last_tile and big.shape == (100, 142, 3)
            # a cubic Resize needs 2 px of context: with the tiles' 5 px margins, tiled = whole (but for a value on
            # a rounding tie, where the runtime sums in another order: 1 of 42,600 seen)
            diff = np.abs(big.astype(int) - ref.upscale(img))
            assert diff.max() <= 1 and np.count_nonzero(diff) <= 5
            small = up.upscale(img[:10, :13])  # mirrored out to 24 x 32 and cropped back
            assert small.shape == (20, 26, 3)
            np.testing.assert_array_equal(small[:16, :20], ref.upscale(img[:10, :13])[:16, :20])
    code, out, err = _cli("eval", art.path, "--set", SET5)
    assert code == 0 and out.startswith("Set5: PSNR-Y 3"), err  # (every Set5 image tiled or mirrored to 32x24)


def test_a_fixed_size_graph_goes_on_through_int8_engine_profiles_and_timing(tmp_path):
    """Every form made from it stays bound to its size: INT8 calibrates on crops of exactly that size (images
    mirrored out where smaller), the engine profile is that size, the latency harness times the bare graph at
    it (and says so) beside frame-in/frame-out at the benchmark's size."""
    from edgesr.benchmarks.latency import FrameInFrameOut, measure_interleaved
    from edgesr.compress.ptq import QuantizeConfig, quantize_stage
    from edgesr.data.datasets import load_pairs
    from edgesr.export.tensorrt import EngineConfig, check_profile
    from edgesr.runtime import Upscaler, open_backend

    src = read_artifact(_cli_ok("import", _fixed_size_upsampler(tmp_path), "--out", tmp_path / "fixed"))
    pairs = load_pairs("builtin", 2, "train")[:2]
    q = call_stage(quantize_stage, QuantizeConfig(input="fixed", calibration_images=3, calibration_patch=96),
                   name="q", out=tmp_path / "q", source=src, calib_pairs=pairs, val_pairs=pairs, scale=2)
    assert q.manifest["input_size"] == [24, 32] and q.manifest["max_batch"] == 1
    img = pairs[0].lr[:40, :50]
    with Upscaler.open(q.path, threads=1) as up, Upscaler.open(src.path, threads=1) as ref:
        got, want = up.upscale(img), ref.upscale(img)
    assert got.shape == (80, 100, 3) and np.abs(got.astype(int) - want).mean() < 2  # INT8 of a cubic Resize
    profile = check_profile(EngineConfig(input="q", shapes=((16, 16), (360, 640), (1080, 1920)), batch=4),
                            1, q.manifest["input_size"], q.manifest["max_batch"])
    assert profile["min"] == profile["opt"] == profile["max"] == [1, 3, 24, 32]
    b = open_backend(q, "onnxruntime", threads=1)
    t = measure_interleaved({"bare": b, "frames": FrameInFrameOut(b, (36, 64))}, (36, 64), warmup=1, rounds=2,
                            min_rounds=2)
    assert t["latency"]["bare"]["input"] == [1, 3, 24, 32] and t["latency"]["frames"]["output"][2:] == [72, 128]
