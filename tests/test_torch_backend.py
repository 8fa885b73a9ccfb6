"""The torch backend's options (the GPU path's settings), checked on the CPU: dtype, channels-last and
torch.compile agree with FP32 eager within their precision; CUDA-only settings are refused with the reason."""

import importlib.resources
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from edgesr.modelio import save_model
from edgesr.models import build_model
from edgesr.runtime import BackendUnavailable, open_backend

SKIMAGE = Path(str(importlib.resources.files("skimage.data")))


@pytest.fixture(scope="module")
def msrep(tmp_path_factory):
    torch.manual_seed(0)
    spec = {"type": "msrep", "scale": 2, "size": "s"}
    return save_model(tmp_path_factory.mktemp("m") / "ms", build_model(spec), name="ms", arch=spec)


def _x():
    img = np.asarray(Image.open(SKIMAGE / "chelsea.png").convert("RGB"))[40:77, 60:113]  # odd size
    return np.ascontiguousarray(img.transpose(2, 0, 1)[None].astype(np.float32) / 255)


@pytest.mark.parametrize("options, tol", [({"channels_last": True}, 1e-5), ({"dtype": "bf16"}, 2e-2),
                                          ({"dtype": "bf16", "channels_last": True}, 2e-2)])
def test_options_agree_with_fp32_eager(msrep, options, tol):
    x = _x()
    ref = open_backend(msrep, "torch", threads=2).run(x)
    with open_backend(msrep, "torch", threads=2, **options) as b:
        out = b.run(x)
        assert b.describe()["dtype"] == options.get("dtype", "fp32")
    assert out.dtype == np.float32 and out.shape == ref.shape == (1, 3, 74, 106)
    assert np.abs(out - ref).max() < tol


@pytest.mark.slow
def test_torch_compile_agrees_with_eager(msrep):
    x = _x()
    ref = open_backend(msrep, "torch", threads=2).run(x)
    with open_backend(msrep, "torch", threads=2, compile=True) as b:
        assert np.abs(b.run(x) - ref).max() < 1e-4


def test_cuda_settings_are_refused_with_the_reason_on_a_cpu(msrep):
    with pytest.raises(ValueError, match="cuda_graphs needs device='cuda'"):
        open_backend(msrep, "torch", cuda_graphs=True)
    with pytest.raises(ValueError, match="dtype 'int8'"):
        open_backend(msrep, "torch", dtype="int8")
    if not torch.cuda.is_available():
        with pytest.raises(BackendUnavailable, match="sees no CUDA device"):
            open_backend(msrep, "torch", device="cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU")
def test_cuda_fp16_channels_last_and_graphs_agree_with_cpu(msrep):
    x = _x()
    ref = open_backend(msrep, "torch", threads=2).run(x)
    for options, tol in (({}, 1e-4), ({"dtype": "fp16", "channels_last": True}, 1e-2),
                         ({"dtype": "fp16", "cuda_graphs": True}, 1e-2)):
        with open_backend(msrep, "torch", device="cuda", **options) as b:
            assert np.abs(b.run(x) - ref).max() < tol
            assert np.abs(b.run(x) - ref).max() < tol  # a graph replay gives the same


def test_one_head_of_a_multi_scale_model_runs_alone():
    """``select_scale`` on a multi-scale model: the x2 head's output, bit for bit, without running the layers
    only the x4 head uses (its extra block and tail); the x4 head likewise returns what the whole model does."""
    x = _x()
    with open_backend("msrep-s-x24", "torch", threads=1) as whole:
        full = whole._eager
        with torch.inference_mode():
            ref2, ref4 = (t.numpy() for t in full(torch.from_numpy(x)))
    for scale, ref in ((2, ref2), (4, ref4)):
        with open_backend("msrep-s-x24", "torch", threads=1, scale=scale) as b:
            calls = []
            hooks = [m.register_forward_hook(lambda m, i, o: calls.append(m))
                     for m in b._eager.modules() if isinstance(m, torch.nn.Conv2d)]
            out = b.run(x)
            for h in hooks:
                h.remove()
            assert np.array_equal(out, ref) and out.shape[-1] == x.shape[-1] * scale
            n_convs = sum(isinstance(m, torch.nn.Conv2d) for m in full.modules())
            assert len(calls) == {2: 5, 4: 6}[scale] < n_convs == 7  # head + 3 (+1) blocks + that tail
