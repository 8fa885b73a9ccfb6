"""ONNX Runtime, for ONNX artifacts (FP32, FP16, INT8 Q/DQ), with the given execution providers (CPU by
default). :func:`ort_session` is the one place an ONNX Runtime session is built: every area that runs a
graph (the backend, export parity, FP16 checks, the machine yardstick) builds it here."""

from __future__ import annotations

import os

import numpy as np

from edgesr.artifacts import ArtifactError

from .base import BACKENDS, Backend, BackendUnavailable

__all__ = ["OnnxRuntimeBackend", "ort_session", "uint8_form"]


PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider",
             "openvino": "OpenVINOExecutionProvider", "dml": "DmlExecutionProvider", "coreml": "CoreMLExecutionProvider",
             "xnnpack": "XnnpackExecutionProvider", "rtx": "NvTensorRTRTXExecutionProvider"}
"""Short names accepted for ONNX Runtime execution providers (``--providers cuda,cpu``); full names pass as they are."""
PROVIDER_FIX = {
    "CUDAExecutionProvider": "install onnxruntime-gpu (CUDA 12) instead of onnxruntime, on a machine with an NVIDIA GPU",
    "TensorrtExecutionProvider": "install onnxruntime-gpu and TensorRT 10 (its libraries on LD_LIBRARY_PATH)",
    "OpenVINOExecutionProvider": "install onnxruntime-openvino, or use edgesr's openvino backend",
    "DmlExecutionProvider": "install onnxruntime-directml (Windows)",
    "CoreMLExecutionProvider": "ONNX Runtime's macOS wheels have it",
    "NvTensorRTRTXExecutionProvider": "pip install onnxruntime-ep-nv-tensorrt-rtx-cu12 (or -cu13; ONNX Runtime >= 1.24), "
                                      "on a machine with an RTX GPU (Ampere or newer) and its driver"}
PLUGIN_EPS = {"NvTensorRTRTXExecutionProvider": "onnxruntime_ep_nv_tensorrt_rtx"}
"""Execution providers that ship as ONNX Runtime plugin libraries (a package of their own): registered with
ONNX Runtime on first use, then attached to a session for the devices they report."""
_REGISTERED: set[str] = set()


def plugin_ep_devices(ep: str) -> tuple[list, str]:
    """(the devices plugin EP ``ep`` runs on, "" ) or ([], why it cannot run here): not installed, its library does
    not load (e.g. no CUDA runtime), or it found no supported GPU."""
    import importlib
    import importlib.util

    import onnxruntime as ort

    module = PLUGIN_EPS[ep]
    if importlib.util.find_spec(module) is None:
        return [], f"not installed ({PROVIDER_FIX[ep]})"
    if not hasattr(ort, "register_execution_provider_library"):
        return [], f"ONNX Runtime {ort.__version__} has no plugin EPs; upgrade to >= 1.24"
    mod = importlib.import_module(module)
    if ep not in _REGISTERED:
        try:
            ort.register_execution_provider_library(mod.get_ep_name(), mod.get_library_path())
        except Exception as exc:  # noqa: BLE001 - ONNX Runtime's Fail carries the loader's message
            msg = str(exc).split("with error: ")[-1].splitlines()[0]
            return [], f"installed, but its library does not load here ({msg})"
        _REGISTERED.add(ep)
    devices = [d for d in ort.get_ep_devices() if d.ep_name == ep]
    if not devices:
        return [], "installed and registered, but it found no GPU it supports (RTX, Ampere or newer)"
    return devices, ""


