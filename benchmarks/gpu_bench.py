"""``edgesr bench-gpu``: models on a GPU through the torch backend, each in several settings, at several LR sizes,
timed by the GPU harness (CUDA events; trtexec's terms) with power, and, for trained artifacts, PSNR measured
on the GPU in the same precision; plus the NTIRE efficient-SR runtime protocol.

Models: artifact directories, pretrained names (``msrep-s-x2``), or zoo specs ``zoo:TYPE[:key=value,...]``
(randomly initialised: timed, not evaluated), and TensorRT engine artifacts (the tensorrt backend). Settings:
``fp32``, ``fp16``, ``bf16``, each optionally with ``-cl`` (channels-last), ``-graph`` (CUDA graph per shape) and
``-compile`` (``torch.compile``), e.g. ``fp16-cl-graph``, for models; ``engine`` and ``engine-graph`` for engines. Writes ``results.json`` (rows the multi-device ``edgesr report`` merges) and ``report.md``.

NTIRE protocol (``--ntire``): PyTorch FP32 eager, cuDNN autotuning off, the whole LR image on the GPU, one
CUDA event pair around the forward pass per image, averaged over the images after a warm-up, as the NTIRE
efficient-SR challenges' test script times entries (on DIV2K's 100 validation images at x4).
"""

from __future__ import annotations

import datetime as _dt
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from edgesr.errors import UsageError
from edgesr.files import atomic_write_text

from .devices import device_info, device_label
from .gpu_latency import measure_gpu

__all__ = ["parse_setting", "resolve_model", "bench_gpu", "ntire_runtime"]


def parse_setting(text: str) -> dict:
    """``fp16-cl-graph`` -> torch backend options {dtype, channels_last, cuda_graphs, compile}."""
    parts = text.lower().split("-")
    if parts[0] == "engine" and set(parts[1:]) <= {"graph"}:  # a TensorRT engine: its precision is built in
        return {"engine": True, "cuda_graphs": "graph" in parts}
    if parts[0] not in ("fp32", "fp16", "bf16") or not set(parts[1:]) <= {"cl", "graph", "compile"}:
        raise UsageError(f"setting {text!r}: a precision (fp32, fp16, bf16) optionally followed by -cl (channels-last), "
                         "-graph (CUDA graphs) and/or -compile (torch.compile), e.g. fp16-cl-graph; for TensorRT "
                         "engine artifacts: engine or engine-graph")
    return {"dtype": parts[0], "channels_last": "cl" in parts, "cuda_graphs": "graph" in parts,
            "compile": "compile" in parts}


def resolve_model(spec: str, scratch: Path):
    """An artifact for ``spec``: a path or pretrained name, or ``zoo:TYPE[:k=v,...]`` built with random weights
    (saved under ``scratch``). Returns (artifact, name, trained)."""
    from edgesr.artifacts import read_artifact

    if not spec.startswith("zoo:"):
        art = read_artifact(spec)
        return art, art.manifest.get("name") or Path(spec).name, True
    import torch

    from edgesr.modelio import save_model
    from edgesr.models import build_model

    _, typ, *rest = spec.split(":", 2)
    arch: dict = {"type": typ, "scale": 2}
    for kv in (rest[0].split(",") if rest else []):
        k, _, v = kv.partition("=")
        arch[k] = int(v) if v.lstrip("-").isdigit() else v
    torch.manual_seed(0)
    name = f"{typ}-x{arch['scale']}" + "".join(f"-{k}{v}" for k, v in arch.items() if k not in ("type", "scale"))
    return save_model(scratch / name, build_model(arch), name=name, arch=arch), name, False


def _quality(backend, sets: dict, scale: int) -> dict:
    from .quality import measure_quality

    res = measure_quality(backend, sets, scale)
    return {k: {"psnr": v["psnr"], "ssim": v["ssim"]} for k, v in res.items()}


