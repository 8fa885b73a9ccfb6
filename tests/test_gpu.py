"""The GPU paths: the cuda-python helper, the torch backend's CUDA stages, the TensorRT backend and the CUDA-event
harness. What a CPU can check runs everywhere (the harness's arithmetic and refusals on a stand-in backend, the
reasons given without a GPU); the rest is marked ``gpu`` (or ``tensorrt``) and runs unchanged where the hardware is."""

import importlib.util
import json

import numpy as np
import pytest

from edgesr.artifacts import write_artifact
from edgesr.benchmarks.gpu_bench import parse_setting, report_md
from edgesr.benchmarks.gpu_latency import measure_gpu
from edgesr.errors import UsageError
from edgesr.runtime import BACKENDS, BackendUnavailable, open_backend
from edgesr.runtime.cuda import CudaError, cuda_available
from edgesr.runtime.tensorrt_backend import EngineError, check_engine

CUDA, CUDA_WHY = cuda_available()
TORCH_CUDA = importlib.util.find_spec("torch") is not None and __import__("torch").cuda.is_available()
gpu = pytest.mark.skipif(not (CUDA and TORCH_CUDA), reason=f"needs an NVIDIA GPU with CUDA ({CUDA_WHY})")


class _Clock:
    """Simulated GPU time: each stage advances it by its cost; events read it when recorded."""

    def __init__(self):
        self.t = 0.0


class _Event:
    def __init__(self, clock):
        self.clock, self.at = clock, None

    def record(self):
        self.at = self.clock.t
        return self

    def synchronize(self):
        pass

    def elapsed_ms(self, end):
        return end.at - self.at


class StandIn:
    gpu_timing = True  # the GPU timing protocol, as Backend declares it
    """A backend with the GPU stages whose 'GPU' takes 0.5 ms up, 2 ms compute (4 ms from the 50th call on), 1 ms down."""

    cuda_graphs = False

    def __init__(self):
        self.clock, self.calls, self.shape = _Clock(), 0, None

    def gpu_event(self):
        return _Event(self.clock)

    def prepare(self, x):
        self.shape = x.shape

    def upload(self):
        self.clock.t += 0.5

    def compute(self):
        self.calls += 1
        self.clock.t += 2.0 if self.calls < 50 else 4.0

    def download(self):
        self.clock.t += 1.0
        n, c, h, w = self.shape
        return np.zeros((n, c, 2 * h, 2 * w), np.float32)

    def synchronize(self):
        pass


class FakeSampler:
    def __init__(self):
        self.entered = self.exited = False

    def __enter__(self):
        self.entered = True
        return self

    def __exit__(self, *exc):
        self.exited = True

    def summary(self, frames=None):
        return {"samples": 3, "average_w": 50.0, "mj_per_frame": 50.0 * 1.0 / frames * 1e3, "frames": frames}


def test_harness_reports_stages_in_trtexec_terms_on_a_stand_in():
    b, sampler = StandIn(), FakeSampler()
    r = measure_gpu(b, (12, 20), warmup=3, iterations=60, throughput_seconds=0.05, sampler=sampler)
    assert r["output"] == [1, 3, 24, 40] and r["iterations"] == 60
    assert r["h2d"]["p50_ms"] == 0.5 and r["d2h"]["p50_ms"] == 1.0
    assert r["compute"]["min_ms"] == 2.0 and r["compute"]["max_ms"] == 4.0  # the slowdown at call 50 shows
    assert r["latency"]["p50_ms"] == pytest.approx(r["h2d"]["p50_ms"] + r["compute"]["p50_ms"] + r["d2h"]["p50_ms"])
    assert r["host"]["runs"] == r["enqueue"]["runs"] == 60
    assert sampler.entered and sampler.exited and r["power"]["frames"] == r["throughput_frames"] > 0
    assert r["settings"]["data_transfers"] and r["settings"]["timer"] == "CUDA events"
    no_copy = measure_gpu(StandIn(), (12, 20), warmup=3, iterations=20, throughput_seconds=0.01, transfers=False,
                          power=False)
    assert no_copy["h2d"]["max_ms"] == no_copy["d2h"]["max_ms"] == 0.0  # trtexec --noDataTransfers
    assert no_copy["latency"]["p50_ms"] == no_copy["compute"]["p50_ms"] and "power" not in no_copy


def test_harness_refuses_cpu_backends(tiny_student):
    with open_backend(tiny_student, "onnxruntime") as b, pytest.raises(ValueError, match="does not run on a GPU"):
        measure_gpu(b, (8, 8))


