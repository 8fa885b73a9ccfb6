"""Made once, outside edgesr (OpenCV is not a dependency): cv2.resize INTER_CUBIC and INTER_LINEAR downscales of
two real images (Set5 butterfly whole; a 101 x 133 crop of Set14 baboon at rows 37.., columns 51..), each
mod-cropped to x2, x3, x4. OpenCV 4.14.0 and 5.1.0 (opencv-python-headless) wrote identical files.

    python make_vectors.py vectors.npz      # in a venv with opencv-python-headless, numpy, pillow
"""
import sys

import cv2
import numpy as np
from PIL import Image

S = "../shared/data/benchmark"
imgs = {"butterfly": np.asarray(Image.open(f"{S}/Set5/HR/butterfly.png").convert("RGB")),
        "baboon_crop": np.asarray(Image.open(f"{S}/Set14/HR/baboon.png").convert("RGB"))[37:37 + 101, 51:51 + 133]}
out = {}
for name, hr in imgs.items():
    for s in (2, 3, 4):
        h, w = hr.shape[0] - hr.shape[0] % s, hr.shape[1] - hr.shape[1] % s
        m = np.ascontiguousarray(hr[:h, :w])
        for k, flag in (("cubic", cv2.INTER_CUBIC), ("linear", cv2.INTER_LINEAR)):
            out[f"{name}_x{s}_{k}"] = cv2.resize(m, (w // s, h // s), interpolation=flag)
np.savez_compressed(sys.argv[1], **out)
print(cv2.__version__, len(out))
