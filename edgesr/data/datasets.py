"""Datasets: image folders in the layouts SR code reads, the built-in images, and evaluation pairs.

Layouts understood (``root`` is what the user names):

* DIV2K: ``root/DIV2K_train_HR/*.png`` (+ ``root/DIV2K_train_LR_bicubic/X<s>/<name>x<s>.png``),
  likewise ``DIV2K_valid_*``;
* benchmark: ``root/HR/*.png`` (+ ``root/LR_bicubic/X<s>/<name>x<s>.png``);
* a plain folder of images.

Where no LR file is given, LR is synthesised with the protocol's MATLAB bicubic from the HR image
mod-cropped to the scale, which is how the benchmark LR files were made.

The built-in data needs no download: natural photographs and textures shipped inside scikit-image and
scikit-learn, split into a training and a held-out validation part.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import EdgesrError
from ..imaging import IMAGE_SUFFIXES, ImageError, modcrop, read_image
from .bicubic import imresize

__all__ = [
    "DataError", "ImagePair", "parity_image", "set_name", "BUILTIN_TRAIN", "BUILTIN_VALID", "builtin_images", "list_images", "find_layout",
    "load_pairs", "make_lr", "source_photo", "holdout_split",
]

# (package, file) of the images shipped with scikit-image / scikit-learn. Textured photographs train;
# three other photographs are held out for validation.
BUILTIN_TRAIN = [
    ("skimage.data", "astronaut.png"), ("skimage.data", "brick.png"), ("skimage.data", "camera.png"),
    ("skimage.data", "coins.png"), ("skimage.data", "grass.png"), ("skimage.data", "gravel.png"),
    ("skimage.data", "hubble_deep_field.jpg"), ("skimage.data", "ihc.png"),
    ("skimage.data", "motorcycle_left.png"), ("skimage.data", "retina.jpg"), ("skimage.data", "rocket.jpg"),
    ("sklearn.datasets.images", "china.jpg"),
]
BUILTIN_VALID = [
    ("skimage.data", "chelsea.png"), ("skimage.data", "coffee.png"), ("sklearn.datasets.images", "flower.jpg"),
]


class DataError(EdgesrError, FileNotFoundError):
    """A data folder that does not exist or holds no images; the message names it and the layouts read."""


@dataclass
class ImagePair:
    """An HR image (mod-cropped to the scale) and its LR counterpart, both ``uint8`` (or ``uint16``) HxWx3."""

    name: str
    lr: np.ndarray
    hr: np.ndarray


def builtin_images(split: str) -> list[tuple[str, np.ndarray]]:
    """The built-in images of ``split`` ('train' or 'valid') as (name, HxWx3 uint8)."""
    table = {"train": BUILTIN_TRAIN, "valid": BUILTIN_VALID}
    if split not in table:
        raise ValueError(f"unknown built-in split {split!r}; use 'train' or 'valid'")
    out = []
    for package, fname in table[split]:
        try:
            path = importlib.resources.files(package) / fname
        except ModuleNotFoundError as exc:
            raise RuntimeError(f"built-in data needs the package {package.split('.')[0]!r}: pip install "
                               f"scikit-image scikit-learn") from exc
        out.append((Path(fname).stem, read_image(Path(str(path)))))
    return out


def list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def find_layout(root: str | Path, scale: int, split: str = "train") -> tuple[Path, Path | None]:
    """Return (HR folder, LR folder or None) for ``root`` in any of the supported layouts."""
    root = Path(root)
    if root.is_file():
        raise DataError(f"{root}: is a file; data sets are folders. Put the image(s) in a folder and give the folder "
                        f"(e.g. {root.parent / 'my_set'}), or give a DIV2K root, a benchmark set (with HR/) or 'builtin'.")
    if not root.is_dir():
        raise DataError(f"{root}: no such data folder. Give a DIV2K root, a benchmark set "
                                "(with HR/), or a folder of images.")
    div2k_hr = root / f"DIV2K_{split}_HR"
    if div2k_hr.is_dir():
        lr = root / f"DIV2K_{split}_LR_bicubic" / f"X{scale}"
        return div2k_hr, (lr if lr.is_dir() else None)
    if (root / "HR").is_dir():
        lr = root / "LR_bicubic" / f"X{scale}"
        return root / "HR", (lr if lr.is_dir() else None)
    if list_images(root):
        return root, None
    raise DataError(f"{root}: found no images, no HR/ folder and no DIV2K_{split}_HR/ folder.")


def make_lr(hr: np.ndarray, scale: int) -> np.ndarray:
    """The protocol's degradation: MATLAB bicubic downscale by ``scale`` of the mod-cropped HR image."""
    hr = modcrop(hr, scale)
    if hr.dtype == np.uint16:
        lr = imresize(hr.astype(np.float64) / 65535.0, 1.0 / scale)
        return np.clip(np.round(lr * 65535.0), 0, 65535).astype(np.uint16)
    return imresize(hr, 1.0 / scale)


def _lr_file(lr_dir: Path, hr_path: Path, scale: int) -> Path | None:
    for cand in (lr_dir / f"{hr_path.stem}x{scale}{hr_path.suffix}", lr_dir / f"{hr_path.stem}x{scale}.png",
                 lr_dir / hr_path.name):
        if cand.is_file():
            return cand
    return None


