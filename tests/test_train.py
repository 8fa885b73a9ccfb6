"""The fit loop: it learns, and a resumed run reproduces the uninterrupted one."""

import pytest
import torch
import torch.nn.functional as F

from conftest import call_stage
from edgesr.modelio import load_model
from edgesr.data.patches import PatchSampler
from edgesr.metrics import evaluate_pairs
from edgesr.models import build_model
from edgesr.fitting import Schedule, fit, init_weights, pairs_at_scale, resolve_device, scale_loss

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
    from edgesr.errors import EdgesrError

    with pytest.raises(EdgesrError, match=f"different configuration.*Delete it to start over \\(rm -r {tmp_path}\\)"):
        fit(build_model(SPEC), sampler, steps=8, lr=1e-3, loss_fn=lambda sr, lr, hr: (sr - hr).abs().mean(),
            val_pairs=builtin_train[:1], scale=2, checkpoint_dir=tmp_path, fingerprint="other")


def test_sampler_workers_train_the_same_weights_and_resume_across_a_change(builtin_train, tmp_path):
    """Batches cut ahead by worker processes are the batches of the training process, in the same order: the same
    weights to the bit; a run begun with 2 workers resumes with none (workers stay out of the fingerprint)."""
    from edgesr.config import TrainConfig
    from edgesr.errors import UsageError
    from edgesr.fitting import config_fingerprint, step_batches

    import signal

    sampler = PatchSampler(builtin_train, 2, 16, 4, seed=3)
    sigchld = signal.getsignal(signal.SIGCHLD)
    ahead = list(step_batches(sampler, 5, 9, (0, 1), workers=2))
    # no process-wide SIGCHLD handler left behind (PyTorch's DataLoader installs one; the suite segfaulted)
    assert signal.getsignal(signal.SIGCHLD) is sigchld
    assert len(ahead) == 4
    for step, (lr, hr) in zip(range(5, 9), ahead):
        lr0, hr0 = sampler.batch(step)
        assert torch.equal(lr, lr0) and torch.equal(hr, hr0)
    assert not torch.equal(ahead[0][0], ahead[1][0])
    torch.manual_seed(0)
    straight = _fit(build_model(SPEC), sampler, builtin_train[:1], tmp_path / "a")
    torch.manual_seed(0)
    first = _fit(build_model(SPEC), sampler, builtin_train[:1], tmp_path / "b", stop_after=3, workers=2)
    assert first.steps == 3 and signal.getsignal(signal.SIGCHLD) is sigchld
    resumed = _fit(build_model(SPEC), sampler, builtin_train[:1], tmp_path / "b", workers=0)
    for k, v in straight.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k
    cfg = TrainConfig(model=SPEC)
    assert config_fingerprint(cfg) == config_fingerprint(TrainConfig(model=SPEC, workers=8))
    assert config_fingerprint(cfg) != config_fingerprint(TrainConfig(model=SPEC, batch_size=8))
    from edgesr.pipeline import _config_identity  # the recipe runner's reuse key: artifacts stay reused too
    assert _config_identity(TrainConfig(model=SPEC, workers=8)) == _config_identity(cfg)

    from edgesr.compress.distill import CachedTeacherSampler  # fills the teacher cache in the training process

    with pytest.raises(UsageError, match="workers: 2 cannot.*CachedTeacherSampler.*cache_teacher: false"):
        step_batches(CachedTeacherSampler(sampler, cache=None), 0, 4, (0, 1), workers=2)
    with pytest.raises(UsageError, match="workers must be 0"):
        step_batches(sampler, 0, 4, (0, 1), workers=-1)


