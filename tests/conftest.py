import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("EDGESR_SHARED_DATA", REPO.parent / "shared" / "data"))


WEIGHTS = REPO.parent / "shared" / "weights"
"""Published third-party checkpoints (test data, never shipped; see its README)."""


def published_weights(name: str) -> Path:
    """A published checkpoint from ``../shared/weights``; the calling test skips when it is absent."""
    path = WEIGHTS / name
    if not path.is_file():
        pytest.skip(f"{path} absent (third-party checkpoints are read from ../shared/weights)")
    return path


def set5_psnr(artifact, scale: int, backend: str = "torch") -> float:
    """Set5 PSNR-Y of an artifact by the protocol (MATLAB-bicubic LR files, border = scale), one thread; the
    calling test skips without the shared benchmark data."""
    from edgesr.artifacts import read_artifact
    from edgesr.benchmarks.quality import measure_quality
    from edgesr.data.datasets import load_pairs
    from edgesr.runtime import open_backend

    set5 = SHARED / "benchmark" / "Set5"
    if not (set5 / "HR").is_dir():
        pytest.skip(f"{set5} absent")
    art = read_artifact(artifact)
    options = {"scale": scale} if len(art.manifest["scales"]) > 1 else {}
    b = open_backend(art, backend, threads=1, **options)
    return measure_quality(b, {"Set5": load_pairs(set5, scale, "eval")}, scale, 1)["Set5"]["psnr"]


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


@pytest.fixture(scope="session")
def tiny_student(tmp_path_factory):
    """An untrained 4-channel ABPN x2 exported to ONNX: the smallest real artifact, for I/O tests."""
    from edgesr.export.onnx import ExportConfig, export_stage
    from edgesr.modelio import save_model
    from edgesr.models import build_model

    root = tmp_path_factory.mktemp("tiny_student")
    torch.manual_seed(0)
    spec = {"type": "abpn", "scale": 2, "channels": 4, "n_body": 1}
    src = save_model(root / "m", build_model(spec), name="m", arch=spec)
    return call_stage(export_stage, ExportConfig(input="m"), name="m_onnx", out=root / "m_onnx", source=src)


@pytest.fixture(scope="session")
def tiny_student_d2s(tiny_student, tmp_path_factory):
    """The same student exported as PyTorch writes it (``tail_channels: 0``): its PixelShuffle a DepthToSpace."""
    from edgesr.artifacts import read_artifact
    from edgesr.export.onnx import ExportConfig, export_stage

    src = read_artifact(tiny_student.path.parent / "m")
    return call_stage(export_stage, ExportConfig(input="m", tail_channels=0), name="m_d2s",
                      out=tmp_path_factory.mktemp("tiny_student_d2s") / "m_d2s", source=src)


CONTEXT_KEYS = {"train_pairs", "val_pairs", "scale", "patch_size", "min_patch_std", "degradation", "seed", "threads",
                "latency_fn", "speedup_fn", "measure_backends", "val_degraded"}


def call_stage(fn, cfg, *, name: str, out, **kw):
    """Call a stage through its contract, ``fn(cfg, ctx, **inputs)``: context keywords (``train_pairs``,
    ``val_pairs``, ``scale``, ...; ``calib_pairs`` is ``train_pairs``) build the StageContext, the others
    (``source``/``input``, ``teacher``, ``init_from``) are the input artifacts."""
    from edgesr.stages import StageContext, run_stage, stage_table

    if "calib_pairs" in kw:
        kw["train_pairs"] = kw.pop("calib_pairs")
    if "source" in kw:
        kw["input"] = kw.pop("source")
    if "init" in kw:
        kw["init_from"] = kw.pop("init")
    from edgesr.pipeline import replacing

    ctx = StageContext(name=name, out=out, **{k: v for k, v in kw.items() if k in CONTEXT_KEYS})
    inputs = {k: v for k, v in kw.items() if k not in CONTEXT_KEYS and v is not None}
    sdef = next(stage_table().get(n) for n in stage_table().names() if stage_table().get(n).fn is fn)
    with replacing(Path(out)):  # as the runner does: the stage's earlier artifact is replaced when it runs again
        return run_stage(sdef, cfg, ctx, inputs)


def exported_and_quantized(spec: dict, root, train_pairs, val_pairs, *, calibration_images: int = 4, **quantize):
    """A freshly initialised ``spec`` (seed 0) saved, exported and quantized through the real stages, under
    ``root``: (the FP32 ONNX artifact, the INT8 one). ``quantize``: more QuantizeConfig options (``target``...)."""
    from edgesr.compress.ptq import QuantizeConfig, quantize_stage
    from edgesr.export.onnx import ExportConfig, export_stage
    from edgesr.modelio import save_model
    from edgesr.models import build_model

    root = Path(root)
    torch.manual_seed(0)
    src = save_model(root / "m", build_model(spec), name="m", arch=spec)
    fp32 = call_stage(export_stage, ExportConfig(input="m"), name="fp32", out=root / "fp32", source=src)
    int8 = call_stage(quantize_stage, QuantizeConfig(input="fp32", calibration_images=calibration_images,
                                                     calibration_patch=48, **quantize),
                      name="q", out=root / "q", source=fp32, calib_pairs=train_pairs, val_pairs=val_pairs[:1],
                      scale=spec.get("scale", 2), seed=0)
    return fp32, int8


# ------------------------------------------------------------------ the runtime-only install, simulated

BLOCKER = '''
import os, sys
BLOCKED = {"torch", "torchvision", "torchao", "torch_pruning", "nncf", "safetensors", "yaml", "onnx", "onnxscript",
           "onnxconverter_common", "sklearn", "matplotlib"} - set(os.environ.get("EDGESR_TEST_ALLOW", "").split(","))

class Hide:
    """Wraps a finder so that the training extra's packages are not found: as if never installed."""
    def __init__(self, inner):
        self.inner = inner
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            return None
        return self.inner.find_spec(name, path, target)
    def __getattr__(self, attr):
        return getattr(self.inner, attr)

sys.meta_path[:] = [Hide(f) for f in sys.meta_path]
from edgesr.cli import main
code = main(sys.argv[1:])
leaked = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
print("LEAKED", leaked)
sys.exit(code)
'''


def without_extras(*argv: str, allow: str = "") -> subprocess.CompletedProcess:
    """``edgesr ARGV`` as if only the base install were there (``allow``: training-extra packages present)."""
    return subprocess.run([sys.executable, "-c", BLOCKER, *map(str, argv)], capture_output=True, text=True,
                          cwd=REPO, timeout=300, env={**os.environ, "COLUMNS": "250", "EDGESR_TEST_ALLOW": allow})
