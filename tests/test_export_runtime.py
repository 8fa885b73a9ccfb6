"""ONNX export (dynamic shapes, parity) and the runtime (backends, Upscaler tiling)."""

import importlib.resources
from pathlib import Path

import numpy as np
import onnx
import pytest

from conftest import call_stage
from edgesr.artifacts import ArtifactError
from edgesr.modelio import save_model
from edgesr.export.onnx import ExportConfig, export_stage
from edgesr.imaging import read_image
from edgesr.models import build_model
from edgesr.runtime import Upscaler, open_backend

SPECS = [{"type": "abpn", "scale": 2, "channels": 8, "n_body": 2},
         {"type": "edsr", "scale": 3, "n_resblocks": 1, "n_feats": 8, "anchor": "nearest"}]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    out = []
    for i, spec in enumerate(SPECS):
        src = save_model(root / f"m{i}", build_model(spec), name=f"m{i}", arch=spec)
        out.append((src, call_stage(export_stage, ExportConfig(input=f"m{i}"), name=f"m{i}_onnx", out=root / f"m{i}_onnx", source=src)))
    return out


def test_export_is_checked_dynamic_and_matches_pytorch(exported):
    for src, art in exported:
        proto = onnx.load(str(art.payload))
        assert proto.opset_import[0].version >= 17
        assert [i.name for i in proto.graph.input] == ["lr"] and [o.name for o in proto.graph.output] == ["sr"]
        dims = proto.graph.input[0].type.tensor_type.shape.dim
        assert not dims[2].HasField("dim_value") and not dims[3].HasField("dim_value")  # dynamic H, W
        meta = {m.key: m.value for m in proto.metadata_props}
        assert meta["edgesr.scales"] == f"[{src.scale}]" and meta["edgesr.source_hash"] == src.hash
        assert art.manifest["metrics"]["parity"]["max_abs"] < 1e-5
        assert art.manifest["parent"]["hash"] == src.hash
        # Two other sizes through ONNX Runtime, against PyTorch.
        ort_b, torch_b = open_backend(art, threads=2), open_backend(src, threads=2)
        for h, w in ((9, 31), (40, 17)):
            x = np.random.default_rng(h).random((1, 3, h, w), dtype=np.float32)
            np.testing.assert_allclose(ort_b.run(x), torch_b.run(x), atol=1e-5)


def test_exported_graphs_name_no_source_file_so_their_hash_is_the_models(exported, tmp_path):
    """The exporter's per-node stack traces name this checkout's files and lines; they are removed, so the
    same model exported from any checkout (or after a comment changes) is the same artifact."""
    repo = str(Path(__file__).resolve().parents[1]).encode()
    for src, art in exported:
        data = art.payload.read_bytes()
        assert repo not in data and b"stack_trace" not in data
        again = call_stage(export_stage, ExportConfig(input="x"), name="again", out=tmp_path / art.path.name, source=src)
        assert again.hash == art.hash


def test_backends_refuse_the_wrong_artifact_kind(exported):
    src, art = exported[0]
    with pytest.raises(ArtifactError, match="onnxruntime backend runs 'onnx' artifacts; this is 'model'.*export it first"):
        open_backend(src, "onnxruntime")
    with pytest.raises(ArtifactError, match="torch backend runs 'model' artifacts; this is 'onnx'. Use the onnxruntime or openvino backend"):
        open_backend(art, "torch")
    with pytest.raises(KeyError, match="unknown backend 'tensorrtx'"):
        open_backend(art, "tensorrtx")


def test_tiled_upscale_equals_whole_image(exported):
    """ABPN with 4 convs sees 4 LR pixels around each output: an overlap of 6 makes tiling exact."""
    _, art = exported[0]
    img = read_image(Path(str(importlib.resources.files("skimage.data"))) / "chelsea.png")[:101, :150]
    backend = open_backend(art, threads=2)
    whole = Upscaler(backend).upscale(img)
    tiled = Upscaler(backend, tile=40, overlap=6).upscale(img)
    assert whole.shape == (202, 300, 3) and whole.dtype == np.uint8
    assert (whole == tiled).all()
    with pytest.raises(ValueError, match="twice the overlap"):
        Upscaler(backend, tile=10, overlap=6)


def test_images_too_large_to_run_whole_are_tiled_automatically(exported, monkeypatch):
    """tile=0 runs an image whole up to ``max_pixels`` LR pixels and tiles it beyond (same output)."""
    import edgesr.runtime.upscaler as upscaler_mod

    _, art = exported[0]
    img = read_image(Path(str(importlib.resources.files("skimage.data"))) / "chelsea.png")[:101, :150]
    backend = open_backend(art, threads=2)
    whole = Upscaler(backend)
    ref = whole.upscale(img)
    assert whole.last_tile == 0
    shapes = []  # (H, W) of every call, on the float path (run) and the 8-bit one (run_uint8)
    run, run_uint8 = backend.run, backend.run_uint8
    monkeypatch.setattr(backend, "run", lambda x: shapes.append(x.shape[2:]) or run(x))
    monkeypatch.setattr(backend, "run_uint8", lambda x: shapes.append(x.shape[1:3]) or run_uint8(x))
    monkeypatch.setattr(upscaler_mod, "AUTO_TILE", 48)
    auto = Upscaler(backend, overlap=6, max_pixels=100 * 100)
    out = auto.upscale(img)
    assert auto.last_tile == 48 and len(shapes) > 4 and max(h * w for h, w in shapes) <= 48 * 48
    assert (out == ref).all()
    shapes.clear()  # the float path tiles the same way and gives what it gives whole
    tiled = Upscaler(backend, overlap=6, max_pixels=100 * 100, io="float").upscale(img)
    assert len(shapes) > 4 and max(h * w for h, w in shapes) <= 48 * 48
    assert (tiled == Upscaler(backend, io="float").upscale(img)).all()
    fl = auto.upscale_float(img)
    assert fl.dtype == np.float32 and fl.shape == (202, 300, 3) and 0 <= fl.min() and fl.max() <= 1


