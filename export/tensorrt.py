"""TensorRT engines from ONNX artifacts, in two flavours behind one module.

* ``rtx`` — TensorRT for RTX (``import tensorrt_rtx``; ``pip install 'edgesr[rtx]'``): desktop GeForce/RTX
  GPUs. Its builder compiles ahead of time **without a GPU**, for the compute capabilities named
  (``SM75`` ... ``SM121``; not the data-centre SM90), so engines are built for real in CI.
* ``tensorrt`` — TensorRT 10/11 (``import tensorrt``): data-centre GPUs and Jetson (JetPack 6 ships
  10.3). Building needs the GPU the engine is for.

Their builder and parser APIs agree (``Builder``, strongly typed ``create_network``, ``OnnxParser``, one
optimization profile for the dynamic input, ``build_serialized_network``); the differences are named in
:func:`_configure`: compute-capability targets on RTX, the workspace pool on TensorRT. Networks are
strongly typed: INT8 comes only from explicit Q/DQ in the graph (symmetric INT8, zero point 0, float
biases: the quantize stage's ``target: tensorrt``), FP16 from the fp16 stage's graph.

An engine is tied to its flavour, version, platform and GPU. The manifest records all of it with the
profile, workspace, optimization level and the ONNX hash; their digest is the engine's cache key (an
unchanged key skips the rebuild), and :func:`check_engine` refuses a foreign engine before anything
deserializes it, naming both sides and the rebuild command. A ``trtexec`` command line is written beside
each engine for boards that have TensorRT but not its Python bindings.
"""

from __future__ import annotations

import hashlib
import json
import platform
import shlex
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from edgesr.artifacts import (Artifact, Candidate, check_destination, derived_manifest, last_quantization,
                              materialize, read_artifact)
from edgesr.errors import EdgesrError
from edgesr.files import atomic_write_bytes
from edgesr.runtime.tensorrt_backend import (FLAVOURS, EngineError, check_engine, engine_platform, flavour_available,
                                              flavour_module)
from edgesr.stages import ENGINE, ONNX, StageContext, register_stage

__all__ = ["EngineConfig", "EngineError", "FLAVOURS", "flavour_module", "flavour_available", "build_engine",
           "engine_stage", "check_engine", "engine_key", "RTX_COMPUTE_CAPABILITIES", "check_tensorrt", "check_profile"]

RTX_COMPUTE_CAPABILITIES = ("SM75", "SM80", "SM86", "SM89", "SM120", "SM121")
"""What TensorRT for RTX 1.x compiles for (Turing to Blackwell desktop GPUs)."""
DEFAULT_RTX_TARGETS = ("SM75", "SM86", "SM89", "SM120")


@dataclass(frozen=True)
class EngineConfig:
    """Build a TensorRT engine from an ONNX artifact (FP32, the fp16 stage's graph, or INT8 Q/DQ in the
    tensorrt form)."""

    input: str
    flavour: Literal["rtx", "tensorrt"] = "rtx"
    shapes: tuple[tuple[int, int], tuple[int, int], tuple[int, int]] = ((64, 64), (360, 640), (1080, 1920))
    """LR (H, W) of the optimization profile: min, opt (what kernels are tuned for), max."""
    batch: int = 1
    workspace_mb: int | None = None
    """Builder workspace limit; default: the builder's own on RTX, 1024 MB on x86 TensorRT, 256 MB on Jetson."""
    opt_level: int = 3
    """Builder optimization level 0-5 (higher: longer builds, maybe faster engines)."""
    compute_capabilities: tuple[str, ...] = ()
    """RTX only: the GPU generations to compile for (default SM75, SM86, SM89, SM120)."""
    timing_cache: str | None = None
    """TensorRT flavour: timing cache file shared across builds (default: one per version in the run
    directory). RTX has none: it picks kernels at run time."""
    scale: int | None = field(default=None, metadata={"fingerprint": "when_set"})
    """A multi-scale artifact: build the engine for this head alone (its output and the layers it depends on;
    the other heads' layers are left out of the engine, so x2 from an x2+x4 student costs what x2 does, as on
    ONNX Runtime and OpenVINO). None: every head, one engine output each."""


