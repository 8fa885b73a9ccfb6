"""The recipe runner: executes a recipe's stages into a run directory, then benchmarks and reports.

Stages come from the stage table (:mod:`edgesr.stages`): each is called as ``fn(cfg, ctx, **inputs)``. A stage
whose inputs are unchanged (same configuration, same parent artifact hashes, same data and seed, recorded as
``recipe_fingerprint`` in its manifest) reuses its verified artifact; anything else re-runs. One run directory
has one writer. Along with the CLI, this is the only module that runs stages; it also wires what stages
need from other areas (the latency measurement the prune stage's latency target uses).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
import shutil
import tempfile
import time
import dataclasses
from dataclasses import asdict
from pathlib import Path

import torch

from .artifacts import Artifact, ArtifactError, check_destination, content_hash, read_artifact, update_metrics
from .config import BASELINES, Recipe, RecipeError, StageSpec, check_devices
from .data.datasets import ImagePair, holdout_split, load_pairs, rescaled_pairs, set_name
from .data.degradations import DegradationSpec
from .files import RunLock, remove_stale_temps
from .fitting import distributed
from .progress import console
from .stages import StageContext, run_stage, stage_table

__all__ = ["run_recipe", "load_data", "stages_needed", "onnx_latency_ms", "replacing"]


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def load_data(recipe: Recipe) -> tuple[list[ImagePair], list[ImagePair], dict[str, list[ImagePair]]]:
    s = recipe.scale
    train = load_pairs(recipe.data.train, s, "train", min_size=recipe.data.patch_size * s)
    if recipe.data.valid == "holdout":
        train, valid, held = holdout_split(train, recipe.data.valid_holdout, recipe.data.train)
        console.print(f"validation: {len(held)} photographs held out of {recipe.data.train} (one crop of each "
                      f"validates, none is trained on): {', '.join(held)}")
    else:
        valid = load_pairs(recipe.data.valid, s, "valid")
    if recipe.data.train_rescale:
        more = rescaled_pairs(train, recipe.data.train_rescale, s, recipe.data.patch_size)
        console.print(f"train_rescale {list(recipe.data.train_rescale)}: {len(more)} reduced copies added to the "
                      f"{len(train)} training images")
        train = train + more
    evals = {set_name(src): load_pairs(src, s, "eval") for src in recipe.data.eval}
    degradations = recipe.data.eval_degradations
    if tuple(degradations) != ("bicubic",):
        from .data.degradations import degraded_sets

        evals = {(name if d == "bicubic" else f"{name} {d}"): pairs for d in degradations
                 for name, pairs in degraded_sets(evals, s, d).items()}
    return train, valid, evals


def validation_sets(recipe: Recipe, valid: list[ImagePair]) -> dict[str, list[ImagePair]] | None:
    """``data.valid_degradations`` as {name: the validation images with LR made that way} (``bicubic``: as
    loaded); None for the protocol's LR alone (the default)."""
    names = tuple(dict.fromkeys(recipe.data.valid_degradations))
    if names == ("bicubic",):
        return None
    from .data.degradations import degraded_sets

    return {d: degraded_sets({"valid": valid}, recipe.scale, d)["valid"] for d in names}


def _valid_note(recipe: Recipe) -> str:
    names = tuple(dict.fromkeys(recipe.data.valid_degradations))
    return "" if names == ("bicubic",) else f"; LR made by {', '.join(names)}, the best mean kept"


def _refs(spec: StageSpec) -> dict[str, str | None]:
    """The stage's reference fields and the stage names they hold (None when unset)."""
    return {ref: getattr(spec.config, ref, None) for ref in stage_table().get(spec.stage).takes}


@contextlib.contextmanager
def replacing(path: Path, rank: int = 0):
    """The run's own artifact of a stage that runs again is moved aside while the stage writes the new one
    (artifacts are written only into new directories), restored if the stage fails and removed once it
    succeeds. A directory there that is not this stage's artifact (files a user put there) is refused."""
    if rank != 0 or not path.exists():
        yield
        return
    check_destination(path, kind=None, overwrite=True)
    aside = path.with_name(f".{path.name}.old-run")
    shutil.rmtree(aside, ignore_errors=True)
    os.replace(path, aside)
    try:
        yield
    except BaseException:
        if not path.exists():
            os.replace(aside, path)
        raise
    shutil.rmtree(aside, ignore_errors=True)


