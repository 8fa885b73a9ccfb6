"""FSRCNN — Dong et al., "Accelerating the Super-Resolution Convolutional Neural Network", ECCV 2016, the
classic small baseline that calibrates the training stage.

FSRCNN(d=56, s=12, m=4): 5x5 feature extraction (d), 1x1 shrink (s), m 3x3 mapping layers, 1x1 expand,
each followed by PReLU, then a 9x9 transposed conv with stride r. 12.6k parameters on the Y channel;
published Set5 x2 PSNR 37.00 dB (91 images + General-100, long training).

The paper works on luminance (the Y-channel plumbing of ``luma.py``, shared with SRCNN, VDSR, ESPCN and
LapSRN). ``color="y"`` (default) does the same inside the graph: Y (BT.601, as the protocol measures)
goes through the network; the RGB image is upsampled bilinearly and shifted on all three channels so that
its Y equals the network's — chroma from bilinear, luminance from the network.
``color="rgb"`` runs the network on the three channels instead (3x the first and last layers).
``residual=True`` (edgesr's, not the paper's): the network predicts a correction to the bilinear image, which
quantizes with a 3.6x smaller INT8 loss and trains to +2.1 dB in the same steps (see `luma.py`).
"""

from __future__ import annotations

from torch import nn

from . import MODELS
from .luma import LumaWrapper


@MODELS.register("fsrcnn")
class FSRCNN(LumaWrapper):
    def __init__(self, *, scale: int = 2, d: int = 56, s: int = 12, m: int = 4, color: str = "y",
                 residual: bool = False):
        super().__init__(scale, color, residual=residual)
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
