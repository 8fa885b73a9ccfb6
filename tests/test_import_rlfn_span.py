"""Importing the authors' RLFN and SPAN checkpoints (NTIRE 2022 / 2024 efficient-SR entries).

The files are third-party test data in ``../shared/weights`` (see its README); the tests skip without them.
Agreement with the authors' own code (float-exact on Set5 x4 for all four files) was measured once, outside
the repository, with the authors' model classes; here the imported models are pinned to the Set5 PSNR-Y
that edgesr's protocol gives them.
"""

import pytest
import torch

from conftest import WEIGHTS, set5_psnr
from conftest import published_weights as _weights

from edgesr.importing import ImportError_, import_checkpoint, load_checkpoint_model, read_checkpoint
from edgesr.models import build_model, deploy_form
from edgesr.models.rlfn import RLFN
from edgesr.models.span import SPAN

RLFN_NTIRE = {"scale": 4, "channels": 46, "mid_channels": 48, "n_blocks": 4, "esa_channels": 16, "pool_padding": 0,
              "data_range": 255.0}
SPAN_REF = {"scale": 4, "deploy": True, "img_range": 255.0, "rgb_mean": [0.4488, 0.4371, 0.4040], "c1_act": True}

FILES = {  # file: (architecture, keywords the layout must read, values in the file)
    "ntire22_team04_rlfn.pth": ("rlfn", RLFN_NTIRE, 317_218),
    "ntire24_team00_rlfn.pth": ("rlfn", RLFN_NTIRE, 317_218),
    "ntire24_team38_span_ch28_slim.pth": ("span", {**SPAN_REF, "channels": 28}, 150_688),
    "ntire24_team39_spantiny_ch26_slim.pth": ("span", {**SPAN_REF, "channels": 26}, 130_828),
}


def test_both_rlfn_layouts_hold_the_same_weights():
    a = load_checkpoint_model(_weights("ntire22_team04_rlfn.pth")).model.state_dict()
    b = load_checkpoint_model(_weights("ntire24_team00_rlfn.pth")).model.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("name,psnr", [("ntire24_team00_rlfn.pth", 32.0983),
                                       ("ntire24_team38_span_ch28_slim.pth", 31.7459)])
def test_set5_psnr_through_the_protocol(tmp_path, name, psnr):
    """Set5 x4 PSNR-Y (border 4, MATLAB-bicubic LR files). RLFN: 32.10 for the NTIRE entry; the paper's larger
    RLFN (bytedance/RLFN rlfn_x4.pth) gives 32.24 through the same path, the paper's 32.24."""
    path = _weights(name)
    art = import_checkpoint(path, tmp_path / "model")
    assert art.manifest["arch"]["type"] == FILES[name][0]
    assert set5_psnr(art.path, 4) == pytest.approx(psnr, abs=0.01)


def test_other_families_files_are_not_claimed():
    rlfn = read_checkpoint(_weights("ntire22_team04_rlfn.pth"))[0]
    span = read_checkpoint(_weights("ntire24_team38_span_ch28_slim.pth"))[0]
    assert SPAN.checkpoint_layout(rlfn) is None
    assert RLFN.checkpoint_layout(span) is None
    # RFDN shares RLFN's names (fea_conv, B1.c1_r, B1.esa.conv1, LR_conv, upsampler.0) but not its blocks
    for other in ("ntire22_rfdn_baseline.pth", "ntire22_imdn_baseline.pth", "imdn_x4.pth"):
        if (WEIGHTS / other).is_file():
            state = read_checkpoint(WEIGHTS / other)[0]
            assert RLFN.checkpoint_layout(state) is None, other
            assert SPAN.checkpoint_layout(state) is None, other
    assert RLFN.checkpoint_layout({"weight": torch.zeros(1)}) is None
    assert SPAN.checkpoint_layout({}) is None
    partial = {k: v for k, v in rlfn.items() if not k.startswith("B1.esa.")}  # block 1 is no RLFB
    assert RLFN.checkpoint_layout(partial) is None


def test_wrong_scale_and_wrong_width_are_refused(tmp_path):
    path = _weights("ntire24_team00_rlfn.pth")
    with pytest.raises(ImportError_, match="scale=4"):
        import_checkpoint(path, tmp_path / "x2", scale=2)
    with pytest.raises(ImportError_, match="channels=46"):
        load_checkpoint_model(path, "rlfn", {"channels": 52})


def test_defaults_keep_edgesrs_behaviour_and_reference_switches_survive_deploy():
    rlfn = build_model({"type": "rlfn", "scale": 2, "channels": 8, "mid_channels": 8, "n_blocks": 1, "esa_channels": 4})
    assert rlfn.blocks[0].esa.pool.padding == 3 and rlfn.data_range == 1.0
    with torch.no_grad():
        assert rlfn(torch.rand(1, 3, 4, 5)).shape == (1, 3, 8, 10)  # padded pool: tiny inputs run
    ref = build_model({"type": "rlfn", "scale": 2, "channels": 8, "mid_channels": 8, "n_blocks": 1, "esa_channels": 4,
                       "pool_padding": 0, "data_range": 255})
    with torch.no_grad():
        assert ref(torch.rand(1, 3, 15, 16)).shape == (1, 3, 30, 32)  # the reference's smallest input
    span = build_model({"type": "span", "scale": 2, "channels": 8})
    assert span.rgb_mean is None and span.img_range == 1.0 and not span.c1_act
    assert list(span.state_dict()) == list(build_model({"type": "span", "scale": 2, "channels": 8, **SPAN_REF,
                                                         "deploy": False}).state_dict())  # the mean is no weight
    spec = {"type": "span", "scale": 2, "channels": 8, "img_range": 255.0, "rgb_mean": [0.4, 0.5, 0.6], "c1_act": True}
    trained = build_model(spec).eval()
    plain, arch = deploy_form(trained, spec)
    assert arch == {**spec, "deploy": True}
    assert (plain.img_range, plain.rgb_mean, plain.c1_act) == (255.0, [0.4, 0.5, 0.6], True)
    x = torch.rand(1, 3, 9, 11)
    with torch.no_grad():
        torch.testing.assert_close(plain(x), trained(x), rtol=1e-4, atol=1e-4)