def test_a_checkpoint_fingerprint_ignores_what_is_done_with_the_result():
    """A budget tightened after a long training resumes its checkpoint; anything that changes the training does not."""
    from edgesr.compress.qat import QatOnnxConfig
    from edgesr.fitting import config_fingerprint

    base = QatOnnxConfig(input="q", steps=100, max_psnr_drop_db=0.2, on_budget_exceeded="warn")
    same = QatOnnxConfig(input="q", steps=100, max_psnr_drop_db=0.1, on_budget_exceeded="fallback", min_parity_db=40.0)
    assert config_fingerprint("h", base, 0) == config_fingerprint("h", same, 0)
    for other in (QatOnnxConfig(input="q", steps=101, max_psnr_drop_db=0.2, on_budget_exceeded="warn"),
                  QatOnnxConfig(input="q", steps=100, lr=1e-4, max_psnr_drop_db=0.2, on_budget_exceeded="warn")):
        assert config_fingerprint("h", other, 0) != config_fingerprint("h", base, 0)
    assert config_fingerprint("h", base, 1) != config_fingerprint("h", base, 0)


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


def test_resume_with_ema_and_step_schedule_reproduces_uninterrupted_run(builtin_train, tmp_path):
    sampler = PatchSampler(builtin_train, 2, 16, 4, seed=2)
    kw = {"ema_decay": 0.9, "schedule": Schedule("step", milestones=(0.5,), gamma=0.1, warmup_steps=2)}
    torch.manual_seed(0)
    straight = _fit(build_model(SPEC), sampler, builtin_train[:1], tmp_path / "a", **kw)
    torch.manual_seed(0)
    _fit(build_model(SPEC), sampler, builtin_train[:1], tmp_path / "b", stop_after=5, **kw)
    resumed = _fit(build_model(SPEC), sampler, builtin_train[:1], tmp_path / "b", **kw)
    for k, v in straight.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k
    assert (tmp_path / "b" / "best.safetensors").is_file() and (tmp_path / "b" / "last.pt").is_file()


def test_ema_averages_float_tensors_and_copies_integer_buffers(builtin_train):
    """A model with an integer buffer (BatchNorm's step count) trains with EMA (torch's lerp has no integer
    kernel: it raised before); the averaged model handed back keeps the live counter, an integer."""
    class WithBatchNorm(torch.nn.Sequential):
        scale = 2

    torch.manual_seed(0)
    model = WithBatchNorm(torch.nn.Conv2d(3, 12, 3, padding=1), torch.nn.BatchNorm2d(12), torch.nn.PixelShuffle(2))
    res = fit(model, PatchSampler(builtin_train, 2, 16, 4), steps=6, lr=1e-3, ema_decay=0.9,
              loss_fn=lambda sr, lr, hr: (sr - hr).abs().mean(), val_pairs=builtin_train[:1], scale=2, val_every=6)
    bn = res.model[1]
    assert int(bn.num_batches_tracked) == 6 and bn.num_batches_tracked.dtype == torch.long
    assert res.steps == 6 and torch.isfinite(bn.running_mean).all()


def test_schedules_warm_up_decay_and_step():
    cos = Schedule("cosine", min_ratio=0.1, warmup_steps=4)
    assert cos.factor(0.0, 0) == pytest.approx(0.25) and cos.factor(0.0, 10) == pytest.approx(1.0)
    assert cos.factor(1.0, 99) == pytest.approx(0.1) and cos.factor(0.5, 50) == pytest.approx(0.55)
    step = Schedule("step", milestones=(0.5, 0.75), gamma=0.5)
    assert [step.factor(p, 99) for p in (0.1, 0.5, 0.8)] == [1.0, 0.5, 0.25]


def test_time_budget_ends_the_run_and_its_schedule(builtin_train, tmp_path):
    """A clock that advances 0.1 s per reading makes the budget deterministic, whatever the machine's speed
    or load: the start reads 0.0, step k starts at 0.1 (k + 1) s, so step 9 (at 1.0 s) is not taken."""
    ticks = iter(range(1_000_000))
    torch.manual_seed(0)
    res = fit(build_model(SPEC), PatchSampler(builtin_train, 2, 16, 4), steps=10_000, lr=1e-3,
              loss_fn=lambda sr, lr, hr: (sr - hr).abs().mean(), val_pairs=builtin_train[:1], scale=2,
              val_every=10_000, max_seconds=1.0, clock=lambda: 0.1 * next(ticks))
    assert res.stopped_by_time and res.steps == 9
    assert res.history and res.history[-1]["step"] == res.steps  # the stopped run is still validated


