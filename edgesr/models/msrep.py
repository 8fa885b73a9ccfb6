"""MSRep — edgesr's multi-scale re-parameterizable student for edge inference and INT8.

What it follows, and from where:

* **Re-parameterization** (RepVGG, Ding et al. CVPR 2021; ACNet, Ding et al. ICCV 2019; ECBSR, Zhang et al.
  ACM MM 2021; SESR, Bhardwaj et al. MLSys 2022): every convolution is trained as a sum of linear branches
  with different receptive fields — 3x3, 1x3, 3x1, 1x1, a 1x1-expand/3x3-squeeze pair, and the identity
  when shapes allow — and collapses into one plain 3x3 convolution for deployment. No batch norm: every
  branch is linear, so the sum is exactly one 3x3 kernel and bias (``RepConv.merged``).
  During training the branches are merged on the fly and the input goes through one 3x3 convolution
  (the "online" form of OREPA, Hu et al. CVPR 2022): the output and the gradients are those of the
  multi-branch block, at the cost of a plain conv. ``forward_branches`` runs the branches one by one; a
  test checks both forms and the deployed model agree to 1e-5.
* **Anchor residual in image space** (ABPN, Du et al. CVPRW 2021; XLSR, Ayazoglu CVPRW 2021): the LR input
  repeated ``r^2`` times is added to the last conv's ``3 r^2`` channels before PixelShuffle, so the network
  predicts only a correction to nearest-neighbour upsampling and INT8 noise lands on a residual, not on the
  image. Plain Conv/Relu/Add/DepthToSpace only: quantizes cleanly in ONNX Runtime and TensorRT.
* **Progressive heads** (LapSRN, Lai et al. CVPR 2017, adapted to LR space as in QuickSRNet, Berger et al.
  CVPRW 2023): one trunk, the x2 head taps it after ``n_blocks`` blocks, the x4 head continues
  ``x4_blocks`` blocks deeper. One forward pass emits every scale in ``heads``; every head works in LR
  space, so x4 costs only its extra blocks and a wider last conv.

* **Space-to-depth trunk** (``space_to_depth: u``; the pixel-unshuffle input of ESPCN's inverse, as in
  the Mobile AI real-time SR entries): the LR is unshuffled by ``u`` (edge-padded at the bottom/right to whole
  u x u cells and the output cropped back), the trunk runs at 1/u^2 of the LR's pixels with u^2 times
  the input channels, and the tail's PixelShuffle(u * s) returns to HR. At equal MACs per pixel a trunk of
  ``2 C`` channels at u = 2 costs what ``C`` channels cost at u = 1 and holds four times the parameters per
  layer (``su``: 32 x 3 at u = 2, 45.1k parameters). The unshuffle and the anchor (the LR pixel under each output
  sub-pixel, before the add) are fixed 0/1 stride-u convolutions: the graph is Pad, Conv, Relu, Add,
  DepthToSpace and a final crop, and still predicts a correction to nearest upsampling.

* **1x1 head** (``head_kernel: 1``): the input conv as a plain 1x1 (3 -> C) instead of a 3x3. ONNX Runtime's INT8
  conv (NHWC) runs a 3x3 conv of 3 input channels slower than a 16-channel trunk block (4.4 against 3.0 ms at
  640x360), a 1x1 one in 1.3 ms; but a 1x1 head plus one more block, frame in / frame out, took what msrep-s takes on
  ONNX Runtime (19.3 vs 19.4 ms) and 11 % more on OpenVINO, and scored what msrep-s scores (same count of 3x3 convs;
  benchmarks/results/deep_cpu_x2). Kept for such experiments; no shipped model uses it.

Sizes (deployed x2-only parameter counts): ``s`` 16 ch x 3 blocks = 9.1k, ``m`` 32 x 5 = 50.6k,
``l`` 64 x 5 = 193k, ``su`` 32 x 3 at space_to_depth 2 = 45.1k. ``heads=[2, 4]`` adds the x4 path. ``deploy=True`` builds the collapsed form
(what ``reparameterized()`` returns and what is exported, pruned and quantized).
Forward returns one tensor for one head, else a tuple ordered like ``heads``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import MODELS
from .reparam import MergedConv, copy_merged

SIZES = {"s": (16, 3), "m": (32, 5), "l": (64, 5), "su": (32, 3)}
SPACE_TO_DEPTH = {"su": 2}  # a size's default space_to_depth (1 elsewhere)


def cell_weights(scale: int, unshuffle: int) -> tuple[torch.Tensor, torch.Tensor]:
    """0/1 kernels (u x u, stride u = ``unshuffle``) of the two fixed convolutions of a space-to-depth MSRep:
    ``fold`` puts LR pixel (a, b) of each u x u cell, colour c, in channel c u^2 + a u + b (PixelUnshuffle);
    ``anchor`` gives output channel c r^2 + i r + j (r = u * scale; PixelShuffle(r) puts it at sub-pixel (i, j))
    the LR pixel under that sub-pixel, (i // scale, j // scale) of the cell: shuffled, nearest upsampling.
    Convolutions, not reshapes: one exact node each, which every runtime and quantizer handles."""
    u, r = unshuffle, unshuffle * scale
    fold = torch.zeros(3 * u * u, 3, u, u)
    for c in range(3):
        for a in range(u):
            for b in range(u):
                fold[c * u * u + a * u + b, c, a, b] = 1.0
    anchor = torch.zeros(3 * r * r, 3, u, u)
    for c in range(3):
        for i in range(r):
            for j in range(r):
                anchor[c * r * r + i * r + j, c, i // scale, j // scale] = 1.0
    return fold, anchor


class RepConv(MergedConv):
    """A 3x3 convolution trained as 3x3 + 1x3 + 3x1 + 1x1 + (1x1 -> 3x3) [+ identity] branches."""

    def __init__(self, cin: int, cout: int, *, expand: int = 2, deploy: bool = False):
        super().__init__(cin, cout, deploy)
        if deploy:
            return
        self.k3 = nn.Conv2d(cin, cout, 3, padding=1)
        self.k13 = nn.Conv2d(cin, cout, (1, 3), padding=(0, 1))
        self.k31 = nn.Conv2d(cin, cout, (3, 1), padding=(1, 0))
        self.k1 = nn.Conv2d(cin, cout, 1)
        self.expand = nn.Conv2d(cin, expand * cout, 1, bias=False)  # no bias: zero padding stays exact
        self.squeeze = nn.Conv2d(expand * cout, cout, 3, padding=1)
        self.identity = cin == cout
        with torch.no_grad():  # five summed branches: keep the merged kernel's variance that of one conv
            for m in (self.k3, self.k13, self.k31, self.k1, self.squeeze):
                m.weight.mul_(5 ** -0.5)

    def merged(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The single 3x3 kernel and bias equal to the sum of the branches (differentiable)."""
        if self.deploy:
            return self.conv.weight, self.conv.bias
        w = (self.k3.weight + F.pad(self.k13.weight, (0, 0, 1, 1)) + F.pad(self.k31.weight, (1, 1, 0, 0))
             + F.pad(self.k1.weight, (1, 1, 1, 1))
             + torch.einsum("oekl,ei->oikl", self.squeeze.weight, self.expand.weight[:, :, 0, 0]))
        if self.identity:
            eye = torch.zeros_like(w)
            idx = torch.arange(self.cin)
            eye[idx, idx, 1, 1] = 1.0
            w = w + eye
        b = self.k3.bias + self.k13.bias + self.k31.bias + self.k1.bias + self.squeeze.bias
        return w, b

    def branches(self, x: torch.Tensor) -> torch.Tensor:
        y = self.k3(x) + self.k13(x) + self.k31(x) + self.k1(x) + self.squeeze(self.expand(x))
        return y + x if self.identity else y


class PointHead(nn.Module):
    """A plain 1x1 input convolution (``head_kernel: 1``): nothing to merge, the same in both forms."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.cin, self.cout = cin, cout
        self.conv = nn.Conv2d(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)

    forward_branches = forward


@MODELS.register("msrep")
class MSRep(nn.Module):
    def __init__(self, *, scale: int = 2, heads: list[int] | None = None, size: str = "s",
                 channels: int | None = None, n_blocks: int | None = None, x4_blocks: int = 1,
                 expand: int = 2, space_to_depth: int | None = None, head_kernel: int = 3, deploy: bool = False):
        super().__init__()
        if size not in SIZES:
            raise ValueError(f"MSRep size must be one of {sorted(SIZES)}, got {size!r}")
        heads = sorted(heads) if heads else [scale]
        if scale not in heads or any(h not in (2, 3, 4) for h in heads) or len(set(heads)) != len(heads):
            raise ValueError(f"MSRep heads must be distinct scales among 2, 3, 4 and include scale={scale}; got {heads}")
        c, n = SIZES[size]
        c, n = channels or c, n_blocks if n_blocks is not None else n
        u = SPACE_TO_DEPTH.get(size, 1) if space_to_depth is None else space_to_depth
        if u not in (1, 2, 3, 4):
            raise ValueError(f"MSRep space_to_depth must be 1, 2, 3 or 4, got {u!r}")
        if head_kernel not in (1, 3):
            raise ValueError(f"MSRep head_kernel must be 1 or 3, got {head_kernel!r}")
        self.scale, self.scales, self.deploy_form, self.unshuffle = scale, tuple(heads), deploy, u
        self.head_kernel = head_kernel
        rep = lambda i, o: RepConv(i, o, expand=expand, deploy=deploy)
        self.head = rep(3 * u * u, c) if head_kernel == 3 else PointHead(3 * u * u, c)
        self.act = nn.ReLU()
        # Trunk blocks; head k taps the trunk after depth[k] blocks.
        self.depth = [n + i * x4_blocks for i in range(len(heads))]
        self.blocks = nn.ModuleList(rep(c, c) for _ in range(self.depth[-1]))
        self.tails = nn.ModuleList(rep(c, 3 * (u * s) ** 2) for s in heads)
        self.shuffles = nn.ModuleList(nn.PixelShuffle(u * s) for s in heads)
        for i, s in enumerate(heads if u > 1 else ()):  # buffers: fixed, and not in the state dict
            fold, anchor = cell_weights(s, u)
            self.register_buffer("fold", fold, persistent=False)
            self.register_buffer(f"anchor{i}", anchor, persistent=False)
        if not deploy:  # start close to the anchor (nearest upsampling): a small, not zero, residual
            with torch.no_grad():
                for tail in self.tails:
                    for p in tail.parameters():
                        p.mul_(0.1)

    def _run(self, lr: torch.Tensor, branches: bool):
        conv = (lambda m, x: m.forward_branches(x)) if branches else (lambda m, x: m(x))
        u, (h, w) = self.unshuffle, lr.shape[-2:]
        src = lr
        if u > 1:  # edge-pad by u - 1 (a static pad: a stride-u conv then covers ceil(H / u) whole cells) and fold
            src = F.pad(lr, (0, u - 1, 0, u - 1), mode="replicate")
        x = self.act(conv(self.head, F.conv2d(src, self.fold, stride=u) if u > 1 else src))
        outs, done = [], 0
        for i, (s, depth, tail, shuffle) in enumerate(zip(self.scales, self.depth, self.tails, self.shuffles)):
            for blk in self.blocks[done:depth]:
                x = self.act(conv(blk, x))
            done = depth
            if u == 1:
                anchor = torch.repeat_interleave(lr, s * s, dim=1)  # channel c*r2+k -> colour c, as PixelShuffle reads it
                outs.append(shuffle(conv(tail, x) + anchor))
            else:
                anchor = F.conv2d(src, getattr(self, f"anchor{i}"), stride=u)
                outs.append(shuffle(conv(tail, x) + anchor)[..., : h * s, : w * s])
        return outs[0] if len(outs) == 1 else tuple(outs)

    def forward(self, lr: torch.Tensor):
        return self._run(lr, branches=False)

    def warm_start_fresh(self, fresh: list[str], gain: float = 0.01) -> None:
        """After a warm start from a shallower MSRep (``init_from``): scale the trainable weights and biases of
        each trunk block that got none (names in ``fresh``) by ``gain``, so that it starts as an identity plus a
        small residual (a block's identity branch passes the previous ReLU's non-negative output through its own
        ReLU unchanged) and the deeper network starts computing what the shallower one did (Net2DeeperNet, Chen
        et al. ICLR 2016). Deploy-form blocks have no identity branch and are left as initialised."""
        for i, blk in enumerate(self.blocks):
            if getattr(blk, "identity", False) and any(n.startswith(f"blocks.{i}.") for n in fresh):
                with torch.no_grad():
                    for p in blk.parameters():
                        p.mul_(gain)

    def forward_branches(self, lr: torch.Tensor):
        return self._run(lr, branches=True)

    def reparameterized(self) -> tuple[nn.Module, dict]:
        """The deploy form (plain 3x3 convs) with the merged weights, and the hyper-parameter change."""
        if self.deploy_form:
            return self, {}
        plain = MSRep(scale=self.scale, heads=list(self.scales), channels=self.head.cout,
                      n_blocks=self.depth[0], x4_blocks=(self.depth[1] - self.depth[0]) if len(self.depth) > 1 else 1,
                      space_to_depth=self.unshuffle, head_kernel=self.head_kernel, deploy=True)
        copy_merged(self, plain)
        if self.head_kernel == 1:
            plain.head.load_state_dict(self.head.state_dict())
        return plain.eval(), {"deploy": True}