def bench_gpu(models: list[str], settings: list[str], sizes: list[tuple[int, int]], out: str | Path, *,
              batch: int = 1, throughput_batch: int = 0, eval_sets: list[str] = (), max_seconds: float = 3.0,
              iterations: int = 200, throughput_seconds: float = 1.0, scale: int | None = None,
              log=print) -> dict:
    """Every (model, setting, size) timed with :func:`measure_gpu`; rows in ``out/results.json``."""
    from edgesr.data.datasets import load_pairs, set_name
    from edgesr.runtime import open_backend

    import torch

    torch.backends.cudnn.benchmark = True  # deployment setting: cuDNN picks its fastest kernels per shape
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    parsed = [(s, parse_setting(s)) for s in settings]
    rows: list = []
    machine = device_info()
    results = {"recipe": "bench-gpu", "command": "edgesr " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
               "measured_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
               "machine": machine, "device_label": device_label(machine), "variants": rows}

    def write() -> dict:
        atomic_write_text(out / "results.json", json.dumps(results, indent=2) + "\n")
        atomic_write_text(out / "report.md", report_md(results))
        return results

    scratch = Path(tempfile.mkdtemp(prefix="edgesr-bench-gpu-"))  # zoo models with random weights
    for spec in models:
        art, name, trained = resolve_model(spec, scratch)
        sc = scale or int(art.scale)
        sets = {set_name(s): load_pairs(s, sc, "eval") for s in eval_sets} if trained and eval_sets else {}
        quality_by_dtype: dict = {}
        if not any(bool(o.get("engine")) == (art.kind == "engine") for _, o in parsed):
            rows.append({"variant": name, "model": name, "error": f"no setting applies to this {art.kind} artifact "
                         "(engine[-graph] for engines, fp32/fp16/bf16[-cl][-graph][-compile] for models)"})
        for label, opts in parsed:
            t_open = time.perf_counter()
            is_engine = art.kind == "engine"
            if is_engine != bool(opts.get("engine")):
                continue  # engine settings apply to engine artifacts, torch settings to models
            pick = sc if len(art.manifest.get("scales", [sc])) > 1 else None
            try:
                backend = (open_backend(art, "tensorrt", scale=pick, cuda_graphs=opts["cuda_graphs"]) if is_engine else
                           open_backend(art, "torch", device="cuda", scale=pick, **opts))
            except Exception as exc:  # noqa: BLE001 - a setting this model cannot run is a row with the reason
                rows.append({"variant": f"{name} {label}", "model": name, "setting": label, "error": str(exc)})
                log(f"{name} {label}: {exc}")
                continue
            with backend:
                precision = art.manifest.get("precision", "fp32") if is_engine else opts["dtype"]
                if sets and precision not in quality_by_dtype:
                    quality_by_dtype[precision] = _quality(backend, sets, sc)
                for hw in sizes:
                    for b in ([batch] + ([throughput_batch] if throughput_batch and hw == sizes[0] else [])):
                        try:
                            r = measure_gpu(backend, hw, batch=b, iterations=iterations, max_seconds=max_seconds,
                                            throughput_seconds=throughput_seconds)
                        except Exception as exc:  # noqa: BLE001 - e.g. out of memory at a size: recorded, not fatal
                            rows.append({"variant": f"{name} {label}", "model": name, "setting": label,
                                         "input": [b, 3, *hw], "error": f"{type(exc).__name__}: {str(exc)[:300]}"})
                            log(f"{name} {label} {hw} b{b}: {type(exc).__name__}: {str(exc)[:200]}")
                            continue
                        row = {"variant": f"{name} {label}", "model": name, "setting": label, "trained": trained,
                               "backend": "tensorrt" if is_engine else "torch-cuda", "precision": precision,
                               "options": opts, "scale": sc, "quality": quality_by_dtype.get(precision, {}),
                               "params": None if is_engine else sum(p.numel() for p in backend._eager.parameters()),
                               "setup_s": round(time.perf_counter() - t_open, 2), **r,
                               "settings": {**r["settings"], **({"engine": backend.describe()} if is_engine else
                                                                {"cudnn_benchmark": True, "torch": torch.__version__})},
                               "gpu": {k: r[k] for k in ("compute", "h2d", "d2h", "host", "enqueue")}}
                        rows.append(row)
                        lat, comp = r["latency"], r["compute"]
                        pw = r.get("power", {}).get("average_w")
                        log(f"{name:28s} {label:16s} {hw[0]:4d}x{hw[1]:<4d} b{b}: latency p50 {lat['p50_ms']:8.3f} ms "
                            f"(compute {comp['p50_ms']:8.3f}, p99 {lat['p99_ms']:8.3f}) {r['throughput_qps']:9.1f} fps"
                            + (f" {pw:6.1f} W" if pw else "")
                            + (f" {r['traffic']['achieved_gb_per_s']:7.1f} GB/s" if "traffic" in r else ""))
        write()  # after every model: a run cut short keeps what it measured
    return write()


