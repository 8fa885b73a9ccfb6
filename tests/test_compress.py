"""Pruning (torch-pruning) and INT8 quantisation (ONNX Runtime QDQ) on tiny networks and real images."""

import dataclasses
import importlib.util

import numpy as np
import onnx
import pytest
import torch

from conftest import call_stage
from edgesr.modelio import load_model, save_model
from edgesr.budget import QualityBudgetExceeded, check_budget
from edgesr.compress.prune import protected_convs, prune_model
from edgesr.compress.common import calibration_batches, check_qdq
from edgesr.compress.prune import PruneConfig
from edgesr.compress.ptq import QuantizeConfig, agreement_db, quantize_stage
from edgesr.export.onnx import ExportConfig, export_stage
from edgesr.models import build_model, count_macs
from edgesr.runtime import open_backend


@pytest.mark.parametrize("spec,protected,max_macs_ratio", [
    ({"type": "abpn", "scale": 2, "channels": 16, "n_body": 3}, ["tail"], 0.4),
    # At x4 the whole-pixel upsampler convs (kept whole) dominate the MACs of a 2-block EDSR.
    ({"type": "edsr", "scale": 4, "n_resblocks": 2, "n_feats": 16}, ["tail", "upsample.0", "upsample.2"], 0.85),
])
def test_prune_keeps_sr_structure_and_rebuilds_from_manifest(spec, protected, max_macs_ratio, tmp_path):
    model = build_model(spec).eval()
    assert protected_convs(model) == protected
    pruned, record = prune_model(model, PruneConfig(input="x", ratio=0.5, round_to=4))
    assert record["macs_after"] < max_macs_ratio * record["macs_before"]
    assert record["params_after"] < record["params_before"]
    for name in protected:  # whole output pixels: PixelShuffle inputs and the image keep every channel
        assert pruned.get_submodule(name).out_channels == model.get_submodule(name).out_channels
    for name, shape in record["shapes"].items():
        if name not in protected:
            assert shape["out"] % 4 == 0
    x = torch.rand(1, 3, 11, 9)
    assert pruned(x).shape == model(x).shape
    art = save_model(tmp_path / "p", pruned, name="p", arch=spec, transforms=[record])
    assert torch.equal(load_model(art)(x), pruned(x))
    assert count_macs(load_model(art), (11, 9))[1] == record["params_after"]


def test_taylor_importance_needs_data(builtin_train):
    from edgesr.data.patches import PatchSampler

    model = build_model({"type": "abpn", "scale": 2, "channels": 8, "n_body": 1})
    with pytest.raises(ValueError, match="Taylor"):
        prune_model(model, PruneConfig(input="x", importance="taylor"))
    pruned, rec = prune_model(model, PruneConfig(input="x", importance="taylor", ratio=0.5),
                              PatchSampler(builtin_train, 2, 16, 4))
    assert rec["params_after"] < rec["params_before"]


@pytest.fixture(scope="module")
def student_onnx(tmp_path_factory, builtin_train):
    """A tiny ABPN trained a few hundred steps, so quantisation acts on real weight statistics."""
    from edgesr.data.patches import PatchSampler
    from edgesr.fitting import fit

    torch.manual_seed(0)
    spec = {"type": "abpn", "scale": 2, "channels": 8, "n_body": 2}
    model = build_model(spec)
    fit(model, PatchSampler(builtin_train, 2, 24, 8, min_std=0.04), steps=150, lr=2e-3,
        loss_fn=lambda sr, lr, hr: (sr - hr).abs().mean(), val_pairs=builtin_train[:1], scale=2, val_every=1000)
    root = tmp_path_factory.mktemp("q")
    src = save_model(root / "student", model, name="student", arch=spec)
    return call_stage(export_stage, ExportConfig(input="student"), name="student_onnx", out=root / "student_onnx", source=src)


