"""Named degradations (edgesr.data.degradations) and `edgesr eval --degradation`: the OpenCV resizes equal
OpenCV's output on vectors made once with OpenCV (4.14 and 5.1 agree), every degradation is reproducible, and
the evaluation puts each model beside bicubic upscaling of the same LR."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from edgesr.data.degradations import EVAL_DEGRADATIONS, DegradationError, degrade, opencv_resize
from edgesr.imaging import modcrop

from conftest import REPO, SHARED

VECTORS = REPO / "tests" / "data" / "opencv_resize" / "vectors.npz"


def _images() -> dict[str, np.ndarray]:
    return {"butterfly": np.asarray(Image.open(SHARED / "benchmark/Set5/HR/butterfly.png").convert("RGB")),
            "baboon_crop": np.asarray(Image.open(SHARED / "benchmark/Set14/HR/baboon.png").convert("RGB"))[37:138, 51:184]}


@pytest.mark.parametrize("kernel", ["cubic", "linear"])
def test_opencv_resizes_equal_opencvs_output(kernel):
    """INTER_CUBIC and INTER_LINEAR downscales x2/x3/x4 of a whole image and an odd-sized crop: every value
    equal to OpenCV's (the issue asks for 1 grey level; the fixed-point arithmetic makes it exact)."""
    vectors = np.load(VECTORS)
    for name, hr in _images().items():
        for s in (2, 3, 4):
            m = np.ascontiguousarray(modcrop(hr, s))
            want = vectors[f"{name}_x{s}_{kernel}"]
            got = opencv_resize(m, want.shape[:2], kernel)
            assert got.shape == want.shape and np.array_equal(got, want), (name, s, np.count_nonzero(got != want))
            if kernel == "cubic":  # and it is a different LR from the protocol's: what the issue is about
                assert np.count_nonzero(degrade(hr, s, "bicubic") != got) > 0.3 * got.size


def test_every_degradation_is_reproducible_and_named():
    hr = _images()["baboon_crop"]
    for d in EVAL_DEGRADATIONS:
        a, b = degrade(hr, 3, d, name="baboon"), degrade(hr, 3, d, name="baboon")
        assert a.dtype == np.uint8 and a.shape == (33, 44, 3) and np.array_equal(a, b), d
    assert not np.array_equal(degrade(hr, 2, "noise", name="a"), degrade(hr, 2, "noise", name="b"))
    clean = degrade(hr, 2, "bicubic")
    for d in ("blur", "noise", "jpeg"):
        diff = np.abs(degrade(hr, 2, d, name="a").astype(int) - clean)
        assert 0.5 < diff.mean() < 20, d  # each changes the protocol's LR, and not into something else
    with pytest.raises(DegradationError, match="use one of bicubic, cubic-aliased"):
        degrade(hr, 2, "gaussian")
    with pytest.raises(DegradationError, match="8-bit"):
        degrade(hr.astype(np.uint16), 2, "noise")


