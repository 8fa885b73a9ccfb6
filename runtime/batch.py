"""Upscaling many images: a folder (optionally recursive) or a glob pattern into an output folder that mirrors
the input tree, resumable (``skip_existing``: outputs are written atomically, so an interrupted batch leaves
only whole files), with a progress bar (images, images per second, ETA). A bad image is reported and the
batch goes on; nothing that exists is overwritten unless asked. Torch-free.
"""

from __future__ import annotations

import glob
import time
from dataclasses import dataclass, field
from pathlib import Path

from edgesr.errors import EdgesrError, UsageError
from edgesr.imaging import IMAGE_SUFFIXES, WRITE_FORMATS, read_picture, write_picture

__all__ = ["Job", "BatchResult", "plan_jobs", "run_batch", "is_glob"]


@dataclass(frozen=True)
class Job:
    src: Path
    dst: Path


@dataclass
class BatchResult:
    done: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)
    seconds: float = 0.0


def is_glob(text: str) -> bool:
    return any(c in text for c in "*?[")


def _glob_root(pattern: str) -> Path:
    """The deepest directory of a glob pattern without wildcards (outputs mirror the tree below it)."""
    parts = Path(pattern).parts
    fixed = []
    for p in parts:
        if is_glob(p):
            break
        fixed.append(p)
    return Path(*fixed) if fixed else Path(".")


def plan_jobs(source: str, out_dir: str | Path, *, recursive: bool = False, fmt: str | None = None) -> list[Job]:
    """Input images of a folder or glob, each with its output path under ``out_dir`` (same relative path;
    suffix ``.fmt`` if ``fmt`` is given). Refuses an empty selection and outputs that would be inputs."""
    out_dir = Path(out_dir)
    if fmt is not None and f".{fmt.lower().lstrip('.')}" not in WRITE_FORMATS:
        raise UsageError(f"--format {fmt}: not a format edgesr writes; use one of "
                         f"{', '.join(s.lstrip('.') for s in sorted(WRITE_FORMATS))}")
    if is_glob(source):
        root = _glob_root(source)
        files = sorted(Path(p) for p in glob.glob(source, recursive=True)
                       if Path(p).is_file() and Path(p).suffix.lower() in IMAGE_SUFFIXES)
        what = f"the pattern {source!r}"
    else:
        root = Path(source)
        if not root.is_dir():
            raise UsageError(f"{root}: no such folder. Check the path (relative paths start at {Path.cwd()}).")
        walk = root.rglob("*") if recursive else root.iterdir()
        files = sorted(p for p in walk if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        what = f"{root}" + ("" if recursive else " (add --recursive to include its subfolders)")
    out_real = out_dir.resolve()
    inside = root.resolve() in out_real.parents  # the output folder is a subfolder of the inputs' tree
    seen: set[Path] = set()
    kept = []
    for f in files:
        real = f.resolve()
        if real in seen or (inside and out_real in real.parents):  # reached twice (symlinks), or an earlier output
            continue
        seen.add(real)
        kept.append(f)
    files = kept
    if not files:
        raise UsageError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {what}" +
                         (f" outside the output folder {out_dir}" if inside and out_real.is_dir() else ""))
    jobs = []
    by_dst: dict[Path, list[Path]] = {}
    for f in files:
        rel = f.relative_to(root)
        dst = out_dir / (rel.with_suffix(f".{fmt.lower().lstrip('.')}") if fmt else rel)
        if dst.resolve() == f.resolve():
            raise UsageError(f"{dst}: would overwrite its own input; choose an output folder outside the inputs")
        by_dst.setdefault(dst, []).append(f)
        jobs.append(Job(f, dst))
    clashes = {d: srcs for d, srcs in by_dst.items() if len(srcs) > 1}
    if clashes:
        d, srcs = next(iter(clashes.items()))
        raise UsageError(f"{d}: would be written by {len(srcs)} inputs ({', '.join(str(x) for x in srcs)})"
                         + (f"; {len(clashes)} output names clash in all" if len(clashes) > 1 else "")
                         + ". Nothing was written. Leave out --format to keep each input's own suffix, or rename "
                         "the inputs so their names differ.")
    return jobs


def check_existing(jobs: list[Job], *, skip_existing: bool, overwrite: bool) -> None:
    """Refuse, before any work, a batch whose outputs exist when neither resuming nor overwriting."""
    if skip_existing or overwrite:
        return
    existing = [j.dst for j in jobs if j.dst.exists()]
    if existing:
        raise UsageError(f"{existing[0]}: exists ({len(existing)} of the {len(jobs)} outputs do); refusing to "
                         "overwrite. Pass --skip-existing to resume an interrupted batch, or --overwrite.")


def run_batch(upscaler, jobs: list[Job], *, skip_existing: bool = False, overwrite: bool = False,
              max_pixels: int | None = None, show_progress: bool = True) -> BatchResult:
    """Upscale every job's image into its output (``upscaler``: an :class:`edgesr.runtime.Upscaler`)."""
    from edgesr.progress import console, progress_bar

    from edgesr.files import remove_stale_temps_of

    check_existing(jobs, skip_existing=skip_existing, overwrite=overwrite)
    stale = remove_stale_temps_of([j.dst for j in jobs])
    if stale:
        console.print(f"removed {len(stale)} temporary file(s) an interrupted run left beside its outputs "
                      f"({stale[0]}{', ...' if len(stale) > 1 else ''})", highlight=False)
    res = BatchResult()
    t0 = time.perf_counter()
    with progress_bar("upscale", len(jobs), enabled=show_progress) as bar:
        for i, job in enumerate(jobs):
            if skip_existing and job.dst.exists():
                res.skipped.append(job.dst)
            else:
                try:
                    pic = read_picture(job.src, max_pixels=max_pixels)
                    job.dst.parent.mkdir(parents=True, exist_ok=True)
                    write_picture(job.dst, upscaler.upscale_picture(pic))
                    res.done.append(job.dst)
                except EdgesrError as exc:  # a bad file: reported, the batch goes on
                    res.failed.append((job.src, str(exc)))
                    console.print(f"[yellow]skipped[/] {exc}", highlight=False)
            n = len(res.done)
            rate = n / max(time.perf_counter() - t0, 1e-9)
            bar.update(i + 1, f"{rate:.2f} img/s, {len(res.skipped)} existing, {len(res.failed)} failed")
    res.seconds = time.perf_counter() - t0
    return res