def check_profile(cfg: EngineConfig, size_multiple: int = 1, input_size=None, max_batch: int | None = None) -> dict:
    """The optimization profile, validated before anything is built: every side >= 1, min <= opt <= max,
    and multiples of the model's size multiple. A graph bound to one input size (``input_size``, an imported
    ONNX file) gets exactly that size (and batch 1 with ``max_batch`` 1) whatever the shapes asked."""
    if input_size:
        hw = tuple(int(v) for v in input_size)
        cfg = replace(cfg, shapes=(hw, hw, hw), batch=1 if max_batch == 1 else cfg.batch)
    (h0, w0), (h1, w1), (h2, w2) = cfg.shapes
    problems = []
    if cfg.batch < 1:
        problems.append(f"batch {cfg.batch} < 1")
    if min(h0, w0) < 1:
        problems.append(f"min {h0}x{w0} has a side < 1 (TensorRT needs every dimension >= 1)")
    if not (h0 <= h1 <= h2 and w0 <= w1 <= w2):
        problems.append(f"min {h0}x{w0} <= opt {h1}x{w1} <= max {h2}x{w2} does not hold")
    if size_multiple > 1 and any(v % size_multiple for v in (h0, w0, h1, w1, h2, w2)):
        problems.append(f"sides must be multiples of {size_multiple} (the model's size_multiple)")
    if problems:
        raise EngineError(f"engine profile shapes {[list(s) for s in cfg.shapes]}: {'; '.join(problems)}. Give "
                          "shapes as [[min_h, min_w], [opt_h, opt_w], [max_h, max_w]] in LR pixels.")
    shape = lambda h, w: [cfg.batch, 3, h, w]
    return {"input": "lr", "min": shape(h0, w0), "opt": shape(h1, w1), "max": shape(h2, w2)}


def _targets(cfg: EngineConfig) -> list[str]:
    if cfg.flavour != "rtx":
        if cfg.compute_capabilities:
            raise EngineError("compute_capabilities applies to flavour rtx; TensorRT builds for the GPU it runs on")
        return []
    targets = list(cfg.compute_capabilities or DEFAULT_RTX_TARGETS)
    bad = [t for t in targets if t not in RTX_COMPUTE_CAPABILITIES]
    if bad:
        raise EngineError(f"compute capabilities {bad} are not TensorRT for RTX targets; use some of "
                          f"{list(RTX_COMPUTE_CAPABILITIES)} (data-centre GPUs such as the H100, SM90, need "
                          "flavour tensorrt)")
    return targets


def _workspace_mb(cfg: EngineConfig) -> int | None:
    if cfg.workspace_mb is not None:
        return cfg.workspace_mb
    if cfg.flavour == "rtx":
        return None
    return 256 if platform.machine().lower() in ("aarch64", "arm64") else 1024


def engine_key(onnx_hash: str, cfg: EngineConfig, version: str, profile: dict, targets: list[str],
               workspace_mb: int | None, head: int | None = None) -> str:
    """Everything an engine depends on; an engine is rebuilt unless all of it is unchanged (``head``: the one
    output built, counted only when set, so that earlier engines keep their keys)."""
    blob = {"onnx": onnx_hash, "flavour": cfg.flavour, "version": version, "platform": engine_platform(),
            "profile": profile, "targets": targets, "workspace_mb": workspace_mb, "opt_level": cfg.opt_level,
            **({"head": head} if head is not None else {})}
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:16]


def trtexec_command(onnx_name: str, engine_name: str, profile: dict, cfg: EngineConfig, workspace_mb: int | None,
                    targets: list[str]) -> str:
    """The equivalent ``trtexec`` (TensorRT) / ``tensorrt_rtx`` (RTX) command line, for boards without the
    Python bindings."""
    dims = lambda key: "lr:" + "x".join(str(v) for v in profile[key])
    args = ["tensorrt_rtx" if cfg.flavour == "rtx" else "trtexec", f"--onnx={onnx_name}", f"--saveEngine={engine_name}",
            "--stronglyTyped", f"--minShapes={dims('min')}", f"--optShapes={dims('opt')}", f"--maxShapes={dims('max')}",
            f"--builderOptimizationLevel={cfg.opt_level}"]
    if workspace_mb is not None:
        args.append(f"--memPoolSize=workspace:{workspace_mb}M")
    if targets:
        args.append("--computeCapabilities=" + ",".join(t[2:-1] + "." + t[-1] for t in targets))
    return " ".join(shlex.quote(a) for a in args)


