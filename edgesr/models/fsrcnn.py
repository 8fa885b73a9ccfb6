"""FSRCNN — Dong et al., "Accelerating the Super-Resolution Convolutional Neural Network", ECCV 2016, the
classic small baseline that calibrates the training stage.

FSRCNN(d=56, s=12, m=4): 5x5 feature extraction (d), 1x1 shrink (s), m 3x3 mapping layers, 1x1 expand,
each followed by PReLU, then a 9x9 transposed conv with stride r. 12.6k parameters on the Y channel;
published Set5 x2 PSNR 37.00 dB (91 images + General-100, long training).

The paper works on luminance (as does ESPCN, which shares this file's Y-channel plumbing). ``color="y"`` (default) does the same inside the graph: Y (BT.601, as the
protocol measures) goes through the network; the RGB image is upsampled bilinearly and shifted on all
three channels so that its Y equals the network's — chroma from bilinear, luminance from the network.
``color="rgb"`` runs the network on the three channels instead (3x the first and last layers).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import MODELS

_Y = (65.481 / 255, 128.553 / 255, 24.966 / 255)  # BT.601, RGB in [0, 1] -> Y in [16/255, 235/255]


class _LumaWrapper(nn.Module):
    """Shared Y-channel plumbing: ``self.network`` (set by the architecture) maps Y (N x 1 x H x W), or RGB
    with ``color="rgb"``, to its upscaled version."""

    def __init__(self, scale: int, color: str):
        super().__init__()
        if color not in ("y", "rgb"):
            raise ValueError(f"color must be 'y' or 'rgb', got {color!r}")
        self.scale, self.scales, self.color = scale, (scale,), color
        self.register_buffer("y_weights", torch.tensor(_Y).view(1, 3, 1, 1), persistent=False)
        self.channels = 1 if color == "y" else 3

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        if self.color == "rgb":
            return self.network(lr)
        y = (lr * self.y_weights).sum(dim=1, keepdim=True) + 16 / 255
        up = F.interpolate(lr, scale_factor=self.scale, mode="bilinear", align_corners=False)
        y_up = (up * self.y_weights).sum(dim=1, keepdim=True) + 16 / 255
        # Adding d to R, G and B moves Y by d * sum(weights); solve for the network's Y.
        return up + (self.network(y) - y_up) / float(sum(_Y))


@MODELS.register("fsrcnn")
class FSRCNN(_LumaWrapper):
    def __init__(self, *, scale: int = 2, d: int = 56, s: int = 12, m: int = 4, color: str = "y"):
        super().__init__(scale, color)
        c = self.channels
        layers: list[nn.Module] = [nn.Conv2d(c, d, 5, padding=2), nn.PReLU(d), nn.Conv2d(d, s, 1), nn.PReLU(s)]
        for _ in range(m):
            layers += [nn.Conv2d(s, s, 3, padding=1), nn.PReLU(s)]
        layers += [nn.Conv2d(s, d, 1), nn.PReLU(d)]
        deconv = nn.ConvTranspose2d(d, c, 9, stride=scale, padding=4, output_padding=scale - 1)
        for mod in layers:  # the paper's initialisation: He for conv, small Gaussian for the deconv
            if isinstance(mod, nn.Conv2d):
                nn.init.kaiming_normal_(mod.weight, a=0.25)
                nn.init.zeros_(mod.bias)
        nn.init.normal_(deconv.weight, std=0.001)
        nn.init.zeros_(deconv.bias)
        self.network = nn.Sequential(*layers, deconv)