def ort_session(model: str | os.PathLike | bytes, *, threads: int = 0,
                providers: tuple[str, ...] = ("CPUExecutionProvider",), optimize: bool = True, spin: bool = True,
                profile_prefix: str | None = None, exact_u8s8: bool = False):
    """An ``InferenceSession`` on a file or serialized graph: ``threads`` intra-op threads (0: ONNX Runtime's
    default, all cores), one inter-op thread, full graph optimisation (``optimize=False`` keeps every
    tensor observable), warnings off. ``spin=False`` stops idle worker threads from spin-waiting after a run:
    ONNX Runtime's default keeps them busy for a while, which is faster alone but steals the cores from
    whatever runs next (measured in an interleaved benchmark: OpenVINO's median 24 -> 41 ms beside spinning
    ONNX Runtime sessions, ONNX Runtime's own median 1 % slower without spinning). ``profile_prefix`` turns
    on ONNX Runtime's per-node profiler (its JSON trace is written at ``end_profiling()``). ``exact_u8s8`` sets
    ``session.x64quantprecision``: on x86 CPUs without VNNI, INT8 convolutions run as uint8 x uint8, which
    cannot saturate, instead of the faster uint8 x int8 whose int16 pair sums can (no effect elsewhere)."""
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise BackendUnavailable(f"onnxruntime is not installed ({exc}); pip install onnxruntime") from exc
    providers = tuple(PROVIDERS.get(p.lower(), p) for p in providers)
    plugins = {}
    for p in providers:
        if p in PLUGIN_EPS:
            devices, why = plugin_ep_devices(p)
            if not devices:
                raise BackendUnavailable(f"ONNX Runtime {ort.__version__}: the {p} plugin cannot run here: {why}")
            plugins[p] = devices
    missing = [p for p in providers if p not in ort.get_available_providers() and p not in plugins]
    if missing:
        why = "; ".join(f"{p}: {PROVIDER_FIX.get(p, 'not in this ONNX Runtime build')}" for p in missing)
        raise BackendUnavailable(f"ONNX Runtime {ort.__version__} here has no {', '.join(missing)} ({why}). "
                                 f"Available: {', '.join(ort.get_available_providers())}")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = max(threads, 0)
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                     else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    opts.log_severity_level = 3
    if not spin:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if exact_u8s8:
        opts.add_session_config_entry("session.x64quantprecision", "1")
    if profile_prefix:
        opts.enable_profiling = True
        opts.profile_file_prefix = profile_prefix
    source = model if isinstance(model, bytes) else str(model)
    if plugins:  # plugin EPs attach through the session options (ONNX Runtime's plugin EP API); CPU takes the rest
        for devices in plugins.values():
            opts.add_provider_for_devices(devices, {})
        return ort.InferenceSession(source, sess_options=opts)
    return ort.InferenceSession(source, sess_options=opts, providers=list(providers))


def uint8_form(source) -> bytes | None:
    """The serialized 8-bit form (:func:`edgesr.runtime.uint8_io.uint8_io`) of a graph file or serialized graph,
    or None where it cannot be made (no ``onnx`` package in a runtime-only install, a graph outside the I/O
    convention): the backend then converts around the float graph, as before."""
    try:
        import onnx

        from edgesr.runtime.uint8_io import uint8_io
    except ImportError:
        return None
    try:
        proto = onnx.load_from_string(source) if isinstance(source, bytes) else onnx.load(str(source))
        return uint8_io(proto).SerializeToString()
    except Exception:  # noqa: BLE001 - the float path still runs; nothing is lost but the speed
        return None


