"""Latency harness: the one timing loop for every backend.

Variants that are compared are timed interleaved: warm-up runs of each, then rounds in which every
(artifact, backend) pair runs once, in a shuffled order, on a fixed random input, until ``rounds`` are
done or ``max_seconds`` have passed (at least ``min_rounds``). The hosts behind a VM change speed within
minutes; timed in blocks, that drift lands in the ratios; interleaved, it shifts both sides of a ratio.
Reports min / p10 / median / p90 / p99 / mean and the spread, ratios with a bootstrap interval over
rounds, throughput in output megapixels per second, and the machine (CPU model and instruction sets).
"""

from __future__ import annotations

import os
import platform
import time

import numpy as np

from edgesr.runtime.base import Backend

__all__ = ["measure_latency", "measure_interleaved", "latency_stats", "speedup", "machine_info", "peak_throughput"]


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
    from edgesr.hostinfo import cpu_model_and_flags

    cpu, flags = cpu_model_and_flags()
    return {"cpu": cpu, "isa": [f for f in ISA_FLAGS if f in flags], "logical_cores": os.cpu_count(),
            "platform": platform.platform(), "python": platform.python_version(),
            "onnxruntime": _version("onnxruntime"), "openvino": _version("openvino"), "torch": _version("torch")}


def latency_stats(times_ms, batch: int = 1, out_hw: tuple[int, int] | None = None) -> dict:
    """Percentiles of timed runs (ms): min / p10 / median / p90 / p95 / p99 / max / mean, the relative spread
    (p90 - p10) / median, frames per second and output megapixels per second at the median. The one
    statistics function of every harness."""
    t = np.asarray(times_ms, dtype=np.float64)
    if t.size == 0:
        raise ValueError("latency_stats: no timed runs")
    p = {k: float(np.percentile(t, q)) for k, q in (("p10", 10), ("p50", 50), ("p90", 90), ("p95", 95), ("p99", 99))}
    stats = {"runs": int(t.size), "min_ms": round(float(t.min()), 3), "p10_ms": round(p["p10"], 3),
             "p50_ms": round(p["p50"], 3), "p90_ms": round(p["p90"], 3), "p95_ms": round(p["p95"], 3),
             "p99_ms": round(p["p99"], 3), "max_ms": round(float(t.max()), 3),
             "mean_ms": round(float(t.mean()), 3),
             "spread": round((p["p90"] - p["p10"]) / p["p50"], 4) if p["p50"] > 0 else None,
             "fps": round(1e3 * batch / p["p50"], 2) if p["p50"] > 0 else None}
    if out_hw is not None and p["p50"] > 0:
        stats["output_mpix_per_s"] = round(batch * out_hw[0] * out_hw[1] / 1e6 / (p["p50"] / 1e3), 2)
    return stats


def measure_latency(backend: Backend, input_hw: tuple[int, int], *, warmup: int = 3, runs: int = 30,
                    max_seconds: float = 10.0, min_runs: int = 5, batch: int = 1, seed: int = 0,
                    clock=time.perf_counter) -> dict:
    """Time one ``backend.run`` on an N x 3 x H x W input in a block; for comparing variants use
    :func:`measure_interleaved`, whose ratios survive a host that changes speed during the run."""
    res = measure_interleaved({"_": backend}, input_hw, warmup=warmup, rounds=runs, max_seconds=max_seconds,
                              min_rounds=min_runs, batch=batch, seed=seed, clock=clock)
    return res["latency"]["_"]


def measure_interleaved(backends: dict, input_hw: tuple[int, int], *, warmup: int = 3, rounds: int = 30,
                        max_seconds: float = 60.0, min_rounds: int = 5, batch: int = 1, seed: int = 0,
                        clock=time.perf_counter, shuffle: bool = True) -> dict:
    """Time several backends side by side: each round runs every backend once, in an order shuffled per
    round (seeded), until ``rounds`` rounds are done or ``max_seconds`` have passed (at least
    ``min_rounds``). A host that slows down mid-run (another tenant, a clock change) slows every backend
    in the same rounds, so ratios of medians stay put where block-by-block timing would shift them.

    ``backends`` maps a key to anything with ``run(x)``; returns ``{"latency": {key: stats}, "times_ms":
    {key: [per round]}, "order": [[keys per round]], "rounds": n}``. A backend whose artifact is bound to one
    input size (``manifest["input_size"]``: an imported fixed-size ONNX graph) runs at that size, batch 1 where
    it is bound to it, and its record says so (``input``); its frame-in/frame-out row (:class:`FrameInFrameOut`)
    is what compares with the others at ``input_hw``."""
    keys = list(backends)
    h, w = input_hw
    x = np.random.default_rng(seed).random((batch, 3, h, w), dtype=np.float32)
    inputs = {}
    for k in keys:
        m = getattr(getattr(backends[k], "artifact", None), "manifest", None) or {}
        fixed = m.get("input_size")
        inputs[k] = x if not fixed else np.random.default_rng(seed).random(
            (1 if m.get("max_batch") == 1 else batch, 3, *fixed), dtype=np.float32)
    out_hw = {}
    for k in keys:
        out = None
        for _ in range(max(1, warmup)):
            out = backends[k].run(inputs[k])
        out_hw[k] = tuple(int(s) for s in out.shape[-2:])
    rng = np.random.default_rng([seed, 7])
    times: dict = {k: [] for k in keys}
    order_log = []
    t_end = clock() + max_seconds
    n = 0
    while n < rounds and (n < min_rounds or clock() < t_end):
        order = [keys[i] for i in rng.permutation(len(keys))] if shuffle else list(keys)
        for k in order:
            t0 = clock()
            backends[k].run(inputs[k])
            times[k].append((clock() - t0) * 1e3)
        order_log.append(order)
        n += 1
    latency = {}
    for k in keys:
        oh, ow = out_hw[k]
        n_in = inputs[k].shape[0]
        latency[k] = {"input": list(inputs[k].shape), "output": [n_in, 3, oh, ow], "warmup": warmup,
                      **latency_stats(times[k], n_in, (oh, ow))}
    return {"latency": latency, "times_ms": {k: [round(v, 4) for v in times[k]] for k in keys},
            "order": order_log, "rounds": n}


