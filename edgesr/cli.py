"""``edgesr`` command line: run a recipe, upscale images, evaluate an artifact, check the installation."""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import importlib.resources
import shlex
import sys
from pathlib import Path

from . import __version__

OPTIONAL = [
    ("torch", "PyTorch (training, compression, torch backend)"),
    ("onnx", "ONNX (export, checks)"),
    ("onnxruntime", "ONNX Runtime (CPU backend, INT8 quantisation)"),
    ("torch_pruning", "torch-pruning (structured pruning)"),
    ("nncf", "NNCF (quantize tool: nncf, qat stage)"),
    ("torchao", "torchao (nncf.strip: QAT export to standard Q/DQ)"),
    ("onnxconverter_common", "onnxconverter-common (fp16 stage)"),
    ("tensorrt", "TensorRT (GPU engines; pip install 'edgesr[tensorrt]' on a machine with an NVIDIA GPU)"),
    ("pycuda", "PyCUDA (TensorRT buffers; needs an NVIDIA driver)"),
]


def _check(module: str) -> tuple[bool, str]:
    try:
        mod = importlib.import_module(module)
    except Exception as exc:  # any failure to import is a reason, shown to the user
        return False, f"unavailable: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return True, getattr(mod, "__version__", "installed")


def doctor() -> int:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"edgesr {__version__} — components")
    table.add_column("component")
    table.add_column("status")
    table.add_column("used for")
    for module, what in OPTIONAL:
        ok, info = _check(module)
        table.add_row(module, f"[green]{escape(info)}[/]" if ok else f"[yellow]{escape(info)}[/]", escape(what))
    ok, _ = _check("onnxruntime")
    if ok:
        import onnxruntime as ort
        table.add_row("ORT providers", ", ".join(ort.get_available_providers()), "backend: onnxruntime")
    ok, _ = _check("torch")
    if ok:
        import torch
        cuda = torch.cuda.is_available()
        table.add_row("CUDA (torch)", f"[green]{torch.cuda.get_device_name(0)}[/]" if cuda else
                      "[yellow]unavailable: no CUDA device or CPU-only build[/]", "backend: torch on GPU")
    from .runtime import BACKENDS
    table.add_row("backends", ", ".join(BACKENDS.names()), "edgesr.runtime")
    table.add_row("tensorrt backend", "[yellow]unavailable: not implemented in this version[/]", "GPU engines")
    import shutil
    cxx = shutil.which("c++") or shutil.which("g++")
    table.add_row("C++ compiler", f"[green]{cxx}[/]" if cxx else "[yellow]unavailable: NNCF cannot build its CPU "
                  "extension, so the qat stage cannot run[/]", "qat (NNCF compiles a CPU extension once)")
    Console().print(table)
    return 0


def _builtin_recipe() -> Path:
    return Path(str(importlib.resources.files("edgesr.benchmarks") / "recipes" / "quickstart.yaml"))


def cmd_run(args: argparse.Namespace) -> int:
    from .config import load_recipe
    from .pipeline import run_recipe

    recipe = load_recipe(args.recipe or _builtin_recipe())
    data = dataclasses.replace(recipe.data, **({"eval": tuple(args.eval)} if args.eval else {}),
                               **({"train": args.train} if args.train else {}))
    recipe = recipe.with_overrides(data=data, **({"threads": args.threads} if args.threads is not None else {}))
    out = Path(args.out or Path("runs") / recipe.name)
    only = [n for part in (args.only or []) for n in part.split(",") if n]
    run_recipe(recipe, out, force=args.force, command="edgesr " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
               only=only or None)
    return 0


def cmd_upscale(args: argparse.Namespace) -> int:
    from .artifacts import read_artifact
    from .imaging import read_image, write_image
    from .runtime import Upscaler, open_backend

    src, dst = Path(args.input), Path(args.output)
    if src.resolve() == dst.resolve():
        raise SystemExit(f"{dst}: refusing to overwrite the input image; choose another output path")
    art = read_artifact(args.artifact)
    backend = open_backend(art, args.backend, threads=args.threads or 0)
    up = Upscaler(backend, tile=args.tile, size_multiple=art.manifest.get("size_multiple", 1))
    write_image(dst, up.upscale(read_image(src)))
    print(f"{src} -> {dst} (x{backend.scale})")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from .artifacts import read_artifact
    from .benchmarks.quality import measure_quality
    from .data.datasets import load_pairs
    from .pipeline import set_name
    from .runtime import open_backend

    art = read_artifact(args.artifact)
    backend = open_backend(art, args.backend, threads=args.threads or 0)
    sets = {set_name(s): load_pairs(s, art.scale, "eval") for s in args.set}
    for name, q in measure_quality(backend, sets, art.scale, art.manifest.get("size_multiple", 1)).items():
        print(f"{name}: PSNR-Y {q['psnr']:.3f} dB  SSIM-Y {q['ssim']:.4f}  ({len(q['per_image'])} images)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="edgesr", description="Super-resolution from training to measured edge engines.")
    parser.add_argument("--version", action="version", version=f"edgesr {__version__}")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("run", help="run a recipe (default: the built-in quickstart) and write report.md, "
                                   "results.json, pareto.png")
    p.add_argument("recipe", nargs="?", help="recipe YAML (default: built-in quickstart)")
    p.add_argument("--out", help="run directory (default: runs/<recipe name>)")
    p.add_argument("--eval", action="append", metavar="PATH",
                   help="evaluation set (benchmark folder with HR/, or 'builtin'); repeatable")
    p.add_argument("--train", metavar="PATH", help="training data (DIV2K root, image folder, or 'builtin')")
    p.add_argument("--threads", type=int, help="intra-op threads (0 = all cores)")
    p.add_argument("--force", action="store_true", help="re-run stages even when their inputs are unchanged")
    p.add_argument("--only", action="append", metavar="STAGE[,STAGE]",
                   help="run only these stages (and what they need), no benchmark; repeatable. Under torchrun: "
                        "the training stages to run data-parallel")
    p.set_defaults(fn=cmd_run)
    p = sub.add_parser("upscale", help="upscale one image with an artifact")
    p.add_argument("artifact")
    p.add_argument("input")
    p.add_argument("output")
    p.add_argument("--backend", choices=["torch", "onnxruntime"])
    p.add_argument("--tile", type=int, default=0, help="LR tile size for large images (0 = whole image)")
    p.add_argument("--threads", type=int)
    p.set_defaults(fn=cmd_upscale)
    p = sub.add_parser("eval", help="PSNR/SSIM of an artifact on benchmark sets (the protocol)")
    p.add_argument("artifact")
    p.add_argument("--set", action="append", required=True, metavar="PATH")
    p.add_argument("--backend", choices=["torch", "onnxruntime"])
    p.add_argument("--threads", type=int)
    p.set_defaults(fn=cmd_eval)
    p = sub.add_parser("doctor", help="list components and backends, and why any is unavailable")
    p.set_defaults(fn=lambda a: doctor())
    args = parser.parse_args(argv)
    from .artifacts import ArtifactError
    from .config import RecipeError
    from .imaging import ImageError
    try:
        return args.fn(args)
    except (ArtifactError, RecipeError, ImageError, FileNotFoundError) as exc:
        print(f"edgesr: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
