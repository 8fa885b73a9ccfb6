"""The evaluation protocol against MATLAB-made test vectors (../shared/data/benchmark)."""

import numpy as np
import pytest
from PIL import Image

from edgesr.data.bicubic import imresize
from edgesr.data.datasets import load_pairs
from edgesr.imaging import modcrop, read_image
from edgesr.metrics import evaluate_pairs, psnr_y, rgb_to_y, ssim_y

# ../shared/data/README.md: MATLAB-style bicubic up of the shared LR files, PSNR-Y, border = scale.
PUBLISHED = {("Set5", 2): 33.68, ("Set5", 3): 30.41, ("Set5", 4): 28.43,
             ("Set14", 2): 30.33, ("Set14", 3): 27.63, ("Set14", 4): 26.09}


# Our imresize against the MATLAB files gives mean |diff| 0.12-0.15 and 85-89% identical pixels over both
# sets; PIL's antialiased bicubic, the closest non-MATLAB resize, gives 0.18-0.20 and 80-84%.
MEAN_ABS_MAX, EXACT_MIN = 0.16, 0.85


@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("set_name", ["Set5", "Set14"])
def test_downscale_reproduces_matlab_lr_files(benchmark_root, set_name, scale):
    diffs = []
    for hr_path in sorted((benchmark_root / set_name / "HR").glob("*.png")):
        hr = modcrop(read_image(hr_path), scale)
        lr_file = read_image(benchmark_root / set_name / "LR_bicubic" / f"X{scale}" / f"{hr_path.stem}x{scale}.png")
        ours = imresize(hr, 1 / scale)
        assert ours.shape == lr_file.shape, hr_path.name
        d = np.abs(ours.astype(int) - lr_file.astype(int))
        assert d.mean() < 0.25, (hr_path.name, d.mean())
        assert (d > 1).mean() < 0.03, hr_path.name
        diffs.append(d)
    all_d = np.concatenate([d.ravel() for d in diffs])
    assert all_d.mean() < MEAN_ABS_MAX         # "within rounding": about 0.1-0.2 grey levels
    assert (all_d == 0).mean() > EXACT_MIN     # most pixels identical
    assert (all_d > 1).mean() < 0.02           # under 2% of pixels off by more than one level


def test_pil_bicubic_is_not_the_protocol(benchmark_root):
    """The LR check above is discriminating: PIL's antialiased bicubic, close as it is, fails it."""
    diffs = []
    for hr_path in sorted((benchmark_root / "Set14" / "HR").glob("*.png")):
        hr = modcrop(read_image(hr_path), 4)
        lr_file = read_image(benchmark_root / "Set14" / "LR_bicubic" / "X4" / f"{hr_path.stem}x4.png")
        pil = np.asarray(Image.fromarray(hr).resize((hr.shape[1] // 4, hr.shape[0] // 4), Image.BICUBIC))
        diffs.append(np.abs(pil.astype(int) - lr_file.astype(int)).ravel())
    d = np.concatenate(diffs)
    assert d.mean() >= MEAN_ABS_MAX and (d == 0).mean() <= EXACT_MIN


@pytest.mark.parametrize("set_name,scale", sorted(PUBLISHED))
def test_bicubic_psnr_matches_published_table(benchmark_root, set_name, scale):
    pairs = load_pairs(benchmark_root / set_name, scale, "eval")
    assert len(pairs) == {"Set5": 5, "Set14": 14}[set_name]
    res = evaluate_pairs(lambda lr: imresize(lr, scale), ((p.name, p.lr, p.hr) for p in pairs), scale,
                         with_ssim=False)
    assert abs(res.psnr - PUBLISHED[(set_name, scale)]) <= 0.01, res.psnr


def test_bicubic_ssim_set5_x2(benchmark_root):
    """Published bicubic SSIM for Set5 x2 (e.g. the EDSR/RCAN tables) is 0.9299."""
    pairs = load_pairs(benchmark_root / "Set5", 2, "eval")
    res = evaluate_pairs(lambda lr: imresize(lr, 2), ((p.name, p.lr, p.hr) for p in pairs), 2)
    assert abs(res.ssim - 0.9299) < 0.002, res.ssim


def test_upscale_shape_and_constant_image():
    img = np.full((7, 9, 3), 77, np.uint8)
    for s in (2, 3, 4):
        out = imresize(img, s)
        assert out.shape == (7 * s, 9 * s, 3)
        assert (out == 77).all()                  # weights sum to one; mirror boundary keeps constants
    assert imresize(img.astype(np.float64) / 255, output_shape=(3, 4)).shape == (3, 4, 3)


def test_y_channel_psnr_and_border():
    a = np.zeros((20, 20, 3), np.uint8)
    b = a.copy()
    assert rgb_to_y(a)[0, 0] == pytest.approx(16.0)
    assert rgb_to_y(np.full((1, 1, 3), 255, np.uint8))[0, 0] == pytest.approx(235.0)
    b[0, :, :] = 255                               # damage only the top row
    assert psnr_y(b, a, border=1) == float("inf")  # ... which the border crop removes
    assert psnr_y(b, a, border=0) < 30
    assert ssim_y(a, a, 1) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="mod-cropped"):
        psnr_y(a[:8], a, 2)
    with pytest.raises(TypeError, match="uint8"):
        rgb_to_y(a.astype(np.float32))