def report_md(results: dict) -> str:
    """One table per input size: every (model, setting) with trtexec-style latency, throughput, power, traffic."""
    rows = [r for r in results["variants"] if "latency" in r]
    lines = [f"# GPU benchmark on {results['device_label']}", "", f"Command: `{results['command']}`  ",
             f"Measured: {results['measured_at']}", "",
             "Latency = H2D + GPU compute + D2H from CUDA events (trtexec's definition), pinned host buffers; "
             "host = wall time of a synchronous call; throughput = back-to-back inferences over wall time; "
             "power = NVML board power during the throughput phase; GB/s = bytes the layers read and write "
             "(unfused) over the median compute time. Frame in/out: host wall time of `Upscaler.upscale` on one 8-bit frame "
             "(batch 1), 8-bit over the bus and converted on the GPU, against the float path (converted in NumPy, "
             "float32 copies), interleaved.", ""]
    sets = sorted({s for r in rows for s in (r.get("quality") or {})})
    for inp in sorted({tuple(r["input"]) for r in rows}, key=lambda s: (s[0], s[2] * s[3])):
        lines += [f"## LR {inp[2]}x{inp[3]}, batch {inp[0]}", "",
                  "| model | setting | " + "".join(f"{s} PSNR | " for s in sets) +
                  "latency p50 ms | p99 ms | compute p50 ms | H2D ms | D2H ms | host p50 ms | fps | W | mJ/frame | GOP/s | GB/s | "
                  "frame in/out 8-bit ms | with float copies ms |",
                  "|---|---|" + "---|" * len(sets) + "---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in (r for r in rows if tuple(r["input"]) == inp):
            q = r.get("quality") or {}
            p = r.get("power") or {}
            t = r.get("traffic") or {}
            cells = [r["model"], r["setting"], *(f"{q[s]['psnr']:.2f}" if s in q else "–" for s in sets),
                     f"{r['latency']['p50_ms']:.3f}", f"{r['latency']['p99_ms']:.3f}", f"{r['compute']['p50_ms']:.3f}",
                     f"{r['h2d']['p50_ms']:.3f}", f"{r['d2h']['p50_ms']:.3f}", f"{r['host']['p50_ms']:.3f}",
                     f"{r['throughput_qps']:.1f}", f"{p['average_w']:.0f}" if p.get("average_w") else "–",
                     f"{p['mj_per_frame']:.1f}" if p.get("mj_per_frame") else "–",
                     f"{t['achieved_gop_per_s']:.0f}" if t else "–", f"{t['achieved_gb_per_s']:.0f}" if t else "–"]
            fr = r.get("frames")
            cells += [f"{fr['uint8']['p50_ms']:.3f}" if fr else "–", f"{fr['float']['p50_ms']:.3f}" if fr else "–"]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    errors = [r for r in results["variants"] if "error" in r]
    if errors:
        lines += ["## Not measured", ""] + [f"- {r['variant']} {r.get('input', '')}: {r['error']}" for r in errors] + [""]
    if results.get("ntire"):
        n = results["ntire"]
        lines += ["## NTIRE efficient-SR runtime protocol", "", n["protocol"], "",
                  "| model | params | images | mean ms | median ms |", "|---|---|---|---|---|"]
        for r in n["rows"]:
            lines.append(f"| {r['model']} | {r['params']:,} | {r['images']} of {r.get('source', '?')} | {r['mean_ms']:.3f} | "
                         f"{r['median_ms']:.3f} |")
        lines.append("")
    return "\n".join(lines)


def ntire_runtime(spec: str, lr_images: list[np.ndarray], scratch: Path, warmup: int = 10) -> dict:
    """The NTIRE efficient-SR runtime of one model (FP32 eager, cudnn.benchmark off, whole image, CUDA events
    around the forward pass only, mean over images)."""
    import torch

    from edgesr.modelio import load_model
    from edgesr.models import deploy_form

    art, name, _ = resolve_model(spec, scratch)
    saved, torch.backends.cudnn.benchmark = torch.backends.cudnn.benchmark, False
    model, _ = deploy_form(load_model(art), art.manifest.get("arch", {}))
    model = model.eval().cuda()
    params = sum(p.numel() for p in model.parameters())
    xs = [torch.from_numpy(np.ascontiguousarray(im.transpose(2, 0, 1)[None], dtype=np.float32) / 255).cuda()
          for im in lr_images]
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    with torch.no_grad():
        for i in range(warmup):
            model(xs[i % len(xs)])
        torch.cuda.synchronize()
        for x in xs:
            start.record()
            model(x)
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
    torch.backends.cudnn.benchmark = saved
    return {"model": name, "params": int(params), "images": len(xs), "mean_ms": float(np.mean(times)),
            "median_ms": float(np.median(times)), "sizes": sorted({tuple(im.shape[:2]) for im in lr_images})[:3]}
