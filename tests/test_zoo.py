"""The model zoo: published parameter counts, round trips through the manifest, ONNX export with odd
sizes, re-parameterization exactness, multi-output conventions."""

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F

from edgesr.modelio import load_model, save_model
from edgesr.models import build_model, deploy_form, model_scales, outputs_by_scale, select_outputs

# Tiny configurations of every architecture (the real sizes are checked by parameter count only).
ZOO = [
    {"type": "edsr", "scale": 3, "n_resblocks": 2, "n_feats": 8, "res_scale": 0.1},
    {"type": "rdn", "scale": 4, "n_blocks": 2, "n_layers": 2, "growth": 8, "n_feats": 8},
    {"type": "rdn", "scale": 3, "n_blocks": 1, "n_layers": 2, "growth": 4, "n_feats": 8},
    {"type": "rcan", "scale": 2, "n_groups": 2, "n_blocks": 2, "n_feats": 16, "reduction": 4},
    {"type": "edsr_msa", "scale": 2, "n_resblocks": 2, "n_feats": 8, "reduction": 2, "anchor": "nearest"},
    {"type": "ms_lapsrn", "scale": 2, "levels": 2, "n_feats": 8, "depth": 2, "recursions": 2},
    {"type": "fsrcnn", "scale": 2, "d": 8, "s": 4, "m": 1},
    {"type": "fsrcnn", "scale": 3, "d": 8, "s": 4, "m": 1, "color": "rgb"},
    {"type": "espcn", "scale": 3},
    {"type": "msrep", "scale": 2, "channels": 8, "n_blocks": 2, "heads": [2, 4]},
    {"type": "msrep", "scale": 4, "size": "s", "heads": [4]},
    {"type": "msrep", "scale": 2, "channels": 8, "n_blocks": 1, "space_to_depth": 2, "heads": [2, 4]},
    {"type": "msrep", "scale": 2, "channels": 8, "n_blocks": 2, "head_kernel": 1},
    {"type": "srcnn", "scale": 3, "n1": 8, "n2": 4},
    {"type": "vdsr", "scale": 2, "depth": 3, "n_feats": 8},
    {"type": "lapsrn", "scale": 4, "depth": 1, "n_feats": 8},
    {"type": "srresnet", "scale": 3, "n_blocks": 1, "n_feats": 8},
    {"type": "rlfn", "scale": 2, "channels": 8, "mid_channels": 8, "n_blocks": 1, "esa_channels": 4},
    {"type": "span", "scale": 4, "channels": 8, "anchor": "nearest"},
    {"type": "meta_sr", "scale": 2, "scales": [2, 3], "trunk": "rdn", "hidden": 16,
     "trunk_args": {"n_blocks": 1, "n_layers": 2, "growth": 4, "n_feats": 8}},
    {"type": "meta_sr", "scale": 4, "trunk": "edsr", "hidden": 16, "trunk_args": {"n_resblocks": 1, "n_feats": 8}},
    {"type": "swinir", "scale": 2, "embed_dim": 12, "depths": [2], "heads": [2], "window_size": 4},
]


def _ids(spec):
    return "-".join(str(v) for v in spec.values())


def _tuple(out):
    return out if isinstance(out, tuple) else (out,)


@pytest.mark.parametrize("spec,expected", [
    ({"type": "edsr", "scale": 4}, 1_518_000),                                        # EDSR baseline x4
    ({"type": "edsr", "scale": 4, "n_resblocks": 32, "n_feats": 256, "res_scale": 0.1}, 43_100_000),
    ({"type": "rdn", "scale": 4}, 22_300_000),                                         # RDN x4 (D16 C8 G64)
    ({"type": "rcan", "scale": 4}, 15_600_000),                                        # RCAN x4 (10 x 20)
])
def test_teacher_parameter_counts_match_the_papers(spec, expected):
    n = sum(p.numel() for p in build_model(spec).parameters())
    assert abs(n - expected) / expected < 0.01, n


def _conv_weights(model) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if n.endswith("weight") and p.dim() == 4)


def _deployed_params(spec) -> int:
    plain, _ = deploy_form(build_model(spec), spec)
    return sum(p.numel() for p in plain.parameters())


