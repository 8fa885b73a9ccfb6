"""One-off experiment (outside edgesr): does a global, per-frame channel gate let msrep-s move past its
protocol / cubic-aliased trade-off?  Every arm starts from runs/general_v2_x2/general_s and trains the same
steps, seed and batches on the v2 mix; only the gate differs.

    python benchmarks/results/general_v2_x2/frame_gate_experiment.py control|tail|all STEPS LR   (from the repo root)

control: msrep-s alone; tail: the mean over the frame of the head's 16 feature maps -> 1x1 conv -> ReLU -> 1x1 conv
(zero-initialised) -> 2 sigmoid scales the 16 channels the tail reads (an identity at the start); all: the same
gate before every block too. Prints the kept weights' Set5 PSNR-Y under the six kinds of LR (FP32, PyTorch)."""
import json, os, sys, time
from pathlib import Path

import torch
from torch import nn
ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))
from edgesr.config import load_recipe
from edgesr.pipeline import load_data, validation_sets
from edgesr.data.degradations import DegradationSpec, degraded_sets
from edgesr.data.datasets import load_pairs
from edgesr.data.patches import PatchSampler
from edgesr.fitting import fit, scale_loss, validate, Schedule
from edgesr.losses import LOSSES
from edgesr.modelio import load_model

arm, steps, lr = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
torch.set_num_threads(2)
torch.manual_seed(0)
os.chdir(ROOT)
recipe = load_recipe('benchmarks/recipes/general_v2_x2.yaml')
train, valid, _ = load_data(recipe)
vd = validation_sets(recipe, valid)
deg = DegradationSpec(recipe.data.degradation, recipe.data.degradation_mix)
base = load_model('runs/general_v2_x2/general_s').train()

class Gated(nn.Module):
    def __init__(self, b, where):
        super().__init__()
        self.b, self.where = b, where
        c = b.head.cout
        self.fc1 = nn.Conv2d(c, 2 * c, 1)
        self.fc2 = nn.Conv2d(2 * c, c, 1)
        nn.init.zeros_(self.fc2.weight); nn.init.zeros_(self.fc2.bias)
        self.scales, self.scale = b.scales, b.scale
    def forward(self, lr):
        b = self.b
        x = b.act(b.head(lr))
        g = 2 * torch.sigmoid(self.fc2(torch.relu(self.fc1(x.mean((2, 3), keepdim=True)))))
        for i, blk in enumerate(b.blocks):
            if self.where == 'all':
                x = x * g
            x = b.act(blk(x))
        x = x * g
        s = b.scales[0]
        return b.shuffles[0](b.tails[0](x) + torch.repeat_interleave(lr, s * s, dim=1))

model = base if arm == 'control' else Gated(base, arm)
sampler = PatchSampler(train, 2, recipe.data.patch_size, 16, seed=1, min_std=recipe.data.min_patch_std,
                       targets=(2,), degradation=deg)
loss_fn = scale_loss(LOSSES.build({'type': 'l1'}), (2,))
t = time.time()
res = fit(model, sampler, steps=steps, lr=lr, loss_fn=loss_fn, val_pairs=valid, scale=2, val_degraded=vd,
          val_every=1000, ema_decay=0.999, schedule=Schedule('cosine', 0.01, (0.5, 0.75), 0.5, 100), resume=False, desc=arm)
model = res.model.eval()
out = {'arm': arm, 'steps': steps, 'lr': lr, 'seconds': round(time.time() - t), 'history': res.history}
set5 = {'Set5': load_pairs('../shared/data/benchmark/Set5', 2, 'eval')}
with torch.no_grad():
    for d in ['bicubic', 'cubic-aliased', 'bilinear-aliased', 'blur', 'noise', 'jpeg']:
        out[d] = round(validate(model, degraded_sets(set5, 2, d)['Set5'], 2), 3)
print(json.dumps(out))