def test_settings_parse_and_typos_are_refused():
    assert parse_setting("fp16-cl-graph") == {"dtype": "fp16", "channels_last": True, "cuda_graphs": True,
                                              "compile": False}
    assert parse_setting("bf16-compile")["compile"]
    assert parse_setting("engine-graph") == {"engine": True, "cuda_graphs": True}
    for bad in ("fp8", "fp16-cudagraph", "cl-fp16", "engine-cl"):
        with pytest.raises(UsageError, match="a precision"):
            parse_setting(bad)


def test_report_has_a_table_per_size_and_names_rows_not_measured():
    lat = {k: 1.0 for k in ("p50_ms", "p99_ms", "min_ms")}
    row = {"model": "m", "setting": "fp16", "input": [1, 3, 360, 640], "latency": lat, "compute": lat, "h2d": lat,
           "d2h": lat, "host": lat, "throughput_qps": 900.0, "quality": {"Set5": {"psnr": 36.7, "ssim": 0.95}},
           "power": {"average_w": 120.0, "mj_per_frame": 133.3},
           "traffic": {"achieved_gop_per_s": 500, "achieved_gb_per_s": 1200}}
    res = {"device_label": "GPU X (SM90)", "command": "edgesr bench-gpu m", "measured_at": "now",
           "variants": [row, {**row, "input": [1, 3, 720, 1280]}, {"variant": "big fp32", "error": "OutOfMemoryError"}]}
    md = report_md(res)
    assert "## LR 360x640, batch 1" in md and "## LR 720x1280, batch 1" in md
    assert "| m | fp16 | 36.70 |" in md and "| 120 | 133.3 | 500 | 1200 |" in md
    assert "## Not measured" in md and "OutOfMemoryError" in md


def test_without_a_gpu_the_gpu_paths_say_why(tmp_path, tiny_student):
    if CUDA:
        pytest.skip("this machine has a GPU")
    assert "cuda" in CUDA_WHY.lower() or "driver" in CUDA_WHY.lower()
    ok, why = BACKENDS.get("tensorrt").available()
    assert not ok and ("no usable CUDA GPU" in why or "not installed" in why)
    with pytest.raises(CudaError, match="CUDA cannot run here"):
        from edgesr.runtime.cuda import Cuda
        Cuda()


def _fake_engine(tmp_path, **engine):
    eng = {"flavour": "rtx", "version": "1.0.0.0", "platform": "linux-x86_64", "compute_capabilities": ["SM75"], **engine}
    manifest = {"kind": "engine", "name": "e", "scale": 2, "scales": [2], "precision": "fp16", "engine": eng,
                "parent": {"path": "runs/x/fp16"}}
    return write_artifact(tmp_path / "e", lambda p: p.write_bytes(b"not an engine"), "model.engine", manifest)


def test_the_tensorrt_backend_refuses_a_foreign_engine_before_deserializing(tmp_path):
    art = _fake_engine(tmp_path, version="0.0.1")  # a version nobody has installed
    with pytest.raises(EngineError, match=r"(not installed here|another machine).*"):
        open_backend(art, "tensorrt")
    onnx_like = _fake_engine(tmp_path / "o")
    with pytest.raises(EngineError, match="engine compiled for \\['SM75'\\], this GPU is SM90"):
        check_engine(onnx_like, flavour_version="1.0.0.0", compute_capability="SM90")


# ------------------------------------------------------------------------------------------------ on a GPU