@pytest.mark.parametrize("target", ["onnxruntime", "tensorrt"])
def test_int8_is_standard_qdq_and_runs(student_onnx, builtin_train, builtin_valid, target, tmp_path):
    cfg = QuantizeConfig(input="student_onnx", calibration_images=8, calibration_patch=48, target=target,
                         max_psnr_drop_db=0.5)
    art = call_stage(quantize_stage, cfg, name="int8", out=tmp_path / "int8", source=student_onnx, calib_pairs=builtin_train,
                         val_pairs=builtin_valid[:1], scale=2, seed=0, threads=2)
    proto = onnx.load(str(art.payload))
    domains = {n.domain for n in proto.graph.node}
    assert domains <= {"", "ai.onnx"}
    ops = {n.op_type for n in proto.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops and "FakeQuantize" not in ops
    report = check_qdq(art.payload)
    assert report["nonstandard_ops"] == [] and report["qdq_pairs"] >= 5
    assert report["tensorrt_explicit_int8"] is (target == "tensorrt")
    assert art.manifest["precision"] == "int8" and art.manifest["parent"]["hash"] == student_onnx.hash
    budget = art.manifest["metrics"]["budget"]
    assert budget["within_budget"] and abs(budget["psnr_drop_db"]) < 0.5
    # Int8 output close to FP32 on a real image, and the graph keeps dynamic shapes.
    x = calibration_batches(builtin_train, 1, 40, seed=9)[0]
    fp32, int8 = open_backend(student_onnx, threads=2).run(x), open_backend(art, threads=2).run(x)
    assert fp32.shape == int8.shape == (1, 3, 80, 80)
    assert 0 < np.abs(fp32 - int8).mean() < 0.02


def test_auto_calibration_keeps_the_method_that_scores_best(student_onnx, builtin_train, builtin_valid, tmp_path):
    """``method: auto`` quantizes with MinMax and Percentile, measures each on the validation images, and
    writes the best: the manifest records every score and the method kept, and the written graph scores what the
    kept method scored (the graph a plain run of that method writes)."""
    from edgesr.compress.common import onnx_quality

    cfg = QuantizeConfig(input="student_onnx", calibration_images=8, calibration_patch=48, method="auto")
    art = call_stage(quantize_stage, cfg, name="auto", out=tmp_path / "auto", source=student_onnx,
                     calib_pairs=builtin_train, val_pairs=builtin_valid[:1], scale=2, seed=0, threads=1)
    rec = art.manifest["transforms"][-1]
    tried = rec["calibration_auto"]["tried_db"]
    assert set(tried) == {"minmax", "percentile"} and len(set(tried.values())) > 1, tried
    kept = rec["calibration_auto"]["kept"]
    assert rec["method"] == kept and tried[kept] == max(tried.values())
    assert onnx_quality(art, builtin_valid[:1], 2, 1, "onnxruntime") == pytest.approx(tried[kept], abs=1e-3)
    plain = call_stage(quantize_stage, dataclasses.replace(cfg, method=kept), name="plain", out=tmp_path / "plain",
                       source=student_onnx, calib_pairs=builtin_train, val_pairs=builtin_valid[:1], scale=2, seed=0,
                       threads=1)
    assert plain.payload.read_bytes() == art.payload.read_bytes()
    assert not (tmp_path / "auto" / "calibration.onnx").exists()


def test_entropy_calibration_is_said_to_give_minmax_ranges(student_onnx, builtin_train, builtin_valid, tmp_path):
    """ONNX Runtime's Entropy method under quantize_static writes MinMax's ranges (its 128 histogram bins are
    searched for 128 quantized bins); the stage says so in the manifest. If a future ONNX Runtime changes that,
    this test fails and the note must go."""
    def scales(art):
        return {i.name: onnx.numpy_helper.to_array(i).tolist() for i in onnx.load(str(art.payload)).graph.initializer
                if i.name.endswith("_scale")}

    arts = {m: call_stage(quantize_stage, QuantizeConfig(input="s", calibration_images=8, calibration_patch=48, method=m),
                          name=m, out=tmp_path / m, source=student_onnx, calib_pairs=builtin_train,
                          val_pairs=builtin_valid[:1], scale=2, seed=0, threads=1) for m in ("minmax", "entropy")}
    assert scales(arts["entropy"]) == scales(arts["minmax"])
    assert "MinMax" in arts["entropy"].manifest["transforms"][-1]["method_note"]
    assert "method_note" not in arts["minmax"].manifest["transforms"][-1]


@pytest.mark.parametrize("target", ["onnxruntime", "tensorrt"])
def test_fused_activations_leave_no_pair_between_a_conv_and_its_leaky_relu(builtin_train, builtin_valid, target,
                                                                          tmp_path):
    """``fuse_activations``: an IMDN-RTC-shaped network (Conv -> LeakyReLU in every block) quantized with no Q/DQ
    pair between a Conv and the LeakyReLU that consumes it; every LeakyReLU output still quantized, every other
    pair kept, the graph standard Q/DQ that both CPU runtimes run, close to the unfused graph's output."""
    from edgesr.models import build_model
    from edgesr.runtime import open_backend

    torch.manual_seed(0)
    arch = {"type": "imdn_rtc", "scale": 2, "channels": 8, "n_blocks": 1}
    src = save_model(tmp_path / "rtc", build_model(arch), name="rtc", arch=arch)
    fp32 = call_stage(export_stage, ExportConfig(input="rtc"), name="rtc_onnx", out=tmp_path / "rtc_onnx", source=src)
    kw = dict(calib_pairs=builtin_train, val_pairs=builtin_valid[:1], scale=2, seed=0, threads=1)
    cfg = QuantizeConfig(input="rtc_onnx", calibration_images=4, calibration_patch=48, target=target)
    plain = call_stage(quantize_stage, cfg, name="plain", out=tmp_path / "plain", source=fp32, **kw)
    fused = call_stage(quantize_stage, dataclasses.replace(cfg, fuse_activations=True), name="fused",
                       out=tmp_path / "fused", source=fp32, **kw)

    def graph(art):
        g = onnx.load(str(art.payload)).graph
        return g, {o: n for n in g.node for o in n.output}

    pg, pprod = graph(plain)
    fg, fprod = graph(fused)
    lrelus = [n for n in fg.node if n.op_type == "LeakyRelu"]
    assert len(lrelus) == 3
    for n in lrelus:
        assert fprod[n.input[0]].op_type == "Conv"
        assert {c.op_type for c in fg.node if n.output[0] in c.input} == {"QuantizeLinear"}
    assert all(pprod[pprod[n.input[0]].input[0]].op_type == "QuantizeLinear"
               for n in pg.node if n.op_type == "LeakyRelu")  # ONNX Runtime's placement: a pair in between
    count = lambda g, op: sum(n.op_type == op for n in g.node)  # noqa: E731
    assert count(pg, "QuantizeLinear") - count(fg, "QuantizeLinear") == 3
    assert fused.manifest["transforms"][-1]["fused_activations"] == ["LeakyRelu", "PRelu"]
    assert check_qdq(fused.payload)["nonstandard_ops"] == []
    x = calibration_batches(builtin_train, 1, 40, seed=9)[0]
    ref = open_backend(plain, "onnxruntime", threads=1).run(x)
    for backend in ("onnxruntime", "openvino"):
        out = open_backend(fused, backend, threads=1).run(x)
        assert out.shape == ref.shape and np.abs(out - ref).mean() < 0.02, backend


def test_quantize_refuses_non_fp32_onnx(student_onnx, builtin_train, tmp_path):
    cfg = QuantizeConfig(input="x", calibration_images=2, calibration_patch=32)
    art = call_stage(quantize_stage, cfg, name="q", out=tmp_path / "q", source=student_onnx, calib_pairs=builtin_train,
                         val_pairs=builtin_train[:1], scale=2, seed=0)
    with pytest.raises(RuntimeError, match="FP32 ONNX"):
        call_stage(quantize_stage, cfg, name="q2", out=tmp_path / "q2", source=art, calib_pairs=builtin_train,
                       val_pairs=builtin_train[:1], scale=2, seed=0)


def test_quality_budget():
    assert check_budget("s", 30.0, 29.95, 0.1, "fail")["within_budget"]
    with pytest.raises(QualityBudgetExceeded, match="dropped 0.500 dB.*max_psnr_drop_db=0.1"):
        check_budget("s", 30.0, 29.5, 0.1, "fail")
    assert check_budget("s", 30.0, 29.5, 0.1, "warn")["within_budget"] is False


def test_fp16_keeps_quality_and_fp32_io(student_onnx, builtin_train, builtin_valid, tmp_path):
    from edgesr.compress.fp16 import Fp16Config, fp16_stage

    art = call_stage(fp16_stage, Fp16Config(input="s", calibration_images=4, calibration_patch=48, max_psnr_drop_db=0.01),
                     name="half", out=tmp_path / "half", source=student_onnx, calib_pairs=builtin_train,
                     val_pairs=builtin_valid[:1], scale=2, seed=0)
    proto = onnx.load(str(art.payload))
    conv_w = [i for i in proto.graph.initializer if i.dims and len(i.dims) == 4]
    assert conv_w and all(i.data_type == onnx.TensorProto.FLOAT16 for i in conv_w)
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # keep_io_types
    assert art.manifest["precision"] == "fp16" and art.manifest["transforms"][-1]["fp32_nodes"] == []
    assert abs(art.manifest["metrics"]["budget"]["psnr_drop_db"]) <= 0.01
    x = calibration_batches(builtin_train, 1, 40, seed=3)[0]
    assert np.abs(open_backend(art).run(x) - open_backend(student_onnx).run(x)).max() < 5e-3


def test_fp16_overflow_guard_names_and_keeps_the_hot_layers(builtin_train, builtin_valid, tmp_path):
    """A net whose inner activations exceed FP16's range: the guard finds the layers and keeps them in FP32
    (or fails, naming them); the FP16 graph then gives finite output."""
    from edgesr.compress.common import QuantizeError
    from edgesr.compress.fp16 import Fp16Config, activation_ranges, fp16_stage

    spec = {"type": "edsr", "scale": 2, "n_resblocks": 1, "n_feats": 8}
    model = build_model(spec).eval()
    with torch.no_grad():  # blow up the body's activations, undo it before the upsampler
        model.head.weight.mul_(1e5)
        model.head.bias.mul_(1e5)
        model.upsample[0].weight.div_(1e5)
    src = save_model(tmp_path / "m", model, name="m", arch=spec)
    onnx_art = call_stage(export_stage, ExportConfig(input="m", parity_atol=1.0), name="o", out=tmp_path / "o", source=src)
    batches = calibration_batches(builtin_train, 2, 32)
    peaks = activation_ranges(onnx_art.payload, batches)
    assert max(v for _, v in peaks.values()) > 65504
    kw = dict(calib_pairs=builtin_train, val_pairs=builtin_valid[:1], scale=2, seed=0)
    with pytest.raises(QuantizeError, match="exceed 16376.*on_overflow: fallback"):
        call_stage(fp16_stage, Fp16Config(input="o", calibration_images=2, calibration_patch=32, on_overflow="fail"),
                   name="h", out=tmp_path / "h", source=onnx_art, **kw)
    assert not (tmp_path / "h").exists()
    art = call_stage(fp16_stage, Fp16Config(input="o", calibration_images=2, calibration_patch=32), name="h",
                     out=tmp_path / "h", source=onnx_art, **kw)
    kept = art.manifest["transforms"][-1]["fp32_nodes"]
    assert kept and any("conv" in k.lower() for k in kept)
    out = open_backend(art).run(batches[0])
    assert np.isfinite(out).all()


def test_nncf_ptq_writes_standard_qdq(student_onnx, builtin_train, builtin_valid, tmp_path):
    cfg = QuantizeConfig(input="s", tool="nncf", calibration_images=8, calibration_patch=48, target="tensorrt")
    art = call_stage(quantize_stage, cfg, name="nncf", out=tmp_path / "nncf", source=student_onnx, calib_pairs=builtin_train,
                         val_pairs=builtin_valid[:1], scale=2, seed=0)
    report = check_qdq(art.payload)
    assert report["nonstandard_ops"] == [] and report["qdq_pairs"] >= 3
    assert "FakeQuantize" not in art.manifest["ops"] and "nncf" in art.manifest["transforms"][-1]["tool"]
    assert abs(art.manifest["metrics"]["budget"]["psnr_drop_db"]) < 0.5
    with pytest.raises(RuntimeError, match="method and per_channel apply to tool onnxruntime"):
        call_stage(quantize_stage, QuantizeConfig(input="s", tool="nncf", method="entropy"), name="x", out=tmp_path / "x",
                       source=student_onnx, calib_pairs=builtin_train, val_pairs=builtin_valid[:1], scale=2, seed=0)


def test_mixed_precision_keeps_the_most_sensitive_layers_until_the_budget_holds(student_onnx, builtin_train,
                                                                               builtin_valid, tmp_path):
    kw = dict(source=student_onnx, calib_pairs=builtin_train, val_pairs=builtin_valid[:1], scale=2, seed=0)
    # 8-bit per-tensor weights: a graph that loses something to fall back from (7-bit happened to gain here)
    full = call_stage(quantize_stage, QuantizeConfig(input="s", calibration_images=4, calibration_patch=48, per_channel=False,
                                                     weight_bits=8), name="full", out=tmp_path / "full", **kw)
    drop = full.manifest["metrics"]["budget"]["psnr_drop_db"]
    assert drop > 0.002
    budget = drop / 3  # force the fallback: all-INT8 misses this budget
    art = call_stage(quantize_stage, QuantizeConfig(input="s", calibration_images=4, calibration_patch=48, per_channel=False,
                                        weight_bits=8, max_psnr_drop_db=budget, on_budget_exceeded="fallback"),
                         name="mixed", out=tmp_path / "mixed", **kw)
    mixed = art.manifest["transforms"][-1]["mixed_precision"]
    assert mixed["fp_layers"] and set(mixed["sensitivity_db"]) >= set(mixed["fp_layers"])
    first = max(mixed["sensitivity_db"], key=mixed["sensitivity_db"].get)
    assert mixed["fp_layers"][0] == first  # the most sensitive goes first
    assert art.manifest["metrics"]["budget"]["psnr_drop_db"] <= budget
    assert art.manifest["precision"] == "int8+fp32"
    proto = onnx.load(str(art.payload))
    q_inputs = {n.input[0] for n in proto.graph.node if n.op_type == "QuantizeLinear"}
    by_name = {n.name: n for n in proto.graph.node}
    for layer in mixed["fp_layers"]:  # a kept layer's output is not quantized: it stays in float
        assert layer in by_name and not set(by_name[layer].output) & q_inputs, layer


@pytest.fixture(scope="module")
def tiny_teacher(tmp_path_factory):
    spec = {"type": "edsr", "scale": 2, "n_resblocks": 1, "n_feats": 8, "anchor": "nearest"}
    torch.manual_seed(0)
    return save_model(tmp_path_factory.mktemp("t") / "teacher", build_model(spec), name="teacher", arch=spec)


def test_teacher_outputs_are_cached_once_and_reused(tiny_teacher, builtin_train, builtin_valid, tmp_path):
    from edgesr.compress.distill import DistillConfig, TeacherCache, distill_stage
    from edgesr.data.patches import PatchSampler

    cfg = DistillConfig(model={"type": "abpn", "channels": 8, "n_body": 1}, teacher="teacher", steps=6,
                        batch_size=4, alpha=0.5, val_every=6, checkpoint_every=100)
    kw = dict(teacher=tiny_teacher, train_pairs=builtin_train, val_pairs=builtin_valid[:1], scale=2, patch_size=16,
              min_patch_std=0.0, seed=0)
    first = call_stage(distill_stage, cfg, name="s1", out=tmp_path / "s1", **kw)
    second = call_stage(distill_stage, cfg, name="s2", out=tmp_path / "s2", **kw)
    c1, c2 = (a.manifest["transforms"][0]["teacher_cache"] for a in (first, second))
    assert c1["used"] and (c1["misses"], c1["hits"]) == (6, 0) and (c2["misses"], c2["hits"]) == (0, 6)
    assert c1["dir"] == c2["dir"]
    w1, w2 = load_model(first).state_dict(), load_model(second).state_dict()
    assert all(torch.equal(w1[k], w2[k]) for k in w1)
    # What the cache holds is the teacher's output for that step's batch, to 8-bit precision.
    teacher = load_model(tiny_teacher)
    sampler = PatchSampler(builtin_train, 2, 16, 4, seed=0)
    cache = TeacherCache(tmp_path / ".teacher_cache", teacher, tiny_teacher.hash, sampler, 6)
    assert cache.filled.all()
    lr, _ = sampler.batch(3)
    with torch.no_grad():
        live = teacher(lr).clamp(0, 1)
    assert (cache.get(3, lr)[2] - live).abs().max() <= 0.5 / 255 + 1e-6
    # Another teacher (other content hash) gets another cache.
    other = TeacherCache(tmp_path / ".teacher_cache", teacher, "0" * 16, sampler, 6)
    assert other.dir != cache.dir and not other.filled.any()


def test_distill_warm_started_from_a_general_teacher_on_the_students_lr(tiny_teacher, builtin_train, builtin_valid,
                                                                         tmp_path):
    """``init_from`` warm-starts a distilled student (it was ignored before); with a degraded training mix,
    ``teacher_lr: degraded`` caches the teacher's outputs on the student's own LR, ``clean`` on the protocol's LR
    of the same patches, in caches of their own."""
    from pathlib import Path

    from edgesr.compress.distill import DistillConfig, TeacherCache, distill_stage
    from edgesr.config import TrainConfig
    from edgesr.data.degradations import DegradationSpec
    from edgesr.data.patches import PatchSampler
    from edgesr.train.train import train_stage

    mix = DegradationSpec("general", {"blur": 0, "noise": 0, "jpeg": 0, "resize": {"cubic-aliased": 1}})
    spec = {"type": "abpn", "channels": 8, "n_body": 1}
    start = call_stage(train_stage, TrainConfig(model=spec, steps=2, batch_size=2, val_every=2), name="start",
                       out=tmp_path / "start", train_pairs=builtin_train, val_pairs=builtin_valid[:1], scale=2,
                       patch_size=16, min_patch_std=0.0)
    kw = dict(teacher=tiny_teacher, train_pairs=builtin_train, val_pairs=builtin_valid[:1], scale=2, patch_size=16,
              min_patch_std=0.0, seed=0, degradation=mix)
    arts = {sees: call_stage(distill_stage, DistillConfig(model=spec, teacher="teacher", steps=3, batch_size=4,
                                                          alpha=0.5, val_every=3, teacher_lr=sees),
                             name=sees, out=tmp_path / sees, init_from=start, **kw) for sees in ("clean", "degraded")}
    first, last = arts["degraded"].manifest["transforms"][0], arts["degraded"].manifest["transforms"][-1]
    assert first["type"] == "init_from" and first["from"] == "start" and first["loaded"] > 0 and not first["fresh"]
    assert last["teacher_lr"] == "degraded" and last["degradation"]["mix"]["resize"] == {"cubic-aliased": 1.0}
    dirs = {k: a.manifest["transforms"][-1]["teacher_cache"]["dir"] for k, a in arts.items()}
    assert dirs["clean"] != dirs["degraded"]
    teacher = load_model(tiny_teacher)
    sampler = PatchSampler(builtin_train, 2, 16, 4, seed=0, min_std=0.0, degradation=mix)
    lr, clean = sampler.batch(1)[0], sampler.batch(1, clean=True)[0]
    assert not torch.equal(lr, clean)
    for sees, x in (("clean", clean), ("degraded", lr)):
        cache = TeacherCache(tmp_path / ".teacher_cache", teacher, tiny_teacher.hash, sampler, 3, teacher_lr=sees)
        assert cache.dir == Path(dirs[sees]) and cache.filled.all()
        with torch.no_grad():
            live = teacher(x).clamp(0, 1)
        assert (cache.get(1, x)[2] - live).abs().max() <= 0.5 / 255 + 1e-6


def test_feature_distillation_trains_adapters_and_names_bad_layers(tiny_teacher, builtin_train, builtin_valid,
                                                                     tmp_path):
    from edgesr.compress.distill import DistillConfig, distill_stage

    kw = dict(teacher=tiny_teacher, train_pairs=builtin_train, val_pairs=builtin_valid[:1], scale=2, patch_size=16,
              min_patch_std=0.0, seed=0)
    cfg = DistillConfig(model={"type": "abpn", "channels": 4, "n_body": 1}, teacher="teacher", steps=4, batch_size=2,
                        alpha=0.3, feature_layers={"body.1": "body.0"}, feature_weight=0.1, val_every=4)
    art = call_stage(distill_stage, cfg, name="f", out=tmp_path / "f", **kw)
    rec = art.manifest["transforms"][0]
    assert rec["feature_layers"] == {"body.1": "body.0"} and rec["feature_weight"] == 0.1
    assert not any("adapter" in k for k in load_model(art).state_dict())  # adapters are not part of the student
    bad = DistillConfig(model={"type": "abpn", "channels": 4, "n_body": 1}, teacher="teacher", steps=2, batch_size=2,
                        feature_layers={"body.9": "body.0"}, feature_weight=0.1)
    with pytest.raises(ValueError, match="no module 'body.9' in ABPN"):
        call_stage(distill_stage, bad, name="b", out=tmp_path / "b", **kw)


@pytest.mark.parametrize("spec", [
    {"type": "msrep", "scale": 2, "channels": 16, "n_blocks": 2, "heads": [2, 4]},
    {"type": "rcan", "scale": 2, "n_groups": 1, "n_blocks": 2, "n_feats": 16, "reduction": 4},
    {"type": "edsr_msa", "scale": 2, "n_resblocks": 2, "n_feats": 16, "reduction": 2},
], ids=["msrep", "rcan", "edsr_msa"])
def test_iterative_pruning_to_a_macs_target(spec, builtin_train, builtin_valid, tmp_path):
    from edgesr.compress.prune import prune_stage

    src = save_model(tmp_path / "src", build_model(spec), name="src", arch=spec)
    cfg = PruneConfig(input="src", target="macs", macs_ratio=0.6, iterations=2, finetune_steps=4, batch_size=2,
                      round_to=2)
    art = call_stage(prune_stage, cfg, name="p", out=tmp_path / "p", source=src, teacher=None, train_pairs=builtin_train,
                      val_pairs=builtin_valid[:1], scale=2, patch_size=16, min_patch_std=0.0, seed=0)
    rec = art.manifest["transforms"][-1]
    assert rec["type"] == "prune" and len(rec["iterations"]) == 2
    assert rec["macs_after"] <= 0.6 * rec["macs_before"] * 1.0001
    assert rec["iterations"][0]["macs"] > rec["iterations"][1]["macs"]  # the first step prunes less
    model = load_model(art)  # rebuilds from the manifest: deploy form + recorded shapes
    x = torch.rand(1, 3, 9, 11)
    out = model(x)
    assert (out[0] if isinstance(out, tuple) else out).shape == (1, 3, 18, 22)
    if spec["type"] == "msrep":
        assert art.manifest["arch"]["deploy"] is True and art.manifest["scales"] == [2, 4]


@pytest.mark.parametrize("on_slower,measured", [("fail", "slower"), ("fallback", "slower"), ("warn", "slower"),
                                                 ("fallback", "noise"), ("fallback", "faster")])
def test_a_pruned_model_not_measurably_faster_than_its_parent_is_not_shipped(on_slower, measured, builtin_train,
                                                                           builtin_valid, tmp_path):
    """The speed guard compares parent and pruned model in one interleaved run (here a stand-in that reports the
    ratios measured for the quickstart: 0.85x on an AVX-512 host; 1.06x [0.97-1.12] on an AVX2 host, which the
    final benchmark then measured at 0.99x; so the test does not depend on this machine's timing). A pruned
    model costs quality: it ships only when the lower end of its speed-up's 95 % interval reaches min_speedup."""
    from edgesr.compress.prune import PruneError, kernel_round_to, prune_stage
    from edgesr.hostinfo import nchwc_block

    spec = {"type": "abpn", "scale": 2, "channels": 32, "n_body": 2}
    src = save_model(tmp_path / "src", build_model(spec), name="src", arch=spec)
    seen = []
    ratio, ci = {"slower": (0.85, [0.8, 0.9]), "noise": (1.06, [0.97, 1.12]), "faster": (1.3, [1.1, 1.5])}[measured]

    def speedup(ref, new, hw, backend):
        assert backend == "onnxruntime"  # call_stage's context: the default benchmark backend
        seen.append((count_macs(ref, (16, 16))[0], count_macs(new, (16, 16))[0], hw))
        return {"ratio": ratio, "ci95": ci, "ref_p50_ms": 20.0, "new_p50_ms": 20.0 / ratio}

    cfg = PruneConfig(input="src", ratio=0.5, finetune_steps=0, round_to="kernel", min_speedup=1.0,
                      on_slower=on_slower, latency_input=(64, 96))
    kw = dict(name="p", out=tmp_path / "p", source=src, teacher=None, train_pairs=builtin_train, scale=2,
              val_pairs=builtin_valid[:1], patch_size=16, min_patch_std=0.0, seed=0, speedup_fn=speedup)
    if on_slower == "fail":
        with pytest.raises(PruneError, match=r"on onnxruntime, the pruned model runs 0.85x its parent's speed \(95 % interval 0.80-0.90x.*not "
                                             r"measurably at min_speedup 1.0.*round_to: kernel"):
            call_stage(prune_stage, cfg, **kw)
        assert not (tmp_path / "p").exists()
        return
    art = call_stage(prune_stage, cfg, **kw)
    (ref_macs, new_macs, hw), = seen
    assert new_macs < ref_macs and hw == (64, 96)  # the guard compared the parent with the pruned model
    rec = art.manifest["transforms"][-1]
    assert rec["speedup_vs_parent"]["ratio"] == ratio
    if on_slower == "fallback" and measured != "faster":
        assert "parent shipped unpruned" in rec["fallback"] and "not measurably 1.0x faster" in rec["fallback"]
        assert art.manifest["params"] == src.manifest["params"]
        # what ships loads (the export stage after it reads it) and is the parent, weight for weight
        x = torch.rand(1, 3, 12, 14)
        with torch.no_grad():
            assert torch.equal(load_model(art).eval()(x), load_model(src).eval()(x))
    else:
        widths = {v["out"] for k, v in rec["shapes"].items() if k not in rec["protected"]}
        assert widths and "fallback" not in rec
        assert art.manifest["params"] < src.manifest["params"]
        assert all(w % nchwc_block() == 0 for w in widths) and kernel_round_to("kernel") == nchwc_block()


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_onnx_speedup_times_parent_and_candidate_in_one_interleaved_run(backend):
    from edgesr.pipeline import onnx_speedup
    from edgesr.runtime import BACKENDS

    if not BACKENDS.get(backend).available()[0]:
        pytest.skip(f"{backend} is not installed")
    a = build_model({"type": "abpn", "scale": 2, "channels": 8, "n_body": 2}).eval()
    b = build_model({"type": "abpn", "scale": 2, "channels": 4, "n_body": 1}).eval()
    res = onnx_speedup(a, b, (16, 24), threads=1, rounds=6, backend=backend)
    assert res["rounds"] == 6 and res["input"] == [16, 24] and res["backend"] == backend
    assert res["ci95"][0] <= res["ratio"] <= res["ci95"][1] and res["ref_p50_ms"] > 0 and res["new_p50_ms"] > 0


def test_the_speed_guard_must_hold_on_every_benchmark_backend(builtin_train, builtin_valid, tmp_path):
    """Faster on ONNX Runtime, slower on OpenVINO (the recipe benchmarks both): refused, naming OpenVINO; with
    measure_on: [onnxruntime] it ships, and the manifest says where it was measured; a backend that cannot run
    here is left out and named."""
    from edgesr.compress.prune import PruneConfig, PruneError, prune_stage
    from edgesr.runtime import BackendUnavailable

    spec = {"type": "abpn", "scale": 2, "channels": 16, "n_body": 1}
    src = save_model(tmp_path / "src", build_model(spec), name="src", arch=spec)
    measured = {"onnxruntime": (1.4, [1.3, 1.5]), "openvino": (0.9, [0.85, 0.95])}

    def speedup(ref, new, hw, backend):
        if backend == "tensorrt":
            raise BackendUnavailable("TensorRT is not installed")
        r, ci = measured[backend]
        return {"ratio": r, "ci95": ci, "ref_p50_ms": 20.0, "new_p50_ms": 20.0 / r, "backend": backend}

    kw = dict(source=src, teacher=None, train_pairs=builtin_train, scale=2, val_pairs=builtin_valid[:1],
              patch_size=16, min_patch_std=0.0, seed=0, speedup_fn=speedup)
    cfg = PruneConfig(input="src", ratio=0.5, finetune_steps=0, min_speedup=1.0, latency_input=(32, 48))
    ctx_backends = ("onnxruntime", "openvino", "tensorrt")
    kw = {k: v for k, v in kw.items() if k not in ("source", "teacher")}
    with pytest.raises(PruneError, match=r"on openvino, the pruned model runs 0.90x"):
        call_stage(prune_stage, cfg, name="p", out=tmp_path / "p", measure_backends=ctx_backends, input=src, **kw)
    assert not (tmp_path / "p").exists()
    art = call_stage(prune_stage, PruneConfig(**{**cfg.__dict__, "measure_on": ("onnxruntime",)}), name="q",
                     out=tmp_path / "q", measure_backends=ctx_backends, input=src, **kw)
    rec = art.manifest["transforms"][-1]
    assert list(rec["speedup_by_backend"]) == ["onnxruntime"] and rec["speedup_vs_parent"]["ratio"] == 1.4
    with pytest.raises(PruneError, match=r"on openvino"):
        call_stage(prune_stage, PruneConfig(**{**cfg.__dict__, "measure_on": ("tensorrt", "onnxruntime", "openvino")}),
                   name="r", out=tmp_path / "r", input=src, **kw)


def test_pruning_to_a_latency_target_bisects_on_the_measurement(builtin_train, tmp_path):
    """The bisection is tested with a deterministic latency (proportional to MACs), so the outcome cannot
    depend on the machine's speed or load; the real ONNX Runtime measurement is exercised separately."""
    from edgesr.compress.prune import prune_to_target
    from edgesr.pipeline import onnx_latency_ms

    model = build_model({"type": "abpn", "scale": 2, "channels": 32, "n_body": 3}).eval()
    calls = []

    def latency(m):
        calls.append(1)
        return count_macs(m, (96, 96))[0] / 1e6  # "ms": 1 per million MACs

    start = latency(model)
    calls.clear()
    cfg = PruneConfig(input="x", target="latency", latency_ms=start * 0.7, latency_input=(96, 96))
    pruned, rec = prune_to_target(model, cfg, None, latency_fn=latency)
    assert len(calls) == 1 + 7  # the start, then one measurement per bisection step
    assert rec["goal"] == {"latency_ms": pytest.approx(start * 0.7, rel=1e-12), "start_latency_ms": start}
    assert latency(pruned) <= start * 0.7 < start
    assert rec["macs_after"] < rec["macs_before"]
    # iterative pruning interpolates from the unpruned model's latency, not from the half-pruned one's
    half, rec_half = prune_to_target(model, cfg, None, fraction=0.5, base_latency_ms=start, latency_fn=latency)
    assert rec_half["goal"]["latency_ms"] == pytest.approx(start * 0.7 ** 0.5, rel=1e-12)
    assert latency(pruned) < latency(half) <= start * 0.7 ** 0.5
    with pytest.raises(ValueError, match="latency needs latency_ms"):
        prune_to_target(model, PruneConfig(input="x", target="latency"), None)
    ms = onnx_latency_ms(model, (24, 24), threads=1)  # the real measurement runs and returns a time
    assert np.isfinite(ms) and ms > 0


@pytest.mark.slow
def test_qat_through_nncf_exports_standard_qdq(builtin_train, builtin_valid, tmp_path):
    """NNCF PTQ start, fake-quant fine-tune, strip, export: a Q/DQ graph ONNX Runtime runs, no FakeQuantize."""
    from edgesr.compress.qat import QatConfig, qat_stage

    spec = {"type": "msrep", "scale": 2, "channels": 8, "n_blocks": 1}
    torch.manual_seed(0)
    src = save_model(tmp_path / "s", build_model(spec), name="s", arch=spec)
    cfg = QatConfig(input="s", calibration_images=4, calibration_patch=32, steps=6, batch_size=4, val_every=3,
                    target="tensorrt")
    art = call_stage(qat_stage, cfg, name="qat", out=tmp_path / "qat", source=src, teacher=None, train_pairs=builtin_train,
                    val_pairs=builtin_valid[:1], scale=2, patch_size=16, min_patch_std=0.0, seed=0)
    report = check_qdq(art.payload)
    assert report["nonstandard_ops"] == [] and report["qdq_pairs"] >= 4
    assert "FakeQuantize" not in art.manifest["ops"] and art.manifest["precision"] == "int8"
    m = art.manifest["metrics"]
    assert {"fp32_val_psnr", "ptq_val_psnr", "qat_torch_val_psnr", "val_psnr"} <= set(m)
    assert abs(m["val_psnr"] - m["qat_torch_val_psnr"]) < 0.3  # ORT runs the exported graph like NNCF's model
    assert art.manifest["arch"]["deploy"] is True
    out = open_backend(art).run(calibration_batches(builtin_train, 1, 21, seed=1)[0])
    assert out.shape == (1, 3, 42, 42) and np.isfinite(out).all()


@pytest.mark.parametrize("spec", [
    {"type": "msrep", "scale": 2, "size": "s"},
    {"type": "msrep", "scale": 2, "channels": 8, "n_blocks": 1, "heads": [2, 4]},
    {"type": "edsr", "scale": 2, "n_resblocks": 1, "n_feats": 8},
    {"type": "ms_lapsrn", "scale": 2, "levels": 2, "n_feats": 8, "depth": 1, "recursions": 1},
], ids=["msrep_s", "msrep_x2x4", "edsr", "ms_lapsrn"])
def test_int8_and_fp16_work_on_students_and_teachers(spec, builtin_train, builtin_valid, tmp_path):
    """The ONNX-level compressions on the zoo's export of each kind (re-parameterized, multi-output)."""
    from edgesr.compress.fp16 import Fp16Config, fp16_stage

    torch.manual_seed(0)
    src = save_model(tmp_path / "m", build_model(spec), name="m", arch=spec)
    onnx_art = call_stage(export_stage, ExportConfig(input="m"), name="o", out=tmp_path / "o", source=src)
    kw = dict(source=onnx_art, calib_pairs=builtin_train, val_pairs=builtin_valid[:1], scale=2, seed=0)
    int8 = call_stage(quantize_stage, QuantizeConfig(input="o", calibration_images=2, calibration_patch=32, target="tensorrt"),
                          name="q", out=tmp_path / "q", **kw)
    assert check_qdq(int8.payload)["tensorrt_explicit_int8"]
    half = call_stage(fp16_stage, Fp16Config(input="o", calibration_images=2, calibration_patch=32), name="h",
                      out=tmp_path / "h", **kw)
    x = calibration_batches(builtin_train, 1, 24, seed=2)[0]
    ref = open_backend(onnx_art).run(x)
    for art, tol in ((int8, 0.1), (half, 0.01)):
        out = open_backend(art).run(x)
        assert out.shape == ref.shape == (1, 3, 48, 48) and np.abs(out - ref).mean() < tol


@pytest.fixture(scope="module")
def student_onnx_d2s(student_onnx):
    """The same trained student exported as PyTorch writes it (``tail_channels: 0``): the anchor is the LR
    image repeated by Unsqueeze/Expand/Reshape, added before a DepthToSpace."""
    from edgesr.artifacts import read_artifact

    src = read_artifact(student_onnx.path.parent / "student")
    return call_stage(export_stage, ExportConfig(input="student", tail_channels=0), name="student_d2s",
                      out=student_onnx.path.parent / "student_d2s", source=src)


@pytest.mark.skipif(importlib.util.find_spec("openvino") is None, reason="needs openvino")
def test_exported_anchor_as_a_conv_makes_int8_run_faithfully_on_openvino(student_onnx, student_onnx_d2s,
                                                                        builtin_train, builtin_valid, tmp_path):
    """What decided how much INT8 lost on OpenVINO (1.2-3.7 dB on the pretrained students): the anchor as
    exported, the quantized LR image repeated by Expand/Reshape into the last Add, which OpenVINO's CPU
    plugin runs unlike the Q/DQ graph says. The export stage now writes the anchor as a 1x1 conv (and the
    shuffle as a ConvTranspose, the image conv padded): the same model, quantized the same way, agrees."""
    kw = dict(calib_pairs=builtin_train, val_pairs=builtin_valid[:1], scale=2, seed=0, threads=2)
    cfg = dict(calibration_images=8, calibration_patch=48)
    old = call_stage(quantize_stage, QuantizeConfig(input="d2s", **cfg), name="a", out=tmp_path / "a",
                     source=student_onnx_d2s, **kw)
    new = call_stage(quantize_stage, QuantizeConfig(input="o", **cfg), name="b", out=tmp_path / "b", source=student_onnx, **kw)
    assert "Expand" in old.manifest["ops"] and "Expand" not in new.manifest["ops"]
    assert agreement_db(old.payload, old.manifest, builtin_valid[:1], 2) < 50.0
    assert agreement_db(new.payload, new.manifest, builtin_valid[:1], 2) > 55.0


# INT8 for OpenVINO: the same Q/DQ file can run less faithfully on OpenVINO than ONNX Runtime runs it (the
# quickstart student lost 0.29 dB on Set5); target: openvino measures that and keeps the unfaithful layers in float.
@pytest.mark.skipif(importlib.util.find_spec("openvino") is None, reason="needs openvino")
def test_target_openvino_finds_and_keeps_in_float_the_layers_openvino_runs_unfaithfully(student_onnx_d2s, builtin_train,
                                                                                        builtin_valid, tmp_path):
    common = dict(input="student_onnx", calibration_images=8, calibration_patch=48)
    kw = dict(source=student_onnx_d2s, calib_pairs=builtin_train, val_pairs=builtin_valid[:1], scale=2, seed=0, threads=2)
    plain = call_stage(quantize_stage, QuantizeConfig(**common), name="int8", out=tmp_path / "int8", **kw)
    ov = call_stage(quantize_stage, QuantizeConfig(**common, target="openvino", min_agreement_db=50.0), name="int8_ov",
                    out=tmp_path / "int8_ov", **kw)
    record = ov.manifest["transforms"][-1]
    agreement = record["runtime_agreement"]
    assert record["quality_measured_on"] == "openvino" and plain.manifest["transforms"][-1]["quality_measured_on"] == "onnxruntime"
    # The model has the property: fully quantized, OpenVINO disagrees with the Q/DQ graph ...
    assert agreement_db(plain.payload, plain.manifest, builtin_valid[:1], 2) == agreement["full_int8_db"] < 50.0
    # ... and the stage found the layers, kept them in float, and the written graph now agrees.
    assert agreement["fp_layers"] and agreement["agreement_db"] >= 50.0
    assert ov.manifest["precision"] == "int8+fp32"
    assert agreement_db(ov.payload, ov.manifest, builtin_valid[:1], 2) == pytest.approx(agreement["agreement_db"], abs=0.01)
    worst = min(agreement["per_layer_db"].values())
    assert agreement["per_layer_db"][agreement["fp_layers"][0]] == worst


def test_target_openvino_is_refused_without_openvino(monkeypatch, student_onnx, builtin_train, tmp_path):
    from edgesr.compress.common import QuantizeError
    from edgesr.runtime import BACKENDS

    monkeypatch.setattr(BACKENDS.get("openvino"), "available", classmethod(lambda cls: (False, "not installed")))
    with pytest.raises(QuantizeError, match="target openvino.*not available here \\(not installed\\)"):
        call_stage(quantize_stage, QuantizeConfig(input="student_onnx", target="openvino", calibration_images=2,
                                                  calibration_patch=32), name="q", out=tmp_path / "q",
                   source=student_onnx, calib_pairs=builtin_train, val_pairs=builtin_train[:1], scale=2, seed=0)


@pytest.mark.parametrize("spec", [
    {"type": "rlfn", "channels": 8, "mid_channels": 8, "n_blocks": 1, "esa_channels": 4, "anchor": "nearest"},
    {"type": "span", "channels": 8, "anchor": "nearest"},
], ids=["rlfn", "span"])
def test_challenge_students_go_through_distill_prune_quantize_export(spec, builtin_train, builtin_valid, tmp_path):
    """RLFN and SPAN as students: distilled from a (tiny) SwinIR teacher, pruned (SPAN in its collapsed form),
    quantized to TensorRT-form INT8 and checked by TensorRT's rules and, where installed, its builder."""
    from edgesr.compress.distill import DistillConfig, distill_stage
    from edgesr.compress.prune import prune_stage
    from edgesr.export.tensorrt import check_tensorrt

    tspec = {"type": "swinir", "scale": 2, "embed_dim": 12, "depths": [2], "heads": [2], "window_size": 4}
    teacher = save_model(tmp_path / "t", build_model(tspec), name="t", arch=tspec)
    kw = dict(train_pairs=builtin_train, val_pairs=builtin_valid[:1], scale=2, patch_size=16, min_patch_std=0.0, seed=0)
    student = call_stage(distill_stage, DistillConfig(model=spec, teacher="t", steps=4, batch_size=2, val_every=4,
                                                      checkpoint_every=100),
                         name="s", out=tmp_path / "s", teacher=teacher, **kw)
    assert student.manifest["arch"]["type"] == spec["type"]
    pruned = call_stage(prune_stage, PruneConfig(input="s", ratio=0.5, finetune_steps=2, batch_size=2), name="p",
                        out=tmp_path / "p", source=student, **kw)
    record = pruned.manifest["transforms"][-1]
    assert record["params_after"] < 0.6 * record["params_before"]
    assert record["shapes"]["upsampler"]["out"] == 12  # whole output pixels stay whole
    assert pruned.manifest["arch"].get("deploy", False) == (spec["type"] == "span")
    onnx_art = call_stage(export_stage, ExportConfig(input="p"), name="e", out=tmp_path / "e", source=pruned)
    int8 = call_stage(quantize_stage, QuantizeConfig(input="e", calibration_images=2, calibration_patch=32,
                                                     target="tensorrt"),
                      name="q", out=tmp_path / "q", source=onnx_art, calib_pairs=builtin_train,
                      val_pairs=builtin_valid[:1], scale=2, seed=0)
    assert check_qdq(int8.payload)["tensorrt_explicit_int8"]
    assert check_tensorrt(int8, [[16, 16], [48, 64], [96, 128]]) == []
    x = calibration_batches(builtin_train, 1, 24, seed=2)[0]
    ref, out = open_backend(onnx_art).run(x), open_backend(int8).run(x)
    assert out.shape == (1, 3, 48, 48) and np.abs(out - ref).mean() < 0.05


def test_the_residual_form_removes_most_of_the_int8_loss_of_a_network_that_predicts_the_image(builtin_train,
                                                                                            builtin_valid, tmp_path):
    """What decides a model's INT8 loss: whether its activations carry the image or only the detail it adds.
    tests/data/int8_property holds FSRCNN x2 trained 2,000 steps on the shared photos twice (recipe
    int8_zoo_x2): as published (predicting the Y image itself) and with ``residual: true`` (a correction to the
    bilinear image). Quantized alike (ONNX Runtime MinMax, per-channel weights), the published form loses
    several times more (measured in the recipe: 0.86 against 0.16 dB on the validation photos)."""
    from pathlib import Path

    from edgesr.artifacts import read_artifact

    root = Path(__file__).parent / "data/int8_property"
    drops = {}
    for name in ("fsrcnn", "fsrcnn_res"):
        src = read_artifact(root / name)
        onnx_art = call_stage(export_stage, ExportConfig(input=name), name="o", out=tmp_path / f"{name}_onnx", source=src)
        q = call_stage(quantize_stage, QuantizeConfig(input="o", calibration_images=16, calibration_patch=64,
                                                      on_budget_exceeded="warn", max_psnr_drop_db=0.01),
                       name="q", out=tmp_path / f"{name}_int8", source=onnx_art, calib_pairs=builtin_train,
                       val_pairs=builtin_valid, scale=2, seed=0, threads=2)
        drops[name] = q.manifest["metrics"]["budget"]["psnr_drop_db"]
    assert src.manifest["arch"]["residual"] is True
    assert drops["fsrcnn"] > 0.3 and drops["fsrcnn_res"] < drops["fsrcnn"] / 3, drops