def load_pairs(source: str | Path, scale: int, split: str = "train", min_size: int = 0) -> list[ImagePair]:
    """Load (LR, HR) pairs from a folder layout or the built-in data (``source='builtin'``)."""
    if scale < 1 or int(scale) != scale:
        raise ValueError(f"scale must be a positive integer, got {scale}")
    pairs: list[ImagePair] = []
    if str(source) == "builtin":
        for name, hr in builtin_images("valid" if split in ("valid", "eval") else "train"):
            hr = modcrop(hr, scale)
            pairs.append(ImagePair(name, make_lr(hr, scale), hr))
        return pairs
    hr_dir, lr_dir = find_layout(source, scale, "valid" if split in ("valid", "eval") else "train")
    paths = list_images(hr_dir)
    stems = [p.stem for p in paths]  # an image is named by its stem; two files with one stem by their full names
    for hr_path in paths:
        full = read_image(hr_path)
        hr = modcrop(full, scale)
        if min(hr.shape[:2]) < max(min_size, scale):
            raise ImageError(f"{hr_path}: {full.shape[1]}x{full.shape[0]} is too small for scale {scale}"
                             f"{f' and patches of {min_size} px' if min_size else ''}; remove it from the folder.")
        lr_path = _lr_file(lr_dir, hr_path, scale) if lr_dir is not None else None
        if lr_path is None:
            lr = make_lr(hr, scale)
        else:
            lr = read_image(lr_path)
            want = (hr.shape[0] // scale, hr.shape[1] // scale)
            if lr.shape[:2] != want:
                raise ImageError(
                    f"{lr_path}: LR is {lr.shape[1]}x{lr.shape[0]} but {hr_path.name} mod-cropped to x{scale} "
                    f"needs {want[1]}x{want[0]}. The LR file belongs to another scale or image; fix or remove it "
                    "(without LR files, edgesr synthesises LR with MATLAB bicubic).")
        pairs.append(ImagePair(hr_path.stem if stems.count(hr_path.stem) == 1 else hr_path.name, lr, hr))
    if not pairs:
        raise DataError(f"{hr_dir}: no images found")
    return pairs


_CROP_SUFFIX = re.compile(r"(_\d+_\d+|_s\d{3,})$")


def rescaled_pairs(pairs: list[ImagePair], factors: tuple[float, ...], scale: int, min_lr: int = 0) -> list[ImagePair]:
    """Each pair's HR image reduced by each factor (MATLAB bicubic, antialiased), mod-cropped to ``scale``, with
    its LR made from it by the protocol (:func:`make_lr`), named ``<name>@<factor>``; copies whose LR is smaller
    than ``min_lr`` on a side are left out (``data.train_rescale``)."""
    out = []
    for f in factors:
        for p in pairs:
            if p.hr.dtype == np.uint16:
                hr = np.clip(np.round(imresize(p.hr.astype(np.float64) / 65535.0, f) * 65535.0), 0, 65535)
                hr = modcrop(hr.astype(np.uint16), scale)
            else:
                hr = modcrop(imresize(p.hr, f), scale)
            if min(hr.shape[:2]) // scale >= max(min_lr, 1):
                out.append(ImagePair(f"{p.name}@{f:g}", make_lr(hr, scale), hr))
    return out


def source_photo(name: str) -> str:
    """The photograph a training image was cropped from: ``<photo>_<y>_<x>`` (crops named by their offset, as
    in ../shared/data/train/photos) and ``<photo>_s<NNN>`` (BasicSR's DIV2K sub-images) name ``<photo>``; any
    other name is a photograph of its own."""
    stem = Path(name).stem if Path(name).suffix.lower() in IMAGE_SUFFIXES else name
    return _CROP_SUFFIX.sub("", stem) or stem


def holdout_split(pairs: list[ImagePair], photos: int, source: str | Path
                  ) -> tuple[list[ImagePair], list[ImagePair], list[str]]:
    """``pairs`` split into (training, validation, held-out photographs): ``photos`` whole source photographs
    (:func:`source_photo`) leave training, so no crop of a validation image's photograph is trained on, and the
    first crop of each (by name) validates. Which photographs is fixed by their names' hashes, not by the
    folder's order: adding images to the folder moves a photograph in or out only when it ranks among the
    first ``photos``."""
    groups: dict[str, list[ImagePair]] = {}
    for pair in pairs:
        groups.setdefault(source_photo(pair.name), []).append(pair)
    if len(groups) < 2:
        raise DataError(f"{source}: data.valid: holdout takes whole photographs out of training, but its "
                        f"{len(pairs)} images are crops of one photograph ({next(iter(groups))}); nothing would be "
                        f"left to train on. Give data.valid a folder of its own.")
    if not 1 <= photos < len(groups):
        raise DataError(f"{source}: data.valid_holdout is {photos}, but its {len(pairs)} images come from "
                        f"{len(groups)} photographs (crops named <photo>_<y>_<x> or <photo>_s<NNN> count as one); "
                        f"hold out between 1 and {len(groups) - 1}, or give data.valid a folder of its own.")
    held = sorted(sorted(groups, key=lambda g: hashlib.sha256(g.encode()).hexdigest())[:photos])
    valid = [min(groups[g], key=lambda p: p.name) for g in held]
    train = [p for p in pairs if source_photo(p.name) not in set(held)]
    return train, valid, held


def parity_image() -> np.ndarray:
    """A real photograph cropped to an odd size (67 x 45), so dynamic shapes and borders are exercised (the
    exporters' parity check)."""
    _, img = builtin_images("valid")[0]
    return img[101:146, 150:217]


def set_name(source: str) -> str:
    """How an evaluation set is named in reports: ``builtin`` or the folder's name."""
    return "builtin" if source == "builtin" else Path(source).name
