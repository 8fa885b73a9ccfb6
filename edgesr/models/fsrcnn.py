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

Deploy form (``reparameterized()``, what export, MACs and pruning use): the 9x9 stride-r transposed conv is
rewritten exactly as a k x k conv on the LR grid with r^2 x c outputs followed by a pixel shuffle (each output
phase of a transposed conv is an ordinary convolution of the input with the taps of that phase; x2 and x3: 5x5,
x4: 3x3). Same output to float rounding; CPU runtimes run it as a Conv (INT8 where quantized) and DepthToSpace
instead of a float ConvTranspose. ``act="relu"`` (edgesr's) replaces the PReLUs by ReLUs, which runtimes fuse
into the convolutions (and INT8 graphs into their quantizers); PReLU costs a quarter of the published network's
time on ONNX Runtime (benchmarks/results/profile/fsrcnn-x2-*).
"""

from __future__ import annotations

from torch import nn

from . import MODELS
from .luma import LumaWrapper


DECONV_K, DECONV_PAD = 9, 4  # the paper's transposed conv: 9x9, padding 4, output padding r - 1 (output r x input)


def subpixel_geometry(k: int, r: int, p: int) -> tuple[int, int]:
    """(kernel, padding) of the LR-grid convolution that computes the transposed conv (kernel ``k``, stride ``r``,
    padding ``p``, output r x input) as r^2 phases: tap ``t`` of the transposed conv belongs to output phase
    ``(t - p) mod r`` and reads the input at offset ``((t - p) mod r + p - t) / r``; the conv spans the offsets
    symmetrically."""
    offsets = [((t - p) % r + p - t) // r for t in range(k)]
    half = max(-min(offsets), max(offsets))
    return 2 * half + 1, half


def deconv_as_subpixel_weights(weight, bias, r: int, p: int):
    """Weights (c_out r^2 x c_in x k' x k') and bias of the conv whose pixel shuffle equals
    ``ConvTranspose2d(weight, bias, stride=r, padding=p, output_padding=r - 1)`` (weight c_in x c_out x k x k)."""
    import torch

    c_in, c_out, k, _ = weight.shape
    kk, half = subpixel_geometry(k, r, p)
    w = torch.zeros(c_out * r * r, c_in, kk, kk, dtype=weight.dtype)
    for ty in range(k):
        a = (ty - p) % r
        my = (a + p - ty) // r + half
        for tx in range(k):
            b = (tx - p) % r
            mx = (b + p - tx) // r + half
            for o in range(c_out):  # PixelShuffle: channel o r^2 + a r + b -> output (o, r y + a, r x + b)
                w[o * r * r + a * r + b, :, my, mx] = weight[:, o, ty, tx]
    return w, bias.repeat_interleave(r * r)


@MODELS.register("fsrcnn")
class FSRCNN(LumaWrapper):
    def __init__(self, *, scale: int = 2, d: int = 56, s: int = 12, m: int = 4, color: str = "y",
                 residual: bool = False, act: str = "prelu", deploy: bool = False):
        super().__init__(scale, color, residual=residual)
        if act not in ("prelu", "relu"):
            raise ValueError(f"fsrcnn act must be 'prelu' or 'relu', got {act!r}")
        self.hparams = {"d": d, "s": s, "m": m, "color": color, "residual": residual, "act": act}
        self.deploy_form = deploy
        c = self.channels

        def activation(n: int) -> nn.Module:
            return nn.PReLU(n) if act == "prelu" else nn.ReLU()

        layers: list[nn.Module] = [nn.Conv2d(c, d, 5, padding=2), activation(d), nn.Conv2d(d, s, 1), activation(s)]
        for _ in range(m):
            layers += [nn.Conv2d(s, s, 3, padding=1), activation(s)]
        layers += [nn.Conv2d(s, d, 1), activation(d)]
        for mod in layers:  # the paper's initialisation: He for conv, small Gaussian for the deconv
            if isinstance(mod, nn.Conv2d):
                nn.init.kaiming_normal_(mod.weight, a=0.25)
                nn.init.zeros_(mod.bias)
        if deploy:
            kk, half = subpixel_geometry(DECONV_K, scale, DECONV_PAD)
            tail = nn.Sequential(nn.Conv2d(d, c * scale * scale, kk, padding=half), nn.PixelShuffle(scale))
            nn.init.normal_(tail[0].weight, std=0.001)  # trained in this form from scratch: as the deconv
            nn.init.zeros_(tail[0].bias)
        else:
            tail = nn.ConvTranspose2d(d, c, DECONV_K, stride=scale, padding=DECONV_PAD, output_padding=scale - 1)
            nn.init.normal_(tail.weight, std=0.001)
            nn.init.zeros_(tail.bias)
        self.network = nn.Sequential(*layers, tail)

    def reparameterized(self) -> tuple[nn.Module, dict]:
        """The deploy form: the transposed conv as an exact sub-pixel conv (see the module docstring)."""
        import torch

        if self.deploy_form:
            return self, {}
        plain = FSRCNN(scale=self.scale, deploy=True, **self.hparams)
        deconv = self.network[-1]
        state = {k: v for k, v in self.state_dict().items() if not k.startswith(f"network.{len(self.network) - 1}.")}
        w, b = deconv_as_subpixel_weights(deconv.weight.detach(), deconv.bias.detach(), self.scale, DECONV_PAD)
        state[f"network.{len(self.network) - 1}.0.weight"], state[f"network.{len(self.network) - 1}.0.bias"] = w, b
        with torch.no_grad():
            plain.load_state_dict(state)
        return plain.eval(), {"deploy": True}
