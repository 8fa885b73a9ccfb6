"""The Backend contract, one registry of backends, and the input checks every backend applies.

A backend loads an artifact and runs ``lr`` (N x 3 x H x W float32 RGB in [0, 1]) to ``sr`` (N x 3 x sH x
sW float32, unclamped: clamping and rounding are the Upscaler's job). Timing loops live in the benchmark
harness, never here. Each backend is one file registering one class; ``available()`` says whether it can
run on this machine and why not, so ``edgesr doctor`` and the CLI's ``--backend`` choices read the
registry instead of a list. Nothing here imports torch.
"""

from __future__ import annotations

import importlib
import importlib.util
import os

import numpy as np

from edgesr.artifacts import Artifact, ArtifactError, last_quantization, read_artifact
from edgesr.errors import EdgesrError
from edgesr.registry import Registry

__all__ = ["Backend", "BackendUnavailable", "InputError", "OutputError", "BACKENDS", "check_input", "open_backend",
           "default_backend", "resolve_threads", "check_finite", "nonfinite_error", "int8_weight_bits", "saturation_risk"]


class BackendUnavailable(EdgesrError, RuntimeError):
    """The runtime is not installed or cannot run here; the message says why and what to install."""


class InputError(EdgesrError, ValueError):
    """An input array that breaks the model I/O convention (N x 3 x H x W float in [0, 1], finite)."""


class OutputError(EdgesrError, RuntimeError):
    """A model output that is not an image (NaN or Inf): refused instead of written."""


BACKENDS: Registry = Registry("backend")


def resolve_threads(threads: int) -> int:
    """0: all cores; a positive count as it is; anything else is refused (``threads=-2`` used to mean all cores)."""
    if not isinstance(threads, (int, np.integer)) or isinstance(threads, bool) or threads < 0:
        raise ValueError(f"threads={threads!r}: give 0 (all cores) or a positive number of threads")
    return int(threads) if threads > 0 else (os.cpu_count() or 1)


def check_input(lr: np.ndarray) -> np.ndarray:
    """The array a backend runs: N x 3 x H x W, float, finite, in [0, 1]; returned as contiguous float32.
    Anything else raises :class:`InputError` instead of producing a plausible-looking image. (Two passes
    over the input: a fraction of a percent of a network's time.)"""
    if not isinstance(lr, np.ndarray):
        raise InputError(f"expected a numpy array, got {type(lr).__name__}")
    if lr.size == 0:
        raise InputError(f"the input array is empty (shape {lr.shape}); give N x 3 x H x W with at least one image "
                         "of at least 1 x 1 pixels")
    if lr.ndim != 4 or lr.shape[1] != 3 or lr.shape[2] < 1 or lr.shape[3] < 1:
        raise InputError(f"expected an N x 3 x H x W array (RGB, channels first), got shape {lr.shape}; "
                         "transpose an H x W x 3 image with img.transpose(2, 0, 1)[None]")
    if not np.issubdtype(lr.dtype, np.floating):
        raise InputError(f"expected float values in [0, 1], got dtype {lr.dtype}; divide 8-bit images by 255 "
                         "(edgesr.imaging.to_float) or use edgesr.runtime.Upscaler, which converts")
    lo, hi = float(lr.min()), float(lr.max())
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise InputError(f"the input holds NaN or Inf values (min {lo}, max {hi}); check the code that made it")
    if lo < 0.0 or hi > 1.0:
        raise InputError(f"input values span [{lo:.4g}, {hi:.4g}], outside [0, 1]; the models take RGB scaled "
                         "to [0, 1] (divide 8-bit images by 255, clip after colour conversions)")
    return np.ascontiguousarray(lr, dtype=np.float32)


def int8_weight_bits(manifest: dict) -> int | None:
    """The weight range of an INT8 artifact, from the manifest's last quantizing step: 7 or 8 bits; None when
    the artifact is not INT8. Artifacts quantized before the quantizer recorded it had 8-bit weights."""
    if "int8" not in str(manifest.get("precision", "")):
        return None
    return int(last_quantization(manifest).get("weight_bits", 8))


