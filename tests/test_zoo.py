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


def test_fsrcnn_has_the_papers_12464_weights():
    model = build_model({"type": "fsrcnn", "scale": 2})
    weights = sum(p.numel() for n, p in model.named_parameters() if n.endswith("weight") and p.dim() == 4)
    assert weights == 12_464  # FSRCNN(56, 12, 4), Y channel: the paper's count (conv weights only)


@pytest.mark.parametrize("size,low,high", [("s", 8_000, 12_000), ("m", 40_000, 60_000), ("l", 170_000, 230_000)])
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


@pytest.mark.parametrize("size", ["s", "m", "l"])
def test_reparameterized_student_matches_the_multi_branch_one(size):
    torch.manual_seed(1)
    model = build_model({"type": "msrep", "scale": 2, "size": size, "heads": [2, 4]}).eval()
    with torch.no_grad():  # move every branch away from its initialisation, as training does
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    plain, delta = model.reparameterized()
    assert delta == {"deploy": True}
    assert not any(hasattr(m, "k13") for m in plain.modules())  # only plain 3x3 convs remain
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
