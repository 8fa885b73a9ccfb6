"""Which validation set predicts what an INT8 form loses on Set5 / Set14 (issue 26)? For each artifact, the
drop against the FP32 graph (same backend) on: the three built-in validation photographs (`data.valid:
builtin`), the photographs `data.valid: holdout` takes out of ../shared/data/train/photos (one crop of each),
Set5 and Set14. The drop's spread over images (standard error of the per-image drop) says how far one set's
mean can be trusted to 0.1 dB.

    python benchmarks/results/validation_sets/study.py --scale 2 --holdout 8 --ref runs/imported_rtc_x2/rtc_onnx \
        runs/imported_rtc_x2/rtc_int8_w8f ... --out benchmarks/results/validation_sets/rtc_x2.json

The artifacts compared were trained (QAT) and calibrated on all 108 photographs, held-out ones included; the
holdout column is therefore a little optimistic for them (a recipe with `valid: holdout` never trains on them).
"""
import argparse
import json
from pathlib import Path

import numpy as np

from edgesr.benchmarks.quality import measure_quality
from edgesr.data.datasets import holdout_split, load_pairs
from edgesr.runtime.base import open_backend

SHARED = Path("../shared/data")


def sets(scale: int, photos: int) -> dict:
    train = load_pairs(SHARED / "train" / "photos", scale, "train")
    _, held, _ = holdout_split(train, photos, SHARED / "train" / "photos")
    return {"builtin (3)": load_pairs("builtin", scale, "valid"), f"holdout ({photos})": held,
            "Set5": load_pairs(SHARED / "benchmark" / "Set5", scale, "eval"),
            "Set14": load_pairs(SHARED / "benchmark" / "Set14", scale, "eval")}


def per_image(art: str, data: dict, scale: int, backend: str) -> dict:
    b = open_backend(art, backend, threads=2)
    q = measure_quality(b, data, scale)
    b.close()
    return {name: [float(v[0]) for v in r["per_image"].values()] for name, r in q.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("arts", nargs="+")
    ap.add_argument("--ref", required=True)
    ap.add_argument("--scale", type=int, required=True)
    ap.add_argument("--holdout", type=int, default=8)
    ap.add_argument("--backend", default="onnxruntime")
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    data = sets(a.scale, a.holdout)
    ref = per_image(a.ref, data, a.scale, a.backend)
    rows = {}
    print(f"{'artifact':32s} " + " ".join(f"{n:>22s}" for n in data))
    for art in a.arts:
        got = per_image(art, data, a.scale, a.backend)
        row = {}
        for n in data:
            d = np.array(got[n]) - np.array(ref[n])
            row[n] = {"drop_db": float(d.mean()), "se_db": float(d.std(ddof=1) / np.sqrt(len(d))),
                      "psnr": float(np.mean(got[n]))}
        rows[Path(art).name] = row
        print(f"{Path(art).name:32s} " + " ".join(f"{row[n]['drop_db']:+9.3f} (se {row[n]['se_db']:.3f})"
                                                  for n in data), flush=True)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps({"ref": a.ref, "backend": a.backend, "scale": a.scale,
                                 "ref_psnr": {n: float(np.mean(v)) for n, v in ref.items()}, "arts": rows}, indent=1))


if __name__ == "__main__":
    main()
