"""GPU harness: CUDA-event timing of a GPU backend (torch on CUDA, TensorRT), in trtexec's terms, so edgesr's
numbers and trtexec's compare.

Each timed inference records four events on the backend's stream around its stages: host-to-device copy
(H2D), the network (GPU compute), device-to-host copy (D2H). Reported per stage, and for ``latency`` = H2D +
compute + D2H (trtexec's "Latency"), ``host`` (wall time of the whole synchronous call, what an application
waits) and ``enqueue`` (host time to enqueue the work): min / p10 / median / p90 / p95 / p99 / max / mean, by
the same statistics function as the CPU harness. The input sits in a pinned host buffer before timing starts,
as in trtexec. ``transfers=False`` times compute alone (trtexec ``--noDataTransfers``).

Throughput is measured apart, as trtexec does: inferences enqueued back to back on one stream (the host runs
ahead of the GPU) for ``throughput_seconds``, then inferences over the host wall time. Power is sampled during
that sustained phase (NVML on desktop and data-centre GPUs, ``tegrastats`` on Jetson): average W and mJ per
frame. Achieved GOP/s and GB/s come from the MACs and the bytes each layer moves per frame (when the backend
can count them) over the median GPU compute time.
"""

from __future__ import annotations

import time

import numpy as np

from .latency import latency_stats

__all__ = ["measure_gpu", "power_sampler", "GPU_STAGES"]

GPU_STAGES = ("prepare", "upload", "compute", "download", "synchronize", "gpu_event")
"""What a backend offers to be timed here (the torch backend on CUDA and the TensorRT backend do)."""


def power_sampler(interval_s: float = 0.02):
    """The power sampler for this device: tegrastats on a Jetson, NVML elsewhere (each says why when absent)."""
    from .devices import NvmlPowerSampler, TegrastatsSampler, jetson_info

    if jetson_info() is not None:
        return TegrastatsSampler(interval_ms=max(int(interval_s * 1e3), 10))
    return NvmlPowerSampler(interval_s=interval_s)


def _is_gpu_backend(backend) -> bool:
    """Whether ``backend`` offers the GPU timing protocol (declared on Backend as ``gpu_timing``)."""
    return bool(getattr(backend, "gpu_timing", False)) and all(hasattr(backend, a) for a in GPU_STAGES)


def measure_gpu(backend, input_hw: tuple[int, int], *, batch: int = 1, warmup: int = 10, iterations: int = 200,
                max_seconds: float = 10.0, min_iterations: int = 10, transfers: bool = True,
                throughput_seconds: float = 2.0, power: bool = True, seed: int = 0, sampler=None,
                frames: bool = True) -> dict:
    """Time ``backend`` on a random N x 3 x H x W input with CUDA events (see the module docstring). With
    ``frames`` (batch 1, a backend that converts 8-bit frames on the device), also frame in / frame out as a
    user calls it, 8-bit through the device against float32 copies, interleaved (``res["frames"]``)."""
    if not _is_gpu_backend(backend):
        raise ValueError(f"{type(backend).__name__} does not run on a GPU here (the GPU harness times backends with "
                         f"{', '.join(GPU_STAGES)}: torch with device='cuda', tensorrt); time CPU backends with "
                         "edgesr.benchmarks.latency")
    h, w = input_hw
    x = np.random.default_rng(seed).random((batch, 3, h, w), dtype=np.float32)
    backend.prepare(x)

    def once():
        if transfers:
            backend.upload()
        backend.compute()
        if transfers:
            backend.download()

    t_warm = time.perf_counter()
    for _ in range(max(1, warmup)):
        once()
    backend.synchronize()
    warm_s = time.perf_counter() - t_warm
    out = backend.download()
    backend.synchronize()
    out_hw = tuple(int(s) for s in out.shape[-2:])
    rec, n = _event_timings(backend, transfers, iterations, min_iterations, max_seconds)
    sampler = sampler if sampler is not None else (power_sampler() if power else None)
    count, wall, chunk = _throughput(backend, once, np.median(rec["latency"]), throughput_seconds, sampler)
    res = {"input": [batch, 3, h, w], "output": [batch, 3, *out_hw], "iterations": n,
           "latency": latency_stats(rec["latency"], batch, out_hw),
           **{k: latency_stats(rec[k]) for k in ("host", "enqueue", "h2d", "compute", "d2h")},
           "throughput_qps": round(count * batch / wall, 2), "throughput_frames": count * batch,
           "throughput_walltime_s": round(wall, 3),
           "settings": {"batch": batch, "warmup_iterations": max(1, warmup), "warmup_s": round(warm_s, 3),
                        "data_transfers": transfers, "timer": "CUDA events",
                        "cuda_graphs": bool(getattr(backend, "cuda_graphs", False)),
                        "throughput": f"back to back, {chunk} per synchronisation, {throughput_seconds} s"}}
    if not transfers:
        res["latency"] = {**res["compute"], "fps": round(1e3 * batch / res["compute"]["p50_ms"], 2)}
    if sampler is not None:
        res["power"] = sampler.summary(count * batch)
    if frames and batch == 1 and getattr(backend, "uint8_native", False):
        res["frames"] = _frame_timings(backend, input_hw, iterations, max_seconds, min_iterations)
    t = backend.layer_traffic((batch, 3, h, w)) if hasattr(backend, "layer_traffic") else None
    if t is not None:
        sec = res["compute"]["p50_ms"] / 1e3
        res["traffic"] = {"bytes_per_frame": t["bytes"] // batch, "macs_per_frame": t["macs"] // batch,
                          "layers": t["layers"], "achieved_gb_per_s": round(t["bytes"] / sec / 1e9, 1),
                          "achieved_gop_per_s": round(2 * t["macs"] / sec / 1e9, 1),
                          "counted": "leaf layers' input + output activations + weights, unfused"}
    return res