@gpu
def test_cuda_helper_copies_round_trip_and_events_time_them():
    from edgesr.runtime.cuda import Cuda

    cuda = Cuda()
    assert cuda.compute_capability.startswith("SM") and cuda.name
    s = cuda.stream()
    n = 64 << 20
    host, back, dev = cuda.host_buffer(n), cuda.host_buffer(n), cuda.device_buffer(n)
    src = host.array((n // 4,), np.float32)
    src[:] = np.random.default_rng(0).random(n // 4, dtype=np.float32)
    e0, e1, e2 = cuda.event(s), cuda.event(s), cuda.event(s)
    e0.record()
    cuda.h2d(dev, host, n, s)
    e1.record()
    cuda.d2h(back, dev, n // 16, s)
    e2.record()
    e2.synchronize()
    assert np.array_equal(back.array((n // 64,), np.float32), src[: n // 64])
    assert e0.elapsed_ms(e1) > e1.elapsed_ms(e2) > 0  # 64 MiB takes longer than 4 MiB
    # a captured graph replays the copy
    back.array((n // 4,), np.float32)[:] = 0
    cuda.capture_begin(s)
    cuda.d2h(back, dev, n, s)
    g = cuda.capture_end(s)
    assert not back.array((n // 4,), np.float32).any()  # capture records, does not run
    cuda.launch(g, s)
    s.synchronize()
    assert np.array_equal(back.array((n // 4,), np.float32), src)
    cuda.destroy_graph(g)
    for x in (host, back, dev, e0, e1, e2, s):
        x.close()


@gpu
def test_engine_from_another_gpu_is_refused_with_this_gpus_capability(tmp_path):
    from edgesr.runtime.cuda import Cuda

    here = Cuda().compute_capability
    other = "SM75" if here != "SM75" else "SM86"
    art = _fake_engine(tmp_path, compute_capabilities=[other])
    with pytest.raises(EngineError, match=f"this GPU is {here}.*rebuild it here: edgesr build-engine runs/x/fp16"):
        check_engine(art, flavour_version="1.0.0.0", compute_capability=here)


@gpu
def test_torch_cuda_stages_and_harness_on_a_real_gpu(tmp_path):
    import torch

    from edgesr.modelio import save_model
    from edgesr.models import build_model

    torch.manual_seed(0)
    spec = {"type": "msrep", "scale": 2, "size": "s"}
    art = save_model(tmp_path / "ms", build_model(spec), name="ms", arch=spec)
    x = np.random.default_rng(1).random((1, 3, 45, 61), dtype=np.float32)
    ref = open_backend(art, "torch", threads=2).run(x)
    for opts in ({}, {"dtype": "fp16", "channels_last": True, "cuda_graphs": True}):
        with open_backend(art, "torch", device="cuda", **opts) as b:
            assert np.abs(b.run(x) - ref).max() < (1e-4 if not opts else 1e-2)
            r = measure_gpu(b, (90, 160), iterations=30, throughput_seconds=0.3)
            assert r["compute"]["p50_ms"] > 0 and r["h2d"]["p50_ms"] > 0 and r["d2h"]["p50_ms"] > 0
            assert r["latency"]["p50_ms"] <= r["host"]["p50_ms"] * 1.5
            assert r["traffic"]["bytes_per_frame"] > 90 * 160 * 3 * 4 and r["traffic"]["macs_per_frame"] > 0
            assert r["power"].get("samples", 0) > 0 or "NVML" in r["power"].get("why", "")
            assert r["frames"]["uint8"]["p50_ms"] > 0 and r["frames"]["float"]["p50_ms"] > 0
            assert np.abs(b.run(x) - ref).max() < (1e-4 if not opts else 1e-2)  # still right after timing
            frame = np.random.default_rng(2).integers(0, 256, (1, 45, 61, 3), dtype=np.uint8)
            u8 = b.run_uint8(frame)  # converted on the GPU: the float path's bytes to one level (fp16: a few)
            fl = open_backend(art, "torch", threads=2).run_uint8(frame)
            assert u8.shape == (1, 90, 122, 3) and np.abs(u8.astype(int) - fl).max() <= (1 if not opts else 3)


@pytest.mark.tensorrt
@pytest.mark.skipif(not BACKENDS.get("tensorrt").available()[0], reason="needs TensorRT (10/11 or RTX) and a GPU")
def test_tensorrt_backend_runs_an_engine_like_onnxruntime(tmp_path, tiny_student):
    from edgesr.export.tensorrt import EngineConfig, build_engine
    from edgesr.runtime.cuda import Cuda

    cc = Cuda().compute_capability
    flavour = "tensorrt" if importlib.util.find_spec("tensorrt") else "rtx"
    cfg = EngineConfig(input="x", flavour=flavour, shapes=((16, 16), (64, 64), (128, 128)),
                       compute_capabilities=(cc,) if flavour == "rtx" else ())
    eng = build_engine(tiny_student, cfg, tmp_path / "engine", name="e", cache_dir=tmp_path)
    x = np.random.default_rng(0).random((1, 3, 40, 56), dtype=np.float32)
    ref = open_backend(tiny_student, "onnxruntime").run(x)
    for graphs in (False, True):
        with open_backend(eng, "tensorrt", cuda_graphs=graphs) as b:
            assert np.abs(b.run(x) - ref).max() < 1e-3
            r = measure_gpu(b, (64, 64), iterations=20, throughput_seconds=0.2)
            assert r["compute"]["p50_ms"] > 0
    with open_backend(eng, "tensorrt") as b, pytest.raises(Exception, match="outside the engine's optimization profile"):
        b.run(np.zeros((1, 3, 200, 200), np.float32))
    json.dumps(eng.manifest)  # the engine record is plain JSON


def _rtx_ep():
    from edgesr.runtime.onnxruntime_backend import plugin_ep_devices

    return plugin_ep_devices("NvTensorRTRTXExecutionProvider")


def test_tensorrt_rtx_plugin_ep_says_why_it_cannot_run(tiny_student):
    devices, why = _rtx_ep()
    if devices:
        pytest.skip("an RTX GPU is here: the plugin EP runs (next test)")
    assert ("not installed" in why and "onnxruntime-ep-nv-tensorrt-rtx" in why) or "does not load" in why \
        or "no GPU it supports" in why
    with pytest.raises(BackendUnavailable, match="NvTensorRTRTXExecutionProvider plugin cannot run here"):
        open_backend(tiny_student, "onnxruntime", providers=("rtx", "cpu"))


@pytest.mark.skipif(not _rtx_ep()[0], reason="needs the TensorRT for RTX plugin EP and an RTX GPU")
def test_tensorrt_rtx_plugin_ep_runs_like_the_cpu_provider(tiny_student):
    x = np.random.default_rng(0).random((1, 3, 37, 53), dtype=np.float32)
    ref = open_backend(tiny_student, "onnxruntime").run(x)
    with open_backend(tiny_student, "onnxruntime", providers=("rtx", "cpu")) as b:
        assert np.abs(b.run(x) - ref).max() < 1e-3


# ------------------------------------------------------------ the tensorrt backend's logic on a simulated GPU
class SimGPU:
    """Device memory as bytearrays keyed by address, a stream that runs work at once (or records it while a
    graph is captured), and TensorRT's runtime API for an engine that upscales x2 by repetition: enough to run
    the tensorrt backend's own code (binding, buffers, shapes, graphs) without a GPU."""

    def __init__(self):
        self.mem, self.next, self.capturing, self.launches = {}, 0x1000, None, 0

    def alloc(self, n):
        self.next += 1 << 20
        self.mem[self.next] = bytearray(max(1, n))
        return self.next

    def run(self, op):
        (self.capturing.append(op) if self.capturing is not None else op())


class SimCuda:
    def __init__(self, device=0):
        self.gpu = SIM
        self.name, self.compute_capability = "Sim GPU", "SM86"

    def stream(self):
        return type("S", (), {"handle": 7, "synchronize": lambda s: None, "close": lambda s: None})()

    def event(self, stream):
        return _Event(_Clock())

    def device_buffer(self, n):
        ptr = self.gpu.alloc(n)
        return type("D", (), {"ptr": ptr, "nbytes": n, "close": lambda s: self.gpu.mem.pop(ptr, None)})()

    def host_buffer(self, n):
        arr = np.zeros(n, np.uint8)
        buf = type("H", (), {"nbytes": n, "close": lambda s: None})()
        buf.array = lambda shape, dtype: arr[: int(np.prod(shape)) * np.dtype(dtype).itemsize].view(dtype).reshape(shape)
        buf.raw = arr
        return buf

    def h2d(self, dst, src, n, stream):
        self.gpu.run(lambda: self.gpu.mem[dst.ptr].__setitem__(slice(0, n), src.raw[:n].tobytes()))

    def d2h(self, dst, src, n, stream):
        self.gpu.run(lambda: dst.raw.__setitem__(slice(0, n), np.frombuffer(bytes(self.gpu.mem[src.ptr][:n]), np.uint8)))

    def capture_begin(self, stream):
        self.gpu.capturing = []

    def capture_end(self, stream):
        ops, self.gpu.capturing = self.gpu.capturing, None
        return ops

    def launch(self, ops, stream):
        self.gpu.launches += 1
        for op in ops:
            op()

    def destroy_graph(self, ops):
        ops.clear()


class SimTrt:
    """The slice of TensorRT's Python API the backend uses."""

    __version__ = "9.9.sim"

    class Logger:
        ERROR = 1

        def __init__(self, level):
            pass

    class TensorIOMode:
        INPUT, OUTPUT = "in", "out"

    @staticmethod
    def nptype(dt):
        return np.float32

    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, blob):
            return SimEngine() if blob == b"sim engine" else None


class SimEngine:
    num_io_tensors = 2
    names = ["lr", "sr"]

    def get_tensor_name(self, i):
        return self.names[i]

    def get_tensor_mode(self, n):
        return "in" if n == "lr" else "out"

    def get_tensor_dtype(self, n):
        return "float"

    def get_tensor_profile_shape(self, n, i):
        return [(1, 3, 8, 8), (1, 3, 32, 32), (1, 3, 64, 64)]

    def create_execution_context(self):
        return SimContext()


class SimContext:
    def __init__(self):
        self.shape, self.addr = None, {}

    def set_input_shape(self, n, shape):
        self.shape = shape
        return True

    def get_tensor_shape(self, n):
        b, c, h, w = self.shape
        return (b, c, 2 * h, 2 * w) if n == "sr" else self.shape

    def set_tensor_address(self, n, ptr):
        self.addr[n] = ptr

    def execute_async_v3(self, stream):
        shape, src, dst = self.shape, self.addr["lr"], self.addr["sr"]  # what a captured graph bakes in

        def op():
            x = np.frombuffer(bytes(SIM.mem[src][: int(np.prod(shape)) * 4]), np.float32).reshape(shape)
            y = x.repeat(2, 2).repeat(2, 3).tobytes()
            SIM.mem[dst][: len(y)] = y
        SIM.run(op)
        return True


SIM = SimGPU()


@pytest.fixture
def sim_engine(tmp_path, monkeypatch):
    import edgesr.runtime.cuda as cuda_mod
    import edgesr.runtime.tensorrt_backend as trt_mod

    monkeypatch.setattr(cuda_mod, "Cuda", SimCuda)
    monkeypatch.setattr(trt_mod, "flavour_module", lambda flavour: SimTrt)
    monkeypatch.setattr(trt_mod, "flavour_available", lambda flavour: (True, "9.9.sim"))
    monkeypatch.setattr(trt_mod.TensorRtBackend, "available", classmethod(lambda cls: (True, "simulated")))
    eng = {"flavour": "rtx", "version": "9.9.sim", "platform": trt_mod.engine_platform(),
           "compute_capabilities": ["SM86"]}
    manifest = {"kind": "engine", "name": "e", "scale": 2, "scales": [2], "precision": "fp32", "engine": eng,
                "parent": {"path": "runs/x/onnx"}}
    return write_artifact(tmp_path / "e", lambda p: p.write_bytes(b"sim engine"), "model.engine", manifest)


def test_tensorrt_backend_binds_buffers_shapes_and_graphs_on_a_simulated_gpu(sim_engine):
    rng = np.random.default_rng(0)
    for graphs in (False, True):
        with open_backend(sim_engine, "tensorrt", cuda_graphs=graphs) as b:
            for shape in ((1, 3, 20, 24), (1, 3, 9, 30), (1, 3, 20, 24), (1, 3, 48, 64)):  # grows, shrinks, returns
                x = rng.random(shape, dtype=np.float32)
                out = b.run(x)
                assert out.dtype == np.float32 and np.array_equal(out, x.repeat(2, 2).repeat(2, 3))
            if graphs:
                assert SIM.launches >= 4 and len(b._graphs) >= 1  # replayed; graphs dropped when buffers grew
            r = measure_gpu(b, (16, 16), warmup=2, iterations=5, throughput_seconds=0.01, power=False)
            assert r["output"] == [1, 3, 32, 32]
            with pytest.raises(Exception, match=r"outside the engine's optimization profile \(1, 3, 8, 8\)"):
                b.run(np.zeros((1, 3, 80, 16), np.float32))
            assert b.describe()["gpu"] == "Sim GPU"


def test_tensorrt_backend_refuses_an_engine_for_another_gpu_and_a_corrupt_one(sim_engine, tmp_path):
    import json as _json

    m = _json.loads((sim_engine.path / "manifest.json").read_text())
    m["engine"]["compute_capabilities"] = ["SM120"]
    other = write_artifact(tmp_path / "o", lambda p: p.write_bytes(b"sim engine"), "model.engine",
                           {k: v for k, v in m.items() if k not in ("payload", "hash")})
    with pytest.raises(EngineError, match=r"compiled for \['SM120'\], this GPU is SM86.*edgesr build-engine runs/x/onnx"):
        open_backend(other, "tensorrt")
    bad = write_artifact(tmp_path / "b", lambda p: p.write_bytes(b"garbage"), "model.engine",
                         {k: v for k, v in m.items() if k not in ("payload", "hash")} | {"engine": {**m["engine"], "compute_capabilities": ["SM86"]}})
    with pytest.raises(EngineError, match="could not deserialize this engine on Sim GPU"):
        open_backend(bad, "tensorrt")