def test_eval_puts_each_degradation_beside_bicubic_of_the_same_lr(tiny_student, capsys):
    from edgesr.cli import main

    assert main(["eval", str(tiny_student.path), "--set", "builtin", "--degradation", "bicubic",
                 "--degradation", "cubic-aliased", "--degradation", "jpeg", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    lines = [ln for ln in out.splitlines() if ln.startswith("builtin ")]
    assert [ln.split()[1].rstrip(":") for ln in lines] == ["bicubic", "cubic-aliased", "jpeg"]
    for ln in lines:
        assert "bicubic of the same LR" in ln and " gain " in ln
    # an untrained network is worse than bicubic everywhere, and eval says so
    assert "worse than bicubic on bicubic, cubic-aliased, jpeg" in out
    with pytest.raises(SystemExit):
        main(["eval", str(tiny_student.path), "--set", "builtin", "--degradation", "gaussian"])


def test_training_patches_degraded_per_seed_and_step_beside_the_clean_ones(builtin_train):
    """The general mix in the patch sampler: the same batch for the same (seed, step), other LR for other steps,
    the same patches (positions, flips, HR targets) as the protocol's LR, which ``clean=True`` returns."""
    from edgesr.data.patches import PatchSampler

    mixed = PatchSampler(builtin_train, 2, 16, 8, seed=3, min_std=0.04, degradation="general")
    plain = PatchSampler(builtin_train, 2, 16, 8, seed=3, min_std=0.04)
    lr_a, hr_a = mixed.batch(5)
    lr_b, hr_b = mixed.batch(5)
    assert torch_equal(lr_a, lr_b) and torch_equal(hr_a, hr_b)
    lr_c, hr_c = plain.batch(5)
    assert torch_equal(hr_a, hr_c) and torch_equal(mixed.batch(5, clean=True)[0], lr_c)
    assert not torch_equal(lr_a, lr_c)
    assert (lr_a - lr_c).abs().mean() > 0.005  # degraded, not re-rounded
    assert not torch_equal(mixed.batch(6)[0], lr_a)
    with pytest.raises(ValueError, match="degradation 'real': use one of bicubic, general"):
        PatchSampler(builtin_train, 2, 16, 8, degradation="real")


def test_a_model_trained_on_the_mix_records_it_and_recipes_name_it(builtin_train, builtin_valid, tmp_path):
    from edgesr.config import RecipeError, TrainConfig, parse_recipe
    from edgesr.train.train import train_stage

    from conftest import call_stage

    art = call_stage(train_stage, TrainConfig(model={"type": "abpn", "channels": 4, "n_body": 1}, steps=2,
                                              batch_size=2, val_every=2), name="g", out=tmp_path / "g",
                     train_pairs=builtin_train, val_pairs=builtin_valid[:1], scale=2, patch_size=12,
                     min_patch_std=0.0, degradation="general")
    rec = art.manifest["training"]["degradation"]
    assert rec["name"] == "general" and rec["mix"]["resize"]["cubic-aliased"] > 0 and rec["mix"]["jpeg"] > 0
    with pytest.raises(RecipeError, match=r"data.degradation: 'genral' is not one; use one of bicubic, general"):
        parse_recipe({"name": "r", "scale": 2, "data": {"degradation": "genral"},
                          "stages": [{"name": "t", "stage": "train", "model": {"type": "abpn"}}]})


def torch_equal(a, b) -> bool:
    import torch

    return bool(torch.equal(a, b))


def test_a_recipe_evaluates_every_set_under_each_named_degradation():
    """``data.eval_degradations``: each set again per degradation, named "<set> <degradation>", same HR, LR made
    that way; unknown names refused at load; evaluation-only (stage fingerprints unchanged)."""
    from edgesr.config import RecipeError, parse_recipe
    from edgesr.pipeline import _data_identity, load_data

    base = {"name": "r", "scale": 2, "stages": [{"name": "t", "stage": "train", "model": {"type": "abpn"}}],
            "data": {"train": "builtin", "patch_size": 16}}
    plain = parse_recipe(base)
    recipe = parse_recipe({**base, "data": {**base["data"], "eval_degradations": ["bicubic", "cubic-aliased", "noise"]}})
    _, _, evals = load_data(recipe)
    assert list(evals) == ["builtin", "builtin cubic-aliased", "builtin noise"]
    for a, b in zip(evals["builtin"], evals["builtin cubic-aliased"]):
        assert a.name == b.name and np.array_equal(a.hr, b.hr) and a.lr.shape == b.lr.shape
        assert not np.array_equal(a.lr, b.lr)
    assert _data_identity(recipe.data) == _data_identity(plain.data)
    with pytest.raises(RecipeError, match="eval_degradations: 'cubic' is not one"):
        parse_recipe({**base, "data": {**base["data"], "eval_degradations": ["cubic"]}})


def test_int8_of_a_general_model_calibrates_on_the_mix(builtin_train, builtin_valid, tmp_path):
    """A model trained on degraded LR is calibrated on degraded LR too (the activation ranges of the frames it
    is for: noise and JPEG widen them), seeded; the protocol's calibration is unchanged; the manifest says so."""
    from conftest import call_stage
    from edgesr.compress.common import calibration_batches
    from edgesr.compress.ptq import QuantizeConfig, quantize_stage

    clean = calibration_batches(builtin_train, 4, 24, 0)
    mixed = calibration_batches(builtin_train, 4, 24, 0, degradation="general", scale=2)
    again = calibration_batches(builtin_train, 4, 24, 0, degradation="general", scale=2)
    assert all(a.shape == b.shape == (1, 3, 24, 24) for a, b in zip(clean, mixed))
    assert all(np.array_equal(a, b) for a, b in zip(mixed, again))
    assert not any(np.array_equal(a, b) for a, b in zip(clean, mixed))
    assert all(np.array_equal(a, b) for a, b in zip(clean, calibration_batches(builtin_train, 4, 24, 0)))
    from edgesr.artifacts import read_artifact

    src = read_artifact("msrep-s-x2-fp32")
    q = call_stage(quantize_stage, QuantizeConfig(input="f", calibration_images=4, calibration_patch=32),
                   name="q", out=tmp_path / "q", source=src, calib_pairs=builtin_train, val_pairs=builtin_valid[:1],
                   scale=2, degradation="general")
    assert q.manifest.last_quantization()["calibration_lr"] == "general"


def test_a_recipe_sets_the_mix_the_sampler_draws_and_the_manifest_records(builtin_train, builtin_valid, tmp_path):
    """``data.degradation_mix``: the sampler draws from the recipe's mix, not the default (here nearest
    downscaling alone, so every LR pixel is the HR pixel at (2i, 2j)); the manifest records that mix; a bad mix
    is refused at load naming the key; the default keeps earlier fingerprints."""
    from edgesr.config import RecipeError, TrainConfig, parse_recipe
    from edgesr.data.degradations import GENERAL_MIX, DegradationSpec
    from edgesr.data.patches import PatchSampler
    from edgesr.pipeline import _data_identity
    from edgesr.train.train import train_stage

    from conftest import call_stage

    nearest = {"blur": 0, "noise": 0, "jpeg": 0, "resize": {"nearest": 1}}
    spec = DegradationSpec("general", nearest)
    assert spec == "general" and spec.mix["resize"] == {"nearest": 1.0} and spec.mix["jpeg_quality"] == (40, 95)
    sampler = PatchSampler(builtin_train, 2, 16, 4, seed=1, augment=False, degradation=spec)
    lr, hr = sampler.batch(3)
    assert torch_equal(lr, hr[:, :, ::2, ::2])
    default_lr = PatchSampler(builtin_train, 2, 16, 4, seed=1, augment=False, degradation="general").batch(3)[0]
    assert not torch_equal(default_lr, lr)

    art = call_stage(train_stage, TrainConfig(model={"type": "abpn", "channels": 4, "n_body": 1}, steps=2,
                                              batch_size=2, val_every=2), name="g", out=tmp_path / "g",
                     train_pairs=builtin_train, val_pairs=builtin_valid[:1], scale=2, patch_size=12,
                     min_patch_std=0.0, degradation=spec)
    rec = art.manifest["training"]["degradation"]["mix"]
    assert rec["resize"] == {"nearest": 1.0} and rec["blur"] == 0.0 and rec["poisson"] == GENERAL_MIX["poisson"]

    base = {"name": "r", "scale": 2, "stages": [{"name": "t", "stage": "train", "model": {"type": "abpn"}}],
            "data": {"degradation": "general"}}
    with_mix = parse_recipe({**base, "data": {**base["data"], "degradation_mix": nearest}})
    assert _data_identity(with_mix.data) != _data_identity(parse_recipe(base).data)
    assert "degradation_mix" not in _data_identity(parse_recipe(base).data)
    bad = [({"blurr": 0.1}, r"unknown key 'blurr'; the mix has blur, "),
           ({"noise": 1.5}, r"degradation_mix.noise: 1.5 is a probability; give a number in \[0, 1\]"),
           ({"resize": {"lanczos": 1}}, r"unknown downscale 'lanczos'; use any of bicubic, cubic-aliased"),
           ({"resize": {"bicubic": 0}}, r"every weight is 0"),
           ({"jpeg_quality": [90, 40]}, r"jpeg_quality: \[90, 40\]; give \[low, high\]")]
    for mix, message in bad:
        with pytest.raises(RecipeError, match=message):
            parse_recipe({**base, "data": {**base["data"], "degradation_mix": mix}})
    with pytest.raises(RecipeError, match="data.degradation is bicubic"):
        parse_recipe({**base, "data": {"degradation_mix": {"blur": 0.1}}})


def test_validation_on_several_degradations_keeps_the_best_mean(builtin_train, builtin_valid, tmp_path, monkeypatch):
    """``data.valid_degradations``: the validation images again with LR made each way (same HR); every
    validation records each and their mean; the weights kept are those of the best mean, the protocol's PSNR is
    still the one reported; the manifest and the stage fingerprint say which LR chose them."""
    from edgesr.config import RecipeError, TrainConfig, parse_recipe
    from edgesr.fitting import validate
    from edgesr.pipeline import _data_identity, validation_sets
    from edgesr.train.train import train_stage

    from conftest import call_stage

    base = {"name": "r", "scale": 2, "stages": [{"name": "t", "stage": "train", "model": {"type": "abpn"}}],
            "data": {"train": "builtin", "patch_size": 16}}
    recipe = parse_recipe({**base, "data": {**base["data"], "valid_degradations": ["bicubic", "cubic-aliased"]}})
    valid = builtin_valid[:2]
    sets = validation_sets(recipe, valid)
    assert list(sets) == ["bicubic", "cubic-aliased"] and sets["bicubic"] is valid
    for a, b in zip(sets["bicubic"], sets["cubic-aliased"]):
        assert np.array_equal(a.hr, b.hr) and not np.array_equal(a.lr, b.lr)
    assert validation_sets(parse_recipe(base), valid) is None
    assert _data_identity(recipe.data) != _data_identity(parse_recipe(base).data)
    assert "valid_degradations" not in _data_identity(parse_recipe(base).data)
    with pytest.raises(RecipeError, match="valid_degradations: 'aliased' is not one"):
        parse_recipe({**base, "data": {**base["data"], "valid_degradations": ["aliased"]}})

    art = call_stage(train_stage, TrainConfig(model={"type": "abpn", "channels": 4, "n_body": 1}, steps=6,
                                              batch_size=4, lr=3e-3, val_every=1), name="v", out=tmp_path / "v",
                     train_pairs=builtin_train, val_pairs=valid, val_degraded=sets, scale=2, patch_size=12,
                     min_patch_std=0.0)
    history = art.manifest["metrics"]["history"]
    assert len(history) == 6
    for entry in history:
        by = entry["val_psnr_by_degradation"]
        assert list(by) == ["bicubic", "cubic-aliased"] and by["bicubic"] == entry["val_psnr"]
        assert entry["val_score"] == pytest.approx((by["bicubic"] + by["cubic-aliased"]) / 2, abs=2e-4)
    best = max(history, key=lambda e: e["val_score"])
    assert art.manifest["metrics"]["best_step"] == best["step"]
    assert art.manifest["metrics"]["val_psnr"] == best["val_psnr"]
    from edgesr.modelio import load_model

    model = load_model(art)
    assert validate(model, sets["cubic-aliased"], 2) == pytest.approx(best["val_psnr_by_degradation"]["cubic-aliased"],
                                                                      abs=1e-3)
    assert art.manifest["training"]["valid_degradations"] == ["bicubic", "cubic-aliased"]

    # The mean chooses, not the protocol: validation PSNRs scripted so that the protocol's LR peaks last
    # (step 6) and the mean at step 2.
    import edgesr.fitting as fitting
    from edgesr.data.patches import PatchSampler

    calls = []

    def scripted(model, pairs, scale, with_ssim=False):
        calls.append(pairs)
        k = (len(calls) - 1) // 2 + 1  # the validation's step: two sets per validation
        return 20.0 + k if pairs is valid else 30.0 - 3.0 * (k - 2) ** 2

    monkeypatch.setattr(fitting, "validate", scripted)
    model = load_model(art).train()
    result = fitting.fit(model, PatchSampler(builtin_train, 2, 12, 2, seed=0), steps=6, lr=1e-3,
                         loss_fn=lambda sr, lr, hr: (sr - hr).abs().mean(), val_pairs=valid, val_degraded=sets,
                         scale=2, val_every=1)
    assert [e["val_psnr"] for e in result.history] == [21.0, 22.0, 23.0, 24.0, 25.0, 26.0]
    assert result.best_step == 2 and result.best_psnr == 22.0