def _event_timings(backend, transfers: bool, iterations: int, min_iterations: int, max_seconds: float):
    """Latency by CUDA events around upload, compute and download, one inference at a time: (per-part times in
    ms, iterations)."""
    ev = [backend.gpu_event() for _ in range(4)]
    rec = {k: [] for k in ("h2d", "compute", "d2h", "latency", "host", "enqueue")}
    t_end = time.perf_counter() + max_seconds
    n = 0
    while n < iterations and (n < min_iterations or time.perf_counter() < t_end):
        t0 = time.perf_counter()
        ev[0].record()
        if transfers:
            backend.upload()
        ev[1].record()
        backend.compute()
        ev[2].record()
        if transfers:
            backend.download()
        ev[3].record()
        t_enq = time.perf_counter()
        ev[3].synchronize()
        t_done = time.perf_counter()
        h2d, comp, d2h = ev[0].elapsed_ms(ev[1]), ev[1].elapsed_ms(ev[2]), ev[2].elapsed_ms(ev[3])
        for k, v in (("h2d", h2d), ("compute", comp), ("d2h", d2h), ("latency", h2d + comp + d2h),
                     ("host", (t_done - t0) * 1e3), ("enqueue", (t_enq - t0) * 1e3)):
            rec[k].append(v)
        n += 1
    return rec, n


def _throughput(backend, once, median_ms: float, seconds: float, sampler):
    """Back to back, synchronising only every ``chunk`` inferences, with power sampled meanwhile: (inferences,
    wall seconds, chunk)."""
    chunk = max(1, min(50, int(0.05 / max(median_ms / 1e3, 1e-6))))
    count = 0
    if sampler is not None:
        sampler.__enter__()
    t0 = time.perf_counter()
    try:
        while True:
            for _ in range(chunk):
                once()
            count += chunk
            if time.perf_counter() - t0 >= seconds:
                break
        backend.synchronize()
        wall = time.perf_counter() - t0
    finally:
        if sampler is not None:
            sampler.__exit__(None, None, None)
    return count, wall, chunk


def _frame_timings(backend, input_hw, iterations: int, max_seconds: float, min_iterations: int) -> dict:
    """Frame in / frame out of one 8-bit frame, bytes over the bus against float32 copies, interleaved."""
    from .latency import FrameInFrameOut, measure_interleaved, speedup

    fr = measure_interleaved({"uint8": FrameInFrameOut(backend, input_hw),
                              "float": FrameInFrameOut(backend, input_hw, io="float")}, input_hw, warmup=3,
                             rounds=min(iterations, 50), max_seconds=max_seconds, min_rounds=min(min_iterations, 5))
    return {"uint8": fr["latency"]["uint8"], "float": fr["latency"]["float"],
            "uint8_speedup": speedup(fr["times_ms"]["float"], fr["times_ms"]["uint8"]),
            "timer": "host wall clock around Upscaler.upscale of one 8-bit H x W x 3 frame, interleaved: "
                     "uint8 = bytes over the bus, converted on the GPU; float = converted in NumPy, "
                     "float32 over the bus"}
