"""A teacher's outputs as a training set: each photograph's LR (the protocol's MATLAB bicubic) and the teacher's
SR of that LR, in the benchmark layout (``HR/`` = the teacher's output, ``LR_bicubic/X<s>/``), so that a ``train``
stage on it is distillation with teacher-only targets (``alpha: 1``) at the cost of one teacher pass per image.

A large teacher (the imported IMDN x2: 0.7 M parameters, ~2 s a 640x360 frame here) run live on every training
patch costs about a second a step on this 2-core CPU; run once over the whole images it costs a minute, and the
teacher sees each image whole (no patch borders). Targets are rounded to 8 bits (as the distill stage's teacher
cache stores them).

    python -m edgesr.benchmarks.teacher_targets TEACHER_ARTIFACT --data ../shared/data/train/photos --scale 2 \
        --out runs/teacher_targets/imdn_x2
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from edgesr.artifacts import read_artifact
from edgesr.data.datasets import list_images, make_lr
from edgesr.errors import UsageError
from edgesr.imaging import image_to_tensor, modcrop, read_image, write_image
from edgesr.modelio import load_model
from edgesr.models import model_scales, pick_output


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("teacher", help="model artifact (or pretrained name) of the teacher")
    ap.add_argument("--data", required=True, help="folder of HR photographs")
    ap.add_argument("--scale", type=int, required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        raise UsageError(f"{out}: exists and is not empty; choose a new folder")
    art = read_artifact(args.teacher)
    teacher = load_model(art)
    if args.scale not in model_scales(teacher):
        raise UsageError(f"{art.path}: emits x{list(model_scales(teacher))}, not x{args.scale}")
    hr_dir, lr_dir = out / "HR", out / "LR_bicubic" / f"X{args.scale}"
    hr_dir.mkdir(parents=True)
    lr_dir.mkdir(parents=True)
    t0 = time.perf_counter()
    files = list_images(Path(args.data))
    for i, f in enumerate(files):
        hr = modcrop(read_image(f), args.scale)
        lr = make_lr(hr, args.scale)
        with torch.inference_mode():
            sr = pick_output(teacher(image_to_tensor(lr)), model_scales(teacher), args.scale)[0]
        sr = np.round(sr.clamp(0, 1).permute(1, 2, 0).numpy() * 255.0).astype(np.uint8)
        write_image(hr_dir / f"{f.stem}.png", sr)
        write_image(lr_dir / f"{f.stem}x{args.scale}.png", lr)
        if (i + 1) % 20 == 0:
            print(f"{i + 1}/{len(files)} images, {time.perf_counter() - t0:.0f} s", flush=True)
    (out / "teacher.json").write_text(json.dumps({
        "teacher": art.manifest.get("name"), "teacher_hash": art.hash, "data": args.data, "scale": args.scale,
        "images": len(files), "seconds": round(time.perf_counter() - t0, 1),
        "command": "python -m edgesr.benchmarks.teacher_targets " + " ".join(argv if argv is not None else sys.argv[1:])}, indent=2) + "\n")
    print(f"{len(files)} images -> {out} in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
