"""Importing the IMDN family's published checkpoints (../shared/weights): IMDN x2/x3/x4, IMDN-RTC, IMDN-RTE and
the NTIRE 2022 IMDN baseline (same computation as IMDN-RTC, other key names)."""

from __future__ import annotations

import pytest
import torch

from conftest import published_weights as _weights
from conftest import set5_psnr

# edgesr's protocol (PSNR-Y, border = scale, MATLAB-bicubic LR files) on Set5 x2; the authors' module gives the
# same (float-exact); an independent implementation measured 37.31 dB.
RTC_SET5_X2 = 37.3147


def _state(name: str) -> dict[str, torch.Tensor]:
    from edgesr.importing import read_checkpoint

    return read_checkpoint(_weights(name))[0]


def test_wrong_keyword_is_refused():
    from edgesr.importing import ImportError_, load_checkpoint_model

    with pytest.raises(ImportError_, match="scale"):
        load_checkpoint_model(_weights("imdn_x2.pth"), "imdn", {"scale": 4})
    with pytest.raises(ImportError_, match="imdn_rtc"):  # named the wrong family member: the message points to it
        load_checkpoint_model(_weights("imdn_rtc.pth"), "imdn")


def test_defaults_and_any_input_size():
    from edgesr.models import build_model

    counts = {"imdn": 715_176, "imdn_rtc": 20_190, "imdn_rte": 89_748}
    for arch, n in counts.items():
        m = build_model({"type": arch}).eval()
        assert sum(p.numel() for p in m.parameters()) == n
        with torch.no_grad():
            out = m(torch.rand(1, 3, 7, 10))  # odd sides: IMDN-RTE's stride-2 head is cropped back to r x H
        assert out.shape == (1, 3, 7 * m.scale, 10 * m.scale)
    with pytest.raises(ValueError):
        build_model({"type": "imdn", "channels": 30})


def test_rtc_set5_x2_psnr(tmp_path):
    from edgesr.importing import import_checkpoint

    art = import_checkpoint(_weights("imdn_rtc.pth"), tmp_path / "imdn_rtc", scale=2)
    assert art.manifest["arch"]["type"] == "imdn_rtc"
    assert set5_psnr(art.path, 2) == pytest.approx(RTC_SET5_X2, abs=0.01)
