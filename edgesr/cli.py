"""``edgesr`` command line: run a recipe, upscale images, evaluate an artifact, check the installation."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import errno
import importlib
import importlib.resources
import logging
import shlex
import sys
import warnings
from pathlib import Path

from . import __version__
from .errors import EdgesrError, UsageError

OPTIONAL = [
    ("torch", "PyTorch (training, compression, torch backend)"),
    ("onnx", "ONNX (export, checks)"),
    ("onnxruntime", "ONNX Runtime (CPU backend, INT8 quantisation)"),
    ("torch_pruning", "torch-pruning (structured pruning)"),
    ("nncf", "NNCF (quantize tool: nncf, qat stage)"),
    ("torchao", "torchao (nncf.strip: QAT export to standard Q/DQ)"),
    ("onnxconverter_common", "onnxconverter-common (fp16 stage)"),
    ("tensorrt_rtx", "TensorRT for RTX (engine flavour rtx: GeForce/RTX GPUs; builds without a GPU; "
                     "pip install 'edgesr[rtx]')"),
    ("tensorrt", "TensorRT 10/11 (engine flavour tensorrt: data-centre GPUs, Jetson; pip install 'edgesr[tensorrt]' "
                 "on a machine with an NVIDIA GPU)"),
    ("cuda.bindings", "cuda-python (the tensorrt backend's buffers, streams, events; pip install 'edgesr[gpu]', "
                      "needs an NVIDIA driver)"),
    ("pynvml", "NVML (GPU record, board power while timing; pip install 'edgesr[gpu]')"),
]


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


# Loggers that print at import time about optional parts edgesr does not use: torchao's CUDA-only kernels
# (mxfp8, CUTLASS) that cannot load on a CPU-only machine, and a torch deprecation note raised by torchao.
QUIET_IMPORT_LOGGERS = ("torchao", "torch.utils._pytree")


def _check(module: str) -> tuple[bool, str, list[str]]:
    """Import ``module``; return (ok, version or reason, what it logged at import instead of printing it)."""
    collect = _Collect()
    saved = []
    for name in QUIET_IMPORT_LOGGERS:
        logger = logging.getLogger(name)
        saved.append((logger, logger.propagate, list(logger.handlers)))
        logger.handlers, logger.propagate = [collect], False
    try:
        with warnings.catch_warnings(record=True):
            warnings.simplefilter("always")
            mod = importlib.import_module(module)
    except Exception as exc:  # any failure to import is a reason, shown to the user
        return False, f"unavailable: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}", []
    finally:
        for logger, propagate, handlers in saved:
            logger.handlers, logger.propagate = handlers, propagate
    return True, getattr(mod, "__version__", "installed"), collect.messages


def doctor() -> int:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"edgesr {__version__} — components")
    table.add_column("component")
    table.add_column("status")
    table.add_column("used for")
    for module, what in OPTIONAL:
        ok, info, logged = _check(module)
        failed = [m for m in logged if m.startswith("Failed to load")]
        if ok and module == "torchao" and failed:
            kernels = sorted({Path(m.split()[3].rstrip(":")).name.split(".")[0] for m in failed})
            info += f" (its optional CUDA kernels {', '.join(kernels)} did not load: normal without an NVIDIA GPU; edgesr does not use them)"
        table.add_row(module, f"[green]{escape(info)}[/]" if ok else f"[yellow]{escape(info)}[/]", escape(what))
    ok, _, _ = _check("onnxruntime")
    if ok:
        import onnxruntime as ort
        table.add_row("ORT providers", ", ".join(ort.get_available_providers()), "backend: onnxruntime")
        from .runtime.onnxruntime_backend import plugin_ep_devices

        devices, why = plugin_ep_devices("NvTensorRTRTXExecutionProvider")
        table.add_row("ORT plugin EP: TensorRT for RTX", f"[green]{len(devices)} device(s)[/]" if devices else
                      f"[yellow]unavailable: {escape(why)}[/]", "onnxruntime --providers rtx,cpu")
    from .hostinfo import INT8_DOT_FLAGS, cpu_model_and_flags, u8s8_saturates

    cpu, flags = cpu_model_and_flags()
    dot = sorted(flags & INT8_DOT_FLAGS)
    table.add_row("CPU INT8", f"[yellow]{escape(cpu)}: no VNNI/AMX; uint8 x int8 pairs saturate in int16: 7-bit-weight "
                  "INT8 (the quantize default) is exact; 8-bit files run in ONNX Runtime's exact mode (slower) and "
                  "lose quality on OpenVINO[/]" if u8s8_saturates() else
                  f"[green]{escape(cpu)}: {', '.join(dot) or 'not x86'}; INT8 accumulates in 32 bits[/]",
                  "INT8 on ONNX Runtime / OpenVINO")
    from .runtime.cuda import cuda_available

    ok, info = cuda_available()
    table.add_row("CUDA (cuda-python)", f"[green]{escape(info)}[/]" if ok else f"[yellow]unavailable: {escape(info)}[/]",
                  "backend: tensorrt (buffers, streams, events)")
    ok, _, _ = _check("torch")
    if ok:
        import torch
        cuda = torch.cuda.is_available()
        table.add_row("CUDA (torch)", f"[green]{torch.cuda.get_device_name(0)}[/]" if cuda else
                      "[yellow]unavailable: no CUDA device or CPU-only build[/]", "backend: torch on GPU")
    from .runtime import BACKENDS
    for name in BACKENDS.names():
        cls = BACKENDS.get(name)
        ok, info = cls.available()
        table.add_row(f"backend: {name}", f"[green]available: {escape(info)}[/]" if ok else
                      f"[yellow]unavailable: {escape(info)}. {escape(cls.fix)}[/]",
                      "the bicubic baseline (benchmark variant bicubic_pillow)" if cls.baseline else
                      f"runs {', '.join(cls.kinds)} artifacts")
    import shutil

    from .benchmarks.devices import gpu_info, jetson_info
    from .benchmarks.trtexec import JETPACK_TRTEXEC

    gpu = gpu_info()
    table.add_row("GPU (NVML)", f"[green]{escape(gpu['name'])} {gpu['compute_capability']}, driver {gpu['driver']}[/]"
                  if gpu else "[yellow]unavailable: no NVIDIA GPU, driver or nvidia-ml-py[/]", "device record, power (W, mJ/frame)")
    jet = jetson_info()
    table.add_row("Jetson", f"[green]{escape(jet['board'])}, power mode {jet['power_mode']}[/]" +
                  "".join(f" [yellow]{escape(w)}[/]" for w in jet["warnings"]) if jet else
                  "[yellow]not a Jetson (no /proc/device-tree/model)[/]", "board record, tegrastats power")
    tegra = shutil.which("tegrastats")
    table.add_row("tegrastats", f"[green]{tegra}[/]" if tegra else "[yellow]not found (Jetson only)[/]",
                  "Jetson rails, GPU load, RAM during timing")
    trtexec = shutil.which("trtexec") or (JETPACK_TRTEXEC if Path(JETPACK_TRTEXEC).is_file() else None)
    table.add_row("trtexec", f"[green]{trtexec}[/]" if trtexec else "[yellow]not found (TensorRT's tool: JetPack, or the "
                  "TensorRT tarball); import its JSON exports with --times instead[/]", "edgesr bench-trtexec")
    cxx = shutil.which("c++") or shutil.which("g++")
    table.add_row("C++ compiler", f"[green]{cxx}[/]" if cxx else "[yellow]unavailable: NNCF cannot build its CPU "
                  "extension, so the qat stage cannot run[/]", "qat (NNCF compiles a CPU extension once)")
    Console().print(table)
    return 0


def _builtin_recipe() -> Path:
    return Path(str(importlib.resources.files("edgesr.benchmarks") / "recipes" / "quickstart.yaml"))


def _needs_training_extra(command: str, modules=("torch", "torch_pruning", "yaml", "safetensors"),
                          extra: str = "train") -> None:
    import importlib.util

    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        what = "the training extra" if extra == "train" else f"the {extra} extra"
        raise UsageError(f"`edgesr {command}` needs {what}, which is not installed here (missing: "
                         f"{', '.join(missing)}): pip install 'edgesr[{extra}]'. Without it edgesr runs ONNX artifacts "
                         "(edgesr upscale, edgesr eval, edgesr doctor).")


def cmd_run(args: argparse.Namespace) -> int:
    _needs_training_extra("run")
    from .config import load_recipe
    from .pipeline import run_recipe

    recipe = load_recipe(args.recipe or _builtin_recipe(), devices=False)  # run_recipe checks the stages that run
    data = dataclasses.replace(recipe.data, **({"eval": tuple(args.eval)} if args.eval else {}),
                               **({"train": args.train} if args.train else {}))
    recipe = recipe.with_overrides(data=data, **({"threads": args.threads} if args.threads is not None else {}))
    out = Path(args.out or Path("runs") / recipe.name)
    only = [n for part in (args.only or []) for n in part.split(",") if n]
    run_recipe(recipe, out, force=args.force, command="edgesr " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
               only=only or None)
    return 0


from .imaging import WRITE_FORMATS as WRITABLE_SUFFIXES  # noqa: E402  (no torch: imaging imports numpy/PIL)


def _check_upscale_paths(src: Path, dst: Path, overwrite: bool) -> None:
    """Every way the two paths can be wrong, checked before the artifact is opened."""
    if not src.is_file():
        raise UsageError(f"{src}: no such image file. Check the path (relative paths start at {Path.cwd()}).")
    if dst.exists() and dst.resolve() == src.resolve():
        raise UsageError(f"{dst}: is the input image; refusing to overwrite it. Choose another output path.")
    if dst.is_dir():
        raise UsageError(f"{dst}: is a directory; give the output image's file name, e.g. {dst / (src.stem + '_sr.png')}")
    if dst.suffix.lower() not in WRITABLE_SUFFIXES:
        raise UsageError(f"{dst}: the output suffix {dst.suffix or '(none)'!r} names no image format; use one of "
                         f"{', '.join(sorted(WRITABLE_SUFFIXES))} (.png is lossless).")
    if dst.exists() and not overwrite:
        raise UsageError(f"{dst}: exists; refusing to overwrite it. Pass --overwrite, or choose another output path.")


def cmd_upscale(args: argparse.Namespace) -> int:
    from .runtime.batch import is_glob, plan_jobs, run_batch
    from .imaging import read_picture, write_picture
    from .runtime.video import VIDEO_SUFFIXES

    if Path(args.input).suffix.lower() in VIDEO_SUFFIXES:
        return _upscale_video(args)
    if Path(args.input).is_dir() or (is_glob(args.input) and not Path(args.input).exists()):
        if Path(args.output).suffix.lower() in WRITABLE_SUFFIXES:
            raise UsageError(f"{args.output}: names an image file, but {args.input} is a folder of images; give an "
                             "output folder (the input tree is mirrored there)")
        jobs = plan_jobs(args.input, args.output, recursive=args.recursive, fmt=args.format)
        if Path(args.output).is_file():
            raise UsageError(f"{args.output}: is a file; a folder or pattern of inputs needs an output folder")
        from .runtime.batch import check_existing
        from .files import folder_lock

        with folder_lock(args.output, "edgesr upscale"):  # two batches into one folder: the second is refused
            check_existing(jobs, skip_existing=args.skip_existing, overwrite=args.overwrite)  # before loading
            up = _upscaler(args)
            res = run_batch(up, jobs, skip_existing=args.skip_existing, overwrite=args.overwrite,
                            max_pixels=args.max_pixels)
        print(f"{args.input} -> {args.output}: {len(res.done)} upscaled x{up.scale}, {len(res.skipped)} already "
              f"there, {len(res.failed)} failed, in {res.seconds:.1f} s")
        left = _subfolders_with_images(Path(args.input), Path(args.output)) if not args.recursive else []
        if left:
            print(f"note: {len(left)} subfolder(s) of {args.input} hold images that were not included "
                  f"({', '.join(d.name for d in left[:3])}{', ...' if len(left) > 3 else ''}); add --recursive to "
                  "upscale them too (the tree is mirrored under the output folder)")
        for src, why in res.failed:
            print(f"failed: {why}", file=sys.stderr)
        return 1 if res.failed else 0
    src, dst = Path(args.input), Path(args.output)
    _check_upscale_paths(src, dst, args.overwrite)
    pic = read_picture(src, max_pixels=args.max_pixels)  # decoded before the model is loaded: bad input fails fast
    up = _upscaler(args)
    from .imaging import STREAM_PIXELS

    h, w = pic.rgb.shape[:2]
    if pic.alpha is None and pic.bits == 8 and dst.suffix.lower() == ".png" and h * w * up.scale ** 2 > STREAM_PIXELS:
        _upscale_to_png_rows(up, pic, dst, src.name)  # an output larger than memory may hold
    else:
        with _tile_progress(up, src.name):
            sr = up.upscale_picture(pic)
        write_picture(dst, sr)
    extras = [f"tiles of {up.last_tile}"] if up.last_tile else []
    extras += ["alpha resized with bicubic"] if pic.alpha is not None else []
    extras += ["16-bit"] if pic.bits == 16 else []
    print(f"{src} -> {dst} (x{up.scale}{''.join(', ' + e for e in extras)})")
    return 0


def _upscale_to_png_rows(up, pic, dst: Path, label: str) -> None:
    """A very large 8-bit PNG output: the SR image is assembled tile by tile in a memory-mapped temporary file
    beside ``dst`` (locked while written, removed after, a killed run's is removed by the next), then written as
    PNG a band of rows at a time, so memory holds the input, one tile and one band (ICC profile kept)."""
    import fcntl
    import os
    import tempfile

    import numpy as np

    from .files import remove_stale_temps_of
    from .imaging import write_png_rows

    h, w = pic.rgb.shape[:2]
    s = up.scale
    dst.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps_of(dst)
    fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.name}.", suffix=".tmp")
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.ftruncate(fd, h * s * w * s * 3)
        sr = np.memmap(tmp, dtype=np.uint8, mode="r+", shape=(h * s, w * s, 3))
        with _tile_progress(up, label):
            up.upscale(pic.rgb, out=sr)
        sr.flush()
        write_png_rows(dst, sr, pic.icc)
        del sr
    finally:
        os.close(fd)
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextlib.contextmanager
def _tile_progress(up, label: str):
    """A progress bar (tiles done, ETA) for an image large enough to be tiled; nothing for one that runs whole."""
    from .progress import progress_bar

    state: dict = {}

    def on_tile(done: int, total: int) -> None:
        if "bar" not in state:
            state["cm"] = progress_bar(f"upscale {label}", total)
            state["bar"] = state["cm"].__enter__()
        state["bar"].update(done, f"{done}/{total} tiles")

    up.on_tile = on_tile
    try:
        yield
    finally:
        up.on_tile = None
        if "cm" in state:
            state["cm"].__exit__(None, None, None)


def cmd_uint8_onnx(args: argparse.Namespace) -> int:
    """The artifact's 8-bit form (what ONNX Runtime and OpenVINO run for 8-bit frames) as a standalone ONNX file,
    for an application of one's own: uint8 N x H x W x 3 RGB in, uint8 N x sH x sW x 3 out, plus ``finite``."""
    import json

    import onnx

    from .artifacts import read_artifact
    from .files import atomic_write_bytes
    from .runtime.uint8_io import uint8_io

    art = read_artifact(args.artifact)
    if art.kind != "onnx":
        raise UsageError(f"{art.path}: is a {art.kind!r} artifact; the 8-bit form is made from an ONNX artifact (an "
                         "export, fp16 or quantize stage's output, or a pretrained name such as msrep-s-x2-int8)")
    dst = Path(args.output)
    if dst.suffix.lower() != ".onnx":
        raise UsageError(f"{dst}: give a file name ending in .onnx")
    if dst.is_dir():
        raise UsageError(f"{dst}: is a directory; give the output file's name")
    if dst.exists() and dst.resolve() == art.payload.resolve():
        raise UsageError(f"{dst}: is the artifact's own graph; refusing to overwrite it. Choose another path.")
    if dst.exists() and not args.overwrite:
        raise UsageError(f"{dst}: exists; refusing to overwrite it. Pass --overwrite, or choose another path.")
    proto = uint8_io(onnx.load(str(art.payload)))
    for key, value in (("edgesr.io", json.dumps({"input": "frames", "layout": "NHWC", "dtype": "uint8",
                                                 "colour": "RGB", "outputs": [o.name for o in proto.graph.output]})),
                       ("edgesr.source_hash", art.hash), ("edgesr.scales", json.dumps(art.manifest["scales"]))):
        entry = next((m for m in proto.metadata_props if m.key == key), None) or proto.metadata_props.add()
        entry.key, entry.value = key, value
    atomic_write_bytes(dst, proto.SerializeToString())
    outs = ", ".join(f"{o.name}" for o in proto.graph.output)
    print(f"{art.path} -> {dst}: input frames (uint8 N x H x W x 3 RGB), outputs {outs} "
          f"(x{'/x'.join(map(str, art.manifest['scales']))}, uint8 NHWC; finite: the sum of the float output, NaN "
          f"or Inf when the model failed){'; H and W multiples of ' + str(art.manifest.get('size_multiple')) if int(art.manifest.get('size_multiple', 1)) > 1 else ''}")
    return 0


def _subfolders_with_images(folder: Path, out: Path) -> list[Path]:
    """Direct subfolders of ``folder`` (not the output folder) with an image somewhere below them."""
    from .imaging import IMAGE_SUFFIXES

    if not folder.is_dir():
        return []
    out_real = out.resolve()
    return sorted(d for d in folder.iterdir() if d.is_dir() and d.resolve() != out_real
                  and any(p.suffix.lower() in IMAGE_SUFFIXES for p in d.rglob("*") if p.is_file()))


def _upscaler(args: argparse.Namespace):
    """The Upscaler the upscale commands run: the artifact (verified) on the chosen backend, with --tile."""
    from .runtime import Upscaler

    return Upscaler.open(args.artifact, args.backend, threads=args.threads or 0, tile=args.tile,
                         **_backend_options(args))


def _backend_options(args: argparse.Namespace) -> dict:
    """--scale (an output of a multi-scale artifact), --device (the backend's device) and --providers (ONNX
    Runtime's execution providers, in order of preference), when given."""
    opts = {**({"scale": args.scale} if args.scale else {}), **({"device": args.device} if args.device else {})}
    if getattr(args, "providers", None):
        if args.backend not in (None, "onnxruntime"):
            raise UsageError(f"--providers chooses ONNX Runtime's execution providers; the backend is {args.backend}")
        opts["providers"] = tuple(p.strip() for p in args.providers.split(",") if p.strip())
    return opts


def _upscale_video(args: argparse.Namespace) -> int:
    from .runtime.video import VideoOptions, upscale_video

    src, dst = Path(args.input), Path(args.output)
    if not src.is_file():
        raise UsageError(f"{src}: no such video file. Check the path (relative paths start at {Path.cwd()}).")
    opts = VideoOptions(codec=args.codec, crf=args.crf, pix_fmt=args.pix_fmt, lossless=args.lossless,
                        batch=args.batch, audio=not args.no_audio)
    r = upscale_video(_upscaler(args), src, dst, opts, overwrite=args.overwrite)
    print(f"{src} -> {dst}: {r.frames} frames {r.in_size[1]}x{r.in_size[0]} -> {r.out_size[1]}x{r.out_size[0]} at "
          f"{r.fps:g} fps ({r.codec}{', audio copied' if r.audio_packets else ''}); {r.end_to_end_fps:.1f} fps end to "
          f"end, {r.model_fps:.1f} fps in the model")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    """Architectures (with PyTorch installed) and the pretrained models shipped with edgesr."""
    from rich.console import Console
    from rich.table import Table

    from . import pretrained

    console = Console()  # the listing is the command's output: stdout
    console.width = max(console.width, 140)  # whole rows when piped (rich assumes 80 columns there)

    try:
        import torch

        from .models import MODELS, build_model
    except ImportError:
        console.print("architectures: need PyTorch (pip install 'edgesr[train]')", markup=False)
    else:
        from .models import deploy_form

        table = Table(title="architectures (defaults, x2)")
        for col in ("type", "parameters (x2, defaults)", "deployed", "paper / description"):
            table.add_column(col)
        for name in MODELS.names():
            n = deployed = None
            with torch.device("meta"):
                try:
                    model = build_model({"type": name, "scale": 2})
                    n = sum(p.numel() for p in model.parameters())
                    if hasattr(model, "reparameterized"):  # collapsed branches / fixed-scale filters
                        deployed = sum(p.numel() for p in deploy_form(model, {})[0].parameters())
                except (TypeError, ValueError):
                    pass
            doc = (MODELS.get(name).__doc__ or sys.modules[MODELS.get(name).__module__].__doc__ or "").strip()
            table.add_row(name, f"{n:,}" if n is not None else "–", f"{deployed:,}" if deployed is not None else "",
                          doc.splitlines()[0][:80] if doc else "")
        console.print(table)
    models = pretrained.index()
    table = Table(title=f"pretrained models ({len(models)}; use the name wherever an artifact path goes)")
    for col in ("name", "kind", "precision", "scale", "parameters", "GMACs 640x360", "Set5 PSNR/SSIM",
                "Set14 PSNR/SSIM", "measured on", "training steps", "trained on LR", "hash"):
        table.add_column(col, no_wrap=col in ("name", "hash"), min_width=8 if col == "hash" else None)
    for name, r in sorted(models.items()):
        by_scale = r.get("quality_by_scale") or {str(r["scale"]): r.get("quality", {})}
        cells = ["; ".join((f"x{sc} " if len(by_scale) > 1 else "") + f"{q[s]['psnr']:.2f} / {q[s]['ssim']:.4f}"
                           for sc, q in by_scale.items() if s in q) or "–" for s in ("Set5", "Set14")]
        scale = "/".join(f"x{sc}" for sc in r.get("scales", [r["scale"]]))
        table.add_row(name, r["kind"], r["precision"], scale, f"{r['params']:,}" if r.get("params") else "–",
                      f"{r['macs_640x360'] / 1e9:.2f}" if r.get("macs_640x360") else "–", *cells,
                      r.get("eval_backend", "–"), str(r.get("training_steps") or "–"), _trained_for(r), r["hash"][:8])
    console.print(table)
    console.print("hash: the first digits of each file's content hash; a recipe's load stage pins a version with "
                  "them (`{stage: load, path: NAME, hash: ...}`).", markup=False)
    if any(r.get("quality_by_degradation") for r in models.values()):
        console.print("trained on LR: bicubic = MATLAB's antialiased bicubic (the benchmarks' LR); such a model "
                      "over-sharpens frames made otherwise (OpenCV's resize: -2 dB below bicubic). general = a mix "
                      "of resizes, noise and JPEG, for frames of unknown origin; in brackets its Set5 gain over "
                      "bicubic on OpenCV-resized LR (edgesr eval ARTIFACT --set DIR --degradation NAME shows any "
                      "model on LR made each way).", markup=False)
    return 0


def _trained_for(record: dict) -> str:
    """The ``edgesr models`` cell: what LR a pretrained model was trained on, with its Set5 gain over bicubic of
    OpenCV-resized LR where recorded."""
    trained = record.get("trained_on", "bicubic")
    q = (record.get("quality_by_degradation") or {}).get("cubic-aliased", {}).get("Set5")
    if trained == "bicubic":
        return "bicubic"
    return trained + (f" (OpenCV cubic {q['gain_db']:+.2f} dB)" if q else "")


def cmd_bench_trtexec(args: argparse.Namespace) -> int:
    """trtexec timings (run here, or imported from its JSON exports) as an edgesr results.json."""
    import datetime as _dt
    import json

    from .benchmarks.devices import device_info, device_label
    from .benchmarks.trtexec import parse_profile, parse_times, run_trtexec
    from .files import atomic_write_text

    variant, precision, model = args.variant, None, args.model
    if model:
        mpath = Path(model)
        if (mpath / "manifest.json").is_file() or not mpath.exists():
            from .artifacts import read_artifact

            art = read_artifact(model)
            variant = variant or art.manifest.get("name") or art.path.name
            precision = art.manifest.get("precision")
            model = str(art.payload)
    if args.times:
        res = parse_times(args.times)
        res["profile"] = parse_profile(args.profile) if args.profile else None
        res["command"] = f"imported: {args.times}" + (f", {args.profile}" if args.profile else "")
        machine = {"imported": True}
        label = args.device or "device not named (pass --device)"
    elif model:
        h, w = args.input_size
        res = run_trtexec(model, shapes=f"lr:1x3x{h}x{w}", trtexec=args.trtexec, cuda_graph=args.cuda_graph,
                          no_data_transfers=args.no_data_transfers, iterations=args.iterations)
        machine = device_info()
        label = args.device or device_label(machine)
    else:
        raise UsageError("give an engine/ONNX artifact (or file) to run trtexec on, or --times FILE to import")
    row = {"variant": variant or "trtexec", "backend": "tensorrt (trtexec)", "precision": precision or args.precision,
           "quality": {}, "latency": res["latency"],
           "gpu": {k: res[k] for k in ("compute", "h2d", "d2h", "enqueue") if k in res},
           "throughput_qps": res["throughput_qps"], "profile": res.get("profile"),
           "settings": res.get("settings"), "trtexec_command": res["command"]}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = {"recipe": "trtexec", "command": "edgesr " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
               "measured_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
               "machine": machine, "device_label": label, "variants": [row]}
    atomic_write_text(out / "results.json", json.dumps(results, indent=2) + "\n")
    lat, comp = res["latency"], res["compute"]
    print(f"{row['variant']} on {label}: host latency median {lat['p50_ms']:.3f} ms (p99 {lat['p99_ms']:.3f}), GPU "
          f"compute median {comp['p50_ms']:.3f} ms, {res['throughput_qps']} qps over {res['inferences']} inferences "
          f"-> {out / 'results.json'}")
    return 0


def cmd_bench_gpu(args: argparse.Namespace) -> int:
    """Models on a GPU (torch backend on CUDA) in several settings and sizes, CUDA-event timed, with power."""
    import importlib.util
    import json

    import numpy as np

    missing = [m for m in ("torch", "safetensors") if importlib.util.find_spec(m) is None]
    if missing:
        raise UsageError(f"`edgesr bench-gpu` needs PyTorch (a CUDA build) and safetensors (missing: {', '.join(missing)})")

    from .benchmarks.gpu_bench import bench_gpu, ntire_runtime, parse_setting, report_md
    from .files import atomic_write_text

    settings = [s for s in args.settings.split(",") if s]
    for s in settings:
        parse_setting(s)  # a typo fails before any GPU work
    import torch

    if not torch.cuda.is_available():
        raise UsageError(f"bench-gpu needs an NVIDIA GPU that PyTorch sees (PyTorch {torch.__version__} sees none here); "
                         "on a CPU use edgesr run (the interleaved CPU harness)")
    out = Path(args.out)
    res = bench_gpu(args.models, settings, args.sizes, out, batch=args.batch, throughput_batch=args.throughput_batch,
                    eval_sets=args.set or [], max_seconds=args.max_seconds, iterations=args.iterations,
                    throughput_seconds=args.throughput_seconds)
    if args.ntire:
        from .imaging import read_image
        from .data.datasets import list_images

        groups = []
        for src in args.ntire_images or []:
            p = Path(src)
            groups.append((str(p), [read_image(f) for f in (list_images(p) if p.is_dir() else [p])]))
        h, w = args.ntire_size
        if args.ntire_frames:
            rng = np.random.default_rng(0)
            groups.append((f"{args.ntire_frames} random {h}x{w} frames (DIV2K-validation-sized LR)",
                           [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(args.ntire_frames)]))
        import tempfile

        scratch = Path(tempfile.mkdtemp(prefix="edgesr-ntire-"))
        rows = [{**ntire_runtime(spec, images, scratch), "source": source} for spec in args.ntire for source, images in groups]
        res["ntire"] = {"protocol": (f"PyTorch {torch.__version__} FP32 eager, cudnn.benchmark off, whole image on the "
                                     "GPU, CUDA events around the forward pass only, mean over the images of each "
                                     "source after 10 warm-up passes"), "rows": rows}
        for r in rows:
            print(f"NTIRE protocol {r['model']}: {r['params']:,} params, mean {r['mean_ms']:.3f} ms over {r['images']} "
                  f"images of {r['source']}")
        atomic_write_text(out / "results.json", json.dumps(res, indent=2) + "\n")
        atomic_write_text(out / "report.md", report_md(res))
    print(f"{sum('latency' in r for r in res['variants'])} rows on {res['device_label']} -> {out / 'report.md'}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from .benchmarks.merge import merge_runs

    res = merge_runs(args.runs, args.out, set_name=args.set, input_hw=args.input)
    print(f"{len(res['variants'])} rows from {len(res['devices'])} device(s) -> {Path(args.out) / 'report.md'}")
    return 0


def _input_size(text: str) -> tuple[int, int]:
    """An LR input size ``HxW`` (``--input-size`` of bench-trtexec, ``--input`` of profile)."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give the LR input as HxW, e.g. 360x640") from None
    if h < 1 or w < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: sides must be at least 1, e.g. 360x640")
    return h, w


def _shapes(text: str) -> tuple:
    try:
        parts = [tuple(int(v) for v in p.lower().split("x")) for p in text.split(":")]
    except ValueError:
        parts = []
    if len(parts) != 3 or any(len(p) != 2 for p in parts):
        raise argparse.ArgumentTypeError(f"{text!r}: give min:opt:max LR sizes as HxW, e.g. 64x64:360x640:1080x1920")
    return tuple(parts)


def cmd_build_engine(args: argparse.Namespace) -> int:
    # an engine from an ONNX artifact (a shipped one, say) needs ONNX and TensorRT for RTX, not PyTorch
    _needs_training_extra("build-engine", ("onnx",), "rtx")
    from .artifacts import read_artifact
    from .export.tensorrt import EngineConfig, build_engine

    art = read_artifact(args.artifact)
    if art.kind != "onnx":
        _needs_training_extra(f"build-engine {art.path} (a model artifact: exported to ONNX first)")
    cfg = EngineConfig(input=art.manifest.get("name", "onnx"), flavour=args.flavour,
                       **({"shapes": args.shapes} if args.shapes else {}), workspace_mb=args.workspace,
                       opt_level=args.opt_level, compute_capabilities=tuple(args.compute_capability or ()),
                       timing_cache=args.timing_cache, scale=args.scale)
    head = f"-x{args.scale}" if args.scale and len(art.manifest.scales) > 1 else ""
    out = Path(args.out) if args.out else art.path.with_name(f"{art.path.name}{head}-{args.flavour}-engine")
    eng = build_engine(art, cfg, out, name=out.name, cache_dir=out.parent / ".tensorrt_cache", overwrite=args.overwrite)
    e = eng.manifest["engine"]
    print(f"{art.path} -> {eng.path} ({e['flavour']} {e['version']}, {eng.manifest['precision']}, "
          f"{eng.payload.stat().st_size / 1e6:.2f} MB, targets {e['compute_capabilities']}, "
          f"built in {e['build_seconds']:.2f} s, cache key {e['cache_key']})")
    return 0


def _keyword(text: str) -> tuple[str, object]:
    """An architecture keyword ``KEY=VALUE``; the value is read as YAML (64 -> int, true -> bool, x -> str)."""
    import yaml

    key, sep, value = text.partition("=")
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"{text!r}: give architecture keywords as KEY=VALUE, e.g. channels=64")
    try:
        return key, yaml.safe_load(value) if value else ""
    except yaml.YAMLError:
        return key, value


def cmd_import(args: argparse.Namespace) -> int:
    _needs_training_extra("import")
    src = Path(args.file)
    out = Path(args.out) if args.out else src.with_name(src.stem)
    if src.suffix.lower() == ".onnx":
        from .export.onnx_import import import_onnx

        if args.keywords or args.arch != "auto" or args.scale:
            raise UsageError(f"{src}: an ONNX graph brings its architecture and scale; architecture keywords, --arch "
                             "and --scale are for checkpoints. Use --range, --channels and --output.")
        art = import_onnx(src, out, value_range=args.range or "0-1", channels=args.channels or "rgb",
                          output=args.output, name=args.name, overwrite=args.overwrite)
        m = art.manifest
        probe = m["metrics"]["probe"]
        print(f"{src} -> {art.path}: ONNX graph ({m['source']['input']} {m['source']['input_shape']}, {args.range or '0-1'} "
              f"{args.channels or 'rgb'}) as lr -> {', '.join(m['source']['outputs'])} as x{'/x'.join(map(str, m['scales']))}"
              f"{', made dynamic' if m['source']['made_dynamic'] else ''}"
              f"{f', bound to {fixed[1]}x{fixed[0]} (images are tiled to it)' if (fixed := m.get('input_size')) else ''}"
              f"; parity {m['metrics']['parity']['max_abs']:.1e}; "
              f"probe photo {probe['psnr_y']:.2f} dB (bicubic {probe['bicubic_psnr_y']:.2f})")
        other = "bgr" if (args.channels or "rgb") == "rgb" else "rgb"
        alt = probe["alternatives"].get(f"{args.range or '0-1'} {other}")
        if alt is not None and alt > probe["psnr_y"] + 0.02:
            print(f"note: with --channels {other} the probe photo scores {alt:.2f} dB ({alt - probe['psnr_y']:+.2f}); "
                  "a network works almost as well on swapped channels, so check the authors' channel order")
        return 0
    if args.range or args.channels or args.output:
        raise UsageError(f"{src}: --range, --channels and --output are for ONNX files; a checkpoint's conventions are "
                         "its architecture's (edgesr knows them).")
    from .importing import import_checkpoint

    art = import_checkpoint(src, out, arch=args.arch, keywords=dict(args.keywords or []), scale=args.scale,
                            name=args.name, overwrite=args.overwrite)
    m = art.manifest
    spec = ", ".join(f"{k}={v}" for k, v in m["arch"].items() if k != "type")
    print(f"{src} -> {art.path}: {m['arch']['type']} ({spec}), x{'/x'.join(map(str, m['scales']))}, "
          f"{m['params']:,} parameters from {m['source']['tensors']} tensors"
          + (f" ({'; '.join(m['source']['read'])})" if m["source"]["read"] else ""))
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    _needs_training_extra("check", ("onnx",), "rtx")
    from .artifacts import read_artifact
    from .export.tensorrt import check_tensorrt

    art = read_artifact(args.artifact)
    findings = check_tensorrt(art, args.shapes)
    for f in findings:
        print(f"{f['severity']}: {f['node']}: {f['problem']}; fix: {f['fix']}")
    errors = sum(f["severity"] == "error" for f in findings)
    print(f"{art.path}: {'ready for TensorRT' if not errors else f'{errors} problem(s) for TensorRT'}"
          f" ({len(findings) - errors} warning(s))")
    return 1 if errors else 0


def _region(text: str) -> tuple[int, int, int, int]:
    try:
        parts = tuple(int(v) for v in text.split(","))
    except ValueError:
        parts = ()
    if len(parts) != 4 or min(parts[2:]) < 1 or min(parts[:2]) < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: give X,Y,WIDTH,HEIGHT in input pixels, e.g. 40,32,16,16")
    return parts  # type: ignore[return-value]


def cmd_explain(args: argparse.Namespace) -> int:
    _needs_training_extra("explain")
    from .artifacts import read_artifact
    from .explain import explain, write_explanation
    from .imaging import read_image
    from .modelio import load_model

    art = read_artifact(args.artifact)
    if art.kind != "model":
        raise UsageError(f"{art.path}: is a {art.kind!r} artifact; explain needs gradients, which only the PyTorch "
                         "model has. Pass the model artifact it was made from (the run's train, distill or prune "
                         "stage directory, or a pretrained name without -fp32/-int8).")
    image = read_image(args.image)
    h, w = image.shape[:2]
    region = args.region or (max(0, w // 2 - 8), max(0, h // 2 - 8), min(16, w), min(16, h))
    layers = [n.strip() for n in args.layers.split(",") if n.strip()] if args.layers else None
    exp = explain(load_model(art), image, region, scale=args.scale, layers=layers, method=args.method,
                  ig_steps=args.steps)
    title = f"{art.manifest.get('name', art.path.name)} on {Path(args.image).name}"
    record = write_explanation(exp, image, args.out, title=title)
    for m in record["maps"]:
        c = m["centroid_xy"]
        where = f"centroid ({c[0]:.1f}, {c[1]:.1f})" if c else "all zero"
        print(f"{m['file']}: {m['name']} ({where}{', constant' if m['constant'] else ''})")
    print(f"{args.out}: {len(record['maps'])} maps, contact_sheet.png, maps.json (region x={region[0]} y={region[1]} "
          f"{region[2]}x{region[3]}, x{exp.scale})")
    return 0


def cmd_profile(args: argparse.Namespace) -> int:
    import json

    from rich.console import Console
    from rich.table import Table

    from .artifacts import read_artifact
    from .benchmarks.devices import device_info, device_label
    from .benchmarks.profile_ops import onnx_macs, profile_onnx

    art = read_artifact(args.artifact)
    if art.kind != "onnx":
        raise UsageError(f"{art.path}: is a {art.kind!r} artifact; the profiler runs ONNX graphs on ONNX Runtime. "
                         "Export it first (an export stage, or a pretrained name ending in -fp32/-int8)")
    import importlib.util

    fixed = art.manifest.input_size
    hw = tuple(int(v) for v in fixed) if fixed else tuple(args.input)  # a graph bound to one size runs at it
    has_onnx = importlib.util.find_spec("onnx") is not None
    # without the onnx package (the runtime-only install) the graph is profiled as written, with no MAC count
    macs = onnx_macs(art.payload, hw) if has_onnx else None
    res = profile_onnx(art, input_hw=hw, runs=args.runs, threads=args.threads, macs=macs,
                       fast_shuffle=not args.plain_shuffle and has_onnx)
    res["machine"] = device_info()
    console = Console()
    console.width = max(console.width, 120)
    rate = (f"{res['gops']:.0f} GOP/s ({macs / 1e9:.2f} GMACs of convolution)" if macs else
            "GOP/s not counted (the MAC count needs the onnx package: pip install onnx)")
    console.print(f"{art.path}: {res['precision']}, {hw[0]}x{hw[1]}{' (its fixed size)' if fixed else ''}, "
                  f"{args.runs} runs, median {res['median_ms']:.2f} ms (kernels {res['kernel_ms_per_run']:.2f} ms), "
                  f"{rate} on {device_label(res['machine'])}", markup=False)
    table = Table(title="time by operator")
    for col in ("operator", "ms / run", "share"):
        table.add_column(col, justify="left" if col == "operator" else "right")
    for o in res["ops"]:
        table.add_row(o["op"], f"{o['ms_per_run']:.3f}", f"{100 * o['share']:.1f} %")
    console.print(table)
    nodes = Table(title="slowest nodes")
    for col in ("node", "operator", "ms / run", "share"):
        nodes.add_column(col)
    for n in res["nodes"][:args.top]:
        nodes.add_row(n["node"], n["op"], f"{n['ms_per_run']:.3f}", f"{100 * n['share']:.1f} %")
    console.print(nodes)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "profile.json").write_text(json.dumps(res, indent=2))
        console.print(f"{out / 'profile.json'}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from .artifacts import read_artifact
    from .benchmarks.quality import measure_degradations, measure_quality
    from .data.datasets import load_pairs, set_name
    from .runtime import open_backend

    art = read_artifact(args.artifact)
    scales = [int(s) for s in art.manifest["scales"]]
    wanted = args.scale or ([] if len(scales) > 1 else scales[:1])
    bad = [s for s in wanted if s not in scales]
    if bad:
        raise UsageError(f"--scale {bad[0]}: {art.path} outputs x{'/x'.join(map(str, scales))}")
    for scale in wanted or scales:  # a multi-scale artifact: every output unless --scale picks some
        backend = open_backend(art, args.backend, threads=args.threads or 0,
                               **({"scale": scale} if len(scales) > 1 else {}))
        sets = {set_name(s): load_pairs(s, scale, "eval") for s in args.set}
        tag = f" x{scale}" if len(scales) > 1 else ""
        if not args.degradation:
            for name, q in measure_quality(backend, sets, scale, art.manifest.size_multiple,
                                           show_progress=True).items():
                print(f"{name}{tag}: PSNR-Y {q['psnr']:.3f} dB  SSIM-Y {q['ssim']:.4f}  ({len(q['per_image'])} images)")
        else:
            res = measure_degradations(backend, sets, scale, list(dict.fromkeys(args.degradation)),
                                       art.manifest.size_multiple, show_progress=True)
            for name, per in res.items():
                for d, q in per.items():
                    print(f"{name}{tag} {d}: PSNR-Y {q['psnr']:.3f} dB  SSIM-Y {q['ssim']:.4f}  bicubic of the same LR "
                          f"{q['bicubic_psnr']:.3f} dB  gain {q['gain_db']:+.2f} dB  ({len(q['per_image'])} images)")
                worse = [d for d, q in per.items() if q["gain_db"] < 0]
                if worse:
                    print(f"{name}{tag}: worse than bicubic on {', '.join(worse)}: this model was trained for another "
                          "degradation; pick a model trained on such LR for those inputs")
        backend.close()
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse with edgesr's one error style: ``edgesr: error: ...`` and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        print(f"edgesr: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def _int(text: str) -> int:
    """An integer command-line value, or argparse's error naming what was given."""
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None


def _non_negative_int(text: str) -> int:
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative; give 0 or a positive number")
    return value


def _threads(text: str) -> int:
    import os

    value = _int(text)
    cores = os.cpu_count() or 1
    if value < 0 or value > 4 * cores:
        raise argparse.ArgumentTypeError(f"{value}: give 0 (all {cores} cores) or a count from 1 to {4 * cores} "
                                         "(more threads than cores only wait for each other)")
    return value


def _crf(text: str) -> int:
    value = _non_negative_int(text)
    if value > 63:
        raise argparse.ArgumentTypeError(f"{value}: a CRF runs from 0 (lossless) to 51 for H.264/H.265 and 63 for "
                                         "VP9/AV1; lower is better, 18 is visually lossless for H.264")
    return value


def _tile(text: str) -> int:
    from .runtime.upscaler import DEFAULT_OVERLAP

    value = _int(text)
    if value != 0 and value <= 2 * DEFAULT_OVERLAP:
        raise argparse.ArgumentTypeError(
            f"{value} is too small: a tile must exceed twice its {DEFAULT_OVERLAP}-pixel overlap (use {2 * DEFAULT_OVERLAP + 1} "
            "or more, e.g. 256), or 0 to size tiles automatically")
    return value


def _positive_int(text: str) -> int:
    value = _non_negative_int(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _pixels(text: str) -> int:
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} pixels: give the largest image size to accept in pixels (a "
                                         "positive number), e.g. 400000000")
    return value


def build_parser() -> argparse.ArgumentParser:
    from .data.degradations import EVAL_DEGRADATIONS
    from .imaging import DEFAULT_MAX_PIXELS
    from .runtime import BACKENDS

    backends = BACKENDS.names()
    parser = _Parser(prog="edgesr", description="Super-resolution from training to measured edge engines.")
    parser.add_argument("--version", action="version", version=f"edgesr {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the traceback of errors too")
    sub = parser.add_subparsers(dest="cmd", required=True, parser_class=_Parser)
    p = sub.add_parser("run", help="run a recipe (default: the built-in quickstart) and write report.md, "
                                   "results.json, pareto.png")
    p.add_argument("recipe", nargs="?", help="recipe YAML (default: built-in quickstart)")
    p.add_argument("--out", help="run directory (default: runs/<recipe name>)")
    p.add_argument("--eval", action="append", metavar="PATH",
                   help="evaluation set (benchmark folder with HR/, or 'builtin'); repeatable")
    p.add_argument("--train", metavar="PATH", help="training data (DIV2K root, image folder, or 'builtin')")
    p.add_argument("--threads", type=_threads, help="intra-op threads (0 = all cores)")
    p.add_argument("--force", action="store_true", help="re-run stages even when their inputs are unchanged")
    p.add_argument("--only", action="append", metavar="STAGE[,STAGE]",
                   help="run only these stages (and what they need), no benchmark; repeatable. Under torchrun: "
                        "the training stages to run data-parallel")
    p.set_defaults(fn=cmd_run)
    p = sub.add_parser("upscale", help="upscale an image, a folder of images, a glob pattern or a video with an artifact")
    p.add_argument("artifact")
    p.add_argument("input", help="an image, a folder, a quoted glob pattern such as 'photos/**/*.jpg', or a video "
                                 "(.mp4 .mkv .webm .mov .avi)")
    p.add_argument("output", help=f"output image ({', '.join(sorted(WRITABLE_SUFFIXES))}), or a folder for a folder "
                                  "or pattern of inputs (the input tree is mirrored)")
    p.add_argument("--scale", type=_positive_int, help="the output scale of a multi-scale artifact (default: its first)")
    p.add_argument("--device", help="backend device: torch cpu/cuda[:N], openvino CPU/GPU (default: the backend's)")
    p.add_argument("--providers", help="onnxruntime: execution providers in order, e.g. cuda,cpu or tensorrt,cuda,cpu "
                                       "(default cpu); each missing one is named with how to get it")
    p.add_argument("--recursive", action="store_true", help="folder input: include its subfolders")
    p.add_argument("--skip-existing", action="store_true",
                   help="folder/pattern input: keep outputs that exist (resume an interrupted batch)")
    p.add_argument("--codec", help="video: encoder (default libx264; libvpx-vp9 for .webm; ffv1/libx264rgb lossless)")
    p.add_argument("--crf", type=_crf, default=18, help="video: quality, lower is better (default 18)")
    p.add_argument("--pix-fmt", help="video: output pixel format (default yuv420p)")
    p.add_argument("--lossless", action="store_true", help="video: RGB without loss (FFV1 in .mkv, H.264 RGB in .mp4)")
    p.add_argument("--batch", type=_positive_int, default=4, help="video: frames per backend call (default 4)")
    p.add_argument("--no-audio", action="store_true", help="video: drop the audio instead of copying it")
    p.add_argument("--format", metavar="EXT", help="folder/pattern input: write this format (png, jpg, webp, ...) "
                                                   "instead of each input's own")
    p.add_argument("--backend", choices=backends, help="default: the first available one for the artifact's kind")
    p.add_argument("--tile", type=_tile, default=0,
                   help="LR tile size (0 = automatic: the whole image, or tiles when it is too large for memory)")
    p.add_argument("--threads", type=_threads, help="intra-op threads (0 = all cores)")
    p.add_argument("--overwrite", action="store_true", help="replace output files that exist")
    p.add_argument("--max-pixels", type=_pixels, default=DEFAULT_MAX_PIXELS,
                   help=f"refuse input images with more pixels than this (decompression-bomb guard; default "
                        f"{DEFAULT_MAX_PIXELS:,})")
    p.set_defaults(fn=cmd_upscale)
    p = sub.add_parser("eval", help="PSNR/SSIM of an artifact on benchmark sets (the protocol)")
    p.add_argument("artifact")
    p.add_argument("--set", action="append", required=True, metavar="PATH")
    p.add_argument("--scale", action="append", type=_positive_int, help="multi-scale artifact: evaluate this output "
                                                                        "(repeatable; default: every output)")
    p.add_argument("--backend", choices=backends, help="default: the first available one for the artifact's kind")
    p.add_argument("--threads", type=_threads, help="intra-op threads (0 = all cores)")
    p.add_argument("--degradation", action="append", choices=EVAL_DEGRADATIONS, metavar="NAME",
                   help="make LR from the HR images this way instead of the set's LR (repeatable): "
                        f"{', '.join(EVAL_DEGRADATIONS)}; each beside bicubic upscaling of the same LR")
    p.set_defaults(fn=cmd_eval)
    p = sub.add_parser("build-engine", help="build a TensorRT engine from an ONNX artifact (flavour rtx builds "
                                             "without a GPU)")
    p.add_argument("artifact", help="ONNX artifact (export, fp16, or quantize with target: tensorrt)")
    p.add_argument("--flavour", choices=["rtx", "tensorrt"], default="rtx")
    p.add_argument("--shapes", type=_shapes, help="LR min:opt:max as HxW (default 64x64:360x640:1080x1920)")
    p.add_argument("--workspace", type=_positive_int, metavar="MB", help="builder workspace limit in MB")
    p.add_argument("--opt-level", type=int, choices=range(6), default=3, help="builder optimization level 0-5")
    p.add_argument("--compute-capability", action="append", metavar="SMxx",
                   help="rtx: a GPU generation to compile for (repeatable; default SM75, SM86, SM89, SM120)")
    p.add_argument("--timing-cache", metavar="FILE", help="timing cache shared across builds")
    p.add_argument("--scale", type=int, metavar="S", help="a multi-scale artifact: build the engine for this head "
                                                          "alone (default: every head)")
    p.add_argument("--out", help="engine artifact directory (default: beside the ONNX artifact)")
    p.add_argument("--overwrite", action="store_true", help="replace an engine artifact that exists at --out")
    p.set_defaults(fn=cmd_build_engine)
    p = sub.add_parser("import", help="make an edgesr artifact from an authors' checkpoint (.pth/.pt/.safetensors: "
                                       "strict key mapping, every tensor checked) or a foreign ONNX file (wrapped "
                                       "to edgesr's I/O, parity-checked)")
    p.add_argument("file", help="checkpoint or ONNX file")
    p.add_argument("keywords", nargs="*", type=_keyword, metavar="KEY=VALUE",
                   help="architecture keywords to set (the rest are read from the file's shapes)")
    p.add_argument("--arch", default="auto", help="architecture (default auto: detected from the file's keys)")
    p.add_argument("--scale", type=_positive_int, help="the scale the network must have (checked)")
    p.add_argument("--name", help="the artifact's name (default: the output directory's)")
    p.add_argument("--out", help="artifact directory (default: beside the file, named after it)")
    p.add_argument("--overwrite", action="store_true", help="replace an artifact of the same kind at --out")
    p.add_argument("--range", choices=["0-1", "0-255"], help="ONNX file: its input/output range (default 0-1)")
    p.add_argument("--channels", choices=["rgb", "bgr", "y"], help="ONNX file: its channel order (default rgb; y: a luminance-only network, colour from bicubic)")
    p.add_argument("--output", help="ONNX file: keep only this output of a graph with several")
    p.set_defaults(fn=cmd_import)
    p = sub.add_parser("check", help="TensorRT readiness of an ONNX artifact: rules, then the real RTX parser and "
                                      "builder where installed; exit 1 when it would not build")
    p.add_argument("artifact")
    p.add_argument("--target", choices=["tensorrt"], default="tensorrt")
    p.add_argument("--shapes", type=_shapes, help="engine profile to check, LR min:opt:max as HxW")
    p.set_defaults(fn=cmd_check)
    p = sub.add_parser("bench-trtexec", help="time an engine or ONNX file with trtexec (or import its JSON exports) "
                                              "into an edgesr results.json")
    p.add_argument("model", nargs="?", help="engine/ONNX artifact, or an .engine/.plan/.onnx file")
    p.add_argument("--times", metavar="JSON", help="import a trtexec --exportTimes file instead of running trtexec")
    p.add_argument("--profile", metavar="JSON", help="with --times: its --exportProfile file (per-layer times)")
    p.add_argument("--device", help="the device's name in reports (default: this machine's; needed with --times)")
    p.add_argument("--variant", help="the row's name (default: the artifact's)")
    p.add_argument("--precision", default="unknown", help="with a plain file: its precision, for the report")
    p.add_argument("--trtexec", metavar="PATH", help="trtexec executable (default: PATH, then /usr/src/tensorrt/bin)")
    p.add_argument("--input-size", type=_input_size, default=(360, 640), help="LR input HxW (default 360x640)")
    p.add_argument("--iterations", type=_positive_int, default=200)
    p.add_argument("--cuda-graph", action="store_true", help="trtexec --useCudaGraph")
    p.add_argument("--no-data-transfers", action="store_true", help="trtexec --noDataTransfers (GPU compute only)")
    p.add_argument("--out", required=True, help="directory for results.json")
    p.set_defaults(fn=cmd_bench_trtexec)
    p = sub.add_parser("bench-gpu", help="time models on an NVIDIA GPU (torch backend: fp32/fp16/bf16, channels-last, "
                                          "CUDA graphs, torch.compile) with CUDA events, power and PSNR")
    p.add_argument("models", nargs="+", metavar="MODEL",
                   help="model or engine artifact, pretrained name, or zoo:TYPE[:key=value,...] (random weights: timed only)")
    p.add_argument("--settings", default="fp32,fp32-cl,fp16,fp16-cl,fp16-cl-graph,engine,engine-graph",
                   help="comma-separated: fp32|fp16|bf16 [-cl] [-graph] [-compile] for models, engine[-graph] for TensorRT "
                        "engine artifacts (default %(default)s)")
    p.add_argument("--sizes", type=lambda t: [_input_size(v) for v in t.split(",")],
                   default=[(360, 640), (720, 1280), (1080, 1920)], help="LR HxW list (default 360x640,720x1280,1080x1920)")
    p.add_argument("--batch", type=_positive_int, default=1)
    p.add_argument("--throughput-batch", type=_non_negative_int, default=8,
                   help="also time this batch at the first size (0: no)")
    p.add_argument("--set", action="append", metavar="PATH", help="evaluation set for PSNR of trained models (repeatable)")
    p.add_argument("--max-seconds", type=float, default=3.0, help="latency phase limit per row")
    p.add_argument("--iterations", type=_positive_int, default=200)
    p.add_argument("--throughput-seconds", type=float, default=1.0, help="sustained phase (throughput, power) per row")
    p.add_argument("--ntire", action="append", metavar="MODEL", help="also time MODEL by the NTIRE runtime protocol")
    p.add_argument("--ntire-images", action="append", metavar="PATH", help="LR images (file or folder) for --ntire")
    p.add_argument("--ntire-size", type=_input_size, default=(339, 510), help="random LR frames' HxW (default 339x510)")
    p.add_argument("--ntire-frames", type=_non_negative_int, default=20, help="random frames for --ntire (default 20)")
    p.add_argument("--out", required=True)
    p.set_defaults(fn=cmd_bench_gpu)
    p = sub.add_parser("report", help="merge runs from several machines into one report (a table per device, one "
                                       "Pareto plot with a marker per device)")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--out", required=True)
    p.add_argument("--set", help="evaluation set on the plot (default: the first measured)")
    p.add_argument("--input", type=_input_size, help="LR HxW the plot compares at, batch 1 (default: the most common)")
    p.set_defaults(fn=cmd_report)
    p = sub.add_parser("profile", help="where an ONNX artifact's time goes on ONNX Runtime: per-operator and per-node "
                                        "kernel time, achieved GOP/s")
    p.add_argument("artifact", help="an ONNX artifact (directory or pretrained name)")
    p.add_argument("--input", type=_input_size, default=(360, 640), help="LR input HxW (default 360x640)")
    p.add_argument("--runs", type=_positive_int, default=20)
    p.add_argument("--threads", type=_threads, default=0, help="intra-op threads (0: all cores)")
    p.add_argument("--top", type=_positive_int, default=10, help="slowest nodes listed")
    p.add_argument("--plain-shuffle", action="store_true", help="run DepthToSpace as written (the onnxruntime "
                                                                "backend runs it as an exact ConvTranspose)")
    p.add_argument("--out", help="folder for profile.json")
    p.set_defaults(fn=cmd_profile)
    p = sub.add_parser("explain", help="attention maps and attribution maps of a model for a region of its output, "
                                        "as overlays on the input and a contact sheet")
    p.add_argument("artifact", help="a model artifact (directory or pretrained name)")
    p.add_argument("image", help="the input (LR) image")
    p.add_argument("--out", required=True, help="folder for the PNGs, contact_sheet.png and maps.json")
    p.add_argument("--region", type=_region, help="X,Y,WIDTH,HEIGHT of the output region, in input pixels "
                                                  "(default: 16x16 at the centre)")
    p.add_argument("--layers", help="comma-separated layer names (default: up to four trunk convolutions)")
    p.add_argument("--method", choices=["layercam", "gradcam"], default="layercam")
    p.add_argument("--scale", type=_positive_int, help="output to explain, for multi-scale models (default: first)")
    p.add_argument("--steps", type=_positive_int, default=16, help="integrated-gradients steps (default 16)")
    p.set_defaults(fn=cmd_explain)
    p = sub.add_parser("models", help="list the architectures and the pretrained models (parameters, MACs, PSNR)")
    p.set_defaults(fn=cmd_models)
    p = sub.add_parser("uint8-onnx", help="write an ONNX artifact's 8-bit form (uint8 NHWC frames in and out) as a "
                                          "standalone .onnx file for your own application")
    p.add_argument("artifact", help="ONNX artifact directory or pretrained name")
    p.add_argument("output", help="the .onnx file to write")
    p.add_argument("--overwrite", action="store_true", help="replace an existing file")
    p.set_defaults(fn=cmd_uint8_onnx)
    p = sub.add_parser("doctor", help="list components and backends, and why any is unavailable")
    p.set_defaults(fn=lambda a: doctor())
    return parser


_WRITE_FAILURES = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exceeded",
                   errno.EROFS: "the file system is read-only", errno.EACCES: "no permission to write there",
                   errno.EPERM: "not permitted"}
"""Errors of writing where the fix is the user's (space, permissions), reported without a traceback."""


def main(argv: list[str] | None = None) -> int:
    from .imaging import env_max_pixels

    try:
        env_max_pixels()  # a bad EDGESR_MAX_PIXELS is named before anything runs
    except EdgesrError as exc:
        print(f"edgesr: error: {exc}", file=sys.stderr)
        return exc.exit_code
    args = build_parser().parse_args(argv)
    for name in QUIET_IMPORT_LOGGERS:  # import-time notes about CUDA-only kernels (see doctor), not errors
        if not args.debug:
            logging.getLogger(name).setLevel(logging.ERROR)
    try:
        return args.fn(args)
    except EdgesrError as exc:
        if args.debug:
            raise
        print(f"edgesr: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("edgesr: interrupted; artifacts are written atomically, re-run the same command to continue",
              file=sys.stderr)
        return 130
    except OSError as exc:
        why = _WRITE_FAILURES.get(exc.errno)
        if args.debug or why is None:
            raise
        print(f"edgesr: error: {exc.filename or 'an output file'}: {why} ({exc.strerror}). Free some space or choose "
              "another output location (--out), then run the same command again: artifacts and images are moved "
              "into place only once complete, and a re-run reuses every stage that finished.", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