@BACKENDS.register("onnxruntime")
class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"
    kinds = ("onnx",)
    module = package = "onnxruntime"
    fix = "pip install onnxruntime (CPU) or onnxruntime-gpu."

    interleave_options = {"spin": False}

    def __init__(self, threads: int = 0, providers: tuple[str, ...] = ("CPUExecutionProvider",), spin: bool = True,
                 fast_shuffle: bool = True, exact_int8: bool | None = None):
        """``fast_shuffle``: on the CPU provider alone, run each DepthToSpace (pixel shuffle) as the
        bit-exact ConvTranspose of :func:`edgesr.onnxutil.shuffle_as_conv_transpose`, in memory (the artifact
        is not changed): ONNX Runtime's CPU DepthToSpace is a slow generic transpose.

        ``exact_int8``: run INT8 convolutions as uint8 x uint8 (``session.x64quantprecision``), which cannot
        saturate on x86 CPUs without VNNI. None (default): only for an INT8 artifact with 8-bit weights on such
        a CPU (:func:`edgesr.runtime.base.saturation_risk`), where the fast uint8 x int8 kernels clip int16 pair
        sums (measured on an AVX2 host: -0.19 to -1.48 dB on the 8-bit students, and 1.8-2.0x slower with this on);
        7-bit-weight artifacts (the quantizer's default) are exact with the fast kernels."""
        super().__init__(threads)
        self.providers, self.spin, self.exact_int8 = tuple(providers), spin, exact_int8
        self.exact_u8s8 = False
        self.fast_shuffle = fast_shuffle and tuple(PROVIDERS.get(p.lower(), p) for p in providers) == ("CPUExecutionProvider",)
        self.rewritten = 0
        self.session = None
        self.precision = ""

    @classmethod
    def version_of(cls, ort) -> str:
        return f"{ort.__version__} ({', '.join(ort.get_available_providers())})"

    def _load(self, artifact) -> None:
        source = artifact.payload
        self._u8_source = self._u8_session = None
        self.uint8_native = False
        if self.fast_shuffle:
            try:  # needs the onnx package, which a runtime-only install (onnxruntime + numpy) may not have
                import onnx

                from edgesr.onnxutil import shuffle_as_conv_transpose

                proto = onnx.load(str(artifact.payload))
                self.rewritten = shuffle_as_conv_transpose(proto)
                if self.rewritten:
                    source = proto.SerializeToString()
            except Exception:  # noqa: BLE001 - a graph the rewrite cannot read is loaded as it is (and checked there)
                self.rewritten = 0
        from .base import saturation_risk

        self.exact_u8s8 = saturation_risk(artifact.manifest) if self.exact_int8 is None else bool(self.exact_int8)
        self._source = source
        self._open(source, artifact)

    def _open(self, source, artifact) -> None:
        try:
            try:
                self.session = ort_session(source, threads=self.threads, providers=self.providers, spin=self.spin,
                                           exact_u8s8=self.exact_u8s8)
            except BackendUnavailable:
                raise
            except Exception:
                if not (self.exact_u8s8 and self.exact_int8 is None):
                    raise
                # ONNX Runtime's weight rewrite for the exact mode fails on some graphs (seen: weights shared by
                # several convolutions, MS-LapSRN's recursions); run the fast kernels and say what that costs.
                import warnings

                self.exact_u8s8 = False
                self.session = ort_session(source, threads=self.threads, providers=self.providers, spin=self.spin)
                warnings.warn(f"{artifact.payload}: INT8 with 8-bit weights on a CPU without VNNI, and ONNX Runtime "
                              "cannot build its exact uint8 x uint8 form of this graph: running the fast kernels, "
                              "whose int16 pair sums can saturate here (lower quality). Re-quantize with "
                              "weight_bits: 7.", stacklevel=2)
        except BackendUnavailable:
            raise
        except Exception as exc:
            raise ArtifactError(f"{artifact.payload}: ONNX Runtime cannot load this graph ({exc}). Re-export it.") from exc
        self.precision = artifact.manifest["precision"]
        self._input = self.session.get_inputs()[0].name
        self._u8_source = uint8_form(source)
        self.uint8_native = self._u8_source is not None

    def _select_output(self) -> None:
        try:
            from edgesr.onnxutil import one_output

            pruned = one_output(self._source, self.output_index)
        except ImportError:  # a runtime-only install without the onnx package: every head runs, one is returned
            return
        self._open(pruned, self.artifact)
        self._u8_session = None

    def _run(self, lr: np.ndarray) -> np.ndarray:
        outs = self.session.run(None, {self._input: lr})
        return outs[self._head(len(outs))]

    def _run_uint8(self, frames: np.ndarray) -> tuple[np.ndarray, float]:
        if self._u8_session is None:  # built on first use: a float-only caller never pays for it
            self._u8_session = ort_session(self._u8_source, threads=self.threads, providers=self.providers,
                                           spin=self.spin, exact_u8s8=self.exact_u8s8)
            self._u8_outputs = [o.name for o in self._u8_session.get_outputs()]
        heads = self._u8_outputs[:-1]
        out = self._u8_session.run([heads[self._head(len(heads))], self._u8_outputs[-1]], {"frames": frames})
        return out[0], float(out[1])

    def close(self) -> None:
        super().close()
        self.session = self._u8_session = None

    def describe(self) -> dict:
        import onnxruntime as ort

        return {"backend": "onnxruntime", "version": ort.__version__, "providers": list(self.providers),
                "threads": self.threads, "precision": self.precision, "thread_spinning": self.spin,
                "shuffle_as_conv_transpose": self.rewritten, "exact_u8s8": self.exact_u8s8,
                "uint8_io": "in the graph" if self.uint8_native else "NumPy"}
