"""Which input structures an SR model uses for a region of its output: attention maps, layer attribution
maps and an input attribution, written as overlays on the input and a contact sheet (``edgesr explain``).

* **Attention maps**: every spatial sigmoid gate of the model (EDSR-MSA's multi-scale attention, one per
  residual block; RLFN's enhanced spatial attention) is recorded during one forward pass and averaged over
  channels: where each block lets its residual through.
* **Layer maps** for any model, with respect to a region of the output (the mean luminance of the SR image
  inside it): LayerCAM (Jiang et al., "LayerCAM: Exploring Hierarchical Class Activation Maps for
  Localization", TIP 2021), ``ReLU(sum_c ReLU(dy/dA_c) * A_c)`` pixel by pixel, which stays local the way SR
  features are; ``method="gradcam"`` gives classic Grad-CAM (Selvaraju et al., ICCV 2017), whose per-channel
  weights are averaged over the whole map. Layers default to up to four convolutions spread over the
  network's depth, among those working at the input's resolution.
* **Input attribution**: integrated gradients along the path from a blurred copy of the input to the input
  (the path of LAM, Gu & Dong, "Interpreting Super-Resolution Networks with Local Attribution Maps", CVPR
  2021), summed over colours as magnitudes: which input pixels the region's output depends on.

Every map is normalised to [0, 1] at the input's size; ``maps.json`` records each map's file, peak,
centroid (input pixels) and whether it is constant.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .errors import UsageError
from .imaging import image_to_tensor, to_uint8, write_image
from .models import deploy_form, model_scales, pick_output

__all__ = ["Explanation", "explain", "default_layers", "write_explanation"]

_Y = torch.tensor([65.481, 128.553, 24.966]).view(1, 3, 1, 1) / 255


@dataclass
class Explanation:
    """Maps at the input's size (H x W, float in [0, 1]), in the order they were computed."""

    maps: dict[str, np.ndarray] = field(default_factory=dict)
    kinds: dict[str, str] = field(default_factory=dict)
    region: tuple[int, int, int, int] = (0, 0, 0, 0)
    scale: int = 1
    sr: np.ndarray | None = None


