"""The benchmark of a run: every variant a recipe names, on each backend it names, quality (the protocol on
each evaluation set) and latency measured on the same (artifact, backend) pair, all pairs timed in one
interleaved run (so ratios between them hold on a host that changes speed), then the report.

Model variants run through the FP32 ONNX graph exported from them when the backend takes ONNX. Lossy
variants (stages the stage table marks lossy) are compared with the benchmarked variant they came from.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import time
from pathlib import Path

from edgesr.artifacts import Artifact, ArtifactError, read_artifact
from edgesr.config import BASELINES, Recipe
from edgesr.data.bicubic import imresize
from edgesr.data.datasets import ImagePair
from edgesr.metrics import evaluate_pairs
from edgesr.modelio import load_model
from edgesr.models import count_macs, deploy_form
from edgesr.progress import console
from edgesr.runtime import BACKENDS, BackendUnavailable, open_backend
from edgesr.stages import stage_table

from .devices import device_info
from .latency import FrameInFrameOut, measure_interleaved, peak_throughput, speedup
from .quality import measure_quality
from .report import write_report

__all__ = ["run_benchmark", "model_of", "benchmark_backends"]


def model_of(art: Artifact) -> Artifact | None:
    """The PyTorch model artifact an ONNX artifact descends from (for MACs), following parents whose content
    hash still matches the one recorded."""
    seen = 0
    while art is not None and art.kind != "model" and seen < 8:
        parent = art.manifest.get("parent")
        if not parent or not Path(parent["path"]).is_dir():
            return None
        try:
            art = read_artifact(parent["path"])
        except ArtifactError:
            return None
        if art.hash != parent.get("hash"):  # the directory now holds another model than the one exported
            return None
        seen += 1
    return art


def _deployed_as(variant: str, art: Artifact, recipe: Recipe, arts: dict[str, Artifact], backend: str) -> Artifact:
    """The artifact a variant runs as on ``backend``: itself, or the FP32 ONNX graph exported from it."""
    kinds = BACKENDS.get(backend).kinds
    if art.kind in kinds:
        return art
    for spec in recipe.stages:
        made = arts.get(spec.name)
        if (made is not None and made.kind in kinds and made.manifest["precision"] == "fp32"
                and getattr(spec.config, "input", None) == variant):
            return made
    raise ArtifactError(f"benchmark variant {variant!r} is a {art.kind} artifact and the backend {backend} runs "
                        f"{list(kinds)}: add an export stage with input: {variant} to {recipe.source}")


def benchmark_backends(bench) -> tuple[list[str], dict[str, str]]:
    """The backends a benchmark times (available ones, in the recipe's order) and those left out, with why.
    The first backend named is the reference: it must be available."""
    names = list(bench.backends) or [bench.backend]
    use, skipped = [], {}
    for i, name in enumerate(dict.fromkeys(names)):
        ok, why = BACKENDS.get(name).available()
        if ok:
            use.append(name)
        elif i == 0:
            raise BackendUnavailable(f"benchmark backend {name}: {why}")
        else:
            skipped[name] = why
    return use, skipped


def run_benchmark(recipe: Recipe, arts: dict[str, Artifact], evals: dict[str, list[ImagePair]], out: Path, *,
                  stages: list[dict], t0: float, command: str) -> dict:
    """Measure every (variant, backend) pair of ``recipe.benchmark``: quality on each evaluation set, then
    latency of all pairs in one interleaved run; write the report and return its paths."""
    bench = recipe.benchmark
    t = time.perf_counter()
    arts = dict(arts)
    arts |= {v: arts["bicubic"] for v in bench.variants if v in BASELINES}  # the runner's bicubic stage
    backends, skipped = benchmark_backends(bench)
    for name, why in skipped.items():
        console.print(f"[yellow]benchmark: backend {name} left out: {why}[/]")
    pairs = [(variant, b, _deployed_as(variant, arts[variant], recipe, arts, b))
             for variant in bench.variants if not BASELINES.get(variant) for b in backends]
    # a baseline with a backend of its own (Pillow's resize): one pair, whatever the benchmark's backends
    pairs += [(v, BASELINES[v], arts[v]) for v in bench.variants if BASELINES.get(v)]
    rows, timing, opened = _measure_pairs(pairs, recipe, evals, out)
    _attach_latency(rows, timing, opened, bench.frames)
    _attach_cost(rows, bench.input_size)
    _compare_lossy(rows, recipe, arts, list(evals))
    _compare_backends(rows, backends, list(evals))
    measured_at = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    for r in rows:
        for q in r["quality"].values():
            q["measured_at"] = measured_at
    reference = {name: evaluate_pairs(lambda lr: imresize(lr, recipe.scale), ((p.name, p.lr, p.hr) for p in pairs_),
                                      recipe.scale, with_ssim=False).psnr for name, pairs_ in evals.items()}
    stages = stages + [{"name": "benchmark", "stage": "benchmark", "status": "ran",
                        "seconds": round(time.perf_counter() - t, 1)},
                       {"name": "total (this run)", "stage": "", "status": "", "seconds": round(time.perf_counter() - t0, 1)}]
    machine = device_info()  # CPU model and ISA; GPU (NVML) and Jetson board where present
    if bench.peak:
        machine["peak"] = peak_throughput(recipe.threads)
    timing_info = {"mode": "interleaved", "rounds": timing["rounds"], "pairs": len(pairs), "warmup": bench.warmup,
                   "frames": bench.frames,
                   "order": "shuffled per round (seeded)", "max_ratio_ci": bench.max_ratio_ci,
                   "backends": backends, "backends_left_out": skipped,
                   "backend_options": {b: BACKENDS.get(b).interleave_options for b in backends} if len(pairs) > 1 else {}}
    return write_report(out, recipe_name=recipe.name, scale=recipe.scale, rows=rows, stages=stages, machine=machine,
                        reference=reference, command=command, input_hw=bench.input_size, measured_at=measured_at,
                        timing=timing_info)


def _measure_pairs(pairs: list[tuple], recipe: Recipe, evals: dict[str, list[ImagePair]], out: Path):
    """Quality of every (variant, backend) pair on each evaluation set, then the latency of all of them (and of
    their frame-in/frame-out form) in one interleaved run: (rows, timing, opened backends)."""
    bench = recipe.benchmark
    rows, opened = [], {}
    with contextlib.ExitStack() as stack:
        for variant, b, art in pairs:
            console.print(f"[bold cyan]benchmark[/] {variant} ({art.manifest['precision']}, {b}): quality")
            options = {**BACKENDS.get(b).run_dir_options(out),
                       **(BACKENDS.get(b).interleave_options if len(pairs) > 1 else {})}
            head = recipe.scale if len(art.manifest.scales) > 1 else None  # one head of a multi-scale artifact, alone
            backend = stack.enter_context(open_backend(art, b, threads=recipe.threads, scale=head, **options))
            opened[(variant, b)] = backend
            quality = measure_quality(backend, evals, recipe.scale, art.manifest.size_multiple)
            rows.append({"variant": variant, "artifact": str(art.path), "hash": art.hash, "backend": b,
                         "backend_info": backend.describe(), "precision": art.manifest["precision"],
                         "threads": backend.describe()["threads"], "quality": quality,
                         "parent": (art.manifest.get("parent") or {}).get("name"), "_art": art})
            console.print("  " + ", ".join(f"{s} {q['psnr']:.2f} dB" for s, q in quality.items()))
        console.print(f"[bold cyan]benchmark[/] latency: {len(pairs)} (variant, backend) pairs interleaved, "
                      f"up to {bench.runs} rounds")
        timed = {f"{v}@{b}": opened[(v, b)] for v, b, _ in pairs}
        if bench.frames:  # frame in, frame out through the Upscaler, in the same rounds as the bare graphs
            timed |= {f"{v}@{b} frames": FrameInFrameOut(opened[(v, b)], bench.input_size) for v, b, _ in pairs}
        timing = measure_interleaved(timed, bench.input_size, warmup=bench.warmup, rounds=bench.runs,
                                     max_seconds=bench.max_seconds * len(timed))
    return rows, timing, opened


def _attach_latency(rows: list[dict], timing: dict, opened: dict, frames: bool) -> None:
    for r in rows:
        key = f"{r['variant']}@{r['backend']}"
        r["latency"] = timing["latency"][key]
        r["times_ms"] = timing["times_ms"][key]
        line = (f"  {key}: median {r['latency']['p50_ms']:.1f} ms (min {r['latency']['min_ms']:.1f}, "
                f"spread {100 * r['latency']['spread']:.0f} %)")
        if frames:
            r["frames_latency"] = timing["latency"][f"{key} frames"]
            r["frames_times_ms"] = timing["times_ms"][f"{key} frames"]
            r["frames_over_bare"] = speedup(r["frames_times_ms"], r["times_ms"])
            r["frames_io"] = "in the runtime" if getattr(opened[(r["variant"], r["backend"])], "uint8_native",
                                                         False) else "NumPy"
            line += (f"; frame in/out (8-bit, {r['frames_io']}) {r['frames_latency']['p50_ms']:.1f} ms, "
                     f"{r['frames_over_bare']['ratio']:.2f}x the bare graph")
        console.print(line)


def _attach_cost(rows: list[dict], input_size) -> None:
    """MACs and parameters of what is deployed, once per variant."""
    macs_of: dict[str, tuple] = {}
    for r in rows:
        art = r.pop("_art")
        if r["variant"] not in macs_of:
            model_art = model_of(art) if r["variant"] not in BASELINES else None
            macs = params = None
            if model_art is not None:
                # Count what is deployed: re-parameterizable students in their collapsed (exported) form.
                deployed, _ = deploy_form(load_model(model_art), model_art.manifest["arch"])
                macs, params = count_macs(deployed, input_size)
            macs_of[r["variant"]] = (macs, params if params is not None else art.manifest.get("params"))
        r["macs"], r["params"] = macs_of[r["variant"]]


def _compare_lossy(rows: list[dict], recipe: Recipe, arts: dict[str, Artifact], sets: list[str]) -> None:
    """Lossy variants (pruned, quantised) against the benchmarked variant they came from, on the same backend,
    through the FP32 graph exported from it where that is what the lossy stage took. Speed-ups come from the
    per-round times of the one interleaved run."""
    table = stage_table()
    specs = {spec.name: spec for spec in recipe.stages}
    by_key = {(r["variant"], r["backend"]): r for r in rows}
    variants = {r["variant"] for r in rows}
    for r in rows:
        spec = specs.get(r["variant"])
        if spec is None or not table.get(spec.stage).lossy:
            continue
        src = getattr(spec.config, "input", None)
        while src in specs and src not in variants and arts[src].kind == "onnx" and getattr(specs[src].config, "input", None):
            src = specs[src].config.input
        p = by_key.get((src, r["backend"]))
        if p is not None:
            r["vs_parent"] = {"parent": src, "psnr_delta": {s: r["quality"][s]["psnr"] - p["quality"][s]["psnr"]
                                                            for s in sets},
                              "speedup": speedup(p["times_ms"], r["times_ms"])}


def _compare_backends(rows: list[dict], backends: list[str], sets: list[str]) -> None:
    """Each variant on every other backend against the same variant on the first (reference) backend: the
    speed-up from the interleaved run and the PSNR difference (the same file can score differently on two
    runtimes: quality belongs to the (artifact, backend) pair)."""
    by_key = {(r["variant"], r["backend"]): r for r in rows}
    for r in rows:
        ref = by_key.get((r["variant"], backends[0]))
        if ref is None or ref is r:
            continue
        r["vs_reference_backend"] = {"backend": backends[0],
                                     "psnr_delta": {s: r["quality"][s]["psnr"] - ref["quality"][s]["psnr"] for s in sets},
                                     "speedup": speedup(ref["times_ms"], r["times_ms"])}