@pytest.mark.parametrize("spec,count,expected", [
    ({"type": "srcnn", "scale": 3}, "conv weights", 8_032),                    # SRCNN 9-1-5 (n1 64, n2 32)
    ({"type": "vdsr", "scale": 2}, "all", 665_000),                            # VDSR: 20 layers x 64
    ({"type": "lapsrn", "scale": 4}, "conv weights", 812_000),                 # LapSRN x4, depth 10
    ({"type": "srresnet", "scale": 4}, "all", 1_550_000),                      # SRResNet x4 (16 blocks), as tabulated
    ({"type": "rlfn", "scale": 4}, "all", 317_000),                            # RLFN, NTIRE 2022 entry (0.317M)
    ({"type": "rlfn", "scale": 4, "channels": 52, "mid_channels": 52, "n_blocks": 6}, "all", 543_000),  # RLFN paper
    ({"type": "span", "scale": 4}, "deployed", 151_000),                       # SPAN, NTIRE 2024 entry (0.151M)
    ({"type": "swinir", "scale": 2}, "without bias tables", 878_000),          # SwinIR lightweight x2
    ({"type": "swinir", "scale": 3}, "without bias tables", 886_000),
    ({"type": "swinir", "scale": 4}, "without bias tables", 897_000),
], ids=lambda v: v["type"] + str(v.get("scale")) + str(v.get("channels", "")) if isinstance(v, dict) else str(v))
def test_new_architectures_match_the_papers_parameter_counts(spec, count, expected):
    model = build_model(spec)
    if count == "conv weights":
        n = _conv_weights(model)
    elif count == "deployed":
        n = _deployed_params(spec)
    elif count == "without bias tables":  # the SwinIR paper's count leaves out the relative-position-bias tables
        n = sum(p.numel() for k, p in model.named_parameters() if "relative_position_bias_table" not in k)
    else:
        n = sum(p.numel() for p in model.parameters())
    assert abs(n - expected) / expected < 0.01, n


def test_meta_rdn_is_the_rdn_trunk_plus_the_papers_weight_prediction_net():
    rdn = build_model({"type": "rdn", "scale": 4})
    meta = build_model({"type": "meta_sr", "scale": 4})
    upsampler = sum(p.numel() for m in (rdn.upsample, rdn.tail) for p in m.parameters())
    predict = (3 * 256 + 256) + (256 * 3 * 3 * 64 * 3 + 3 * 3 * 64 * 3)  # FC 3 -> 256 -> 3x3x64x3
    assert predict == 445_120
    assert sum(p.numel() for p in meta.parameters()) == sum(p.numel() for p in rdn.parameters()) - upsampler + predict


def test_fsrcnn_has_the_papers_12464_weights():
    model = build_model({"type": "fsrcnn", "scale": 2})
    weights = sum(p.numel() for n, p in model.named_parameters() if n.endswith("weight") and p.dim() == 4)
    assert weights == 12_464  # FSRCNN(56, 12, 4), Y channel: the paper's count (conv weights only)


@pytest.mark.parametrize("scale,color", [(2, "y"), (3, "rgb"), (4, "y")])
def test_fsrcnn_deploy_form_is_its_transposed_conv_as_a_subpixel_conv(scale, color, tmp_path):
    """Each output phase of a stride-r transposed conv is an ordinary conv of the input: the deploy form computes
    the same image with a conv on the LR grid and a pixel shuffle (no ConvTranspose), and rebuilds from its
    manifest."""
    from edgesr.models.fsrcnn import subpixel_geometry

    spec = {"type": "fsrcnn", "scale": scale, "d": 8, "s": 4, "m": 1, "color": color}
    torch.manual_seed(0)
    model = build_model(spec).eval()
    torch.nn.init.normal_(model.network[-1].weight, std=0.1)  # the paper's init is near zero: make it count
    torch.nn.init.normal_(model.network[-1].bias, std=0.1)
    plain, arch = deploy_form(model, spec)
    assert arch == {**spec, "deploy": True}
    assert not any(isinstance(m, torch.nn.ConvTranspose2d) for m in plain.modules())
    conv, shuffle = plain.network[-1]
    assert isinstance(shuffle, torch.nn.PixelShuffle) and conv.kernel_size[0] == subpixel_geometry(9, scale, 4)[0]
    x = torch.rand(1, 3, 11, 14)
    with torch.no_grad():
        ref = model(x)
        assert (plain(x) - ref).abs().max() < 1e-5
        save_model(tmp_path / "d", plain, name="d", arch=arch)
        assert (load_model(tmp_path / "d")(x) - ref).abs().max() < 1e-5


def test_subpixel_geometry_of_the_papers_deconvolution():
    from edgesr.models.fsrcnn import subpixel_geometry

    # 9x9 taps, padding 4: x2 phases read offsets -2..2 (5 and 4 taps), x3 -1..2 (padded to 5), x4 -1..1
    assert [subpixel_geometry(9, r, 4) for r in (2, 3, 4)] == [(5, 2), (5, 2), (3, 1)]