def _normalise(m: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    m = m.detach().double()
    if tuple(m.shape[-2:]) != size:
        m = F.interpolate(m[None, None], size=size, mode="bilinear", align_corners=False)[0, 0]
    m = m - m.min()
    peak = float(m.max())
    return (m / peak).float().numpy() if peak > 0 else m.float().numpy()


def _conv_outputs(model: nn.Module, x: torch.Tensor) -> dict[str, tuple[int, int, int]]:
    shapes: dict[str, tuple[int, int, int]] = {}
    hooks = [m.register_forward_hook(lambda mod, inp, out, n=n: shapes.__setitem__(n, tuple(out.shape[-3:])))
             for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    return shapes


def default_layers(model: nn.Module, x: torch.Tensor, count: int = 4) -> list[str]:
    """Up to ``count`` convolutions spread over the depth, among the trunk's: those at the input's resolution
    (all, in networks that upsample first) with the first convolution's width (not attention branches)."""
    shapes = _conv_outputs(model, x)  # in execution order
    lr_space = [n for n, chw in shapes.items() if chw[1:] == tuple(x.shape[-2:])] or list(shapes)
    if lr_space:
        width = shapes[lr_space[0]][0]
        lr_space = [n for n in lr_space if shapes[n][0] == width]
    if len(lr_space) <= count:
        return lr_space
    idx = np.linspace(0, len(lr_space) - 1, count).round().astype(int)
    return [lr_space[i] for i in sorted(set(idx))]


def _objective(model: nn.Module, x: torch.Tensor, scale: int, region: tuple[int, int, int, int]) -> torch.Tensor:
    sr = pick_output(model(x), model_scales(model), scale)
    rx, ry, rw, rh = region
    patch = sr[:, :, ry * scale:(ry + rh) * scale, rx * scale:(rx + rw) * scale]
    return (patch * _Y.to(patch.dtype)).sum(dim=1).mean()


def explain(model: nn.Module, image: np.ndarray, region: tuple[int, int, int, int], *, scale: int | None = None,
            layers: list[str] | None = None, method: str = "layercam", ig_steps: int = 16,
            blur_sigma: float = 4.0) -> Explanation:
    """Attention maps, layer maps and the input attribution of ``model`` on ``image`` (H x W x 3 uint8) for
    the output region ``region`` = (x, y, width, height) in input pixels."""
    if method not in ("layercam", "gradcam"):
        raise UsageError(f"method must be 'layercam' or 'gradcam', got {method!r}")
    model, _ = deploy_form(model.eval(), {})  # what runs: re-parameterized students as plain convs
    model = model.eval()
    scales = model_scales(model)
    scale = scale or scales[0]
    if scale not in scales:
        raise UsageError(f"the model emits x{list(scales)}; --scale {scale} is not one of them")
    h, w = image.shape[:2]
    rx, ry, rw, rh = region
    if rw < 1 or rh < 1 or rx < 0 or ry < 0 or rx + rw > w or ry + rh > h:
        raise UsageError(f"region x={rx}, y={ry}, {rw}x{rh} is not inside the {w}x{h} input; give --region X,Y,W,H "
                         "in input pixels")
    x = image_to_tensor(image)
    for p in model.parameters():
        p.requires_grad_(False)
    out = Explanation(region=(rx, ry, rw, rh), scale=scale)

    _attention_maps(model, x, scales, scale, out, (h, w))
    _layer_maps(model, x, scale, out, (h, w), layers, method)
    _input_attribution(model, x, scale, out, (h, w), ig_steps, blur_sigma)
    return out


def _attention_maps(model: nn.Module, x: torch.Tensor, scales, scale: int, out: Explanation, hw) -> None:
    """Attention gates and the SR image, from one forward pass."""
    h, w = hw
    gates: dict[str, torch.Tensor] = {}
    # Recomputed in float64 from the gate's input: a gate near 0.5 everywhere (little trained, or weak
    # attention) varies below float32's resolution there, and its pattern would round away.
    hooks = [m.register_forward_hook(lambda mod, inp, o, n=n: gates.__setitem__(n, torch.sigmoid(inp[0].detach().double())))
             for n, m in model.named_modules() if isinstance(m, nn.Sigmoid)]
    try:
        with torch.no_grad():
            out.sr = pick_output(model(x), scales, scale)[0].clamp(0, 1).permute(1, 2, 0).numpy()
    finally:
        for hk in hooks:
            hk.remove()
    for name, g in gates.items():
        if g.dim() == 4 and g.shape[-1] > 1 and g.shape[-2] > 1:
            out.maps[f"attention {name}"] = _normalise(g[0].mean(dim=0), (h, w))
            out.kinds[f"attention {name}"] = "attention"



def _layer_maps(model: nn.Module, x: torch.Tensor, scale: int, out: Explanation, hw, layers, method: str) -> None:
    """Layer maps: activations and their gradients for the region's mean luminance."""
    h, w = hw
    names = layers or default_layers(model, x)
    modules = dict(model.named_modules())
    unknown = [n for n in names if n not in modules]
    if unknown:
        convs = [n for n, m in modules.items() if isinstance(m, nn.Conv2d)]
        raise UsageError(f"no layer named {unknown} in this model; its convolutions are: {', '.join(convs[:40])}")
    acts: dict[str, torch.Tensor] = {}

    def keep(name):
        def hook(mod, inp, o):
            o.retain_grad()
            acts[name] = o
        return hook

    hooks = [modules[n].register_forward_hook(keep(n)) for n in names]
    try:
        with torch.enable_grad():
            _objective(model, x.clone().requires_grad_(True), scale, out.region).backward()
    finally:
        for hk in hooks:
            hk.remove()
    for name in names:
        a, g = acts[name][0], acts[name].grad[0]
        if method == "layercam":
            cam = F.relu((F.relu(g) * a).sum(dim=0))
        else:
            cam = F.relu((g.mean(dim=(1, 2), keepdim=True) * a).sum(dim=0))
        out.maps[f"{method} {name}"] = _normalise(cam, (h, w))
        out.kinds[f"{method} {name}"] = method



def _input_attribution(model: nn.Module, x: torch.Tensor, scale: int, out: Explanation, hw, ig_steps: int,
                       blur_sigma: float) -> None:
    """Integrated gradients from a blurred input (LAM's baseline), midpoint rule."""
    h, w = hw
    radius = max(1, int(math.ceil(3 * blur_sigma)))
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k1 = torch.exp(-t ** 2 / (2 * blur_sigma ** 2))
    k1 = k1 / k1.sum()
    pad = (radius, radius, radius, radius)
    blurred = F.pad(x, pad, mode="replicate")
    blurred = F.conv2d(blurred, k1.view(1, 1, 1, -1).repeat(3, 1, 1, 1), groups=3)
    baseline = F.conv2d(blurred, k1.view(1, 1, -1, 1).repeat(3, 1, 1, 1), groups=3)
    total = torch.zeros_like(x)
    with torch.enable_grad():
        for i in range(ig_steps):
            alpha = (i + 0.5) / ig_steps
            xi = (baseline + alpha * (x - baseline)).requires_grad_(True)
            _objective(model, xi, scale, out.region).backward()
            total += xi.grad
    attribution = ((x - baseline) * total / ig_steps).abs().sum(dim=1)[0]
    out.maps["input attribution"] = _normalise(attribution, (h, w))
    out.kinds["input attribution"] = "integrated gradients"


def _overlay(image: np.ndarray, heat: np.ndarray, region: tuple[int, int, int, int], enlarge: bool = True) -> np.ndarray:
    from matplotlib import colormaps

    colours = colormaps["inferno"](np.sqrt(heat))[..., :3]  # square root: weak attribution stays visible
    blend = 0.5 * image.astype(np.float64) / 255 + 0.5 * colours
    rgb = to_uint8(blend)
    rx, ry, rw, rh = region
    cyan = np.array([0, 255, 255], np.uint8)
    rgb[ry, rx:rx + rw] = rgb[ry + rh - 1, rx:rx + rw] = cyan
    rgb[ry:ry + rh, rx] = rgb[ry:ry + rh, rx + rw - 1] = cyan
    k = max(1, 256 // max(1, min(image.shape[:2]))) if enlarge else 1  # small inputs are enlarged to be seen
    return np.repeat(np.repeat(rgb, k, axis=0), k, axis=1) if k > 1 else rgb


def _around(region: tuple[int, int, int, int], hw: tuple[int, int]) -> tuple[slice, slice]:
    """The window the contact sheet zooms into: the region and twice its size on every side."""
    rx, ry, rw, rh = region
    m = 2 * max(rw, rh)
    return slice(max(0, ry - m), min(hw[0], ry + rh + m)), slice(max(0, rx - m), min(hw[1], rx + rw + m))


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name).strip("_")


def _stats(m: np.ndarray) -> dict:
    total = float(m.sum())
    peak = np.unravel_index(int(np.argmax(m)), m.shape)
    ys, xs = np.indices(m.shape)
    centroid = [float((xs * m).sum() / total), float((ys * m).sum() / total)] if total > 0 else None
    return {"peak_xy": [int(peak[1]), int(peak[0])], "centroid_xy": centroid, "constant": bool(np.ptp(m) == 0)}


def write_explanation(exp: Explanation, image: np.ndarray, out_dir: str | Path, *, title: str = "") -> dict:
    """Write one overlay PNG per map, ``contact_sheet.png`` and ``maps.json``; return the JSON record."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    record = {"title": title, "region_xywh": list(exp.region), "scale": exp.scale,
              "input_hw": list(image.shape[:2]), "maps": []}
    panels = []
    for i, (name, heat) in enumerate(exp.maps.items()):
        file = f"{i:02d}_{_slug(name)}.png"
        write_image(out_dir / file, _overlay(image, heat, exp.region))
        full = _overlay(image, heat, exp.region, enlarge=False)
        # attention maps are global (where each block passes its residual); attributions are local: zoom in
        panels.append((name, full if exp.kinds[name] == "attention" else full[_around(exp.region, heat.shape)]))
        record["maps"].append({"name": name, "kind": exp.kinds[name], "file": file, **_stats(heat)})
    rx, ry, rw, rh = exp.region
    cols = min(4, len(panels) + 1)
    rows = math.ceil((len(panels) + 1) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.6 * rows), squeeze=False)
    axes[0][0].imshow(image)
    axes[0][0].add_patch(plt.Rectangle((rx - 0.5, ry - 0.5), rw, rh, fill=False, edgecolor="cyan", linewidth=1.5))
    axes[0][0].set_title("input + region", fontsize=9)
    for ax, (name, rgb) in zip([a for row in axes for a in row][1:], panels):
        ax.imshow(rgb)
        zoom = "" if exp.kinds[name] == "attention" else " (zoom)"
        ax.set_title((name if len(name) < 34 else name[:31] + "...") + zoom, fontsize=8)
    for ax in (a for row in axes for a in row):
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    tmp = out_dir / ".contact_sheet.tmp.png"
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(out_dir / "contact_sheet.png")
    tmp_json = out_dir / ".maps.json.tmp"
    tmp_json.write_text(json.dumps(record, indent=2))
    tmp_json.replace(out_dir / "maps.json")
    return record
