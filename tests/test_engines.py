"""TensorRT engines: built for real with TensorRT for RTX (ahead of time, no GPU needed) from FP32, FP16 and
INT8 (tensorrt form) ONNX; cache keys, the trtexec line, profile checks and refusal of foreign engines.
TensorRT 10/11-only tests are marked ``tensorrt`` and skipped where it is not installed."""

from __future__ import annotations

import importlib.util
import json
import shutil

import pytest
import torch

from conftest import call_stage, exported_and_quantized
from edgesr.artifacts import Artifact, read_artifact
from edgesr.cli import main
from edgesr.compress.fp16 import Fp16Config, fp16_stage
from edgesr.compress.ptq import QuantizeConfig, quantize_stage
from edgesr.export.onnx import ExportConfig, export_stage
from edgesr.errors import EdgesrError
from edgesr.export.tensorrt import EngineConfig, EngineError, build_engine, check_engine, engine_stage
from edgesr.modelio import save_model
from edgesr.models import build_model

pytestmark = pytest.mark.skipif(importlib.util.find_spec("tensorrt_rtx") is None,
                                reason="TensorRT for RTX is not installed (pip install 'edgesr[rtx]')")
SHAPES = ((16, 16), (48, 64), (96, 128))


@pytest.fixture(scope="module")
def graphs(tmp_path_factory, builtin_train, builtin_valid):
    """A small anchor student exported to FP32, converted to FP16, and quantized in both INT8 forms."""
    root = tmp_path_factory.mktemp("engines")
    spec = {"type": "abpn", "scale": 2, "channels": 8, "n_body": 2}
    torch.manual_seed(0)
    src = save_model(root / "student", build_model(spec), name="student", arch=spec)
    fp32 = call_stage(export_stage, ExportConfig(input="student"), name="fp32", out=root / "fp32", source=src)
    kw = dict(calib_pairs=builtin_train, val_pairs=builtin_valid[:1], scale=2, seed=0)
    fp16 = call_stage(fp16_stage, Fp16Config(input="fp32", calibration_images=2, calibration_patch=32), name="fp16",
                      out=root / "fp16", source=fp32, **kw)
    int8_trt = call_stage(quantize_stage, QuantizeConfig(input="fp32", calibration_images=4, calibration_patch=32,
                                                         target="tensorrt"),
                          name="int8_trt", out=root / "int8_trt", source=fp32, **kw)
    int8_ort = call_stage(quantize_stage, QuantizeConfig(input="fp32", calibration_images=4, calibration_patch=32),
                          name="int8_ort", out=root / "int8_ort", source=fp32, **kw)
    return root, {"fp32": fp32, "fp16": fp16, "int8_trt": int8_trt, "int8_ort": int8_ort}


def _build(art: Artifact, out, **cfg) -> Artifact:
    return call_stage(engine_stage, EngineConfig(input="x", shapes=SHAPES, **cfg), name=out.name, out=out, source=art)


@pytest.mark.parametrize("form", ["fp32", "fp16", "int8_trt"])
def test_rtx_builds_engines_from_fp32_fp16_and_int8_tensorrt_form(graphs, form):
    import tensorrt_rtx

    root, arts = graphs
    eng = _build(arts[form], root / f"{form}.engine")
    e = eng.manifest["engine"]
    assert eng.kind == "engine" and eng.payload.name == "model.engine" and eng.payload.stat().st_size > 10_000
    assert eng.manifest["precision"] == arts[form].manifest["precision"]
    assert e["flavour"] == "rtx" and e["version"] == tensorrt_rtx.__version__ and e["strongly_typed"]
    assert e["compute_capabilities"] == ["SM75", "SM86", "SM89", "SM120"] and e["onnx_hash"] == arts[form].hash
    assert e["profile"] == {"input": "lr", "min": [1, 3, 16, 16], "opt": [1, 3, 48, 64], "max": [1, 3, 96, 128]}
    assert e["opt_level"] == 3 and len(e["cache_key"]) == 16 and e["platform"].startswith("linux-")
    line = (eng.path / "trtexec.txt").read_text()
    assert "--stronglyTyped" in line and "--minShapes=lr:1x3x16x16" in line and "--maxShapes=lr:1x3x96x128" in line
    assert eng.manifest["parent"]["hash"] == arts[form].hash
    assert read_artifact(eng.path).hash == eng.hash  # a verified artifact like any other