def test_fsrcnn_relu_exports_no_prelu(tmp_path):
    import onnx

    from edgesr.export.onnx import export_onnx

    spec = {"type": "fsrcnn", "scale": 2, "d": 8, "s": 4, "m": 1, "act": "relu", "residual": True}
    plain, _ = deploy_form(build_model(spec).eval(), spec)
    export_onnx(plain, tmp_path / "m.onnx", scales=[2])
    ops = {n.op_type for n in onnx.load(str(tmp_path / "m.onnx")).graph.node}
    assert "PRelu" not in ops and "ConvTranspose" not in ops and {"Relu", "DepthToSpace"} <= ops
    with pytest.raises(ValueError, match="act must be 'prelu' or 'relu'"):
        build_model({**spec, "act": "gelu"})


@pytest.mark.parametrize("size,low,high", [("s", 8_000, 12_000), ("m", 40_000, 60_000), ("l", 170_000, 230_000),
                                           ("su", 45_104, 45_104)])
def test_student_family_sizes(size, low, high):
    plain, _ = deploy_form(build_model({"type": "msrep", "scale": 2, "size": size}), {})
    n = sum(p.numel() for p in plain.parameters())
    assert low <= n <= high, n


@pytest.mark.parametrize("spec", ZOO, ids=_ids)
def test_round_trip_odd_sizes_and_onnx(spec, tmp_path):
    from edgesr.export.onnx import export_onnx, parity_check

    torch.manual_seed(0)
    model = build_model(spec).eval()
    scales = model_scales(model)
    x = torch.rand(2, 3, 13, 7)
    with torch.no_grad():
        out = _tuple(model(x))
    assert [o.shape for o in out] == [(2, 3, 13 * s, 7 * s) for s in scales]
    assert all(torch.isfinite(o).all() for o in out)
    save_model(tmp_path / "a", model, name="a", arch=spec)
    again = load_model(tmp_path / "a")
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(_tuple(again(x)), out))
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert manifest["scales"] == list(scales) and manifest["arch"] == spec
    deployed, _ = deploy_form(again, spec)
    export_onnx(deployed, tmp_path / "m.onnx", scales=list(scales))
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    assert [o.name for o in sess.get_outputs()] == (["sr"] if len(scales) == 1 else [f"sr_x{s}" for s in scales])
    odd = (np.random.default_rng(0).random((15, 11, 3)) * 255).astype(np.uint8)
    assert parity_check(deployed, tmp_path / "m.onnx", odd)["max_abs"] < 1e-4


@pytest.mark.parametrize("size,extra", [("s", {}), ("m", {}), ("l", {}), ("su", {}), ("s", {"head_kernel": 1})])
def test_reparameterized_student_matches_the_multi_branch_one(size, extra):
    torch.manual_seed(1)
    model = build_model({"type": "msrep", "scale": 2, "size": size, "heads": [2, 4], **extra}).eval()
    with torch.no_grad():  # move every branch away from its initialisation, as training does
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    plain, delta = model.reparameterized()
    assert delta == {"deploy": True}
    assert not any(hasattr(m, "k13") for m in plain.modules())  # only plain convs remain
    assert plain.head.conv.kernel_size == (model.head_kernel,) * 2
    x = torch.rand(1, 3, 29, 17)
    with torch.no_grad():
        branches, merged, deployed = (_tuple(f(x)) for f in (model.forward_branches, model, plain))
    for b, m, d in zip(branches, merged, deployed):
        assert (b - m).abs().max() < 1e-5 and (b - d).abs().max() < 1e-5


def test_reparameterized_student_rebuilds_from_its_manifest(tmp_path):
    spec = {"type": "msrep", "scale": 2, "size": "s"}
    model = build_model(spec).eval()
    plain, arch = deploy_form(model, spec)
    save_model(tmp_path / "d", plain, name="d", arch=arch)
    x = torch.rand(1, 3, 9, 9)
    with torch.no_grad():
        assert torch.allclose(load_model(tmp_path / "d")(x), model(x), atol=1e-5)


def test_students_start_at_their_nearest_anchor_and_heads_share_the_trunk():
    model = build_model({"type": "msrep", "scale": 2, "size": "s", "heads": [2, 4]}).eval()
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        outs = outputs_by_scale(model(x), model.scales)
        x2_only = select_outputs(model, (2,))(x)
    for s, o in outs.items():
        assert (o - F.interpolate(x, scale_factor=s, mode="nearest")).abs().mean() < 0.05
    assert torch.equal(x2_only, outs[2])
    with pytest.raises(ValueError, match="emits x\\[2, 4\\]"):
        select_outputs(model, (3,))
    with pytest.raises(ValueError, match="heads must be distinct"):
        build_model({"type": "msrep", "scale": 2, "heads": [4]})


