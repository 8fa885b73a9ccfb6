"""PyTorch eager (CPU, or CUDA with ``device='cuda'``), for model artifacts (safetensors + manifest).
Needs the training extra (``pip install 'edgesr[train]'``); torch is imported only when used."""

from __future__ import annotations

import numpy as np

from .base import BACKENDS, Backend

__all__ = ["TorchBackend"]


@BACKENDS.register("torch")
class TorchBackend(Backend):
    name = "torch"
    kinds = ("model",)
    module, package = "torch", "PyTorch"
    fix = "Install PyTorch: pip install 'edgesr[train]'."

    def __init__(self, threads: int = 0, device: str = "cpu"):
        super().__init__(threads)
        self.device = device
        self.model = None

    def _load(self, artifact) -> None:
        import torch

        from edgesr.modelio import load_model

        if self.device == "cpu":
            torch.set_num_threads(self.threads)
        self.model = load_model(artifact).to(self.device)

    def _run(self, lr: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            out = self.model(torch.from_numpy(lr).to(self.device))
        if isinstance(out, tuple):  # a multi-output model: the selected scale (default the first, the manifest's)
            out = out[self.output_index]
        return out.float().cpu().numpy()

    def close(self) -> None:
        super().close()
        self.model = None

    def describe(self) -> dict:
        import torch

        return {"backend": "torch", "version": torch.__version__, "device": self.device, "threads": self.threads}