def test_onnxruntime_form_int8_is_refused_with_the_option_to_change(graphs):
    root, arts = graphs
    with pytest.raises(EngineError, match=r"ONNX Runtime form .*INT32 biases.*`target: tensorrt`"):
        _build(arts["int8_ort"], root / "int8_ort.engine")
    assert not (root / "int8_ort.engine").exists()


def test_the_last_quantizing_step_decides_the_form_qat_onnx_included(graphs):
    """A TensorRT-form graph later re-trained by qat_onnx into the ONNX Runtime form: the engine build reads the
    qat_onnx record (it used to skip qat_onnx and read the older quantize record)."""
    from edgesr.artifacts import last_quantization

    root, arts = graphs
    trt = arts["int8_trt"].manifest
    retrained = {**trt, "transforms": trt["transforms"] + [{"type": "qat_onnx", "tensorrt_explicit_int8": False}]}
    assert last_quantization(trt)["tensorrt_explicit_int8"] and last_quantization(retrained)["type"] == "qat_onnx"
    with pytest.raises(EngineError, match=r"ONNX Runtime form"):
        _build(Artifact(arts["int8_trt"].path, retrained), root / "retrained.engine")
    assert last_quantization({"transforms": [{"type": "export"}]}) == {}


def _build_cli(art: Artifact, out, overwrite: bool = False, **cfg) -> Artifact:
    """As `edgesr build-engine ART --out OUT [--overwrite]` builds (no runner around it)."""
    return build_engine(art, EngineConfig(input="x", shapes=SHAPES, **cfg), out, name=out.name,
                        cache_dir=out.parent / ".tensorrt_cache", overwrite=overwrite)


def test_an_engine_is_rebuilt_only_when_its_cache_key_changes(graphs):
    root, arts = graphs
    first = _build_cli(arts["fp32"], root / "keyed.engine")
    again = _build_cli(arts["fp32"], root / "keyed.engine")
    assert again.manifest["created"] == first.manifest["created"] and again.hash == first.hash
    with pytest.raises(EdgesrError, match=r"keyed\.engine: holds a 'engine' artifact .* already; pass --overwrite"):
        _build_cli(arts["fp32"], root / "keyed.engine", opt_level=1)
    other = _build_cli(arts["fp32"], root / "keyed.engine", overwrite=True, opt_level=1)
    assert other.manifest["engine"]["cache_key"] != first.manifest["engine"]["cache_key"]
    narrow = _build_cli(arts["fp32"], root / "keyed.engine", overwrite=True, compute_capabilities=("SM86",))
    assert narrow.manifest["engine"]["compute_capabilities"] == ["SM86"]
    assert narrow.manifest["engine"]["cache_key"] not in (first.manifest["engine"]["cache_key"],
                                                          other.manifest["engine"]["cache_key"])


@pytest.mark.parametrize("shapes,message", [
    (((0, 16), (48, 64), (96, 128)), "has a side < 1"),
    (((64, 64), (48, 64), (96, 128)), "min 64x64 <= opt 48x64 <= max 96x128 does not hold"),
])
def test_profiles_are_checked_before_building(graphs, shapes, message):
    root, arts = graphs
    with pytest.raises(EngineError, match=message):
        call_stage(engine_stage, EngineConfig(input="x", shapes=shapes), name="bad", out=root / "bad", source=arts["fp32"])
    with pytest.raises(EngineError, match="not TensorRT for RTX targets.*SM90"):
        _build(arts["fp32"], root / "bad", compute_capabilities=("SM90",))


def test_foreign_engines_are_refused_with_the_rebuild_command(graphs, tmp_path):
    root, arts = graphs
    eng = _build(arts["fp32"], root / "foreign.engine")
    check_engine(eng)  # built here: accepted (no GPU here to compare compute capability with)
    check_engine(eng, compute_capability="SM86")
    with pytest.raises(EngineError, match=r"GPU: engine compiled for \['SM75', 'SM86', 'SM89', 'SM120'\], this GPU is "
                                          r"SM90.*rebuild it here: edgesr build-engine .*fp32 --flavour rtx"):
        check_engine(eng, compute_capability="SM90")
    for field, value, says in [("version", "1.0.0.0", "rtx version: engine 1.0.0.0, here"),
                               ("platform", "windows-amd64", "platform: engine windows-amd64, here linux-")]:
        copy = tmp_path / field
        shutil.copytree(eng.path, copy)
        m = json.loads((copy / "manifest.json").read_text())
        m["engine"][field] = value
        (copy / "manifest.json").write_text(json.dumps(m))
        with pytest.raises(EngineError, match=f"another machine \\({says}.*edgesr build-engine"):
            check_engine(read_artifact(copy))