def saturation_risk(manifest: dict) -> bool:
    """Whether this CPU would run this INT8 artifact's convolutions with saturating int16 pair sums: 8-bit
    weights on an x86 CPU without VNNI/AMX (:func:`edgesr.hostinfo.u8s8_saturates`)."""
    from edgesr.hostinfo import u8s8_saturates

    return int8_weight_bits(manifest) == 8 and u8s8_saturates()


class Backend:
    """Base of every backend: the contract, the artifact-kind check, and a context manager that closes it.

    Subclasses set ``name``, ``kinds`` (the artifact kinds they run), ``module`` and ``package`` (the Python
    module they need and its human name), ``fix``, and implement ``_load``, ``_run``, ``close`` and
    ``describe``; ``version_of`` when ``module.__version__`` does not say enough."""

    name = ""
    kinds: tuple[str, ...] = ()
    module = ""
    package = ""
    fix = ""
    """How to make the backend available (shown with ``available()``'s reason)."""
    gpu_timing = False
    """The GPU timing protocol (optional): a backend that, as loaded, runs on an NVIDIA GPU offers the stages the
    GPU harness times with CUDA events (:data:`edgesr.benchmarks.gpu_latency.GPU_STAGES`): ``prepare(lr)``
    (input into a pinned host buffer), ``upload()``, ``compute()``, ``download() -> output``,
    ``synchronize()``, ``gpu_event()`` (a CUDA event on its stream), and says so here (the torch backend on
    CUDA, TensorRT). ``layer_traffic`` adds bytes and MACs per frame where the backend can count them."""

    def layer_traffic(self, lr_shape: tuple) -> dict | None:
        """``{"bytes", "macs", "layers"}`` one inference of ``lr_shape`` moves and computes, or None (unknown)."""
        return None

    baseline = False
    """A baseline (Pillow's resize): it runs only the bicubic baseline artifact, so it is never the default for an
    artifact and never suggested for one; the benchmark times it beside the models like any backend."""
    @classmethod
    def run_dir_options(cls, run_dir) -> dict:
        """Keyword arguments for a backend opened inside a run directory (the benchmark), e.g. a cache of
        compiled models kept there for the next run."""
        return {}

    interleave_options: dict = {}
    """Keyword arguments for a backend timed interleaved with others (the benchmark): settings that keep it
    from disturbing the next backend in a round, e.g. ONNX Runtime's thread spinning off."""

    def __init__(self, threads: int = 0):
        self.threads = resolve_threads(threads)
        self.scale = 0
        self.artifact: Artifact | None = None

    @classmethod
    def available(cls) -> tuple[bool, str]:
        """(can run here, version or the reason it cannot); imports the runtime only when it is installed."""
        if importlib.util.find_spec(cls.module) is None:
            return False, f"{cls.package} is not installed"
        return True, cls.version_of(importlib.import_module(cls.module))

    @classmethod
    def version_of(cls, mod) -> str:
        return mod.__version__

    def load(self, artifact: Artifact) -> None:
        if artifact.kind not in self.kinds:
            runs = " or ".join(repr(k) for k in self.kinds)
            others = [n for n in BACKENDS.names() if artifact.kind in BACKENDS.get(n).kinds
                      and not BACKENDS.get(n).baseline]
            raise ArtifactError(f"{artifact.path}: the {self.name} backend runs {runs} artifacts; this is "
                                f"{artifact.kind!r}. Use the {' or '.join(others) or 'matching'} backend"
                                + (" for ONNX." if artifact.kind == "onnx" else ", or export it first (stage: export)."))
        ok, reason = self.available()
        if not ok:
            raise BackendUnavailable(f"the {self.name} backend cannot run here: {reason}. {self.fix}")
        self._load(artifact)
        self.scale, self.artifact = artifact.scale, artifact

    output_index = 0
    """Which output of a multi-scale artifact ``run`` returns (its position in the manifest's scales)."""

    def select_scale(self, scale: int) -> None:
        """Return the x``scale`` output of a multi-scale artifact from now on."""
        scales = [int(v) for v in self.artifact.manifest["scales"]]
        if scale not in scales:
            raise InputError(f"{self.artifact.path}: emits x{scales}, not x{scale}; pick one of those (--scale)")
        self.output_index, self.scale = scales.index(scale), scale
        if len(scales) > 1:
            self._select_output()

    def _select_output(self) -> None:
        """A backend that can run one output of a graph alone rebuilds itself for ``output_index``, so that one
        head of a multi-scale artifact costs what a single-scale graph costs (default: every head runs and the
        selected output is returned)."""

    def _head(self, n_outputs: int) -> int:
        """The position of the selected output among ``n_outputs`` (0 once a backend runs that output alone)."""
        return self.output_index if n_outputs > 1 else 0

    def run(self, lr: np.ndarray) -> np.ndarray:
        """``lr`` checked against the I/O convention and the manifest (size multiple), then run."""
        if self.artifact is None:
            raise RuntimeError(f"{self.name} backend: load() an artifact before run()")
        lr = check_input(lr)
        m = self.artifact.manifest.size_multiple
        if m > 1 and (lr.shape[2] % m or lr.shape[3] % m):
            raise InputError(f"{self.artifact.path}: this model needs H and W to be multiples of {m} (its manifest's "
                             f"size_multiple), got {lr.shape[2]}x{lr.shape[3]}; pad the input, or use "
                             "edgesr.runtime.Upscaler, which pads and crops back")
        self._check_fixed(lr.shape[2:])
        if self.artifact.manifest.max_batch == 1 and lr.shape[0] > 1:  # a graph bound to batch 1
            return np.concatenate([self._run(lr[i:i + 1]) for i in range(lr.shape[0])])
        return self._run(lr)

    def _check_fixed(self, hw) -> None:
        fixed = self.artifact.manifest.input_size
        if fixed and tuple(hw) != tuple(fixed):
            raise InputError(f"{self.artifact.path}: this graph runs at {fixed[1]}x{fixed[0]} only (its authors exported "
                             f"it at a fixed size), got {hw[1]}x{hw[0]}; use edgesr.runtime.Upscaler (and the CLI), "
                             "which tile images to that size")

    uint8_native = False
    """Whether :meth:`run_uint8` converts inside the runtime (an 8-bit form of the graph, or on the device)
    rather than around :meth:`run` in NumPy. Set by ``_load``; the Upscaler takes the 8-bit path when it is."""

    def run_uint8(self, frames: np.ndarray) -> np.ndarray:
        """``frames`` (N x H x W x 3 uint8 RGB, the layout frames arrive in) -> N x sH x sW x 3 uint8, rounded
        and clamped as :func:`edgesr.imaging.to_uint8` rounds. Inside the runtime where the backend can
        (``uint8_native``: :mod:`edgesr.runtime.uint8_io` for ONNX graphs, on the device for torch); else through
        :meth:`run`. An output that held NaN or Inf raises :class:`OutputError` either way."""
        if self.artifact is None:
            raise RuntimeError(f"{self.name} backend: load() an artifact before run_uint8()")
        if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[3] != 3:
            raise InputError(f"run_uint8 takes N x H x W x 3 uint8 frames, got "
                             f"{getattr(frames, 'dtype', type(frames).__name__)} {getattr(frames, 'shape', '')}; "
                             "float or 16-bit images go through run() (or edgesr.runtime.Upscaler, which picks)")
        if frames.size == 0:
            raise InputError(f"the frames array is empty (shape {frames.shape}); give N x H x W x 3 with at least one "
                             "frame of at least 1 x 1 pixels")
        m = self.artifact.manifest.size_multiple
        if m > 1 and (frames.shape[1] % m or frames.shape[2] % m):
            raise InputError(f"{self.artifact.path}: this model needs H and W to be multiples of {m} (its manifest's "
                             f"size_multiple), got {frames.shape[1]}x{frames.shape[2]}; pad the input, or use "
                             "edgesr.runtime.Upscaler, which pads and crops back")
        self._check_fixed(frames.shape[1:3])
        if self.artifact.manifest.max_batch == 1 and frames.shape[0] > 1:
            return np.concatenate([self.run_uint8(frames[i:i + 1]) for i in range(frames.shape[0])])
        frames = np.ascontiguousarray(frames)
        if not self.uint8_native:
            from edgesr.imaging import to_uint8

            sr = self.run(frames.transpose(0, 3, 1, 2).astype(np.float32) / np.float32(255.0))
            check_finite(self, sr)
            return np.ascontiguousarray(to_uint8(sr).transpose(0, 2, 3, 1))
        out, total = self._run_uint8(frames)
        if not np.isfinite(total):
            raise nonfinite_error(self, None, out.size)
        return out

    def _run_uint8(self, frames: np.ndarray) -> tuple[np.ndarray, float]:
        """(the uint8 N x sH x sW x 3 output, the sum of the float output before rounding) for backends that
        set ``uint8_native``."""
        raise NotImplementedError

    def _load(self, artifact: Artifact) -> None:
        raise NotImplementedError

    def _run(self, lr: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def close(self) -> None:
        self.artifact = None

    def describe(self) -> dict:
        raise NotImplementedError

    def __enter__(self) -> "Backend":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def nonfinite_error(backend, bad: int | None, size: int) -> OutputError:
    """The error for a backend output holding NaN or Inf, naming the artifact (``bad``: how many values, when
    known; the 8-bit form knows only that their sum is not finite)."""
    name = getattr(getattr(backend, "artifact", None), "path", None) or type(backend).__name__
    held = f"{bad:,} NaN or Inf value(s) of {size:,}" if bad is not None else f"NaN or Inf among its {size:,} values"
    return OutputError(f"{name}: the model's output holds {held}; its weights or its precision cannot compute this "
                       "input (a diverged training, an FP16 overflow). Re-train or re-export it (an FP32 artifact), "
                       "or use another backend.")


def check_finite(backend, sr: np.ndarray) -> np.ndarray:
    """``sr`` when every value is finite (one float64 reduction over it), else :func:`nonfinite_error`:
    clamping would turn NaN or Inf into black or white pixels."""
    if not np.isfinite(np.sum(sr, dtype=np.float64)):
        raise nonfinite_error(backend, int(np.size(sr) - np.count_nonzero(np.isfinite(sr))), int(np.size(sr)))
    return sr


def default_backend(art: Artifact) -> str:
    """The backend an artifact runs on when none is named: the first registered one that takes its kind and
    is available here."""
    fits = [n for n in BACKENDS.names() if art.kind in BACKENDS.get(n).kinds and not BACKENDS.get(n).baseline]
    for n in fits:
        if BACKENDS.get(n).available()[0]:
            return n
    if fits:
        return fits[0]  # load() will say why it cannot run
    raise ArtifactError(f"{art.path}: no backend runs {art.kind!r} artifacts; known backends: {BACKENDS.names()}")


def open_backend(artifact: Artifact | str | os.PathLike, backend: str | None = None, *, scale: int | None = None,
                 **kwargs) -> Backend:
    """Load an artifact (verified against its content hash; a path or a pretrained name) into a backend: by
    name, or the default for its kind (ONNX -> onnxruntime, model -> torch). ``scale`` picks the output of a
    multi-scale artifact (default: its first scale)."""
    art = artifact if isinstance(artifact, Artifact) else read_artifact(artifact)
    b = BACKENDS.build({"type": backend or default_backend(art), **kwargs})
    b.load(art)
    if scale is not None:
        b.select_scale(scale)
    return b
