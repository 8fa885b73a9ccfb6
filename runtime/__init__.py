"""What ships to a device: one Backend contract (PyTorch, ONNX Runtime) and the Upscaler.

The runtime imports neither training, compression nor the exporter. TensorRT is not available as a backend
in this version (see README: its engine builder is not written yet); ``edgesr doctor`` says whether the
TensorRT Python package and a GPU are present.
"""

from .backends import (BACKENDS, Backend, BackendUnavailable, InputError, OnnxRuntimeBackend, TorchBackend,
                       check_input, open_backend)
from .upscaler import Upscaler

__all__ = ["BACKENDS", "Backend", "BackendUnavailable", "InputError", "check_input", "OnnxRuntimeBackend", "TorchBackend", "open_backend",
           "Upscaler"]