def test_build_engine_command(graphs, capsys):
    root, arts = graphs
    out = root / "cli.engine"
    assert main(["build-engine", str(arts["int8_trt"].path), "--shapes", "16x16:32x32:64x64",
                 "--compute-capability", "SM89", "--out", str(out)]) == 0
    assert "rtx" in capsys.readouterr().out
    eng = read_artifact(out)
    assert eng.manifest["engine"]["compute_capabilities"] == ["SM89"] and eng.manifest["precision"] == "int8"
    with pytest.raises(SystemExit, match="2"):  # argparse: edgesr: error: ..., exit 2
        main(["build-engine", str(arts["fp32"].path), "--shapes", "16x16:32x32"])
    assert main(["build-engine", str(arts["int8_ort"].path), "--out", str(root / "no")]) == 2
    assert "target: tensorrt" in capsys.readouterr().err


def test_an_engine_for_one_head_of_a_multi_scale_student(tmp_path, capsys):
    """``scale``: the engine of one head holds that output and the layers it needs, not the other heads' (the
    x4 head's extra block and wider tail); its manifest says x2 alone, its key differs from the all-heads
    engine's, the pruned graph is kept beside it for trtexec; a scale the graph lacks is refused."""
    import onnx

    src = read_artifact("msrep-s-x24-fp32")  # shipped: one graph, outputs sr_x2 and sr_x4
    both = _build(src, tmp_path / "both")
    x2 = _build(src, tmp_path / "x2", scale=2)
    assert both.manifest["scales"] == [2, 4] and x2.manifest["scales"] == [2]
    assert x2.manifest["transforms"][-1]["head"] == 2 and "head" not in both.manifest["transforms"][-1]
    assert x2.manifest["engine"]["cache_key"] != both.manifest["engine"]["cache_key"]
    head = onnx.load(str(x2.path / "model_x2.onnx"))
    full = onnx.load(str(src.payload))
    assert [o.name for o in head.graph.output] == [full.graph.output[0].name]
    convs = lambda g: sum(n.op_type in ("Conv", "ConvTranspose") for n in g.graph.node)
    assert convs(head) < convs(full)
    assert x2.payload.stat().st_size < both.payload.stat().st_size
    assert "--onnx=model_x2.onnx" in (x2.path / "trtexec.txt").read_text()
    with pytest.raises(EngineError, match=r"scale 3: the graph outputs x2/x4; pick one of them"):
        _build(src, tmp_path / "x3", scale=3)
    out = tmp_path / "cli"
    assert main(["build-engine", "msrep-s-x24-fp32", "--scale", "4", "--shapes", "16x16:48x64:96x128",
                 "--out", str(out)]) == 0
    assert read_artifact(out).manifest["scales"] == [4] and "-> " in capsys.readouterr().out


def test_engine_stage_in_a_recipe(tmp_path):
    from edgesr.config import parse_recipe
    from edgesr.pipeline import run_recipe

    recipe = parse_recipe({"name": "e", "scale": 2, "threads": 1, "data": {"patch_size": 16}, "stages": [
        {"name": "m", "stage": "train", "model": {"type": "abpn", "channels": 4, "n_body": 1}, "steps": 2,
         "batch_size": 2, "val_every": 2},
        {"name": "o", "stage": "export", "input": "m"},
        {"name": "q", "stage": "quantize", "input": "o", "target": "tensorrt", "calibration_images": 2,
         "calibration_patch": 32},
        {"name": "e_fp32", "stage": "engine", "input": "o", "shapes": [[16, 16], [32, 32], [64, 64]]},
        {"name": "e_int8", "stage": "engine", "input": "q", "shapes": [[16, 16], [32, 32], [64, 64]]}]})
    run_recipe(recipe, tmp_path / "run", only=["e_fp32", "e_int8"])
    for name in ("e_fp32", "e_int8"):
        eng = read_artifact(tmp_path / "run" / name)
        assert eng.kind == "engine" and eng.manifest["recipe_fingerprint"]
    with pytest.raises(Exception, match="a engine stage's input must be an ONNX graph|input must be an ONNX graph"):
        parse_recipe({"name": "e", "scale": 2, "stages": [
            {"name": "m", "stage": "train", "model": {"type": "abpn"}},
            {"name": "e", "stage": "engine", "input": "m"}]})


