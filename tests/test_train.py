"""The fit loop: it learns, and a resumed run reproduces the uninterrupted one."""

import pytest
import torch

from edgesr.data.patches import PatchSampler
from edgesr.metrics import evaluate_pairs
from edgesr.models import build_model
from edgesr.train.loop import fit, validate

SPEC = {"type": "abpn", "scale": 2, "channels": 8, "n_body": 1}


def _fit(model, sampler, pairs, ckpt, **kw):
    return fit(model, sampler, steps=8, lr=1e-3, loss_fn=lambda sr, lr, hr: (sr - hr).abs().mean(),
               val_pairs=pairs, scale=2, val_every=4, checkpoint_dir=ckpt, checkpoint_every=2,
               fingerprint="f", **kw)


def test_resume_reproduces_uninterrupted_run(builtin_train, tmp_path):
    pairs = builtin_train[:1]
    sampler = PatchSampler(builtin_train, 2, 16, 4, seed=1)
    torch.manual_seed(0)
    straight = _fit(build_model(SPEC), sampler, pairs, tmp_path / "a")
    torch.manual_seed(0)
    interrupted = build_model(SPEC)
    first = _fit(interrupted, sampler, pairs, tmp_path / "b", stop_after=3)
    assert first.steps == 3
    torch.manual_seed(123)                       # a fresh process would start from other random weights
    resumed = _fit(build_model(SPEC), sampler, pairs, tmp_path / "b")
    assert resumed.steps == 8
    for k, v in straight.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k
    assert straight.history == resumed.history


def test_resume_refuses_a_checkpoint_of_another_configuration(builtin_train, tmp_path):
    sampler = PatchSampler(builtin_train, 2, 16, 4)
    _fit(build_model(SPEC), sampler, builtin_train[:1], tmp_path, stop_after=2)
    with pytest.raises(RuntimeError, match="different configuration.*Delete it"):
        fit(build_model(SPEC), sampler, steps=8, lr=1e-3, loss_fn=lambda sr, lr, hr: (sr - hr).abs().mean(),
            val_pairs=builtin_train[:1], scale=2, checkpoint_dir=tmp_path, fingerprint="other")


def test_training_beats_its_nearest_anchor_on_held_out_images(builtin_train, builtin_valid):
    pairs = [(p.name, p.lr, p.hr) for p in builtin_valid]
    nearest = evaluate_pairs(lambda lr: lr.repeat(2, 0).repeat(2, 1), pairs, 2, with_ssim=False).psnr
    torch.manual_seed(0)
    model = build_model({"type": "abpn", "scale": 2, "channels": 8, "n_body": 2})
    res = fit(model, PatchSampler(builtin_train, 2, 24, 16, min_std=0.04), steps=300, lr=1e-3,
              loss_fn=lambda sr, lr, hr: (sr - hr).abs().mean(), val_pairs=builtin_valid, scale=2, val_every=150)
    # It starts as nearest upsampling plus noise and learns a residual that beats it clearly and steadily.
    assert res.best_psnr > nearest + 0.5, (nearest, res.history)
    assert res.history[-1]["val_psnr"] > res.history[0]["val_psnr"]