def _configure(trt, builder, cfg: EngineConfig, profile: dict, targets: list[str], workspace_mb: int | None,
               cache_bytes: bytes):
    """The builder config; where the flavours differ is here and only here: RTX compiles ahead of time for
    named compute capabilities and has no timing cache (its tactic choice happens at run time, with a runtime
    cache); TensorRT builds for the GPU it runs on, within a workspace limit, with a timing cache."""
    config = builder.create_builder_config()
    prof = builder.create_optimization_profile()
    prof.set_shape("lr", tuple(profile["min"]), tuple(profile["opt"]), tuple(profile["max"]))
    config.add_optimization_profile(prof)
    config.builder_optimization_level = cfg.opt_level
    if workspace_mb is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb << 20)
    if cfg.flavour == "rtx":  # ahead-of-time compilation for the named GPU generations
        config.num_compute_capabilities = len(targets)
        for i, t in enumerate(targets):
            config.set_compute_capability(getattr(trt.ComputeCapability, t), i)
    else:
        config.set_timing_cache(config.create_timing_cache(cache_bytes), ignore_mismatch=False)
    return config


def _logger(trt):
    """A logger that keeps TensorRT's messages (shown only when a build fails): without a GPU the RTX builder
    reports, harmlessly, that it found no CUDA driver."""
    class Collect(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)
            self.messages: list[str] = []

        def log(self, severity, msg):
            if severity <= trt.ILogger.Severity.WARNING and "cudaError 35" not in msg:
                self.messages.append(str(msg).splitlines()[0])
    return Collect()


def _build_gpu() -> tuple[list[str] | str, str | None]:
    """TensorRT 10/11 builds for the GPU it runs on: its compute capability (what loading checks) and name."""
    from edgesr.runtime.cuda import CudaError, Cuda

    try:
        cuda = Cuda()
    except CudaError:
        return "the build machine's GPU", None
    return [cuda.compute_capability], cuda.name


def build_engine(onnx_art: Artifact, cfg: EngineConfig, out: Path, *, name: str, cache_dir: Path,
                 overwrite: bool = False) -> Artifact:
    """Parse and build ``onnx_art`` into an engine artifact at ``out`` (skipped when ``out`` already holds an
    engine with the same cache key; ``out`` must be new or empty, or an engine artifact with ``overwrite``)."""
    _check_buildable(onnx_art)
    key = _build_plan(onnx_art, cfg)["key"]
    check_destination(out, kind="engine", overwrite=True, inputs=(onnx_art.path,))  # never the input or others' files
    try:
        prev = read_artifact(out)
        if prev.kind == "engine" and prev.manifest.get("engine", {}).get("cache_key") == key:
            return prev
    except EdgesrError:
        pass
    check_destination(out, kind="engine", overwrite=overwrite, inputs=(onnx_art.path,))
    return materialize(out, lambda staging: engine_candidate(onnx_art, cfg, staging, name=name, cache_dir=cache_dir),
                       overwrite=overwrite)


def _check_buildable(onnx_art: Artifact) -> None:
    if onnx_art.kind != "onnx":
        raise EngineError(f"{onnx_art.path}: an engine is built from an ONNX artifact (an export, fp16 or quantize "
                          f"stage's output); this is {onnx_art.kind!r}")
    if onnx_art.manifest.get("precision", "").startswith("int8"):
        qdq = last_quantization(onnx_art.manifest)
        if not qdq.get("tensorrt_explicit_int8"):
            raise EngineError(f"{onnx_art.path}: this INT8 graph is in the ONNX Runtime form (UINT8/asymmetric "
                              "activations, INT32 biases), which TensorRT's parser refuses. Quantize with "
                              "`target: tensorrt` in the quantize (or qat) stage for the form TensorRT builds.")


