"""`edgesr explain`: attention maps (EDSR-MSA), LayerCAM / Grad-CAM layer maps and integrated-gradient input
attribution, on a real Set5 image with tiny trained networks: right size, not constant, and following the
region they explain."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from edgesr.artifacts import read_artifact
from edgesr.cli import main
from edgesr.explain import explain
from edgesr.imaging import read_image, write_image
from edgesr.modelio import load_model, save_model
from edgesr.models import build_model

LEFT, RIGHT = (24, 40, 12, 12), (80, 40, 12, 12)


@pytest.fixture(scope="module")
def butterfly(benchmark_root):
    """Set5 butterfly, its x2 LR file (MATLAB-made), cropped to 128 x 96: real texture on both sides."""
    return np.ascontiguousarray(read_image(benchmark_root / "Set5" / "LR_bicubic" / "X2" / "butterflyx2.png")[:96, :128])


@pytest.fixture(scope="module")
def trained_msa(builtin_train, builtin_valid, tmp_path_factory):
    """A tiny EDSR-MSA trained for 60 steps (its attention gates have moved off their initialisation)."""
    from edgesr.fitting import fit, sampler_for
    from edgesr.losses import LOSSES

    torch.manual_seed(0)
    spec = {"type": "edsr_msa", "scale": 2, "n_resblocks": 2, "n_feats": 8, "reduction": 1, "anchor": "nearest"}
    model = build_model(spec)
    sampler = sampler_for(model, builtin_train, 2, 24, 8, 0, 0.0)
    l1 = LOSSES.build({"type": "l1"})
    result = fit(model, sampler, steps=60, lr=2e-3, loss_fn=lambda sr, lr, hr: l1(sr, hr),
                 val_pairs=builtin_valid[:1], scale=2, val_every=60,
                 checkpoint_dir=tmp_path_factory.mktemp("msa_ckpt"), desc="msa")
    return spec, result.model


def _centroid_x(m: np.ndarray) -> float:
    return float((np.indices(m.shape)[1] * m).sum() / m.sum())


def test_attention_maps_of_edsr_msa_one_per_block_at_the_input_size(trained_msa, butterfly):
    spec, model = trained_msa
    exp = explain(model, butterfly, LEFT, ig_steps=4)
    att = [k for k, v in exp.kinds.items() if v == "attention"]
    assert att == ["attention body.0.msa.gate", "attention body.1.msa.gate"]
    for k in att:
        m = exp.maps[k]
        assert m.shape == butterfly.shape[:2] and 0 <= m.min() and m.max() == pytest.approx(1.0)
        assert m.std() > 0.01  # not constant: the gates respond to the image
    # attention maps are a property of the image, not of the region explained
    again = explain(model, butterfly, RIGHT, ig_steps=4)
    assert np.allclose(again.maps[att[0]], exp.maps[att[0]])


@pytest.mark.parametrize("which", ["msa", "student"])
def test_layer_maps_and_input_attribution_follow_the_region(which, trained_msa, butterfly):
    model = trained_msa[1] if which == "msa" else load_model(read_artifact("msrep-s-x2"))
    left, right = explain(model, butterfly, LEFT, ig_steps=8), explain(model, butterfly, RIGHT, ig_steps=8)
    local = [k for k, v in left.kinds.items() if v != "attention"]
    assert "input attribution" in local and len(local) >= 3
    for k in local:
        a, b = left.maps[k], right.maps[k]
        assert a.shape == b.shape == butterfly.shape[:2]
        assert a.std() > 0.01 and b.std() > 0.01
        # the attribution sits on the region: its centroid moves with it (regions 56 px apart)
        assert abs(_centroid_x(a) - (LEFT[0] + LEFT[2] / 2)) < 12, k
        assert _centroid_x(b) - _centroid_x(a) > 40, k
    assert left.sr.shape == (192, 256, 3)


def test_gradcam_method_and_named_layers(butterfly):
    model = load_model(read_artifact("msrep-s-x2"))
    exp = explain(model, butterfly, LEFT, layers=["blocks.1.conv"], method="gradcam", ig_steps=2)
    assert list(exp.maps) == ["gradcam blocks.1.conv", "input attribution"]
    assert exp.maps["gradcam blocks.1.conv"].std() > 0.01
    with pytest.raises(ValueError, match="no layer named \\['blocks.9'\\].*head.conv"):
        explain(model, butterfly, LEFT, layers=["blocks.9"])
    with pytest.raises(ValueError, match="not inside the 128x96 input"):
        explain(model, butterfly, (120, 90, 16, 16))


def test_explain_command_writes_overlays_contact_sheet_and_json(butterfly, tmp_path, capsys):
    write_image(tmp_path / "in.png", butterfly)
    out = tmp_path / "maps"
    assert main(["explain", "msrep-s-x2", str(tmp_path / "in.png"), "--out", str(out), "--region", "24,40,12,12",
                 "--steps", "4"]) == 0
    record = json.loads((out / "maps.json").read_text())
    assert record["region_xywh"] == [24, 40, 12, 12] and record["scale"] == 2
    assert (out / "contact_sheet.png").stat().st_size > 10_000
    for m in record["maps"]:
        img = read_image(out / m["file"])
        assert img.shape[:2] == (2 * 96, 2 * 128)  # inputs under 256 px are enlarged to be seen
        assert not m["constant"]
    assert "contact_sheet.png" in capsys.readouterr().out
    # an ONNX artifact has no gradients: refused, naming what to pass instead
    assert main(["explain", "msrep-s-x2-fp32", str(tmp_path / "in.png"), "--out", str(out)]) == 2
    assert "pretrained name without -fp32/-int8" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["explain", "msrep-s-x2", str(tmp_path / "in.png"), "--out", str(out), "--region", "1,2,3"])
