"""Importing CARN-M (nmhkahn/CARN-pytorch ``carn_m.pth``: one network, x2/x3/x4 heads) and RFDN (the AIM 2020
winner, NTIRE 2022 baseline ``rfdn_baseline.pth``) from ../shared/weights; the tests skip without them.

Agreement with the authors' model classes (float-exact at x2, x3 and x4 for CARN-M, x4 for RFDN, Set5) was
measured once outside the repository; here the imports are pinned to their layouts, to strict loading and,
for CARN-M x2, to the Set5 PSNR-Y edgesr's protocol gives (37.682; the paper's 37.53 comes from the authors'
truncating 8-bit save, see edgesr/models/carn.py).
"""

from __future__ import annotations

import pytest
import torch

from conftest import WEIGHTS, set5_psnr
from conftest import published_weights as _weights

from edgesr.importing import ImportError_, load_checkpoint_model, read_checkpoint
from edgesr.models import build_model
from edgesr.models.carn import CARNM
from edgesr.models.rfdn import RFDN

FILES = ("carn_m.pth", "ntire22_rfdn_baseline.pth")
CARN_M_SET5_X2 = 37.6817  # edgesr protocol, all 5 images; per image 38.7825 42.8997 34.5991 35.9572 36.1699


def test_carn_m_is_one_network_with_three_heads():
    model = load_checkpoint_model(_weights("carn_m.pth"), "carn_m").model
    assert model.scales == (2, 3, 4) and model.scale == 2
    x = torch.rand(1, 3, 9, 7)
    with torch.no_grad():
        outs = model(x)
    assert [tuple(o.shape) for o in outs] == [(1, 3, 18, 14), (1, 3, 27, 21), (1, 3, 36, 28)]
    # the mean shift is the file's (frozen) 1x1 convs, not constants of the module
    assert torch.allclose(model.add_mean.bias, torch.tensor([0.4488, 0.4371, 0.4040]))
    assert not model.sub_mean.weight.requires_grad


def test_carn_m_subset_of_heads_does_not_take_the_multi_scale_file():
    with pytest.raises(ImportError_, match="unused"):
        load_checkpoint_model(_weights("carn_m.pth"), "carn_m", {"scales": [2]})
    with pytest.raises(ImportError_):  # scale is a check against the file's scales
        load_checkpoint_model(_weights("carn_m.pth"), "carn_m", {"scale": 8})


def test_carn_m_single_scale_layout(tmp_path):
    """A file the authors' code writes with ``multi_scale=False`` (one ``upsample.up`` head) imports as a
    one-scale model; here made from the x4 head of the released file, so it must equal that head's output."""
    path = _weights("carn_m.pth")
    full = load_checkpoint_model(path, "carn_m").model
    state, _ = read_checkpoint(path)
    single = {k.replace("upsample.up4.", "upsample.up."): v for k, v in state.items()
              if not k.startswith(("upsample.up2.", "upsample.up3."))}
    torch.save(single, tmp_path / "carn_m_x4.pth")
    imp = load_checkpoint_model(tmp_path / "carn_m_x4.pth")
    assert imp.arch["type"] == "carn_m" and imp.arch["scales"] == [4] and imp.model.scales == (4,)
    x = torch.rand(1, 3, 8, 10)
    with torch.no_grad():
        assert torch.equal(imp.model(x), full(x)[2])


def test_carn_m_x2_set5_psnr_through_the_protocol(tmp_path):
    """Set5 x2 PSNR-Y (border 2, MATLAB-bicubic LR files) of the released CARN-M, on an x2-only copy of the
    network (the x3/x4 heads do not change the x2 output and would triple the time)."""
    from edgesr.modelio import save_model

    path = _weights("carn_m.pth")
    full = load_checkpoint_model(path, "carn_m").model
    x2 = build_model({"type": "carn_m", "scales": [2]}).eval()
    x2.load_state_dict({k: v for k, v in full.state_dict().items() if not k.startswith(("heads.x3.", "heads.x4."))})
    art = save_model(tmp_path / "carn_m_x2", x2, name="carn_m_x2", arch={"type": "carn_m", "scales": [2]})
    assert art.manifest["scales"] == [2]
    assert set5_psnr(art.path, 2) == pytest.approx(CARN_M_SET5_X2, abs=0.01)


def test_rfdn_x4_set5_psnr_through_the_protocol(tmp_path):
    """The NTIRE 2022 RFDN baseline through `edgesr import` and the protocol (bit-identical to the authors'
    RFDN class on Set5 and Set14, measured once outside the repository): 32.161 dB Set5 x4."""
    from edgesr.importing import import_checkpoint

    path = _weights("ntire22_rfdn_baseline.pth")
    art = import_checkpoint(path, tmp_path / "rfdn", arch="auto")
    assert art.manifest["arch"]["type"] == "rfdn" and art.manifest["scales"] == [4]
    assert set5_psnr(art.path, 4) == pytest.approx(32.161, abs=0.01)


def test_rfdn_reference_range_and_minimum_input():
    model = load_checkpoint_model(_weights("ntire22_rfdn_baseline.pth"), "rfdn").model
    assert model.data_range == 255.0 and model.scales == (4,)
    with torch.no_grad():
        assert model(torch.rand(1, 3, 15, 16)).shape == (1, 3, 60, 64)  # the unpadded ESA pool's smallest input
        with pytest.raises(RuntimeError):
            model(torch.rand(1, 3, 14, 16))
    plain = build_model({"type": "rfdn", "scale": 2, "channels": 8, "n_blocks": 2, "esa_channels": 4})
    assert plain.data_range == 1.0  # edgesr's default: the [0, 1] network
    with torch.no_grad():
        assert plain(torch.rand(1, 3, 15, 17)).shape == (1, 3, 30, 34)


def test_other_families_files_are_not_claimed():
    carn = read_checkpoint(_weights("carn_m.pth"))[0]
    rfdn = read_checkpoint(_weights("ntire22_rfdn_baseline.pth"))[0]
    assert RFDN.checkpoint_layout(carn) is None
    assert CARNM.checkpoint_layout(rfdn) is None
    for other in sorted(WEIGHTS.glob("*.pth")):  # IMDN, RLFN, SPAN files: RFDN shares names with RLFN and IMDN
        if other.name not in FILES:
            state = read_checkpoint(other)[0]
            assert RFDN.checkpoint_layout(state) is None, other.name
            assert CARNM.checkpoint_layout(state) is None, other.name
    full_carn = {k.replace("b1.b1.", "b1.b2."): v for k, v in carn.items()}  # CARN's unshared blocks: not CARN-M
    assert CARNM.checkpoint_layout({**carn, **full_carn}) is None
    assert CARNM.checkpoint_layout({}) is None and RFDN.checkpoint_layout({"weight": torch.zeros(1)}) is None
    no_esa = {k: v for k, v in rfdn.items() if ".esa.conv_max." not in k}
    assert RFDN.checkpoint_layout(no_esa) is None