def _build_plan(onnx_art: Artifact, cfg: EngineConfig) -> dict:
    """What the build depends on: the flavour's module and version, the profile, targets, workspace and the
    engine's cache key."""
    trt = flavour_module(cfg.flavour)
    version = trt.__version__
    profile = check_profile(cfg, onnx_art.manifest.size_multiple, onnx_art.manifest.input_size,
                            onnx_art.manifest.max_batch)
    targets = _targets(cfg)
    workspace = _workspace_mb(cfg)
    head = _head(onnx_art, cfg)
    return {"trt": trt, "version": version, "profile": profile, "targets": targets, "workspace": workspace,
            "head": head, "key": engine_key(onnx_art.hash, cfg, version, profile, targets, workspace,
                                            None if head is None else cfg.scale)}


def _head(onnx_art: Artifact, cfg: EngineConfig) -> int | None:
    """The index of the output ``cfg.scale`` picks in a multi-scale graph; None: build every output."""
    scales = list(onnx_art.manifest.scales)
    if cfg.scale is None:
        return None
    if cfg.scale not in scales:
        raise EngineError(f"{onnx_art.path}: scale {cfg.scale}: the graph outputs x{'/x'.join(map(str, scales))}; "
                          f"pick one of them (or leave scale out for every head)")
    return scales.index(cfg.scale) if len(scales) > 1 else None


def engine_candidate(onnx_art: Artifact, cfg: EngineConfig, staging: Path, *, name: str, cache_dir: Path) -> Candidate:
    """Build ``onnx_art`` into ``staging/model.engine`` (with the equivalent ``trtexec`` command beside it)."""
    _check_buildable(onnx_art)
    plan = _build_plan(onnx_art, cfg)
    trt, version, profile, targets, workspace = (plan[k] for k in ("trt", "version", "profile", "targets", "workspace"))
    cache_path = Path(cfg.timing_cache) if cfg.timing_cache else cache_dir / f"{cfg.flavour}-{version}.timing-cache"
    cache_bytes = cache_path.read_bytes() if cache_path.is_file() else b""
    logger = _logger(trt)
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    onnx_name, head = onnx_art.payload.name, plan["head"]
    if head is not None:  # one head: its output and what it depends on, kept beside the engine for trtexec
        from edgesr.onnxutil import one_output

        graph = one_output(onnx_art.payload, head)
        onnx_name = f"model_x{cfg.scale}.onnx"
        (staging / onnx_name).write_bytes(graph)
    parsed = (parser.parse(graph, str(onnx_art.payload)) if head is not None
              else parser.parse_from_file(str(onnx_art.payload)))
    if not parsed:
        errors = [str(parser.get_error(i)).splitlines()[0] for i in range(parser.num_errors)]
        raise EngineError(f"{onnx_art.payload}: TensorRT's ONNX parser ({cfg.flavour} {version}) refuses the graph: "
                          f"{'; '.join(errors[:3] or logger.messages[-3:])}")
    config = _configure(trt, builder, cfg, profile, targets, workspace, cache_bytes)
    t0 = time.perf_counter()
    blob = builder.build_serialized_network(network, config)
    seconds = time.perf_counter() - t0
    if blob is None:
        raise EngineError(f"{onnx_art.payload}: the {cfg.flavour} {version} builder produced no engine for profile "
                          f"{profile} (targets {targets or 'this GPU'}, workspace {workspace or 'default'} MB); "
                          f"lower max shapes or opt_level, or raise workspace_mb. TensorRT said: {logger.messages[-3:]}")
    if cfg.flavour != "rtx":
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(cache_path, bytes(memoryview(config.get_timing_cache().serialize())))
    built_for, gpu_name = (targets, None) if cfg.flavour == "rtx" else _build_gpu()
    engine = {"flavour": cfg.flavour, "module": FLAVOURS[cfg.flavour], "version": version, "platform": engine_platform(),
              "compute_capabilities": built_for, "gpu": gpu_name, "profile": profile,
              "workspace_mb": workspace, "opt_level": cfg.opt_level, "strongly_typed": True,
              "timing_cache": str(cache_path) if cfg.flavour != "rtx" else None,
              "onnx_hash": onnx_art.hash, "cache_key": plan["key"], "build_seconds": round(seconds, 3),
              "trtexec": trtexec_command(onnx_name, "model.engine", profile, cfg, workspace, targets)}
    manifest = derived_manifest(onnx_art, kind="engine", name=name, precision=onnx_art.manifest["precision"],
                                transform={"type": "engine", "flavour": cfg.flavour, "version": version,
                                           **({"head": cfg.scale} if head is not None else {})},
                                engine=engine, **({"scales": [cfg.scale]} if head is not None else {}))
    (staging / "model.engine").write_bytes(bytes(memoryview(blob)))
    (staging / "trtexec.txt").write_text(
        f"# The same engine from the command line ({cfg.flavour} {version}), next to "
        + (f"{onnx_name} (the x{cfg.scale} head alone, here):\n" if head is not None else "a copy of the ONNX:\n")
        + f"{engine['trtexec']}\n")
    return Candidate(staging, "model.engine", manifest)


