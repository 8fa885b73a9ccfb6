"""Image I/O and datasets: real images from scikit-image, and every way a file can be wrong."""

import importlib.resources
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgesr.data.bicubic import imresize
from edgesr.data.datasets import load_pairs
from edgesr.data.patches import PatchSampler
from edgesr.imaging import ImageError, read_image, to_float, write_image

SKIMAGE = Path(str(importlib.resources.files("skimage.data")))


def test_reads_rgb_and_grey_photographs():
    rgb = read_image(SKIMAGE / "astronaut.png")
    assert rgb.shape == (512, 512, 3) and rgb.dtype == np.uint8
    grey = read_image(SKIMAGE / "camera.png")
    assert grey.shape == (512, 512, 3)
    assert (grey[..., 0] == grey[..., 1]).all() and (grey[..., 1] == grey[..., 2]).all()
    assert (grey[..., 0] == np.asarray(Image.open(SKIMAGE / "camera.png"))).all()  # lossless


def test_translucent_rgba_is_refused_with_the_fix():
    with pytest.raises(ImageError, match=r"horse\.png.*transparent.*[Ff]latten"):
        read_image(SKIMAGE / "horse.png")


def test_opaque_rgba_keeps_colour(tmp_path):
    rgb = read_image(SKIMAGE / "coffee.png")
    rgba = np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 255, np.uint8)], axis=2)
    Image.fromarray(rgba).save(tmp_path / "opaque.png")
    assert (read_image(tmp_path / "opaque.png") == rgb).all()