@pytest.mark.parametrize("heads", [[2], [2, 4], [3]])
def test_space_to_depth_student_is_nearest_upsampling_plus_its_tail_at_any_size(heads):
    """MSRep su: the trunk runs on 2 x 2 cells of the LR; with its tails at zero the output is exactly nearest
    upsampling, also at odd sizes (the edge-padded last cell is cropped away), for every head."""
    model = build_model({"type": "msrep", "scale": heads[0], "size": "su", "heads": heads}).eval()
    assert model.unshuffle == 2 and model.head.cin == 12
    with torch.no_grad():
        x = torch.rand(1, 3, 13, 7)
        live = outputs_by_scale(model(x), model.scales)
        for tail in model.tails:
            for p in tail.parameters():
                p.zero_()
        outs = outputs_by_scale(model(x), model.scales)
    for s, o in outs.items():
        assert o.shape == (1, 3, 13 * s, 7 * s)
        assert torch.equal(o, F.interpolate(x, scale_factor=s, mode="nearest"))
        assert not torch.equal(live[s], o)
    with pytest.raises(ValueError, match="space_to_depth must be"):
        build_model({"type": "msrep", "scale": 2, "size": "s", "space_to_depth": 5})
    with pytest.raises(ValueError, match="head_kernel must be 1 or 3"):
        build_model({"type": "msrep", "scale": 2, "size": "s", "head_kernel": 5})


def test_lapsrn_image_branch_starts_as_bilinear_upsampling():
    model = build_model({"type": "ms_lapsrn", "scale": 2, "levels": 3, "n_feats": 8, "depth": 1, "recursions": 1})
    with torch.no_grad():
        model.residual.weight.zero_()
        model.residual.bias.zero_()
        x = torch.rand(1, 3, 12, 12)
        x2, x4, x8 = model(x)
    ref = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    assert x8.shape[-1] == 96
    assert (x2 - ref)[..., 2:-2, 2:-2].abs().max() < 1e-5  # same as bilinear away from the border


def test_luma_models_put_the_networks_luminance_in_the_output():
    model = build_model({"type": "fsrcnn", "scale": 2, "d": 8, "s": 4, "m": 1}).eval()
    x = torch.rand(1, 3, 10, 12)
    w = torch.tensor([65.481, 128.553, 24.966]).view(1, 3, 1, 1) / 255
    with torch.no_grad():
        y_net = model.network((x * w).sum(1, keepdim=True) + 16 / 255)
        y_out = (model(x) * w).sum(1, keepdim=True) + 16 / 255
    assert (y_net - y_out).abs().max() < 1e-5


@pytest.mark.parametrize("spec", ZOO, ids=_ids)
def test_every_architecture_passes_the_tensorrt_readiness_check(spec, tmp_path):
    """Offline rules (operators, DepthToSpace mode, dynamic H/W within the profile), then, where TensorRT for
    RTX is installed, its real ONNX parser and builder."""
    from conftest import call_stage
    from edgesr.export.onnx import ExportConfig, export_stage
    from edgesr.export.tensorrt import check_tensorrt

    torch.manual_seed(0)
    src = save_model(tmp_path / "m", build_model(spec), name="m", arch=spec)
    art = call_stage(export_stage, ExportConfig(input="m"), name="e", out=tmp_path / "e", source=src)
    assert check_tensorrt(art, [[16, 16], [48, 64], [96, 128]]) == []


def test_span_collapses_exactly_into_plain_convs():
    torch.manual_seed(1)
    spec = {"type": "span", "scale": 2, "channels": 8}
    model = build_model(spec).eval()
    with torch.no_grad():  # move every branch away from its initialisation, as training does
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    conv = model.conv_1
    x = torch.rand(1, 3, 11, 7)
    with torch.no_grad():
        assert (conv(x) - conv.forward_branches(x)).abs().max() < 1e-5  # borders included
        plain, delta = model.reparameterized()
        assert delta == {"deploy": True} and not any(hasattr(m, "expand") for m in plain.modules())
        assert (plain(x) - model(x)).abs().max() < 1e-5