def test_bicubic_graph_matches_matlab_away_from_borders(tmp_path):
    from edgesr.data.bicubic import imresize

    from edgesr.export.bicubic import BicubicConfig, bicubic_stage

    art = call_stage(bicubic_stage, BicubicConfig(), name="bicubic", out=tmp_path / "bicubic", scale=2)
    assert art.manifest["kind"] == "onnx" and art.manifest["scales"] == [2] and art.manifest["ops"] == {"Resize": 1}
    img = read_image(Path(str(importlib.resources.files("skimage.data"))) / "coffee.png")[:60, :80]
    ours = Upscaler(open_backend(art, threads=1)).upscale_float(img) * 255
    ref = imresize(img.astype(np.float64), 2)
    assert np.abs(ours - ref)[4:-4, 4:-4].max() < 0.01


@pytest.mark.parametrize("mode", ["CRD", "DCR"])
def test_pixel_shuffle_as_conv_transpose_is_bit_exact(mode):
    """ONNX Runtime's backend runs DepthToSpace as the equivalent ConvTranspose: the same numbers, both modes."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from edgesr.onnxutil import shuffle_as_conv_transpose

    graph = helper.make_graph([helper.make_node("DepthToSpace", ["x"], ["y"], blocksize=3, mode=mode)], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 18, "h", "w"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 2, None, None])])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
    x = np.random.default_rng(0).standard_normal((2, 18, 5, 7)).astype(np.float32)
    ref = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert shuffle_as_conv_transpose(proto) == 1
    assert [n.op_type for n in proto.graph.node] == ["ConvTranspose"]
    out = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert out.shape == (2, 2, 15, 21) and np.array_equal(out, ref)


def test_onnxruntime_backend_runs_the_fast_shuffle_with_identical_output(tiny_student_d2s):
    from edgesr.runtime import open_backend

    x = np.random.default_rng(1).random((1, 3, 19, 23), dtype=np.float32)
    with open_backend(tiny_student_d2s, "onnxruntime") as fast, \
            open_backend(tiny_student_d2s, "onnxruntime", fast_shuffle=False) as plain:
        assert fast.describe()["shuffle_as_conv_transpose"] == 1
        assert plain.describe()["shuffle_as_conv_transpose"] == 0
        assert np.array_equal(fast.run(x), plain.run(x))


@pytest.mark.parametrize("spec", [
    {"type": "msrep", "scale": 2, "channels": 8, "n_blocks": 1, "heads": [2, 4]},  # image convs: 12 and 48 channels
    {"type": "abpn", "scale": 2, "channels": 8, "n_body": 1},
], ids=["msrep_x2x4", "abpn"])
def test_tail_padding_keeps_the_output_and_stays_float_through_int8(spec, builtin_train, builtin_valid, tmp_path):
    from edgesr.compress.ptq import QuantizeConfig, quantize_stage
    import torch

    from edgesr.onnxutil import op_counts

    torch.manual_seed(0)
    src = save_model(tmp_path / "m", build_model(spec), name="m", arch=spec)
    plain = call_stage(export_stage, ExportConfig(input="m", tail_channels=0), name="p", out=tmp_path / "p", source=src)
    padded = call_stage(export_stage, ExportConfig(input="m"), name="t", out=tmp_path / "t", source=src)  # 16
    ops = padded.manifest["ops"]
    heads = len(plain.manifest["scales"])  # x2: 12 channels, padded to 16; x4: 48, its anchor rewritten all the same
    assert padded.manifest["transforms"][-1]["tail_channels_padded"] == heads
    assert ops["ConvTranspose"] == heads and "DepthToSpace" not in ops and "Expand" not in ops
    proto = onnx.load(str(padded.payload))
    inits = {i.name: i for i in proto.graph.initializer}
    for n in proto.graph.node:
        if n.op_type == "Conv":
            assert inits[n.input[1]].dims[0] % 16 == 0 or inits[n.input[1]].dims[0] == 8  # image convs padded
    assert padded.manifest["metrics"]["parity"]["max_abs"] < 1e-4  # checked against PyTorch by the stage
    x = np.random.default_rng(0).random((1, 3, 21, 13), dtype=np.float32)
    with open_backend(plain, "onnxruntime", fast_shuffle=False) as a, open_backend(padded, "onnxruntime") as b:
        assert np.abs(a.run(x) - b.run(x)).max() < 1e-5
    kw = dict(calib_pairs=builtin_train, val_pairs=builtin_valid[:1], scale=spec["scale"], seed=0)
    int8 = call_stage(quantize_stage, QuantizeConfig(input="t", calibration_images=2, calibration_patch=32), name="q",
                      out=tmp_path / "q", source=padded, **kw)
    q = onnx.load(str(int8.payload))
    produced = {o: n for n in q.graph.node for o in n.output}
    for n in q.graph.node:  # the shuffles stay float and exact: no quantizer on their weights or outputs
        if n.op_type == "ConvTranspose":
            assert produced.get(n.input[1]) is None or produced[n.input[1]].op_type != "DequantizeLinear"
            assert not any(m.op_type == "QuantizeLinear" and n.output[0] in m.input for m in q.graph.node)
    assert op_counts(q)["ConvTranspose"] == heads