@pytest.mark.tensorrt
@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is None, reason="TensorRT 10/11 is not installed here")
def test_tensorrt_flavour_builds_for_this_gpu(graphs):
    root, arts = graphs
    if not torch.cuda.is_available():
        pytest.skip("TensorRT 10/11 builds for the GPU it runs on; none here")
    eng = _build(arts["fp32"], root / "trt10.engine", flavour="tensorrt")
    assert eng.manifest["engine"]["flavour"] == "tensorrt" and eng.manifest["engine"]["workspace_mb"] in (256, 1024)
    check_engine(eng)


def _planted(art: Artifact, dst, edit) -> Artifact:
    """A copy of an ONNX artifact with its graph edited (and its content hash recorded again)."""
    import onnx

    from edgesr.artifacts import content_hash

    shutil.copytree(art.path, dst)
    proto = onnx.load(str(dst / "model.onnx"))
    edit(proto)
    onnx.save_model(proto, str(dst / "model.onnx"))
    m = json.loads((dst / "manifest.json").read_text())
    m["hash"] = content_hash(dst / "model.onnx")
    (dst / "manifest.json").write_text(json.dumps(m))
    return read_artifact(dst)


def _nonzero_zero_point(proto):
    import numpy as np
    from onnx import numpy_helper

    q = next(n for n in proto.graph.node if n.op_type == "QuantizeLinear")
    init = next(i for i in proto.graph.initializer if i.name == q.input[2])
    init.CopyFrom(numpy_helper.from_array(np.array(3, dtype=np.int8), init.name))


def _per_tensor_weights(proto):
    import numpy as np
    from onnx import numpy_helper

    inits = {i.name: i for i in proto.graph.initializer}
    dq = next(n for n in proto.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits
              and len(inits[n.input[0]].dims) == 4)
    scale = inits[dq.input[1]]
    scale.CopyFrom(numpy_helper.from_array(np.array(numpy_helper.to_array(scale).max(), dtype=np.float32), scale.name))
    zp = inits[dq.input[2]]
    zp.CopyFrom(numpy_helper.from_array(np.array(0, dtype=np.int8), zp.name))


def _unsupported_op(proto):
    relu = next(n for n in proto.graph.node if n.op_type == "Relu")
    relu.op_type = "Hardmax"


@pytest.mark.parametrize("case,expect", [
    ("ort_form", ["INT32 quantizer (ONNX Runtime's quantized bias)", "UINT8"]),
    ("zero_point", ["non-zero zero point [3]"]),
    ("per_tensor", ["per-tensor weight quantizer"]),
    ("unsupported", ["operator Hardmax is not imported by TensorRT's ONNX parser"]),
    ("min_zero", ["has a side < 1"]),
])
def test_readiness_check_names_each_problem_and_its_fix(graphs, tmp_path, case, expect):
    root, arts = graphs
    shapes = [[16, 16], [48, 64], [96, 128]]
    if case == "ort_form":
        art = arts["int8_ort"]
    elif case == "zero_point":
        art = _planted(arts["int8_trt"], tmp_path / "zp", _nonzero_zero_point)
    elif case == "per_tensor":
        art = _planted(arts["int8_trt"], tmp_path / "pt", _per_tensor_weights)
    elif case == "unsupported":
        art = _planted(arts["fp32"], tmp_path / "op", _unsupported_op)
    else:
        art, shapes = arts["fp32"], [[0, 16], [48, 64], [96, 128]]
    from edgesr.export.tensorrt import check_tensorrt

    findings = check_tensorrt(art, shapes)
    problems = " | ".join(f["problem"] for f in findings)
    for e in expect:
        assert e in problems
    assert all(f["fix"] and f["node"] for f in findings)


def test_readiness_check_passes_what_builds_and_the_command_says_so(graphs, capsys):
    from edgesr.export.tensorrt import check_tensorrt

    root, arts = graphs
    for form in ("fp32", "fp16", "int8_trt"):  # rules pass, then the real RTX parser and builder run
        assert check_tensorrt(arts[form], [[16, 16], [48, 64], [96, 128]]) == []
    assert main(["check", str(arts["int8_trt"].path)]) == 0
    assert "ready for TensorRT" in capsys.readouterr().out
    assert main(["check", str(arts["int8_ort"].path)]) == 1
    out = capsys.readouterr().out
    assert "error: " in out and "fix: quantize with target: tensorrt" in out


