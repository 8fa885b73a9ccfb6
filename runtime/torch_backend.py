"""PyTorch, for model artifacts (safetensors + manifest): CPU, or CUDA with ``device='cuda'``, the GPU path
that runs on any NVIDIA machine with PyTorch (no TensorRT needed). Options, as users of NTIRE-style timing
expect them: ``dtype`` fp32 / fp16 / bf16 (weights and activations; input and output stay float32 at the
boundary), ``channels_last`` memory format, ``compile`` (``torch.compile``) and, on CUDA, ``cuda_graphs``
(one graph captured per input shape, replayed; inputs copied into its static buffer). On CUDA the backend
exposes its stages (``prepare``, ``upload``, ``compute``, ``download``, ``synchronize``, ``gpu_event``) for the
GPU harness's CUDA-event timing, like the TensorRT backend. Re-parameterizable
students run in their collapsed (deployed) form. Needs the training extra (``pip install 'edgesr[train]'``);
torch is imported only when used."""

from __future__ import annotations

import numpy as np

from .base import BACKENDS, Backend

__all__ = ["TorchBackend"]

DTYPES = ("fp32", "fp16", "bf16")


class _TorchEvent:
    """A CUDA timing event on PyTorch's current stream, with the helper's interface (record, synchronize,
    elapsed_ms)."""

    def __init__(self, event):
        self.event = event

    def record(self) -> "_TorchEvent":
        self.event.record()
        return self

    def synchronize(self) -> None:
        self.event.synchronize()

    def elapsed_ms(self, end: "_TorchEvent") -> float:
        return float(self.event.elapsed_time(end.event))


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
        self.model = self._eager = None
        self._graphs: dict = {}
        self._io: dict = {}

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
        self._eager = model
        self.model = torch.compile(model) if self.compile else model
        self.uint8_native = True

    def _select_output(self) -> None:
        """One head of a multi-scale model alone: the traced graph returns that output, and the layers only the
        other heads use are dropped (torch.fx dead-code elimination), so x2 from an x2+x4 student costs what x2
        does. A model torch.fx cannot trace keeps running every head (the selected output is returned)."""
        import torch.fx

        try:
            gm = torch.fx.symbolic_trace(self._eager)
        except Exception:  # noqa: BLE001 - data-dependent control flow: every head runs, one is returned
            return
        out = next(n for n in gm.graph.nodes if n.op == "output")
        if not isinstance(out.args[0], (tuple, list)):
            return
        out.args = (out.args[0][self.output_index],)
        gm.graph.eliminate_dead_code()
        gm.delete_all_unused_submodules()
        gm.recompile()
        self._eager = gm.eval()
        self.model = torch.compile(gm) if self.compile else gm
        self._graphs.clear()

    def _forward(self, x):
        out = self.model(x)
        if isinstance(out, tuple):  # a multi-output model: the selected scale (default the first, the manifest's)
            out = out[self.output_index]
        return out

    def _run(self, lr: np.ndarray) -> np.ndarray:
        import torch

        if self._cuda:
            self.prepare(lr)
            self.upload()
            self.compute()
            out = self.download()
            self.synchronize()
            return out.copy()
        with torch.inference_mode():
            x = torch.from_numpy(lr).to(self._torch_dtype)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            return self._forward(x).float().numpy()

    def _run_uint8(self, frames: np.ndarray) -> tuple[np.ndarray, float]:
        """Bytes cross to the device and back (4x less than float32 each way); the conversions run there, in
        float32 as the ONNX 8-bit form does them (divide by 255; multiply by 255, round half to even, clamp)."""
        import torch

        with torch.inference_mode():
            # a read-only frame (np.frombuffer over a capture buffer) is copied: PyTorch warns on such arrays
            x = torch.from_numpy(frames if frames.flags.writeable else frames.copy())
            if self._cuda:  # through pinned host buffers kept per shape, as the float path's are
                key = ("uint8", tuple(frames.shape))
                if key not in self._io:
                    self._io[key] = [torch.empty(frames.shape, dtype=torch.uint8, pin_memory=True), None]
                pinned_in = self._io[key][0]
                pinned_in.numpy()[...] = frames
                x = pinned_in.to(self.device, non_blocking=True)
            # NCHW-contiguous as the float path's input: a channels-last view would pick other convolution
            # kernels, whose float32 sums differ in the last bit and round some pixels the other way.
            x = x.permute(0, 3, 1, 2).contiguous().float().div_(255.0)
            y = self._forward(self._cast(x)).float()
            total = y.sum()
            u8 = y.mul_(255.0).round_().clamp_(0.0, 255.0).to(torch.uint8).permute(0, 2, 3, 1).contiguous()
            if not self._cuda:
                return u8.numpy(), float(total)
            if self._io[key][1] is None or tuple(self._io[key][1].shape) != tuple(u8.shape):
                self._io[key][1] = torch.empty(tuple(u8.shape), dtype=torch.uint8, pin_memory=True)
            pinned_out = self._io[key][1]
            pinned_out.copy_(u8, non_blocking=True)
            total = float(total)  # synchronises the stream: the copy above is done too
            torch.cuda.current_stream().synchronize()
            return pinned_out.numpy().copy(), total

    # ---- the GPU stages (CUDA only): the GPU harness times each with CUDA events; run() chains them. Input and
    # output cross the bus as float32 through pinned host buffers (as TensorRT's do); the cast to fp16/bf16 and
    # channels-last happen on the GPU, inside compute().
    @property
    def _cuda(self) -> bool:
        return str(self.device).startswith("cuda")

    @property
    def gpu_timing(self) -> bool:  # the GPU timing protocol (Backend.gpu_timing): on CUDA only
        return self._cuda

    def gpu_event(self):
        import torch

        return _TorchEvent(torch.cuda.Event(enable_timing=True))

    def prepare(self, lr: np.ndarray) -> None:
        import torch

        shape = tuple(lr.shape)
        if shape not in self._io:
            pinned_in = torch.empty(shape, dtype=torch.float32, pin_memory=True)
            dev_in = torch.empty(shape, dtype=torch.float32, device=self.device)
            with torch.inference_mode():
                out = self._forward(self._cast(dev_in))
            pinned_out = torch.empty(tuple(out.shape), dtype=torch.float32, pin_memory=True)
            self._io[shape] = (pinned_in, dev_in, pinned_out)
        self._cur = self._io[shape]
        self._cur[0].numpy()[...] = lr

    def _cast(self, x):
        import torch

        x = x.to(self._torch_dtype)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def upload(self) -> None:
        pinned_in, dev_in, _ = self._cur
        dev_in.copy_(pinned_in, non_blocking=True)

    def compute(self) -> None:
        import torch

        with torch.inference_mode():
            self._out = self._graph_run(self._cur[1]) if self.cuda_graphs else self._forward(self._cast(self._cur[1])).float()

    def download(self) -> np.ndarray:
        pinned_out = self._cur[2]
        pinned_out.copy_(self._out, non_blocking=True)
        return pinned_out.numpy()

    def synchronize(self) -> None:
        import torch

        torch.cuda.current_stream().synchronize()

    def layer_traffic(self, lr_shape: tuple) -> dict:
        """Bytes each leaf layer reads and writes (its input and output activations and its weights, at the
        backend's dtype) and its multiply-accumulates, summed over one forward pass at ``lr_shape``: what a
        memory-bound GPU must move per frame when nothing is fused (an upper bound on traffic for fused
        kernels), and the MACs it computes. Hooks on the eager model; one pass on the backend's device."""
        import torch

        tot = {"bytes": 0, "macs": 0, "layers": 0}

        def hook(mod, inputs, output):
            outs = output if isinstance(output, (tuple, list)) else (output,)
            ins = [t for t in inputs if torch.is_tensor(t)]
            n = sum(t.numel() * t.element_size() for t in (*ins, *outs) if torch.is_tensor(t))
            n += sum(p.numel() * p.element_size() for p in mod.parameters(recurse=False))
            tot["bytes"] += n
            tot["layers"] += 1
            if isinstance(mod, torch.nn.Conv2d) and torch.is_tensor(outs[0]):
                tot["macs"] += outs[0].numel() * (mod.weight.numel() // mod.weight.shape[0])
            elif isinstance(mod, torch.nn.ConvTranspose2d) and ins:  # weight: in x out/groups x kh x kw
                tot["macs"] += ins[0].numel() * (mod.weight.numel() // mod.weight.shape[0])
            elif isinstance(mod, torch.nn.Linear) and torch.is_tensor(outs[0]):
                tot["macs"] += outs[0].numel() * mod.in_features

        model = self._eager
        handles = [m.register_forward_hook(hook) for m in model.modules() if not list(m.children())]
        try:
            with torch.inference_mode():
                x = torch.zeros(lr_shape, dtype=self._torch_dtype, device=self.device)
                model(x.contiguous(memory_format=torch.channels_last) if self.channels_last else x)
        finally:
            for h in handles:
                h.remove()
        return tot

    def _graph_run(self, x):
        """Replay the CUDA graph captured for this input shape (captured on first use, after warm-up); the
        graph reads the input buffer in place and writes its own output buffer."""
        import torch

        key = tuple(x.shape)
        if key not in self._graphs:
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                for _ in range(3):  # warm-up on a side stream, as graph capture requires
                    self._forward(self._cast(x))
            torch.cuda.current_stream().wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                static_out = self._forward(self._cast(x)).float()
            self._graphs[key] = (graph, static_out)
        graph, static_out = self._graphs[key]
        graph.replay()
        return static_out

    def close(self) -> None:
        super().close()
        self.model = self._eager = None
        self._graphs.clear()
        self._io.clear()

    def describe(self) -> dict:
        import torch

        d = {"backend": "torch", "version": torch.__version__, "device": self.device, "threads": self.threads,
             "dtype": self.dtype, "channels_last": self.channels_last, "compile": self.compile,
             "cuda_graphs": self.cuda_graphs}
        if str(self.device).startswith("cuda") and torch.cuda.is_available():
            d["gpu"] = torch.cuda.get_device_name(torch.device(self.device))
        return d
