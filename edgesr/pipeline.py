"""The recipe runner: executes a recipe's stages into a run directory, then benchmarks and reports.

A stage whose inputs are unchanged (same configuration, same parent artifact hashes, same data and seed,
recorded as ``recipe_fingerprint`` in its manifest) is skipped; anything else re-runs. Along with the CLI,
this is the only module that imports the stages.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import time
from dataclasses import asdict
from pathlib import Path

import torch

from .artifacts import Artifact, ArtifactError, load_model, read_artifact, update_metrics
from .config import Recipe, RecipeError, StageSpec
from .files import RunLock, remove_stale_temps
from .data.bicubic import imresize
from .data.datasets import ImagePair, load_pairs
from .metrics import evaluate_pairs
from .models import count_macs, deploy_form
from .progress import console

__all__ = ["run_recipe", "load_data", "set_name"]


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def set_name(source: str) -> str:
    return "builtin" if source == "builtin" else Path(source).name


def load_data(recipe: Recipe) -> tuple[list[ImagePair], list[ImagePair], dict[str, list[ImagePair]]]:
    s = recipe.scale
    train = load_pairs(recipe.data.train, s, "train", min_size=recipe.data.patch_size * s)
    valid = load_pairs(recipe.data.valid, s, "valid")
    evals = {set_name(src): load_pairs(src, s, "eval") for src in recipe.data.eval}
    return train, valid, evals


def _fingerprint(spec: StageSpec, recipe: Recipe, parents: list[Artifact]) -> str:
    source = read_artifact(spec.config.path).hash if spec.stage == "load" else None
    blob = json.dumps({"stage": spec.stage, "config": asdict(spec.config), "parents": [p.hash for p in parents],
                       "source": source,
                       "data": asdict(recipe.data) | {"eval": None}, "scale": recipe.scale, "seed": recipe.seed},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _run_stage(spec: StageSpec, recipe: Recipe, out: Path, arts: dict[str, Artifact], train, valid) -> Artifact:
    from .compress.distill import distill_stage
    from .compress.prune import prune_stage
    from .compress.quantize import quantize_stage
    from .export.onnx import export_stage
    from .train.loop import train_stage

    cfg, common = spec.config, {"name": spec.name, "out": out / spec.name}
    fit_kw = {"train_pairs": train, "val_pairs": valid, "scale": recipe.scale, "patch_size": recipe.data.patch_size,
              "min_patch_std": recipe.data.min_patch_std, "seed": recipe.seed}
    if spec.stage == "load":
        return load_stage(cfg.path, out / spec.name)
    if spec.stage == "train":
        return train_stage(cfg, **common, **fit_kw, init=arts[cfg.init_from] if cfg.init_from else None)
    if spec.stage == "gan":
        from .train.gan import gan_stage
        return gan_stage(cfg, **common, source=arts[cfg.input], **fit_kw)
    if spec.stage == "distill":
        return distill_stage(cfg, **common, teacher=arts[cfg.teacher], **fit_kw)
    if spec.stage == "prune":
        return prune_stage(cfg, **common, source=arts[cfg.input], threads=recipe.threads,
                           teacher=arts[cfg.teacher] if cfg.teacher else None, **fit_kw)
    if spec.stage == "export":
        return export_stage(cfg, **common, source=arts[cfg.input])
    if spec.stage == "quantize":
        return quantize_stage(cfg, **common, source=arts[cfg.input], calib_pairs=train, val_pairs=valid,
                              scale=recipe.scale, seed=recipe.seed, threads=recipe.threads)
    if spec.stage == "qat":
        from .compress.quantize import qat_stage
        return qat_stage(cfg, **common, source=arts[cfg.input], teacher=arts[cfg.teacher] if cfg.teacher else None,
                         **fit_kw, threads=recipe.threads)
    if spec.stage == "fp16":
        from .compress.quantize import fp16_stage
        return fp16_stage(cfg, **common, source=arts[cfg.input], calib_pairs=train, val_pairs=valid,
                          scale=recipe.scale, seed=recipe.seed, threads=recipe.threads)
    raise ValueError(f"unknown stage {spec.stage!r}")


def load_stage(src: str, dst: Path) -> Artifact:
    """Copy a verified artifact into the run directory (atomically: a temp copy renamed into place)."""
    import shutil

    art = read_artifact(src)  # verifies the payload against the manifest's content hash
    tmp = dst.with_name(f".{dst.name}.load")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(art.path, tmp)
    shutil.rmtree(dst, ignore_errors=True)
    tmp.rename(dst)
    return read_artifact(dst)


def _parents(spec: StageSpec, arts: dict[str, Artifact]) -> list[Artifact]:
    return [arts[getattr(spec.config, ref)] for ref in ("input", "teacher", "init_from") if getattr(spec.config, ref, None)]


def _model_of(art: Artifact) -> Artifact | None:
    """The PyTorch model artifact an ONNX artifact descends from (for MACs), following parents."""
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


def stages_needed(recipe: Recipe, only: list[str]) -> set[str]:
    """The named stages and every stage they depend on (input, teacher, init_from), transitively."""
    specs = {s.name: s for s in recipe.stages}
    unknown = [n for n in only if n not in specs]
    if unknown:
        raise RecipeError(f"{recipe.source}: --only names no stage {unknown}; stages: {list(specs)}")
    need, todo = set(), list(only)
    while todo:
        name = todo.pop()
        if name in need:
            continue
        need.add(name)
        todo += [getattr(specs[name].config, ref) for ref in ("input", "teacher", "init_from")
                 if getattr(specs[name].config, ref, None)]
    return need


def run_recipe(recipe: Recipe, out: Path, *, force: bool = False, command: str = "",
               only: list[str] | None = None) -> dict | None:
    """Run every stage of ``recipe`` into ``out``, then the benchmark; returns the results dict.

    ``only``: run just these stages (and what they depend on, skipped when unchanged), without the
    benchmark; how independent trainings of one recipe run side by side. Under ``torchrun`` (data-parallel
    training) every process runs the training stages and rank 0 writes the artifacts; ``only`` must then
    name training stages."""
    from .train.loop import distributed

    rank, world = distributed()
    needed = stages_needed(recipe, only) if only else {s.name for s in recipe.stages}
    if world > 1:
        bad = [s.name for s in recipe.stages if s.name in needed and s.stage not in ("train", "distill")]
        if not only or bad:
            raise RecipeError(f"under torchrun only training stages run (pass --only with train/distill stages); "
                             f"not {bad or 'the whole recipe'}. Run the other stages without torchrun.")
    out.mkdir(parents=True, exist_ok=True)
    lock = RunLock(out) if rank == 0 else contextlib.nullcontext()
    with lock:
        removed = remove_stale_temps(out) if rank == 0 else []
        if removed:
            console.print(f"removed what an interrupted run left: {', '.join(sorted(removed))}")
        return _run_locked(recipe, out, force=force, command=command, only=only, needed=needed, rank=rank,
                           world=world)


def _run_locked(recipe: Recipe, out: Path, *, force: bool, command: str, only: list[str] | None,
                needed: set[str], rank: int, world: int) -> dict | None:
    from .benchmarks.latency import machine_info, measure_latency
    from .benchmarks.quality import measure_quality
    from .benchmarks.report import write_report
    from .export.onnx import bicubic_stage
    from .runtime import open_backend

    if recipe.threads:
        torch.set_num_threads(recipe.threads)
    t0 = time.perf_counter()
    console.print(f"[bold]edgesr run[/] {recipe.name} (x{recipe.scale}) -> {out}")
    train, valid, evals = load_data(recipe)
    console.print(f"data: {len(train)} training images ({recipe.data.train}), {len(valid)} validation "
                  f"({recipe.data.valid}), eval sets {list(evals)}; loaded in {time.perf_counter() - t0:.1f} s")
    arts: dict[str, Artifact] = {}
    stages: list[dict] = [{"name": "data", "stage": "load", "status": "ran", "seconds": round(time.perf_counter() - t0, 1)}]
    for spec in recipe.stages:
        if spec.name not in needed:
            continue
        fp = _fingerprint(spec, recipe, _parents(spec, arts))
        path = out / spec.name
        t = time.perf_counter()
        art = None
        if not force and (path / "manifest.json").is_file():
            try:
                prev = read_artifact(path)  # verified: a corrupted artifact is rebuilt, never reused
                if prev.manifest.get("recipe_fingerprint") == fp:
                    art = prev
            except ArtifactError as exc:
                console.print(f"[yellow]{spec.name}: the existing artifact cannot be reused, rebuilding it:[/] {exc}")
        status = "reused" if art is not None else "ran"
        if art is None:
            console.print(f"[bold cyan]stage[/] {spec.name} ({spec.stage})")
            art = _run_stage(spec, recipe, out, arts, train, valid)
            if rank == 0:
                art = update_metrics(art, {}, recipe_fingerprint=fp,
                                     stage={"stage": spec.stage, "seconds": round(time.perf_counter() - t, 1),
                                            "finished": _now()})
            if world > 1:
                torch.distributed.barrier()
                art = read_artifact(path)
        arts[spec.name] = art
        built = art.manifest.get("stage", {})
        row = {"name": spec.name, "stage": spec.stage, "status": status, "seconds": round(time.perf_counter() - t, 1),
               "built_seconds": built.get("seconds"), "built": built.get("finished") or art.manifest.get("created"),
               "val_psnr": art.manifest.get("metrics", {}).get("val_psnr")}
        stages.append(row)
        if status == "ran":
            what = f"ran in {row['seconds']:.1f} s"
        else:
            what = (f"unchanged, reused the artifact built {row['built']}"
                    + (f" in {row['built_seconds']:.1f} s" if row["built_seconds"] is not None else "")
                    + f" (checked in {row['seconds']:.1f} s)")
        console.print(f"  {spec.name}: {what}" + (f", val PSNR {row['val_psnr']:.2f} dB" if row["val_psnr"] else ""))

    if only:
        console.print(f"[bold green]done[/] stages {sorted(needed)} in {time.perf_counter() - t0:.0f} s "
                      "(no benchmark with --only)")
        return None

    # ---------------------------------------------------------------------------------- benchmark
    bench = recipe.benchmark
    t = time.perf_counter()
    if "bicubic" in bench.variants:
        arts["bicubic"] = bicubic_stage(out=out / "bicubic", scale=recipe.scale)
    onnx_of = {}
    for spec in recipe.stages:
        if spec.stage == "export":
            onnx_of[spec.config.input] = arts[spec.name]
    rows = []
    for variant in bench.variants:
        art = arts[variant]
        if bench.backend == "onnxruntime" and art.kind == "model":
            if variant not in onnx_of:
                raise ArtifactError(f"benchmark variant {variant!r} is a PyTorch model and the backend is onnxruntime: "
                                    f"add an export stage with input: {variant} to {recipe.source}")
            art = onnx_of[variant]
        console.print(f"[bold cyan]benchmark[/] {variant} ({art.manifest['precision']}, {bench.backend})")
        backend = open_backend(art, bench.backend, threads=recipe.threads)
        quality = measure_quality(backend, evals, recipe.scale, art.manifest.get("size_multiple", 1))
        latency = measure_latency(backend, bench.input_size, warmup=bench.warmup, runs=bench.runs,
                                  max_seconds=bench.max_seconds)
        model_art = _model_of(art) if variant != "bicubic" else None
        macs = params = None
        if model_art is not None:
            # Count what is deployed: re-parameterizable students in their collapsed (exported) form.
            deployed, _ = deploy_form(load_model(model_art), model_art.manifest["arch"])
            macs, params = count_macs(deployed, bench.input_size)
        rows.append({"variant": variant, "artifact": str(art.path), "hash": art.hash, "backend": bench.backend,
                     "precision": art.manifest["precision"], "threads": backend.describe()["threads"],
                     "params": params if params is not None else art.manifest.get("params"), "macs": macs,
                     "quality": quality, "latency": latency, "parent": (art.manifest.get("parent") or {}).get("name")})
        backend.close()
        console.print(f"  " + ", ".join(f"{s} {q['psnr']:.2f} dB" for s, q in quality.items())
                      + f"; p50 {latency['p50_ms']:.1f} ms")
    # Lossy variants (pruned, quantised) against the benchmarked stage they came from (through its export).
    rows_by_name = {r["variant"]: r for r in rows}
    specs = {spec.name: spec for spec in recipe.stages}
    for r in rows:
        if not any(t["type"] in ("prune", "quantize", "fp16", "qat") for t in arts[r["variant"]].manifest.get("transforms", [])):
            continue
        src = getattr(specs[r["variant"]].config, "input", None)
        if src in specs and specs[src].stage == "export":
            src = specs[src].config.input
        if src in rows_by_name:
            p = rows_by_name[src]
            r["vs_parent"] = {"parent": src,
                              "psnr_delta": {s: r["quality"][s]["psnr"] - p["quality"][s]["psnr"] for s in evals},
                              "speedup": p["latency"]["p50_ms"] / r["latency"]["p50_ms"]}
    measured_at = _now()
    for r in rows:
        for q in r["quality"].values():
            q["measured_at"] = measured_at
    reference = {}
    for sname, pairs in evals.items():
        reference[sname] = evaluate_pairs(lambda lr: imresize(lr, recipe.scale),
                                          ((p.name, p.lr, p.hr) for p in pairs), recipe.scale, with_ssim=False).psnr
    stages.append({"name": "benchmark", "stage": "benchmark", "status": "ran", "seconds": round(time.perf_counter() - t, 1)})
    stages.append({"name": "total (this run)", "stage": "", "status": "", "seconds": round(time.perf_counter() - t0, 1)})
    machine = machine_info()
    if bench.peak:
        from .benchmarks.latency import peak_throughput
        machine["peak"] = peak_throughput(recipe.threads)
    paths = write_report(out, recipe_name=recipe.name, scale=recipe.scale, rows=rows, stages=stages,
                         machine=machine, reference=reference, command=command, input_hw=bench.input_size,
                         measured_at=measured_at)
    if paths.get("archived"):
        console.print(f"the previous results were kept in {paths['archived']}")
    console.print(f"[bold green]done[/] in {time.perf_counter() - t0:.0f} s: {paths['report']}, {paths['results']}, "
                  f"{paths['plot']}")
    return json.loads(paths["results"].read_text())
