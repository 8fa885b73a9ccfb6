"""Pretrained students shipped inside the package: artifact directories (manifest + payload, the same
format every stage writes) under this folder, and ``index.json`` with what each one is and what it
measured (parameters, MACs, PSNR/SSIM on Set5/Set14 x scale through the protocol, the recipe and command
that trained it, its training steps). A pretrained name is accepted wherever an artifact path is
(``edgesr upscale msrep-s-x2-int8 ...``, ``Upscaler.open("msrep-s-x2")``, a recipe's ``stage: load`` with
``path: msrep-s-x2``). Torch-free.

Maintainers add models with ``python -m edgesr.benchmarks.pretrained_build ...`` (see that module).
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

__all__ = ["ROOT", "index", "names", "path_of"]

ROOT = Path(__file__).resolve().parent


@lru_cache(maxsize=1)
def _index() -> dict:
    f = ROOT / "index.json"
    return json.loads(f.read_text()) if f.is_file() else {"models": {}}


def index() -> dict:
    """{name: record} for every shipped model."""
    return dict(_index()["models"])


def names() -> list[str]:
    return sorted(_index()["models"])


def path_of(name: str) -> Path | None:
    """The artifact directory of a pretrained model, or None if no model has that name."""
    rec = _index()["models"].get(name)
    return ROOT / rec["dir"] if rec else None
