"""PyTorch, for model artifacts (safetensors + manifest): CPU, or CUDA with ``device='cuda'``, the GPU path
that runs on any NVIDIA machine with PyTorch (no TensorRT needed). Options, as users of NTIRE-style timing
expect them: ``dtype`` fp32 / fp16 / bf16 (weights and activations; input and output stay float32 at the
boundary), ``channels_last`` memory format, ``compile`` (``torch.compile``) and, on CUDA, ``cuda_graphs``
(one graph captured per input shape, replayed; inputs copied into its static buffer). Re-parameterizable
students run in their collapsed (deployed) form. Needs the training extra (``pip install 'edgesr[train]'``);
torch is imported only when used."""

from __future__ import annotations

import numpy as np

from .base import BACKENDS, Backend

__all__ = ["TorchBackend"]

DTYPES = ("fp32", "fp16", "bf16")


@BACKENDS.register("torch")
class TorchBackend(Backend):
    name = "torch"
    kinds = ("model",)
    module, package = "torch", "PyTorch"
    fix = "Install PyTorch: pip install 'edgesr[train]'."

    def __init__(self, threads: int = 0, device: str = "cpu", dtype: str = "fp32", channels_last: bool = False,
                 compile: bool = False, cuda_graphs: bool = False):
        super().__init__(threads)
        if dtype not in DTYPES:
            raise ValueError(f"torch dtype {dtype!r}: use one of {', '.join(DTYPES)}")
        if cuda_graphs and not str(device).startswith("cuda"):
            raise ValueError("cuda_graphs needs device='cuda' (CUDA graphs capture GPU work)")
        self.device, self.dtype, self.channels_last, self.compile, self.cuda_graphs = (
            device, dtype, channels_last, compile, cuda_graphs)
        self.model = None
        self._graphs: dict = {}

    def _load(self, artifact) -> None:
        import torch

        from edgesr.modelio import load_model
        from edgesr.models import deploy_form

        if self.device == "cpu":
            torch.set_num_threads(self.threads)
        if str(self.device).startswith("cuda") and not torch.cuda.is_available():
            from .base import BackendUnavailable

            raise BackendUnavailable(f"torch backend: device {self.device!r}, but PyTorch sees no CUDA device "
                                     f"(PyTorch {torch.__version__}); use device='cpu', or a CUDA build on an NVIDIA GPU")
        model, _ = deploy_form(load_model(artifact), artifact.manifest.get("arch", {}))
        self._torch_dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[self.dtype]
        model = model.eval().to(self.device, dtype=self._torch_dtype)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = torch.compile(model) if self.compile else model

    def _forward(self, x):
        out = self.model(x)
        if isinstance(out, tuple):  # a multi-output model: the selected scale (default the first, the manifest's)
            out = out[self.output_index]
        return out

    def _run(self, lr: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            x = torch.from_numpy(lr).to(self.device, dtype=self._torch_dtype)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            if self.cuda_graphs:
                out = self._graph_run(x)
            else:
                out = self._forward(x)
            return out.float().cpu().numpy()

    def _graph_run(self, x):
        """Replay the CUDA graph captured for this input shape (captured on first use, after warm-up)."""
        import torch

        key = tuple(x.shape)
        if key not in self._graphs:
            static_in = x.clone()
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                for _ in range(3):  # warm-up on a side stream, as graph capture requires
                    self._forward(static_in)
            torch.cuda.current_stream().wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                static_out = self._forward(static_in)
            self._graphs[key] = (graph, static_in, static_out)
        graph, static_in, static_out = self._graphs[key]
        static_in.copy_(x)
        graph.replay()
        return static_out.clone()

    def close(self) -> None:
        super().close()
        self.model = None
        self._graphs.clear()

    def describe(self) -> dict:
        import torch

        d = {"backend": "torch", "version": torch.__version__, "device": self.device, "threads": self.threads,
             "dtype": self.dtype, "channels_last": self.channels_last, "compile": self.compile,
             "cuda_graphs": self.cuda_graphs}
        if str(self.device).startswith("cuda") and torch.cuda.is_available():
            d["gpu"] = torch.cuda.get_device_name(torch.device(self.device))
        return d
