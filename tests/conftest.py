import os
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("EDGESR_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def benchmark_root() -> Path:
    root = SHARED / "benchmark"
    if not (root / "Set5" / "HR").is_dir():
        pytest.skip(f"shared benchmark data not found at {root} (set EDGESR_SHARED_DATA)")
    return root


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    np.random.seed(0)
    torch.set_num_threads(2)


@pytest.fixture(scope="session")
def builtin_train():
    from edgesr.data.datasets import load_pairs
    return load_pairs("builtin", 2, "train")


@pytest.fixture(scope="session")
def builtin_valid():
    from edgesr.data.datasets import load_pairs
    return load_pairs("builtin", 2, "valid")