def test_asking_for_cuda_without_a_gpu_says_so():
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    from edgesr.errors import UsageError

    with pytest.raises(UsageError, match="no CUDA GPU.*device: auto or cpu"):  # one line and exit 2, no traceback
        resolve_device("cuda")


def test_multi_scale_sampler_gives_a_target_per_output(builtin_train):
    pairs = pairs_at_scale(builtin_train[:2], 4)
    sampler = PatchSampler(pairs, 4, 12, 3, seed=0, targets=(2, 4))
    lr, hr = sampler.batch(0)
    assert lr.shape == (3, 3, 12, 12) and hr[2].shape == (3, 3, 24, 24) and hr[4].shape == (3, 3, 48, 48)
    # The x2 target is the x4 target reduced by 2 (bicubic, antialiased): close to its 2x2 average.
    assert (F.avg_pool2d(hr[4], 2) - hr[2]).abs().mean() < 0.03
    part0, part1 = sampler.batch(0, (0, 3)), sampler.batch(0, (2, 3))
    assert torch.equal(part0[0], lr[:1]) and torch.equal(part1[1][4], hr[4][2:])
    loss = scale_loss(torch.nn.L1Loss(), (2, 4), (1.0, 0.5))
    sr = (torch.zeros_like(hr[2]), torch.zeros_like(hr[4]))
    assert loss(sr, lr, hr) == pytest.approx(hr[2].mean().item() + 0.5 * hr[4].mean().item(), rel=1e-5)


def test_curriculum_x2_then_x4_reuses_the_trunk(builtin_train, builtin_valid, tmp_path):
    """Train x2, then a x2+x4 model starting from it: the x2 path is inherited whole, the x4 head is new,
    and both outputs are supervised."""
    from edgesr.config import TrainConfig
    from edgesr.train.train import train_stage

    common = dict(train_pairs=builtin_train, val_pairs=builtin_valid[:1], scale=2, patch_size=12,
                  min_patch_std=0.0, seed=0)
    small = {"type": "msrep", "channels": 8, "n_blocks": 2}
    x2 = call_stage(train_stage, TrainConfig(model=small, steps=20, batch_size=4, val_every=20), name="x2",
                     out=tmp_path / "x2", **common)
    both = call_stage(train_stage, TrainConfig(model={**small, "heads": [2, 4]}, steps=0, batch_size=4), name="x24",
                       out=tmp_path / "x24", init=x2, **common)
    record = both.manifest["transforms"][0]
    assert record["type"] == "init_from" and record["from"] == "x2"
    assert record["fresh"] and all(k.startswith(("tails.1", "blocks.2")) for k in record["fresh"])
    a, b = load_model(x2), load_model(both)
    x = torch.rand(1, 3, 11, 9)
    with torch.no_grad():
        assert torch.equal(a(x), b(x)[0])
        assert b(x)[1].shape == (1, 3, 44, 36)
    with pytest.raises(ValueError, match="shares no layer"):
        init_weights(build_model(SPEC), x2)


def test_a_multi_scale_model_keeps_the_weights_best_on_all_its_heads(builtin_train, builtin_valid, tmp_path):
    """Validation of an x2/x4 model scores each head on LR made at its scale; the weights kept are those of the
    best mean, not of the step where the recipe's scale (x2) alone peaked (a fresh x4 head would be left behind)."""
    from edgesr.config import TrainConfig
    from edgesr.train.train import train_stage

    small = {"type": "msrep", "channels": 8, "n_blocks": 2, "heads": [2, 4]}
    art = call_stage(train_stage, TrainConfig(model=small, steps=6, batch_size=4, val_every=1, lr=5e-3), name="x24",
                     out=tmp_path / "x24", train_pairs=builtin_train, val_pairs=builtin_valid[:1], scale=2,
                     patch_size=12, min_patch_std=0.0, seed=0)
    history = art.manifest["metrics"]["history"]
    assert [sorted(h["val_psnr_by_scale"]) for h in history] == [["2", "4"]] * 6
    assert all(h["val_psnr_by_scale"]["2"] == h["val_psnr"] for h in history)
    mean = [sum(h["val_psnr_by_scale"].values()) / 2 for h in history]
    best = art.manifest["metrics"]["best_step"]
    assert best == history[mean.index(max(mean))]["step"]
    assert art.manifest["metrics"]["val_psnr"] == history[best - 1]["val_psnr"]
    model = load_model(art)  # the kept weights are those of that step: their x4 head scores what was recorded
    pairs = pairs_at_scale(builtin_valid[:1], 4)
    from edgesr.fitting import validate

    assert validate(model, pairs, 4) == pytest.approx(history[best - 1]["val_psnr_by_scale"]["4"], abs=1e-3)


