"""Latency harness: the one timing loop for every backend.

Warm-up runs, then timed runs of ``backend.run`` on a fixed random input until ``runs`` are done or
``max_seconds`` have passed (at least ``min_runs`` always). Reports percentiles, mean, throughput in
output megapixels per second, and the conditions (input size, threads, machine).
"""

from __future__ import annotations

import os
import platform
import time

import numpy as np

from edgesr.runtime.base import Backend

__all__ = ["measure_latency", "machine_info", "peak_throughput"]


ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_int8", "amx_bf16", "asimd",
             "asimddp", "sve")
"""CPU features that decide FP32/INT8 kernel speed (x86 and Arm); reported with every measurement, because
the hosts behind a VM change between runs."""


def _version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def machine_info() -> dict:
    cpu, flags = platform.processor() or "", set()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name") and not cpu.strip(" x86_64"):
                    cpu = line.split(":", 1)[1].strip()
                elif line.startswith(("flags", "Features")):
                    flags |= set(line.split(":", 1)[1].split())
                if cpu and flags:
                    break
    except OSError:
        pass
    return {"cpu": cpu, "isa": [f for f in ISA_FLAGS if f in flags], "logical_cores": os.cpu_count(),
            "platform": platform.platform(), "python": platform.python_version(),
            "onnxruntime": _version("onnxruntime"), "torch": _version("torch")}


def measure_latency(backend: Backend, input_hw: tuple[int, int], *, warmup: int = 3, runs: int = 30,
                    max_seconds: float = 10.0, min_runs: int = 5, batch: int = 1, seed: int = 0) -> dict:
    """Time ``backend.run`` on an N x 3 x H x W input; returns milliseconds percentiles and throughput."""
    h, w = input_hw
    x = np.random.default_rng(seed).random((batch, 3, h, w), dtype=np.float32)
    out = None
    for _ in range(warmup):
        out = backend.run(x)
    if out is None:
        out = backend.run(x)
    oh, ow = out.shape[-2:]
    times = []
    t_end = time.perf_counter() + max_seconds
    while len(times) < runs and (len(times) < min_runs or time.perf_counter() < t_end):
        t0 = time.perf_counter()
        backend.run(x)
        times.append((time.perf_counter() - t0) * 1e3)
    t = np.array(times)
    p50 = float(np.percentile(t, 50))
    return {"input": [batch, 3, h, w], "output": [batch, 3, int(oh), int(ow)], "runs": len(times),
            "warmup": warmup, "p50_ms": round(p50, 3), "p90_ms": round(float(np.percentile(t, 90)), 3),
            "p99_ms": round(float(np.percentile(t, 99)), 3), "mean_ms": round(float(t.mean()), 3),
            "min_ms": round(float(t.min()), 3), "fps": round(1e3 * batch / p50, 2),
            "output_mpix_per_s": round(batch * oh * ow / 1e6 / (p50 / 1e3), 2)}


def peak_throughput(threads: int = 0, n: int = 1024, seconds: float = 2.0) -> dict:
    """What this CPU reaches on large dense products, the yardstick for a network's achieved GOP/s:
    FP32 MatMul and INT8 MatMulInteger (uint8 x int8 -> int32), both N x N x N in ONNX Runtime with
    ``threads`` intra-op threads (2 N^3 operations each)."""
    from onnx import TensorProto, helper

    from edgesr.runtime.onnxruntime_backend import ort_session

    def graph(op: str, ta: int, tb: int, tout: int):
        node = helper.make_node(op, ["a", "b"], ["c"])
        g = helper.make_graph([node], op, [helper.make_tensor_value_info("a", ta, [n, n]),
                                           helper.make_tensor_value_info("b", tb, [n, n])],
                              [helper.make_tensor_value_info("c", tout, [n, n])])
        return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=9).SerializeToString()

    rng = np.random.default_rng(0)
    cases = {"fp32_matmul": (graph("MatMul", TensorProto.FLOAT, TensorProto.FLOAT, TensorProto.FLOAT),
                             rng.random((n, n), dtype=np.float32), rng.random((n, n), dtype=np.float32)),
             "int8_matmul": (graph("MatMulInteger", TensorProto.UINT8, TensorProto.INT8, TensorProto.INT32),
                             rng.integers(0, 255, (n, n), dtype=np.uint8), rng.integers(-127, 127, (n, n), dtype=np.int8))}
    result = {"n": n, "threads": threads}
    for name, (model, a, b) in cases.items():
        sess = ort_session(model, threads=threads)
        sess.run(None, {"a": a, "b": b})
        times, t_end = [], time.perf_counter() + seconds
        while len(times) < 3 or time.perf_counter() < t_end:
            t0 = time.perf_counter()
            sess.run(None, {"a": a, "b": b})
            times.append(time.perf_counter() - t0)
        result[f"{name}_gops"] = round(2 * n ** 3 / float(np.median(times)) / 1e9, 1)
    return result
