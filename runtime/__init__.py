"""What ships to a device: one Backend contract, one file per backend, and the Upscaler. Imports numpy (and
the runtime it runs), never torch, training, compression or the exporter: an ONNX-only device needs only
``pip install edgesr``.

Adding a backend is one file that registers a :class:`Backend` subclass, plus its import below.
"""

from . import onnxruntime_backend, openvino_backend, pillow_backend, tensorrt_backend, torch_backend  # noqa: F401  (registration: one line per backend)
from .base import (BACKENDS, Backend, BackendUnavailable, InputError, check_input, default_backend,
                   open_backend)
from .onnxruntime_backend import OnnxRuntimeBackend, ort_session
from .openvino_backend import OpenVinoBackend
from .torch_backend import TorchBackend
from .upscaler import Upscaler

__all__ = ["BACKENDS", "Backend", "BackendUnavailable", "InputError", "check_input", "default_backend",
           "open_backend", "OnnxRuntimeBackend", "OpenVinoBackend", "TorchBackend", "ort_session", "Upscaler"]