def _source_hash(source: str) -> str:
    """The identity of an external input: an artifact's content hash, or a plain file's (a checkpoint)."""
    p = Path(source)
    return content_hash(p) if p.is_file() else read_artifact(source).hash


def _data_identity(data) -> dict:
    """What of ``data`` makes a stage's result: not the evaluation sets, and the degradation only when it is not
    the protocol's (fingerprints of runs made before it existed stay as they were)."""
    d = asdict(data) | {"eval": None}
    if d.get("degradation") == "bicubic":
        del d["degradation"]
    d.pop("eval_degradations", None)  # evaluation only: no stage's result depends on it
    if not d.get("degradation_mix"):
        d.pop("degradation_mix", None)
    if d.get("valid") != "holdout":
        d.pop("valid_holdout", None)
    if not d.get("train_rescale"):
        d.pop("train_rescale", None)
    if tuple(d.get("valid_degradations") or ("bicubic",)) == ("bicubic",):
        d.pop("valid_degradations", None)
    return d


def _config_identity(config) -> dict:
    """A stage config's fields as they enter its fingerprint. A field marked ``metadata={"fingerprint":
    "when_set"}`` (an option added later whose default keeps the earlier behaviour) counts only when it differs
    from its default, so that adding it does not re-run every stage built before it existed; one marked ``"never"``
    (how fast a stage runs, not what it makes: ``workers``) never counts."""
    d = asdict(config)
    for f in dataclasses.fields(config):
        if (f.metadata.get("fingerprint") == "when_set" and d.get(f.name) == f.default
                or f.metadata.get("fingerprint") == "never"):
            del d[f.name]
    return d