@register_stage("engine", EngineConfig, makes=ENGINE, takes={"input": ONNX},
                environment=lambda cfg: {"tensorrt": flavour_available(cfg.flavour)[1]})
def engine_stage(cfg: EngineConfig, ctx: StageContext, input: Artifact) -> Candidate:
    """The ``engine`` stage: ONNX artifact -> TensorRT engine artifact (see the module docstring)."""
    return engine_candidate(input, cfg, ctx.staging, name=ctx.name, cache_dir=ctx.out.parent / ".tensorrt_cache")


# ----------------------------------------------------------------------------------------- readiness

def check_tensorrt(art: Artifact, shapes: tuple | None = None, *, build: bool = True) -> list[dict]:
    """What would stop TensorRT (10/11 on Jetson and data centre, or RTX) from building ``art``, each finding
    naming the node and the fix. Rules: operators the parser imports; DepthToSpace (PixelShuffle) in CRD
    mode; a dynamic H/W input when the profile needs it; INT8 only as symmetric INT8 Q/DQ (zero point 0,
    per-channel weights on the output-channel axis, no INT32 bias quantizers); the profile itself; FP16
    graphs' overflow-guard record. Where TensorRT for RTX is installed (and ``build``), its real parser and
    builder then run. An empty list: ready."""
    import onnx

    if art.kind != "onnx":
        what = ("an engine already built; `edgesr check` reads the ONNX graph an engine is built from (the engine's "
                f"parent: {art.manifest.get('parent', {}).get('path')})" if art.kind == "engine" else
                f"a {art.kind!r} artifact; export it first (a recipe's export stage) and check the ONNX artifact")
        raise EngineError(f"{art.path}: is {what}.")
    from edgesr.trtrules import finding as _finding
    from edgesr.trtrules import graph_findings

    proto = onnx.load(str(art.payload))
    g = proto.graph
    findings = graph_findings(proto, art.manifest.get("precision", "fp32"), art.manifest.get("transforms", []))
    dims = g.input[0].type.tensor_type.shape.dim if g.input else []
    if shapes is not None:
        try:
            profile = check_profile(EngineConfig(input="x", shapes=tuple(tuple(s) for s in shapes)),
                                    art.manifest.size_multiple)
        except EngineError as exc:
            findings.append(_finding("error", "profile", str(exc).split(": ", 1)[-1], "fix the engine shapes"))
            profile = None
        if profile and len(dims) == 4:
            for axis, name in ((2, "height"), (3, "width")):
                fixed = dims[axis].dim_value if dims[axis].HasField("dim_value") else None
                if fixed and not (profile["min"][axis] == profile["max"][axis] == fixed):
                    findings.append(_finding("error", "lr", f"input {name} is fixed at {fixed} but the profile spans "
                                             f"{profile['min'][axis]}..{profile['max'][axis]}",
                                             "export with dynamic H/W (the export stage does)"))
    if build and not any(f["severity"] == "error" for f in findings) and flavour_available("rtx")[0]:
        import tempfile

        try:
            with tempfile.TemporaryDirectory() as tmp:
                cfg = EngineConfig(input="x", **({"shapes": tuple(tuple(s) for s in shapes)} if shapes else {}),
                                   compute_capabilities=("SM86",))
                build_engine(art, cfg, Path(tmp) / "e", name="check", cache_dir=Path(tmp))
        except EngineError as exc:
            findings.append(_finding("error", "graph", f"TensorRT for RTX could not build it: {exc}",
                                     "see the parser's message"))
    return findings
