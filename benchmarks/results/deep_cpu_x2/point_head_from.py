"""The same function, one block deeper and with a 1x1 input conv: an MSRep (3x3 head, n blocks) rewritten exactly as an
MSRep with ``head_kernel: 1`` and n + 1 blocks, saved as a model artifact for a recipe's ``load`` + ``init_from``.

Why: on ONNX Runtime's INT8 path the 3-input-channel 3x3 head conv of msrep-s costs more than a 16-channel trunk
block (4.4 against 3.0 ms at 640x360), and a 3 -> 16 1x1 conv about 1.3 ms: a 1x1 head plus one more block costs
about what the 3x3 head alone did.

The rewrite (train form, exact): the 1x1 head copies R, G, B into channels 0-2 (the input is >= 0, so its ReLU
passes it) and gives the other channels small random projections with a positive bias (alive: a channel left at zero
sits at ReLU's kink, gets no gradient and never trains, as a first attempt here found); the new first block's 3x3 branch holds the old head's merged kernel on those channels minus
the identity its identity branch adds, its bias the old head's, its other branches zero (the 1x1 -> 3x3 pair: the
expand keeps its random init and the squeeze is zero, so both still train); the old blocks and tail follow unchanged.
Run from the repository root:
  python benchmarks/results/deep_cpu_x2/point_head_from.py SRC_ARTIFACT OUT_DIR"""
import sys

import torch

from edgesr.artifacts import read_artifact
from edgesr.data.datasets import parity_image
from edgesr.imaging import image_to_tensor
from edgesr.modelio import load_model, save_model
from edgesr.models import build_model

src = read_artifact(sys.argv[1])
old = load_model(src).eval()
arch = dict(src.manifest["arch"])
if arch.get("type") != "msrep" or arch.get("head_kernel", 3) != 3 or old.deploy_form or len(old.scales) != 1:
    sys.exit(f"{sys.argv[1]}: needs a one-head MSRep in its training form with a 3x3 head")
n = len(old.blocks)
arch.update(n_blocks=n + 1, head_kernel=1)
new = build_model(arch).eval()
c, cin = old.head.cout, old.head.cin
with torch.no_grad():
    gen = torch.Generator().manual_seed(0)
    new.head.conv.weight.copy_(torch.randn(new.head.conv.weight.shape, generator=gen) * 0.1)
    new.head.conv.bias.fill_(0.1)
    new.head.conv.weight[:cin].zero_()
    new.head.conv.bias[:cin].zero_()
    for i in range(cin):
        new.head.conv.weight[i, i, 0, 0] = 1.0
    b0 = new.blocks[0]
    w, b = old.head.merged()
    for m in (b0.k3, b0.k13, b0.k31, b0.k1, b0.squeeze):
        m.weight.zero_()
        m.bias.zero_()
    b0.k3.weight[:, :cin] = w  # the extra channels' weights stay zero: the function is unchanged
    b0.k3.weight[torch.arange(c), torch.arange(c), 1, 1] -= 1.0
    b0.k3.bias.copy_(b)
    for i in range(n):
        new.blocks[i + 1].load_state_dict(old.blocks[i].state_dict())
    new.tails.load_state_dict(old.tails.state_dict())
    x = image_to_tensor(parity_image())
    diff = (new(x) - old(x)).abs().max().item()
print(f"max |new - old| on the parity image: {diff:.2e}")
if diff > 1e-5:
    sys.exit("the rewrite does not compute the same function")
art = save_model(sys.argv[2], new, name="point_head", arch=arch, parent=src,
                 transforms=[{"type": "point_head_from", "source": src.hash, "max_abs_diff": diff}])
print(art.path, sum(p.numel() for p in new.parameters()), "training-form parameters")