def _fingerprint(spec: StageSpec, recipe: Recipe, parents: list[Artifact]) -> str:
    sdef = stage_table().get(spec.stage)
    source = _source_hash(getattr(spec.config, sdef.external)) if sdef.external else None
    fields = {"stage": spec.stage, "config": _config_identity(spec.config), "parents": [p.hash for p in parents],
              "source": source, "data": _data_identity(recipe.data), "scale": recipe.scale, "seed": recipe.seed}
    if sdef.environment is not None:  # only stages that declare one: the others' fingerprints stay as they were
        fields["environment"] = sdef.environment(spec.config)
    blob = json.dumps(fields, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _exported(model: torch.nn.Module, folder: Path, key: str) -> tuple[Path, list[int]]:
    """``model`` exported to ONNX in ``folder`` as the benchmark deploys it: (the graph, its scales)."""
    from .exporting import export_onnx
    from .models import model_scales

    scales = list(model_scales(model))
    path = folder / f"{key}.onnx"
    export_onnx(model.eval(), path, scales=scales)
    return path, scales


def onnx_latency_ms(model: torch.nn.Module, hw: tuple[int, int], threads: int = 0,
                    backend: str = "onnxruntime") -> float:
    """p50 latency of a PyTorch model deployed as the benchmark deploys it: exported to ONNX here, timed by the
    measurement service of benchmarks/ (:func:`edgesr.benchmarks.latency.graph_latency_ms`) through the Backend
    contract (ONNX Runtime on the CPU by default). What the prune stage's latency target measures."""
    from .benchmarks.latency import graph_latency_ms

    with tempfile.TemporaryDirectory() as tmp:
        path, scales = _exported(model, Path(tmp), "m")
        return graph_latency_ms(path, scales, hw, threads=threads, backend=backend)


def onnx_speedup(ref: torch.nn.Module, new: torch.nn.Module, hw: tuple[int, int], threads: int = 0,
                 rounds: int = 30, backend: str = "onnxruntime") -> dict:
    """How much faster ``new`` runs than ``ref`` deployed as the benchmark deploys them: both exported here, timed
    by the measurement service of benchmarks/ (:func:`edgesr.benchmarks.latency.graph_speedup`: one interleaved
    run on ``backend`` through the Backend contract). Raises BackendUnavailable where ``backend`` cannot run."""
    from .benchmarks.latency import graph_speedup

    with tempfile.TemporaryDirectory() as tmp:
        ref_path, scales = _exported(ref, Path(tmp), "ref")
        new_path, _ = _exported(new, Path(tmp), "new")
        return graph_speedup(ref_path, new_path, scales, hw, threads=threads, rounds=rounds, backend=backend)


def stages_needed(recipe: Recipe, only: list[str]) -> set[str]:
    """The named stages and every stage they depend on (their reference fields), transitively."""
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
        todo += [ref for ref in _refs(specs[name]).values() if ref]
    return need


def stages_to_run(recipe: Recipe, out: Path, needed: set[str], force: bool = False) -> list[StageSpec]:
    """The needed stages that will run rather than reuse their artifact in ``out``, in order, read from the
    manifests alone (nothing is loaded or verified): a stage is reused when its parents are and its artifact
    records this fingerprint. The runner decides again, verifying, as it goes."""
    arts: dict[str, Artifact | None] = {}
    runs = []
    for spec in recipe.stages:
        if spec.name not in needed:
            continue
        parents = [n for n in _refs(spec).values() if n]
        art, path = None, out / spec.name
        if not force and all(arts.get(n) is not None for n in parents) and (path / "manifest.json").is_file():
            with contextlib.suppress(ArtifactError):
                prev = read_artifact(path, verify=False)
                if prev.manifest.get("recipe_fingerprint") == _fingerprint(spec, recipe, [arts[n] for n in parents]):
                    art = prev
        arts[spec.name] = art
        if art is None:
            runs.append(spec)
    return runs


def run_recipe(recipe: Recipe, out: Path, *, force: bool = False, command: str = "",
               only: list[str] | None = None) -> dict | None:
    """Run every stage of ``recipe`` into ``out``, then the benchmark; returns the results dict.

    ``only``: run just these stages (and what they depend on, reused when unchanged), without the
    benchmark; how independent trainings of one recipe run side by side. Under ``torchrun`` (data-parallel
    training) every process runs the training stages and rank 0 writes the artifacts; ``only`` must then
    name training stages."""
    rank, world = distributed()
    table = stage_table()
    needed = stages_needed(recipe, only) if only else {s.name for s in recipe.stages}
    if world > 1:
        bad = [s.name for s in recipe.stages if s.name in needed and not table.get(s.stage).trains]
        if not only or bad:
            raise RecipeError(f"under torchrun only training stages run (pass --only with train/distill stages); "
                              f"not {bad or 'the whole recipe'}. Run the other stages without torchrun.")
    check_devices(recipe, {s.name for s in stages_to_run(recipe, out, needed, force)}, reuse_in=str(out))
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
    if recipe.threads:
        torch.set_num_threads(recipe.threads)  # PyTorch's threads, once, for every stage
    t0 = time.perf_counter()
    console.print(f"[bold]edgesr run[/] {recipe.name} (x{recipe.scale}) -> {out}")
    train, valid, evals = load_data(recipe)
    console.print(f"data: {len(train)} training images ({recipe.data.train}), {len(valid)} validation "
                  f"({recipe.data.valid}{_valid_note(recipe)}), eval sets {list(evals)}; loaded in "
                  f"{time.perf_counter() - t0:.1f} s")
    runner = _StageRunner(recipe, out, train, valid, force=force, rank=rank, world=world)
    stages: list[dict] = [{"name": "data", "stage": "data", "status": "ran", "seconds": round(time.perf_counter() - t0, 1)}]
    for spec in recipe.stages:
        if spec.name in needed:
            stages.append(runner.run(spec))
    if only:
        console.print(f"[bold green]done[/] stages {sorted(needed)} in {time.perf_counter() - t0:.0f} s "
                      "(no benchmark with --only)")
        return None
    for spec in baseline_specs(recipe):  # the bicubic graph: an ordinary stage, not a row of the stage table
        runner.run(spec, quiet=True)
    from .benchmarks.harness import run_benchmark

    paths = run_benchmark(recipe, runner.arts, evals, out, stages=stages, t0=t0, command=command)
    if paths.get("archived"):
        console.print(f"the previous results were kept in {paths['archived']}")
    console.print(f"[bold green]done[/] in {time.perf_counter() - t0:.0f} s: {paths['report']}, {paths['results']}, "
                  f"{paths['plot']}")
    return json.loads(paths["results"].read_text())


def baseline_specs(recipe: Recipe) -> list[StageSpec]:
    """The baselines the benchmark lists, as stages: the ``bicubic`` graph (also what ``bicubic_pillow`` runs)."""
    if not set(BASELINES) & set(recipe.benchmark.variants):
        return []
    sdef = stage_table().get("bicubic")
    return [StageSpec("bicubic", "bicubic", sdef.config())]


class _StageRunner:
    """Runs stages of one recipe into its run directory: a stage whose fingerprint is unchanged reuses its verified
    artifact, any other runs through :func:`edgesr.stages.run_stage` (the budget, the one commit); each gives its
    row of the report's stage table."""

    def __init__(self, recipe: Recipe, out: Path, train: list, valid: list, *, force: bool, rank: int, world: int):
        self.recipe, self.out, self.train, self.valid = recipe, out, train, valid
        self.force, self.rank, self.world = force, rank, world
        self.arts: dict[str, Artifact] = {}
        self.val_degraded = validation_sets(recipe, valid)

    def _reusable(self, path: Path, fp: str) -> Artifact | None:
        if self.force or not (path / "manifest.json").is_file():
            return None
        try:
            prev = read_artifact(path)  # verified: a corrupted artifact is rebuilt, never reused
        except ArtifactError as exc:
            console.print(f"[yellow]{path.name}: the existing artifact cannot be reused, rebuilding it:[/] {exc}")
            return None
        return prev if prev.manifest.get("recipe_fingerprint") == fp else None

    def _context(self, spec: StageSpec, path: Path) -> StageContext:
        recipe = self.recipe
        return StageContext(name=spec.name, out=path, train_pairs=self.train, val_pairs=self.valid, scale=recipe.scale,
                            patch_size=recipe.data.patch_size, min_patch_std=recipe.data.min_patch_std,
                            degradation=DegradationSpec(recipe.data.degradation, recipe.data.degradation_mix),
                            val_degraded=self.val_degraded, seed=recipe.seed, threads=recipe.threads,
                            latency_fn=lambda m, hw: onnx_latency_ms(m, hw, recipe.threads),
                            speedup_fn=lambda a, b, hw, backend: onnx_speedup(a, b, hw, recipe.threads, backend=backend),
                            measure_backends=tuple(recipe.benchmark.backends or (recipe.benchmark.backend,)))

    def run(self, spec: StageSpec, quiet: bool = False) -> dict:
        sdef = stage_table().get(spec.stage)
        inputs = {ref: self.arts[name] if name else None for ref, name in _refs(spec).items()}
        fp = _fingerprint(spec, self.recipe, [a for a in inputs.values() if a is not None])
        path = self.out / spec.name
        t = time.perf_counter()
        art = self._reusable(path, fp)
        status = "reused" if art is not None else "ran"
        if art is None:
            if not quiet:
                console.print(f"[bold cyan]stage[/] {spec.name} ({spec.stage})")
            with replacing(path, self.rank):
                art = run_stage(sdef, spec.config, self._context(spec, path),
                                {k: v for k, v in inputs.items() if v is not None})
            if self.rank == 0:
                art = update_metrics(art, {}, recipe_fingerprint=fp,
                                     stage={"stage": spec.stage, "seconds": round(time.perf_counter() - t, 1),
                                            "finished": _now()})
            if self.world > 1:
                torch.distributed.barrier()
                art = read_artifact(path)
        self.arts[spec.name] = art
        row = _stage_row(spec, art, status, round(time.perf_counter() - t, 1))
        if not quiet:
            console.print(f"  {spec.name}: {_stage_line(row)}"
                          + (f", val PSNR {row['val_psnr']:.2f} dB" if row["val_psnr"] else ""))
        return row


def _stage_row(spec: StageSpec, art: Artifact, status: str, seconds: float) -> dict:
    built = art.manifest.get("stage", {})
    if status == "ran" and built.get("seconds") is not None:
        seconds = built["seconds"]  # one measurement: what a later run reports as "built earlier in"
    metrics = art.manifest.get("metrics", {})
    return {"name": spec.name, "stage": spec.stage, "status": status, "seconds": seconds,
            "built_seconds": built.get("seconds"), "built": built.get("finished") or art.manifest.get("created"),
            "val_psnr": metrics.get("val_psnr"), "train_steps": metrics.get("train_steps"),
            "stopped_by_time": metrics.get("stopped_by_time")}


def _stage_line(row: dict) -> str:
    if row["status"] == "ran":
        return f"ran in {row['seconds']:.1f} s"
    return (f"unchanged, reused the artifact built {row['built']}"
            + (f" in {row['built_seconds']:.1f} s" if row["built_seconds"] is not None else "")
            + f" (checked in {row['seconds']:.1f} s)")
