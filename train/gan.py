"""Perceptual + adversarial fine-tuning (SRGAN, Ledig et al., CVPR 2017; weights as in ESRGAN, Wang et al.,
ECCVW 2018).

A trained generator (any model artifact) is fine-tuned with

    loss_G = pixel_weight * L1(sr, hr) + perceptual_weight * L1(VGG(sr), VGG(hr)) + adversarial_weight * BCE(D(sr), 1)

against an SRGAN-style discriminator trained with BCE on real HR and generated patches. The VGG-19
feature extractor (ReLU before pooling, e.g. ``relu5_4`` = SRGAN's VGG54) loads its weights from a file the
user supplies — nothing is downloaded at run time: torchvision's ``vgg19-dcbb9e9d.pth`` (ImageNet) or any
``.pth``/``.safetensors`` with the same ``features.<i>.weight/bias`` keys. A missing or mismatched file is a
clear error naming the path. PSNR usually drops under this loss (it trades fidelity for texture); the
stage records the validation PSNR before and after so the trade is visible.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from dataclasses import dataclass
from typing import Literal

from edgesr.artifacts import Artifact, Candidate
from edgesr.errors import EdgesrError
from edgesr.fitting import resolve_device, sampler_for, validate
from edgesr.modelio import load_model, model_candidate
from edgesr.models import model_scales, pick_output
from edgesr.progress import progress_bar
from edgesr.stages import MODEL, StageContext, register_stage

__all__ = ["GanConfig", "VGGFeatures", "Discriminator", "gan_stage", "VGG19_LAYERS", "WeightsError"]


class WeightsError(EdgesrError, ValueError):
    """VGG-19 weights that are missing, unreadable or of another network; the message names the file."""


@dataclass(frozen=True)
class GanConfig:
    """Perceptual + adversarial fine-tune of a trained model (SRGAN/ESRGAN-style)."""

    input: str
    vgg_weights: str
    """Path to VGG-19 ImageNet weights (torchvision's vgg19-dcbb9e9d.pth or a safetensors copy); never downloaded."""
    vgg_layer: str = "relu5_4"
    steps: int = 1000
    batch_size: int = 16
    lr: float = 1e-4
    disc_lr: float = 1e-4
    pixel_weight: float = 0.01
    perceptual_weight: float = 1.0
    adversarial_weight: float = 5e-3
    disc_feats: int = 64
    val_every: int = 200
    device: Literal["auto", "cpu", "cuda"] = "auto"

# VGG-19 "features" layout: conv widths, "M" = max-pool. Index i in torchvision's features.<i>.
_VGG19 = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"]


def _layer_names() -> dict[str, int]:
    """'relu<block>_<conv>' -> index (in features) of that ReLU."""
    names, block, conv, i = {}, 1, 0, 0
    for v in _VGG19:
        if v == "M":
            block, conv, i = block + 1, 0, i + 1
        else:
            conv += 1
            names[f"relu{block}_{conv}"] = i + 1
            i += 2
    return names


VGG19_LAYERS = _layer_names()


class VGGFeatures(nn.Module):
    """VGG-19 features up to ``layer`` (inclusive), ImageNet-normalised input in [0, 1], frozen."""

    def __init__(self, weights: str | Path, layer: str = "relu5_4"):
        super().__init__()
        if layer not in VGG19_LAYERS:
            raise ValueError(f"unknown VGG-19 layer {layer!r}; known: {sorted(VGG19_LAYERS)}")
        stop = VGG19_LAYERS[layer]
        mods: list[nn.Module] = []
        cin = 3
        for v in _VGG19:
            if v == "M":
                mods.append(nn.MaxPool2d(2, 2))
            else:
                mods += [nn.Conv2d(cin, v, 3, padding=1), nn.ReLU()]
                cin = v
        self.features = nn.Sequential(*mods[:stop + 1])
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), persistent=False)
        self._load(Path(weights))
        self.requires_grad_(False)
        self.eval()

    def _load(self, path: Path) -> None:
        if not path.is_file():
            raise WeightsError(
                f"{path}: VGG-19 weights not found. The perceptual loss needs ImageNet VGG-19 weights and edgesr "
                "downloads nothing at run time: copy torchvision's vgg19-dcbb9e9d.pth (from a machine with "
                "internet: torchvision.models.vgg19(weights='IMAGENET1K_V1'), then ~/.cache/torch/hub/checkpoints/) "
                "and set vgg_weights to its path.")
        try:
            if path.suffix == ".safetensors":
                from safetensors.torch import load_file
                state = load_file(str(path))
            else:
                state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise WeightsError(f"{path}: cannot read VGG-19 weights ({exc}); the file is corrupt or not a state "
                             "dict. Re-copy it.") from exc
        own = self.state_dict()
        needed = {k: v for k, v in state.items() if k in own}
        missing = sorted(set(own) - set(needed))
        wrong = [k for k in needed if needed[k].shape != own[k].shape]
        if missing or wrong:
            raise WeightsError(f"{path}: not VGG-19 features weights (missing {missing[:4]}, wrong shapes {wrong[:4]}); "
                             "use torchvision's vgg19 state dict (keys features.<i>.weight/bias).")
        self.load_state_dict(needed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features((x - self.mean) / self.std)


class Discriminator(nn.Module):
    """SRGAN's discriminator: 8 conv layers (64 -> 512, stride 2 every other layer), BN + LeakyReLU(0.2);
    the dense head is written as global average pooling + 1x1 convs (1024, 1) so any patch size works."""

    def __init__(self, n_feats: int = 64):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, n_feats, 3, padding=1), nn.LeakyReLU(0.2)]
        cin = n_feats
        for c, stride in [(n_feats, 2), (2 * n_feats, 1), (2 * n_feats, 2), (4 * n_feats, 1),
                          (4 * n_feats, 2), (8 * n_feats, 1), (8 * n_feats, 2)]:
            layers += [nn.Conv2d(cin, c, 3, stride=stride, padding=1), nn.BatchNorm2d(c), nn.LeakyReLU(0.2)]
            cin = c
        layers += [nn.AdaptiveAvgPool2d(1), nn.Conv2d(cin, 16 * n_feats, 1), nn.LeakyReLU(0.2),
                   nn.Conv2d(16 * n_feats, 1, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).flatten(1)


@register_stage("gan", GanConfig, makes=MODEL, takes={"input": MODEL})
def gan_stage(cfg: GanConfig, ctx: StageContext, input: Artifact) -> Candidate:
    """The ``gan`` stage: perceptual + adversarial fine-tune of a trained model artifact."""
    source, name, out, scale = input, ctx.name, ctx.out, ctx.scale
    train_pairs, val_pairs, seed = ctx.train_pairs, ctx.val_pairs, ctx.seed
    vgg = VGGFeatures(cfg.vgg_weights, cfg.vgg_layer)  # fails first, before any work, if the file is missing
    dev = resolve_device(cfg.device)
    torch.manual_seed(seed)
    gen = load_model(source)
    scales = model_scales(gen)
    psnr_before = validate(gen, val_pairs, scale)
    disc = Discriminator(cfg.disc_feats)
    gen.to(dev).train()
    disc.to(dev).train()
    vgg.to(dev)
    sampler = sampler_for(gen, train_pairs, scale, ctx.patch_size, cfg.batch_size, seed + 7, ctx.min_patch_std,
                          ctx.degradation)
    opt_g = torch.optim.Adam(gen.parameters(), lr=cfg.lr, betas=(0.9, 0.999))
    opt_d = torch.optim.Adam(disc.parameters(), lr=cfg.disc_lr, betas=(0.9, 0.999))
    bce = nn.BCEWithLogitsLoss()
    t0, history = time.perf_counter(), []
    with progress_bar(f"gan {name}", total=cfg.steps) as bar:
        for step in range(cfg.steps):
            lr_b, hr_b = sampler.batch(step)
            hr_b = (hr_b[scale] if isinstance(hr_b, dict) else hr_b).to(dev)
            sr = pick_output(gen(lr_b.to(dev)), scales, scale)
            # Discriminator: real HR -> 1, generated -> 0.
            d_real, d_fake = disc(hr_b), disc(sr.detach())
            loss_d = bce(d_real, torch.ones_like(d_real)) + bce(d_fake, torch.zeros_like(d_fake))
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()
            # Generator: pixel + perceptual + adversarial.
            d_gen = disc(sr)
            pixel = F.l1_loss(sr, hr_b)
            perceptual = F.l1_loss(vgg(sr), vgg(hr_b))
            adversarial = bce(d_gen, torch.ones_like(d_gen))
            loss_g = cfg.pixel_weight * pixel + cfg.perceptual_weight * perceptual + cfg.adversarial_weight * adversarial
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            opt_g.step()
            info = f"G {loss_g.item():.4f} D {loss_d.item():.3f}"
            if (step + 1) % cfg.val_every == 0 or step + 1 == cfg.steps:
                psnr = validate(gen.cpu(), val_pairs, scale)
                gen.to(dev)
                history.append({"step": step + 1, "val_psnr": round(psnr, 4), "loss_g": round(loss_g.item(), 5),
                                "loss_d": round(loss_d.item(), 5)})
                info += f"  val {psnr:.2f} dB"
            bar.update(step + 1, info)
    gen.cpu().eval()
    psnr_after = validate(gen, val_pairs, scale)
    return model_candidate(ctx.staging, gen, out=out, name=name, arch=source.manifest["arch"], parent=source,
                      transforms=source.manifest.get("transforms", []) + [{
                          "type": "gan", "vgg_layer": cfg.vgg_layer, "pixel_weight": cfg.pixel_weight,
                          "perceptual_weight": cfg.perceptual_weight, "adversarial_weight": cfg.adversarial_weight,
                          "steps": cfg.steps}],
                      metrics={"val_psnr": round(psnr_after, 4), "val_psnr_before": round(psnr_before, 4),
                               "train_seconds": round(time.perf_counter() - t0, 1), "history": history})