def test_meta_sr_runs_any_scale_and_its_fixed_scale_form_is_exact():
    torch.manual_seed(2)
    spec = {"type": "meta_sr", "scale": 2, "scales": [2, 3, 4], "trunk": "edsr", "hidden": 16,
            "trunk_args": {"n_resblocks": 1, "n_feats": 8}}
    model = build_model(spec).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
        x = torch.rand(1, 3, 9, 11)
        outs = model(x)
        plain, delta = model.reparameterized()
        for s, a, b in zip((2, 3, 4), outs, plain(x)):
            assert a.shape == (1, 3, 9 * s, 11 * s) and (a - b).abs().max() < 1e-5
            assert torch.allclose(model.upscale(x, float(s)), a, atol=1e-6)
        for s in (1.1, 1.5, 2.7, 3.3):  # one network, non-integer scales: floor(H s) x floor(W s)
            assert model.upscale(x, s).shape == (1, 3, int(9 * s), int(11 * s))
        # the filters are predicted from the position: the same LR pixel gives different output pixels
        two = model.upscale(x, 2.0)
        assert (two[..., 0::2, 0::2] - two[..., 1::2, 1::2]).abs().mean() > 1e-4
    with pytest.raises(ValueError, match="integer scales"):
        build_model({**spec, "scales": [2, 2.5]})
    with pytest.raises(ValueError, match="fixed to its integer scales"):
        plain.upscale(x, 2.5)


def test_swinir_shifted_window_mask_separates_the_rolled_regions():
    model = build_model({"type": "swinir", "scale": 2, "embed_dim": 12, "depths": [2], "heads": [2], "window_size": 4})
    mask = model.shift_mask(3, 2, torch.device("cpu"))
    assert mask.shape == (6, 16, 16)
    assert torch.equal(mask, mask.transpose(1, 2)) and (mask.diagonal(dim1=1, dim2=2) == 0).all()
    grid = mask.view(3, 2, 16, 16)
    assert (grid[:-1, :-1] == 0).all()  # windows away from the wrapped border see one region only
    # the corner window holds four regions (2x2 pixels each): a token attends to its own 4 only
    corner = grid[-1, -1]
    assert ((corner == 0).sum(dim=1) == 4).all()


def test_swinir_onnx_keeps_dynamic_sizes_with_in_graph_window_padding(tmp_path):
    from edgesr.export.onnx import export_onnx

    torch.manual_seed(0)
    model = build_model({"type": "swinir", "scale": 2, "embed_dim": 12, "depths": [2], "heads": [2],
                         "window_size": 4}).eval()
    proto = export_onnx(model, tmp_path / "s.onnx", scales=[2])
    dims = [d.dim_param or d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 3, "height", "width"]
    sess = ort.InferenceSession(str(tmp_path / "s.onnx"), providers=["CPUExecutionProvider"])
    for hw in [(3, 5), (4, 4), (8, 8), (17, 9)]:  # smaller than a window, whole windows, ragged
        x = torch.rand(2, 3, *hw)
        with torch.no_grad():
            ref = model(x).numpy()
        out = sess.run(None, {"lr": x.numpy()})[0]
        assert out.shape == (2, 3, 2 * hw[0], 2 * hw[1]) and np.abs(out - ref).max() < 1e-4


def test_lapsrn_emits_every_pyramid_level_starting_near_bilinear():
    model = build_model({"type": "lapsrn", "scale": 8, "depth": 1, "n_feats": 8, "color": "rgb"}).eval()
    assert model.scales == (2, 4, 8)
    with torch.no_grad():
        for level in model.levels:
            level.residual.weight.zero_()
            level.residual.bias.zero_()
        x = torch.rand(1, 3, 12, 12)
        x2, x4, x8 = model(x)
    assert x8.shape[-1] == 96
    ref = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    assert (x2 - ref)[..., 2:-2, 2:-2].abs().max() < 1e-5


def test_vdsr_and_srcnn_work_on_bicubic_upsampled_luminance():
    torch.manual_seed(0)
    x = torch.rand(1, 3, 10, 12)
    w = torch.tensor([65.481, 128.553, 24.966]).view(1, 3, 1, 1) / 255
    bicubic = F.interpolate(x, scale_factor=2, mode="bicubic", align_corners=False)
    vdsr = build_model({"type": "vdsr", "scale": 2, "depth": 4, "n_feats": 8}).eval()
    with torch.no_grad():
        vdsr.network.body[-1].weight.zero_()
        vdsr.network.body[-1].bias.zero_()
        assert (vdsr(x) - bicubic).abs().max() < 1e-5  # zero residual: exactly the bicubic image
        srcnn = build_model({"type": "srcnn", "scale": 2, "n1": 8, "n2": 4}).eval()
        y_out = (srcnn(x) * w).sum(1, keepdim=True) + 16 / 255
        y_in = (x * w).sum(1, keepdim=True) + 16 / 255
        assert (y_out - srcnn.network(y_in)).abs().max() < 1e-5
