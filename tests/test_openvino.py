"""The OpenVINO backend passes the same contract as the others: parity with PyTorch FP32 (at f32), odd sizes,
tiling, bad input, a clear refusal when OpenVINO is missing, and the CLI."""

from __future__ import annotations

import importlib.resources
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import call_stage
from edgesr.export.onnx import ExportConfig, export_stage
from edgesr.imaging import read_image
from edgesr.modelio import save_model
from edgesr.models import build_model
from edgesr.runtime import BACKENDS, BackendUnavailable, InputError, Upscaler, open_backend

pytestmark = pytest.mark.skipif(importlib.util.find_spec("openvino") is None,
                                reason="OpenVINO is not installed (pip install 'edgesr[openvino]')")
SKIMAGE = Path(str(importlib.resources.files("skimage.data")))


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    root = tmp_path_factory.mktemp("ov")
    spec = {"type": "abpn", "scale": 2, "channels": 8, "n_body": 3}
    torch.manual_seed(0)
    src = save_model(root / "m", build_model(spec), name="m", arch=spec)
    return src, call_stage(export_stage, ExportConfig(input="m"), name="o", out=root / "o", source=src)


def test_f32_matches_pytorch_on_odd_sizes(student):
    src, onnx_art = student
    with open_backend(onnx_art, "openvino", threads=2, precision="f32") as ov_b, open_backend(src, threads=2) as t_b:
        assert ov_b.describe()["inference_precision"] == "f32"
        for h, w in ((9, 31), (40, 17), (1, 1)):
            x = np.random.default_rng(h).random((1, 3, h, w), dtype=np.float32)
            out = ov_b.run(x)
            assert out.shape == (1, 3, 2 * h, 2 * w) and out.dtype == np.float32
            np.testing.assert_allclose(out, t_b.run(x), atol=1e-4)


def test_default_precision_is_recorded_and_close_to_f32(student):
    src, onnx_art = student
    img = read_image(SKIMAGE / "chelsea.png")[:101, :150]
    with open_backend(onnx_art, "openvino", threads=2) as b, open_backend(onnx_art, "onnxruntime", threads=2) as ref:
        assert b.describe()["inference_precision"] in ("f32", "bf16")  # OpenVINO's choice on this CPU
        ours, theirs = Upscaler(b).upscale(img).astype(int), Upscaler(ref).upscale(img).astype(int)
        assert np.abs(ours - theirs).max() <= (1 if b.inference_precision == "f32" else 8)


def test_tiling_equals_the_whole_image(student):
    _, onnx_art = student
    img = read_image(SKIMAGE / "chelsea.png")[:101, :150]
    with open_backend(onnx_art, "openvino", threads=2, precision="f32") as b:
        assert (Upscaler(b).upscale(img) == Upscaler(b, tile=40, overlap=6).upscale(img)).all()


def test_bad_input_and_wrong_artifacts_are_refused(student, tmp_path):
    src, onnx_art = student
    with open_backend(onnx_art, "openvino", threads=1) as b:
        x = np.full((1, 3, 8, 8), 0.5, np.float32)
        x[0, 0, 0, 0] = np.nan
        with pytest.raises(InputError, match="NaN"):
            b.run(x)
    with pytest.raises(Exception, match="openvino backend runs 'onnx' artifacts; this is 'model'"):
        open_backend(src, "openvino")
    with pytest.raises(ValueError, match="precision 'int4'"):
        open_backend(onnx_art, "openvino", precision="int4")
    cache = tmp_path / "ov_cache"
    with open_backend(onnx_art, "openvino", threads=1, cache_dir=cache):
        pass
    assert any(cache.iterdir())  # the compiled model is cached for the next load


def test_missing_openvino_is_a_clear_refusal(student, monkeypatch):
    _, onnx_art = student
    import edgesr.runtime.base as mod

    real = importlib.util.find_spec
    monkeypatch.setattr(mod.importlib.util, "find_spec", lambda name, *a: None if name == "openvino" else real(name, *a))
    ok, why = BACKENDS.get("openvino").available()
    assert not ok and why == "OpenVINO is not installed"
    with pytest.raises(BackendUnavailable, match="the openvino backend cannot run here: OpenVINO is not installed. "
                                                 "pip install 'edgesr\\[openvino\\]'"):
        open_backend(onnx_art, "openvino")


def test_cli_upscale_and_eval_with_openvino(student, tmp_path, capsys):
    from edgesr.cli import main

    _, onnx_art = student
    assert main(["upscale", str(onnx_art.path), str(SKIMAGE / "coffee.png"), str(tmp_path / "sr.png"),
                 "--backend", "openvino"]) == 0
    assert read_image(tmp_path / "sr.png").shape == (800, 1200, 3)
    assert main(["eval", str(onnx_art.path), "--set", "builtin", "--backend", "openvino"]) == 0
    assert "builtin: PSNR-Y" in capsys.readouterr().out
