"""Importing the IMDN family's published checkpoints (../shared/weights): IMDN x2/x3/x4, IMDN-RTC, IMDN-RTE and
the NTIRE 2022 IMDN baseline (same computation as IMDN-RTC, other key names)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

WEIGHTS = Path(__file__).resolve().parents[2] / "shared" / "weights"
BENCH = Path(__file__).resolve().parents[2] / "shared" / "data" / "benchmark"

# file -> (architecture, keywords the file's shapes fix, values in the file)
FILES = {
    "imdn_x2.pth": ("imdn", {"scale": 2, "channels": 64, "n_blocks": 6}, 694_404),
    "imdn_x3.pth": ("imdn", {"scale": 3, "channels": 64, "n_blocks": 6}, 703_059),
    "imdn_x4.pth": ("imdn", {"scale": 4, "channels": 64, "n_blocks": 6}, 715_176),
    "imdn_rtc.pth": ("imdn_rtc", {"scale": 2, "channels": 12, "n_blocks": 5, "tail_kernel": 1}, 20_190),
    "imdn_rte.pth": ("imdn_rte", {"scale": 2, "channels": 20, "n_blocks": 6, "rgb_range": 255.0}, 89_748),
    "ntire22_imdn_baseline.pth": ("imdn_rtc", {"scale": 4, "channels": 64, "n_blocks": 8, "tail_kernel": 3}, 893_936),
}
FAMILY = ("imdn", "imdn_rtc", "imdn_rte")
FOREIGN = ("carn_m.pth", "ntire22_rfdn_baseline.pth", "ntire22_team04_rlfn.pth", "ntire24_team38_span_ch28_slim.pth")

# edgesr's protocol (PSNR-Y, border = scale, MATLAB-bicubic LR files) on Set5 x2; the authors' module gives the
# same (float-exact); an independent implementation measured 37.31 dB.
RTC_SET5_X2 = 37.3147


def _weights(name: str) -> Path:
    path = WEIGHTS / name
    if not path.is_file():
        pytest.skip(f"published checkpoint {path} not found (../shared/weights is absent)")
    return path


def _state(name: str) -> dict[str, torch.Tensor]:
    from edgesr.importing import read_checkpoint

    return read_checkpoint(_weights(name))[0]


@pytest.mark.parametrize("name", sorted(FILES))
def test_layout_recognised_and_strict_load(name):
    from edgesr.importing import load_checkpoint_model
    from edgesr.models import MODELS

    arch, keywords, values = FILES[name]
    state = _state(name)
    assert sum(v.numel() for v in state.values()) == values
    claims = {a for a in FAMILY if MODELS.get(a).checkpoint_layout(state) is not None}
    assert claims == {arch}  # exactly one of the family recognises it
    got, key_map = MODELS.get(arch).checkpoint_layout(state)
    assert got == keywords and set(key_map) == set(state)
    imp = load_checkpoint_model(_weights(name), arch)  # strict: every tensor used, every parameter given
    assert imp.arch == {"type": arch, **keywords}
    assert sum(p.numel() for p in imp.model.parameters()) == values
    for k, v in imp.model.state_dict().items():
        assert torch.isfinite(v).all(), k
    assert imp.model.scales == (keywords["scale"],)


@pytest.mark.parametrize("name", FOREIGN)
def test_foreign_checkpoints_not_claimed(name):
    from edgesr.models import MODELS

    state = _state(name)
    for arch in FAMILY:
        assert MODELS.get(arch).checkpoint_layout(state) is None, (arch, name)


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
    from edgesr.benchmarks.quality import measure_quality
    from edgesr.data.datasets import load_pairs
    from edgesr.importing import import_checkpoint
    from edgesr.runtime import open_backend

    if not (BENCH / "Set5" / "HR").is_dir():
        pytest.skip(f"benchmark data not found at {BENCH}")
    art = import_checkpoint(_weights("imdn_rtc.pth"), tmp_path / "imdn_rtc", scale=2)
    assert art.manifest["arch"]["type"] == "imdn_rtc"
    backend = open_backend(art.path, "torch", threads=1)
    q = measure_quality(backend, {"Set5": load_pairs(BENCH / "Set5", 2, "eval")}, 2, 1)
    assert q["Set5"]["psnr"] == pytest.approx(RTC_SET5_X2, abs=0.01)