@pytest.mark.slow
def test_data_parallel_processes_stay_in_sync_and_match_one_process(builtin_train, tmp_path):
    """torchrun, 2 CPU processes (gloo): same weights on both ranks, equal to a single process trained on
    the same global batches."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    worker = Path(__file__).with_name("ddp_worker.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(worker), str(tmp_path)], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = (torch.load(tmp_path / f"rank{i}.pt", weights_only=True) for i in (0, 1))
    assert r0["world"] == r1["world"] == 2
    for k in r0["state"]:
        assert torch.equal(r0["state"][k], r1["state"][k]), k
    single = tmp_path / "single"
    single.mkdir()
    subprocess.run([sys.executable, str(worker), str(single)], check=True, env=env, timeout=300)
    one = torch.load(single / "rank0.pt", weights_only=True)
    assert one["world"] == 1
    for k in r0["state"]:
        assert torch.allclose(r0["state"][k], one["state"][k], atol=1e-5), k


def test_gan_fine_tune_needs_the_users_vgg_file_and_runs_with_it(builtin_train, builtin_valid, tmp_path):
    from edgesr.modelio import save_model
    from edgesr.train.gan import GanConfig, VGGFeatures, WeightsError, gan_stage

    spec = {"type": "srresnet", "scale": 2, "n_blocks": 1, "n_feats": 8}  # SRGAN = SRResNet + this stage
    src = save_model(tmp_path / "g", build_model(spec), name="g", arch=spec)
    common = dict(name="gan", out=tmp_path / "gan", source=src, train_pairs=builtin_train, val_pairs=builtin_valid[:1],
                  scale=2, patch_size=16, min_patch_std=0.0, seed=0)
    with pytest.raises(WeightsError, match="nothere.pth: VGG-19 weights not found.*vgg19-dcbb9e9d.pth"):
        call_stage(gan_stage, GanConfig(input="g", vgg_weights=str(tmp_path / "nothere.pth")), **common)
    (tmp_path / "bad.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="bad.pth: cannot read VGG-19 weights"):
        VGGFeatures(tmp_path / "bad.pth", "relu2_2")
    torch.save({"features.0.weight": torch.zeros(3, 3, 3, 3)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="not VGG-19 features weights"):
        VGGFeatures(tmp_path / "other.pth", "relu1_1")
    # A stand-in VGG file with the torchvision key layout (random weights: only the plumbing is under test).
    torch.manual_seed(0)
    import torch.nn as nn
    layers, cin = [], 3
    for v in [64, 64, "M", 128, 128]:
        layers += [nn.MaxPool2d(2)] if v == "M" else [nn.Conv2d(cin, v, 3, padding=1), nn.ReLU()]
        cin = v if v != "M" else cin
    torch.save({f"features.{k}": t for k, t in nn.Sequential(*layers).state_dict().items()}, tmp_path / "vgg.pth")
    art = call_stage(gan_stage, GanConfig(input="g", vgg_weights=str(tmp_path / "vgg.pth"), vgg_layer="relu2_2", steps=3,
                              batch_size=2, disc_feats=8, val_every=3), **common)
    assert art.manifest["transforms"][-1]["type"] == "gan"
    assert "val_psnr_before" in art.manifest["metrics"] and len(art.manifest["metrics"]["history"]) == 1
    before, after = load_model(src).state_dict(), load_model(art).state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_a_run_that_will_take_hours_says_so_once(monkeypatch, capsys):
    """A typo'd `steps: 10000000` is named after the first half minute with its ETA, once; short runs say
    nothing; log lines carry the ETA."""
    import types

    from edgesr import progress

    clock = {"t": 0.0}
    monkeypatch.setattr(progress, "time", types.SimpleNamespace(perf_counter=lambda: clock["t"]))
    assert not progress.console.is_terminal  # under pytest: the plain log lines
    with progress.progress_bar("train big", total=10_000_000) as bar:
        for step in range(1, 200):
            clock["t"] = step * 0.25  # 4 steps a second
            bar.update(step)
    with progress.progress_bar("train small", total=100) as bar:
        for step in range(1, 101):
            clock["t"] = 1000 + step * 0.5
            bar.update(step)
    err = capsys.readouterr().err
    assert err.count("at this rate the remaining") == 1 and "train big: at this rate" in err
    assert "about 694.4 h" in err and "lower steps, or set max_minutes" in err
    assert "train small: 10/100 (4 s, eta 45 s)" in err


def test_luma_loss_measures_what_psnr_y_measures(builtin_valid):
    """`l1_luma`'s first term is the mean |Y difference| of the protocol's rgb2ycbcr (on the 0-1 scale of Y's 219
    levels); a change that keeps every pixel's Y costs nothing under `l1_y` and something under `l1_luma`."""
    import numpy as np
    from edgesr.losses import LOSSES
    from edgesr.metrics import rgb_to_y
    hr = builtin_valid[0].hr
    lr_up = F.interpolate(torch.from_numpy(builtin_valid[0].lr.copy()).permute(2, 0, 1)[None].float() / 255, size=hr.shape[:2],
                          mode="bicubic", align_corners=False).clamp(0, 1)
    sr_u8 = (lr_up[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    sr, ref = (torch.from_numpy(a.copy()).permute(2, 0, 1)[None].double() / 255 for a in (sr_u8, hr))
    expected = np.abs(rgb_to_y(sr_u8) - rgb_to_y(hr)).mean() / 219
    assert LOSSES.build({"type": "l1_y"})(sr, ref).item() == pytest.approx(expected, rel=1e-9)
    luma = LOSSES.build({"type": "l1_luma"})(sr, ref).item()
    assert luma > expected                          # the chroma term adds
    keep_y = torch.tensor([128.553, -65.481, 0.0], dtype=torch.double).view(1, 3, 1, 1) / 2000
    assert LOSSES.build({"type": "l1_y"})(ref + keep_y, ref).item() < 1e-12
    assert LOSSES.build({"type": "l1_luma"})(ref + keep_y, ref).item() > 1e-3
    with pytest.raises(ValueError, match="chroma_weight"):
        LOSSES.build({"type": "l1_luma", "chroma_weight": -1})


def test_a_deeper_msrep_warm_started_from_a_shallower_one_computes_what_it_did(builtin_valid, tmp_path):
    """init_from a 3-block MSRep into a 4-block one: the new block starts as a near-identity (its branches scaled
    by 0.01), so the deeper model's first output is within a small margin of the shallower model's, where a
    default-initialised block would move it far; the loaded layers are exact copies."""
    from edgesr.modelio import save_model
    torch.manual_seed(0)
    small = build_model({"type": "msrep", "size": "s", "scale": 2})
    with torch.no_grad():  # a trained-looking tail: the anchor alone would hide the trunk
        for p in small.tails.parameters():
            p.mul_(10)
    art = save_model(tmp_path / "s3", small, name="s3", arch={"type": "msrep", "size": "s", "scale": 2})
    x = torch.from_numpy(builtin_valid[0].lr[:64, :64].copy()).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        ref = small(x)
        deeper = build_model({"type": "msrep", "size": "s", "scale": 2, "n_blocks": 4})
        cold = (deeper(x) - ref).abs().max().item()
        record = init_weights(deeper, art)
        warm = (deeper(x) - ref).abs().max().item()
    assert all(k.startswith("blocks.3.") for k in record["fresh"]) and record["fresh"]
    assert torch.equal(deeper.blocks[0].k3.weight, small.blocks[0].k3.weight)
    assert warm < 0.02 < cold, (warm, cold)