class FrameInFrameOut:
    """What a user times: :meth:`edgesr.runtime.Upscaler.upscale` of one 8-bit H x W x 3 frame (seeded noise)
    to the 8-bit SR frame, through ``backend``, with the Upscaler's defaults (the 8-bit form inside the runtime
    where the backend has one). Has ``run(x)`` like a backend, so :func:`measure_interleaved` times it beside
    the bare graphs; ``x`` is ignored, the output is returned channels-first for its size."""

    def __init__(self, backend: Backend, input_hw: tuple[int, int], seed: int = 0, **upscaler_options):
        from edgesr.runtime.upscaler import Upscaler

        self.upscaler = Upscaler(backend, **upscaler_options)
        self.frame = np.random.default_rng([seed, 8]).integers(0, 256, (*input_hw, 3), dtype=np.uint8)

    def run(self, x) -> np.ndarray:
        return self.upscaler.upscale(self.frame).transpose(2, 0, 1)[None]


def speedup(times_ref, times_new, *, resamples: int = 2000, seed: int = 0) -> dict:
    """How much faster ``new`` is than ``ref`` from one interleaved run: the ratio of medians
    ref / new, with a 95 % bootstrap interval that resamples whole rounds (both sides of a round
    together, which is what keeps a mid-run slowdown out of the ratio), and the relative width of
    that interval."""
    a, b = np.asarray(times_ref, dtype=np.float64), np.asarray(times_new, dtype=np.float64)
    if a.size != b.size or a.size == 0:
        raise ValueError("speedup: needs the per-round times of one interleaved run (equal, non-zero lengths)")
    ratio = float(np.median(a) / np.median(b))
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, a.size, (resamples, a.size))
    boot = np.median(a[idx], axis=1) / np.median(b[idx], axis=1)
    lo, hi = (float(v) for v in np.percentile(boot, [2.5, 97.5]))
    return {"ratio": round(ratio, 4), "ci95": [round(lo, 4), round(hi, 4)],
            "ci_rel_width": round((hi - lo) / ratio, 4), "per_round_median": round(float(np.median(a / b)), 4)}


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


def _graph_backend(path, scales, backend: str, threads: int, **options):
    """An FP32 ONNX graph file (edgesr's I/O, emitting ``scales``) opened by ``backend`` through the Backend
    contract (an in-memory artifact record: the graph is the only file)."""
    from pathlib import Path

    from edgesr.artifacts import Artifact
    from edgesr.runtime import open_backend

    path = Path(path)
    art = Artifact(path.parent, {"kind": "onnx", "name": path.stem, "payload": path.name, "scales": list(scales),
                                 "precision": "fp32", "hash": path.stem, "size_multiple": 1})
    return open_backend(art, backend, threads=threads, **options)


def graph_latency_ms(path, scales, hw: tuple[int, int], *, threads: int = 0, backend: str = "onnxruntime") -> float:
    """p50 latency of an ONNX graph file on ``backend`` for a 1 x 3 x H x W input (the measurement service the
    runner injects into stages as ``StageContext.latency_fn``, after exporting the model)."""
    with _graph_backend(path, scales, backend, threads) as runner:
        return measure_latency(runner, hw, warmup=2, runs=10, max_seconds=5.0)["p50_ms"]


def graph_speedup(ref_path, new_path, scales, hw: tuple[int, int], *, threads: int = 0, rounds: int = 30,
                  backend: str = "onnxruntime") -> dict:
    """How much faster the ``new`` graph runs than ``ref`` on ``backend`` (with its interleaving settings), from
    one interleaved run: the ratio of medians ref / new with its bootstrap interval, and both medians (the
    service behind ``StageContext.speedup_fn``). Raises BackendUnavailable where ``backend`` cannot run here."""
    import contextlib

    from edgesr.runtime import BACKENDS

    with contextlib.ExitStack() as stack:
        runners = {key: stack.enter_context(_graph_backend(p, scales, backend, threads,
                                                           **BACKENDS.get(backend).interleave_options))
                   for key, p in (("ref", ref_path), ("new", new_path))}
        res = measure_interleaved(runners, hw, warmup=2, rounds=rounds, max_seconds=20.0)
    return {**speedup(res["times_ms"]["ref"], res["times_ms"]["new"]), "ref_p50_ms": res["latency"]["ref"]["p50_ms"],
            "new_p50_ms": res["latency"]["new"]["p50_ms"], "rounds": res["rounds"], "input": list(hw),
            "backend": backend}