def test_truncated_and_corrupt_files_name_the_file(tmp_path):
    data = (SKIMAGE / "astronaut.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match=r"cut\.png.*truncated.*corrupt, truncated"):
        read_image(tmp_path / "cut.png")
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(ImageError, match=r"notes\.png"):
        read_image(tmp_path / "notes.png")
    with pytest.raises(ImageError, match="no such image"):
        read_image(tmp_path / "missing.png")


def test_16bit_grey_is_kept_at_16_bits(tmp_path):
    grey16 = (np.arange(40 * 30, dtype=np.uint32).reshape(30, 40) * 50).astype(np.uint16)
    Image.fromarray(grey16).save(tmp_path / "g16.png")
    img = read_image(tmp_path / "g16.png")
    assert img.dtype == np.uint16 and (img[..., 1] == grey16).all()
    assert to_float(img).max() == pytest.approx(grey16.max() / 65535)


def _png16_rgb(path: Path, arr: np.ndarray) -> None:
    """A minimal 48-bit RGB PNG (Pillow cannot write one)."""
    h, w, _ = arr.shape
    raw = b"".join(b"\x00" + arr[y].astype(">u2").tobytes() for y in range(h))
    def chunk(tag, payload):
        return struct.pack(">I", len(payload)) + tag + payload + struct.pack(">I", zlib.crc32(tag + payload))
    ihdr = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def test_16bit_colour_png_is_refused_rather_than_truncated(tmp_path):
    _png16_rgb(tmp_path / "rgb16.png", np.full((4, 5, 3), 40000, np.uint16))
    with pytest.raises(ImageError, match=r"rgb16\.png.*16-bit colour.*8-bit"):
        read_image(tmp_path / "rgb16.png")


def test_write_image_roundtrip_and_rejects_float(tmp_path):
    img = read_image(SKIMAGE / "chelsea.png")
    write_image(tmp_path / "out" / "c.png", img)
    assert (read_image(tmp_path / "out" / "c.png") == img).all()
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["c.png"]  # no temporary left behind
    with pytest.raises(ValueError):
        write_image(tmp_path / "bad.png", img.astype(np.float32))


def test_builtin_data_is_split_and_mod_cropped():
    for scale in (2, 3):
        train = load_pairs("builtin", scale, "train")
        valid = load_pairs("builtin", scale, "valid")
        assert len(train) >= 10 and len(valid) == 3
        assert not {p.name for p in train} & {p.name for p in valid}
        for p in train + valid:
            assert p.hr.shape[0] % scale == 0 and p.hr.shape[1] % scale == 0
            assert p.lr.shape[:2] == (p.hr.shape[0] // scale, p.hr.shape[1] // scale)
    chelsea = next(p for p in load_pairs("builtin", 3, "valid") if p.name == "chelsea")
    assert chelsea.hr.shape == (300, 450, 3)  # 300 x 451 mod-cropped to x3


def test_folder_layouts_and_lr_mismatch(tmp_path):
    hr_dir = tmp_path / "DIV2K_train_HR"
    hr_dir.mkdir()
    for name in ("astronaut.png", "coffee.png"):
        shutil.copy(SKIMAGE / name, hr_dir / name)
    pairs = load_pairs(tmp_path, 2, "train")
    assert [p.name for p in pairs] == ["astronaut", "coffee"]
    assert (pairs[0].lr == imresize(pairs[0].hr, 0.5)).all()   # synthesised with the protocol's bicubic
    lr_dir = tmp_path / "DIV2K_train_LR_bicubic" / "X2"
    lr_dir.mkdir(parents=True)
    write_image(lr_dir / "astronautx2.png", pairs[0].lr)
    write_image(lr_dir / "coffeex2.png", pairs[0].lr)            # wrong image: wrong size
    with pytest.raises(ImageError, match=r"coffeex2\.png.*needs 300x200"):
        load_pairs(tmp_path, 2, "train")
    with pytest.raises(FileNotFoundError, match="no such data folder"):
        load_pairs(tmp_path / "nope", 2)


def test_patches_are_aligned_deterministic_and_textured(builtin_train):
    s = PatchSampler(builtin_train, 2, 24, 8, seed=3, augment=False, min_std=0.04)
    lr, hr = s.batch(5)
    assert lr.shape == (8, 3, 24, 24) and hr.shape == (8, 3, 48, 48)
    lr2, hr2 = s.batch(5)
    assert (lr == lr2).all() and (hr == hr2).all()
    assert not (s.batch(6)[0] == lr).all()
    # Aligned: downscaling the HR patch gives the LR patch away from its borders.
    for i in range(8):
        down = imresize(hr[i].numpy().transpose(1, 2, 0).astype(np.float64), 0.5)
        assert np.abs(down - lr[i].numpy().transpose(1, 2, 0))[3:-3, 3:-3].mean() < 2 / 255
    assert (lr.flatten(1).std(dim=1) >= 0.04).float().mean() > 0.8
    with pytest.raises(ValueError, match=r"data.patch_size 4096 \(LR pixels\) is larger than 12 of the 12 training images"):
        PatchSampler(builtin_train, 2, 4096, 4)


def test_a_holdout_validates_on_whole_photographs_never_trained_on(tmp_path):
    """``data.valid: holdout``: crops of one photograph (``<photo>_<y>_<x>``, ``<photo>_s<NNN>``) leave training
    together, one crop of each validates; which photographs is fixed by their names, not the folder's order;
    too many asked, or the built-in set, is refused with the fix; recipes without it keep their fingerprints."""
    from conftest import SHARED
    from edgesr.config import RecipeError, parse_recipe
    from edgesr.data.datasets import DataError, holdout_split, source_photo
    from edgesr.pipeline import _data_identity, load_data

    assert [source_photo(n) for n in ("aloel_0_480", "0001_s012", "img_001", "baby", "a_1_2.png")] == \
        ["aloel", "0001", "img_001", "baby", "a"]
    photos = SHARED / "train" / "photos"
    if not photos.is_dir():
        pytest.skip(f"{photos} absent")
    folder = tmp_path / "crops"
    folder.mkdir()
    names = sorted(p.name for p in photos.iterdir() if p.name.startswith(("aloe", "analogpattern", "aitzgorri")))
    for name in names:
        shutil.copy(photos / name, folder / name)
    pairs = load_pairs(folder, 4, "train")
    groups = {source_photo(p.name) for p in pairs}
    assert len(groups) == 4 and len(pairs) == 16  # four crops of each photograph
    train, valid, held = holdout_split(pairs, 2, folder)
    assert len(held) == len(valid) == 2 and len(train) == 8
    assert {source_photo(p.name) for p in valid} == set(held)
    assert not {source_photo(p.name) for p in train} & set(held)
    assert {source_photo(p.name) for p in train} == groups - set(held)
    again = holdout_split(pairs[::-1], 2, folder)
    assert again[2] == held and [p.name for p in again[1]] == [p.name for p in valid]
    with pytest.raises(DataError, match=rf"{folder}: data.valid_holdout is {len(groups)}.*between 1 and"):
        holdout_split(pairs, len(groups), folder)

    base = {"name": "r", "scale": 4, "stages": [{"name": "t", "stage": "train", "model": {"type": "abpn"}}],
            "data": {"train": str(folder), "patch_size": 16}}
    recipe = parse_recipe({**base, "data": {**base["data"], "valid": "holdout", "valid_holdout": 2}})
    tr, va, _ = load_data(recipe)
    assert [p.name for p in va] == [p.name for p in valid] and [p.name for p in tr] == [p.name for p in train]
    plain = parse_recipe(base)
    assert "valid_holdout" not in _data_identity(plain.data)
    assert _data_identity(recipe.data)["valid_holdout"] == 2
    with pytest.raises(RecipeError, match="built-in training images have a held-out set"):
        parse_recipe({**base, "data": {"valid": "holdout"}})
    with pytest.raises(RecipeError, match="valid_holdout must be >= 1"):
        parse_recipe({**base, "data": {**base["data"], "valid": "holdout", "valid_holdout": 0}})


def test_train_rescale_adds_reduced_copies_made_by_the_protocol(tmp_path):
    """``data.train_rescale``: every training image again at each factor, its HR reduced by MATLAB bicubic and
    mod-cropped, its LR made from that HR by the protocol; copies too small for a patch are left out; validation
    untouched; recipes without it keep their fingerprints; factors outside (0, 1) are refused."""
    from edgesr.config import RecipeError, parse_recipe
    from edgesr.data.datasets import make_lr, rescaled_pairs
    from edgesr.pipeline import _data_identity, load_data

    folder = tmp_path / "photos"
    folder.mkdir()
    for name, size in (("astronaut.png", (300, 240)), ("coffee.png", (160, 160))):
        Image.open(SKIMAGE / name).convert("RGB").crop((0, 0, *size)).save(folder / f"{name[0]}.png")
    pairs = load_pairs(folder, 2, "train")
    more = rescaled_pairs(pairs, (0.75, 0.3), 2, min_lr=32)
    # c at 0.3: 48x48 HR, 24x24 LR, under the 32-px patch: left out
    assert [p.name for p in more] == ["a@0.75", "c@0.75", "a@0.3"]
    small = {p.name: p for p in more}
    hr = imresize(pairs[0].hr, 0.75)
    want = hr[: hr.shape[0] // 2 * 2, : hr.shape[1] // 2 * 2]
    assert np.array_equal(small["a@0.75"].hr, want) and np.array_equal(small["a@0.75"].lr, make_lr(want, 2))
    assert small["a@0.75"].lr.shape == (90, 112, 3) and small["a@0.75"].hr.dtype == np.uint8
    assert small["a@0.3"].lr.shape == (36, 45, 3)

    base = {"name": "r", "scale": 2, "stages": [{"name": "t", "stage": "train", "model": {"type": "abpn"}}],
            "data": {"train": str(folder), "patch_size": 32}}
    recipe = parse_recipe({**base, "data": {**base["data"], "train_rescale": [0.75, 0.3]}})
    train, valid, _ = load_data(recipe)
    plain_train, plain_valid, _ = load_data(parse_recipe(base))
    assert [p.name for p in train] == [p.name for p in plain_train] + [p.name for p in more]
    assert [p.name for p in valid] == [p.name for p in plain_valid]
    assert "train_rescale" not in _data_identity(parse_recipe(base).data)
    assert _data_identity(recipe.data)["train_rescale"] == (0.75, 0.3)
    for bad in ([1.0], [0.5, 0.5], [-0.2]):
        with pytest.raises(RecipeError, match="data.train_rescale.*between 0 and 1"):
            parse_recipe({**base, "data": {**base["data"], "train_rescale": bad}})