@pytest.mark.slow
def test_quickstart_builds_an_engine_from_every_exported_graph(tmp_path):
    """The quickstart recipe as shipped, with its trainings cut to a few steps: the engine stages build RTX
    engines from the FP32 export, the fp16 stage's graph and the TensorRT-form INT8 graph."""
    import importlib.resources

    import yaml

    from edgesr.config import parse_recipe
    from edgesr.pipeline import run_recipe

    raw = yaml.safe_load((importlib.resources.files("edgesr.benchmarks") / "recipes" / "quickstart.yaml").read_text())
    for st in raw["stages"]:
        for key, small in (("steps", 4), ("val_every", 4), ("calibration_images", 4), ("calibration_patch", 48)):
            if key in st:
                st[key] = small
        st.pop("max_psnr_drop_db", None)  # four training steps: quality is not the point here
        st.pop("on_budget_exceeded", None)  # (a fallback without its budget is refused at load)
    raw["threads"] = 2
    engines = [st["name"] for st in raw["stages"] if st["stage"] == "engine"]
    assert engines == ["student_engine", "fp16_engine", "int8_engine"]
    run_recipe(parse_recipe(raw, "quickstart.yaml"), tmp_path / "qs", only=engines)
    precisions = {}
    for name in engines:
        eng = read_artifact(tmp_path / "qs" / name)
        assert eng.kind == "engine" and eng.manifest["engine"]["cache_key"] and eng.payload.stat().st_size > 10_000
        precisions[name] = eng.manifest["precision"]
    assert precisions == {"student_engine": "fp32", "fp16_engine": "fp16", "int8_engine": "int8"}
    trt_form = read_artifact(tmp_path / "qs" / "int8_trt").manifest["transforms"][-1]
    assert trt_form["tensorrt_explicit_int8"] and not [f for f in trt_form["tensorrt_readiness"] if f["severity"] == "error"]


def test_tensorrt_form_places_qdq_as_explicit_quantization_wants(graphs):
    """NVIDIA's explicit-quantization placement: every Conv reads quantized activations and weights, and the
    residual Add (the anchor added to the last conv) has both inputs quantized so TensorRT can fuse it into
    the conv; zero points are INT8 zeros and biases stay float."""
    import onnx

    root, arts = graphs
    g = onnx.load(str(arts["int8_trt"].payload)).graph
    producer = {o: n for n in g.node for o in n.output}
    convs = [n for n in g.node if n.op_type == "Conv"]
    adds = [n for n in g.node if n.op_type == "Add"]
    assert convs and adds
    for n in convs:
        assert [producer[i].op_type for i in n.input[:2]] == ["DequantizeLinear", "DequantizeLinear"]
        assert len(n.input) < 3 or n.input[2] not in producer  # a bias is a float initializer, not an INT32 Q/DQ
    for n in adds:
        assert [producer[i].op_type for i in n.input] == ["DequantizeLinear", "DequantizeLinear"]


def test_a_graph_scaling_by_a_constant_builds_as_tensorrt_int8(builtin_train, builtin_valid, tmp_path):
    """RLFN in its authors' form multiplies its input by 255 and divides its output by 255: ONNX Runtime's
    quantizer made that one-value constant an INT8 initializer, which TensorRT's builder refuses ('Quantized
    constant ... is only allowed before DQ'); for TensorRT such scalar arithmetic stays in float."""
    import onnx
    import numpy as np

    arch = {"type": "rlfn", "scale": 2, "channels": 8, "mid_channels": 8, "n_blocks": 1, "esa_channels": 4,
            "pool_padding": 0, "data_range": 255.0}
    _, q = exported_and_quantized(arch, tmp_path, builtin_train, builtin_valid, calibration_images=3, target="tensorrt")
    proto = onnx.load(str(q.payload))
    scalars = {i.name for i in proto.graph.initializer if int(np.prod(i.dims)) == 1}
    dq_of_scalar = [n.name for n in proto.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in scalars
                    and proto.graph.initializer[[i.name for i in proto.graph.initializer].index(n.input[0])].data_type
                    == onnx.TensorProto.INT8]
    assert dq_of_scalar == []
    eng = _build(q, tmp_path / "engine")
    assert eng.payload.stat().st_size > 0
