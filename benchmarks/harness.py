"""The benchmark of a run: every variant a recipe names, on its backend, quality (the protocol on each
evaluation set) and latency measured on the same (artifact, backend) pair, then the report.

Model variants run through the FP32 ONNX graph exported from them when the backend takes ONNX. Lossy
variants (stages the stage table marks lossy) are compared with the benchmarked variant they came from.
"""

from __future__ import annotations

import datetime as _dt
import time
from pathlib import Path

from edgesr.artifacts import Artifact, ArtifactError, read_artifact
from edgesr.config import Recipe
from edgesr.data.bicubic import imresize
from edgesr.data.datasets import ImagePair
from edgesr.metrics import evaluate_pairs
from edgesr.modelio import load_model
from edgesr.models import count_macs, deploy_form
from edgesr.progress import console
from edgesr.runtime import BACKENDS, open_backend
from edgesr.stages import stage_table

from .baseline import bicubic_artifact
from .latency import machine_info, measure_latency, peak_throughput
from .quality import measure_quality
from .report import write_report

__all__ = ["run_benchmark", "model_of"]


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


def run_benchmark(recipe: Recipe, arts: dict[str, Artifact], evals: dict[str, list[ImagePair]], out: Path, *,
                  stages: list[dict], t0: float, command: str) -> dict:
    """Measure every variant of ``recipe.benchmark`` and write the report; returns the report's paths."""
    bench = recipe.benchmark
    t = time.perf_counter()
    arts = dict(arts)
    if "bicubic" in bench.variants:
        arts["bicubic"] = bicubic_artifact(out=out / "bicubic", scale=recipe.scale)
    rows = []
    for variant in bench.variants:
        art = _deployed_as(variant, arts[variant], recipe, arts, bench.backend)
        console.print(f"[bold cyan]benchmark[/] {variant} ({art.manifest['precision']}, {bench.backend})")
        with open_backend(art, bench.backend, threads=recipe.threads) as backend:
            quality = measure_quality(backend, evals, recipe.scale, art.manifest.get("size_multiple", 1))
            latency = measure_latency(backend, bench.input_size, warmup=bench.warmup, runs=bench.runs,
                                      max_seconds=bench.max_seconds)
            threads = backend.describe()["threads"]
        model_art = model_of(art) if variant != "bicubic" else None
        macs = params = None
        if model_art is not None:
            # Count what is deployed: re-parameterizable students in their collapsed (exported) form.
            deployed, _ = deploy_form(load_model(model_art), model_art.manifest["arch"])
            macs, params = count_macs(deployed, bench.input_size)
        rows.append({"variant": variant, "artifact": str(art.path), "hash": art.hash, "backend": bench.backend,
                     "precision": art.manifest["precision"], "threads": threads,
                     "params": params if params is not None else art.manifest.get("params"), "macs": macs,
                     "quality": quality, "latency": latency, "parent": (art.manifest.get("parent") or {}).get("name")})
        console.print("  " + ", ".join(f"{s} {q['psnr']:.2f} dB" for s, q in quality.items())
                      + f"; p50 {latency['p50_ms']:.1f} ms")
    _compare_lossy(rows, recipe, arts, list(evals))
    measured_at = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    for r in rows:
        for q in r["quality"].values():
            q["measured_at"] = measured_at
    reference = {name: evaluate_pairs(lambda lr: imresize(lr, recipe.scale), ((p.name, p.lr, p.hr) for p in pairs),
                                      recipe.scale, with_ssim=False).psnr for name, pairs in evals.items()}
    stages = stages + [{"name": "benchmark", "stage": "benchmark", "status": "ran",
                        "seconds": round(time.perf_counter() - t, 1)},
                       {"name": "total (this run)", "stage": "", "status": "", "seconds": round(time.perf_counter() - t0, 1)}]
    machine = machine_info()
    if bench.peak:
        machine["peak"] = peak_throughput(recipe.threads)
    return write_report(out, recipe_name=recipe.name, scale=recipe.scale, rows=rows, stages=stages, machine=machine,
                        reference=reference, command=command, input_hw=bench.input_size, measured_at=measured_at)


def _compare_lossy(rows: list[dict], recipe: Recipe, arts: dict[str, Artifact], sets: list[str]) -> None:
    """Lossy variants (pruned, quantised) against the benchmarked variant they came from, through the FP32
    graph exported from it where that is what the lossy stage took."""
    table = stage_table()
    specs = {spec.name: spec for spec in recipe.stages}
    by_name = {r["variant"]: r for r in rows}
    for r in rows:
        spec = specs.get(r["variant"])
        if spec is None or not table.get(spec.stage).lossy:
            continue
        src = getattr(spec.config, "input", None)
        while src in specs and src not in by_name and arts[src].kind == "onnx" and getattr(specs[src].config, "input", None):
            src = specs[src].config.input
        if src in by_name:
            p = by_name[src]
            r["vs_parent"] = {"parent": src,
                              "psnr_delta": {s: r["quality"][s]["psnr"] - p["quality"][s]["psnr"] for s in sets},
                              "speedup": p["latency"]["p50_ms"] / r["latency"]["p50_ms"]}
