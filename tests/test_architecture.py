"""The structure the code keeps: which area imports which, the stage table, the backend registry, and a
runtime that works without PyTorch."""

from __future__ import annotations

import ast
import dataclasses
import importlib.resources
import json
import shutil
import textwrap
from pathlib import Path

import pytest

from conftest import without_extras

REPO = Path(__file__).resolve().parents[1]
AREAS = ["train", "compress", "export", "runtime", "benchmarks"]
SKIMAGE = Path(str(importlib.resources.files("skimage.data")))


def _imports(path: Path, package: str) -> set[str]:
    """Absolute module names a file imports (relative imports resolved against ``package``)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                found.add(".".join(base + ([node.module] if node.module else [])))
            elif node.module:
                found.add(node.module)
    return found


def _area_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "edgesr" and parts[1] in AREAS else None


def test_areas_import_only_the_core_and_the_runtime():
    """Stage folders (train, compress, export) and benchmarks never import each other; the runtime imports
    none of them; all of them may import the core and the runtime (the one way to run an artifact)."""
    bad = []
    for area in AREAS:
        for path in sorted((REPO / area).rglob("*.py")):
            mod = f"edgesr.{area}." + ".".join(path.relative_to(REPO / area).with_suffix("").parts)
            for imp in _imports(path, mod.rsplit(".", 1)[0] if path.name != "__init__.py" else mod[: -len(".__init__")]):
                other = _area_of(imp)
                if other and other != area and not (other == "runtime" and area != "runtime"):
                    bad.append(f"{path.relative_to(REPO)} imports {imp}")
    assert bad == []


def test_the_core_imports_stages_only_through_the_stage_table():
    """Only the CLI imports stage folders (the table imports stage modules by name); the runner reaches them
    through the table, and benchmarks/ (the report, the measurement service) only from the runner and the CLI."""
    forbidden = {"cli.py": (), "pipeline.py": ("train", "compress", "export")}
    bad = []
    for path in sorted((REPO / "edgesr").rglob("*.py")):
        areas = forbidden.get(path.name, ("train", "compress", "export", "benchmarks"))
        for imp in _imports(path, "edgesr." + ".".join(path.relative_to(REPO / "edgesr").with_suffix("").parts[:-1])):
            if _area_of(imp) in areas:
                bad.append(f"{path.relative_to(REPO)} imports {imp}")
    assert bad == []


def test_manifests_and_the_runtime_import_no_torch():
    for rel in ["edgesr/artifacts.py", "edgesr/imaging.py", "edgesr/files.py", "edgesr/errors.py",
                "edgesr/registry.py", "edgesr/metrics.py", "edgesr/onnxutil.py", "edgesr/data/datasets.py",
                "edgesr/data/bicubic.py", *[str(p.relative_to(REPO)) for p in (REPO / "runtime").glob("*.py")]]:
        top = {i for i in _imports(REPO / rel, "edgesr") if i.split(".")[0] in ("torch", "safetensors", "torch_pruning")}
        tree = ast.parse((REPO / rel).read_text())
        module_level = {a.name for n in tree.body if isinstance(n, ast.Import) for a in n.names} | \
            {n.module for n in tree.body if isinstance(n, ast.ImportFrom) and n.module}
        assert not (top & module_level), f"{rel} imports {top & module_level} at module level"


def test_stage_table_is_the_one_list_of_stages():
    from edgesr.config import parse_recipe
    from edgesr.stages import MODEL, ONNX, ONNX_FP32, stage_table

    table = stage_table()
    assert table.names() == ["bicubic", "distill", "engine", "export", "fp16", "gan", "import", "import_onnx", "load",
                             "prune", "qat", "qat_onnx", "quantize", "train"]
    assert table.get("import").makes == MODEL and table.get("import_onnx").makes == ONNX_FP32
    assert {n for n in table.names() if table.get(n).lossy} == {"prune", "quantize", "fp16", "qat", "qat_onnx"}
    import dataclasses

    from edgesr.budget import Budget

    for n in table.names():  # every lossy stage declares its budget in its config, read by one Budget type
        fields = {f.name for f in dataclasses.fields(table.get(n).config)}
        assert ({"max_psnr_drop_db", "on_budget_exceeded"} <= fields) == table.get(n).lossy, n
    assert Budget(0.1, "fallback").exceeded(30.0, 29.8) and not Budget(None, "fail").exceeded(30.0, 20.0)
    assert {n for n in table.names() if table.get(n).trains} == {"train", "distill"}
    assert table.get("quantize").takes == {"input": ONNX_FP32} and table.get("export").makes == ONNX_FP32
    assert table.get("qat").makes == ONNX and table.get("prune").takes == {"input": MODEL, "teacher": MODEL}
    import re

    for rel in ("edgesr/pipeline.py", "edgesr/config.py", "benchmarks/harness.py"):  # no stage kind is special-cased
        src = (REPO / rel).read_text()
        assert not re.search(r"\.stage\s*(==|!=|in\b|not in\b)", src), rel
        assert "STAGE_CONFIGS" not in src and not re.search(r"\(\s*\"input\",\s*\"teacher\"", src), rel
    recipe = parse_recipe({"name": "t", "scale": 2, "stages": [
        {"name": "m", "stage": "train", "model": {"type": "abpn"}},
        {"name": "o", "stage": "export", "input": "m"},
        {"name": "q", "stage": "quantize", "input": "o"}]})
    assert [s.stage for s in recipe.stages] == ["train", "export", "quantize"]


def test_adding_a_stage_is_one_file_and_one_registration(tmp_path, monkeypatch):
    """A stage written in its own module and registered there is loaded, validated and run by the runner."""
    from edgesr import stages
    from edgesr.config import parse_recipe
    from edgesr.pipeline import run_recipe

    (tmp_path / "edgesr_demo_stage.py").write_text(textwrap.dedent('''
        from dataclasses import dataclass
        from edgesr.artifacts import Candidate, derived_manifest
        from edgesr.stages import MODEL, StageContext, register_stage

        @dataclass(frozen=True)
        class CopyConfig:
            input: str

        @register_stage("copy", CopyConfig, makes=MODEL, takes={"input": MODEL})
        def copy_stage(cfg, ctx: StageContext, input):
            (ctx.staging / input.manifest["payload"]).write_bytes(input.payload.read_bytes())
            return Candidate(ctx.staging, input.manifest["payload"],
                             derived_manifest(input, kind="model", name=ctx.name, precision="fp32",
                                              transform={"type": "copy"}))
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(stages, "STAGE_MODULES", stages.STAGE_MODULES + ("edgesr_demo_stage",))
    monkeypatch.setattr(stages.STAGES, "_entries", dict(stages.STAGES._entries))  # undone after the test
    recipe = parse_recipe({"name": "t", "scale": 2, "threads": 1, "data": {"patch_size": 16},
                           "stages": [{"name": "m", "stage": "train", "model": {"type": "abpn", "channels": 4, "n_body": 1},
                                       "steps": 2, "batch_size": 2, "val_every": 2},
                                      {"name": "c", "stage": "copy", "input": "m"}]})
    run_recipe(recipe, tmp_path / "run", only=["c"])
    copied = json.loads((tmp_path / "run" / "c" / "manifest.json").read_text())
    original = json.loads((tmp_path / "run" / "m" / "manifest.json").read_text())
    assert copied["hash"] == original["hash"] and copied["transforms"][-1] == {"type": "copy"}
    assert not any(".tmp" in p.name for p in (tmp_path / "run").iterdir())  # no staging directory left behind


def _lossy_stage(tmp_path, psnr: float, gentler_psnr: float | None = None):
    """A registered lossy stage whose candidate measured ``psnr`` against a parent at 30 dB (and a gentler
    form at ``gentler_psnr``), run through the one place the budget is applied."""
    from edgesr.artifacts import Candidate, Quality
    from edgesr.stages import StageContext, StageDef

    @dataclasses.dataclass(frozen=True)
    class Cfg:
        max_psnr_drop_db: float | None = 0.1
        on_budget_exceeded: str = "fail"

    def fn(cfg, ctx):
        (ctx.staging / "model.onnx").write_bytes(b"full")
        cand = Candidate(ctx.staging, "model.onnx", {"kind": "onnx", "name": "q"}, Quality("demo q", psnr, 30.0))
        if gentler_psnr is not None:
            def gentler():
                (ctx.staging / "model.onnx").write_bytes(b"gentle")
                return Candidate(ctx.staging, "model.onnx", {"kind": "onnx", "name": "q", "gentle": True},
                                 Quality("demo q", gentler_psnr, 30.0))
            cand.gentler = gentler
        return cand

    sdef = StageDef("demo", Cfg, fn, "onnx", {}, lossy=True)
    return sdef, Cfg, StageContext(name="q", out=tmp_path / "q")


def test_the_runner_applies_the_quality_budget_to_every_lossy_stage_in_one_place(tmp_path):
    from edgesr.budget import QualityBudgetExceeded
    from edgesr.stages import run_stage

    sdef, Cfg, ctx = _lossy_stage(tmp_path, 29.5)
    with pytest.raises(QualityBudgetExceeded, match="demo q: PSNR dropped 0.500 dB"):
        run_stage(sdef, Cfg(), ctx, {})
    assert not ctx.out.exists() and list(tmp_path.iterdir()) == []  # over budget: nothing lands, no staging left
    art = run_stage(sdef, Cfg(on_budget_exceeded="warn"), ctx, {})
    assert art.manifest["metrics"]["val_psnr"] == 29.5 and art.manifest["metrics"]["budget"]["within_budget"] is False
    sdef, Cfg, ctx = _lossy_stage(tmp_path / "f", 29.5, gentler_psnr=29.95)
    art = run_stage(sdef, Cfg(on_budget_exceeded="fallback"), ctx, {})  # the stage's gentler form, then held to it
    assert art.payload.read_bytes() == b"gentle" and art.manifest["gentle"] and \
        art.manifest["metrics"]["budget"]["within_budget"] is True
    sdef, Cfg, ctx = _lossy_stage(tmp_path / "g", 29.5, gentler_psnr=29.7)
    with pytest.raises(QualityBudgetExceeded, match="dropped 0.300 dB"):  # still over: fallback is then fail
        run_stage(sdef, Cfg(on_budget_exceeded="fallback"), ctx, {})
    sdef, Cfg, ctx = _lossy_stage(tmp_path / "h", 29.5, gentler_psnr=29.95)
    art = run_stage(sdef, Cfg(max_psnr_drop_db=1.0, on_budget_exceeded="fallback"), ctx, {})
    assert art.payload.read_bytes() == b"full"  # within budget: the gentler form is never made


def test_no_stage_writes_its_own_artifact():
    """Stages return candidates; only the runner commits them (no writer closures, no write_artifact in a stage)."""
    import re

    from edgesr.stages import STAGE_MODULES

    bad = []
    for module in STAGE_MODULES:
        rel = module.replace("edgesr.", "", 1).replace(".", "/") + ".py"
        path = REPO / rel if (REPO / rel).is_file() else REPO / "edgesr" / rel
        src = path.read_text()
        bad += [f"{path.name}: {w}" for w in (r"\bwrite_artifact\(", r"(?<![.\w])save_model\(", r"def writer\(")
                if re.search(w, src)]
    assert bad == []


def test_backends_come_from_one_registry_that_says_what_is_available(capfd):
    from edgesr.cli import build_parser, main
    from edgesr.runtime import BACKENDS

    assert BACKENDS.names() == ["onnxruntime", "openvino", "pillow", "tensorrt", "torch"]
    for name in BACKENDS.names():
        ok, info = BACKENDS.get(name).available()
        assert info  # a version, or the reason it cannot run
        # the CPU ones are installed here (their reasons are tested without torch below); TensorRT needs a GPU
        assert ok or (name == "tensorrt" and "GPU" in info)
    # Pillow's resize is a registered baseline backend: it runs the bicubic baseline only, is never the default
    # for an artifact, and a model given to it is told which backends run it
    from edgesr.artifacts import read_artifact
    from edgesr.errors import EdgesrError
    from edgesr.runtime import default_backend, open_backend

    assert [n for n in BACKENDS.names() if BACKENDS.get(n).baseline] == ["pillow"]
    assert default_backend(read_artifact("msrep-s-x2-fp32")) == "onnxruntime"
    with pytest.raises(EdgesrError, match="runs the bicubic baseline artifact only"):
        open_backend("msrep-s-x2-fp32", "pillow")
    upscale = build_parser()._subparsers._group_actions[0].choices["upscale"]
    backend_opt = next(a for a in upscale._actions if a.dest == "backend")
    assert list(backend_opt.choices) == BACKENDS.names()
    assert main(["doctor"]) == 0
    out = " ".join(capfd.readouterr().out.split())
    assert "backend: onnxruntime" in out and "backend: torch" in out and "backend: tensorrt" in out


@pytest.fixture(scope="module")
def onnx_artifact(tmp_path_factory):
    from conftest import call_stage
    from edgesr.export.onnx import ExportConfig, export_stage
    from edgesr.modelio import save_model
    from edgesr.models import build_model

    root = tmp_path_factory.mktemp("notorch")
    spec = {"type": "abpn", "scale": 2, "channels": 8, "n_body": 1}
    src = save_model(root / "model", build_model(spec), name="model", arch=spec)
    art = call_stage(export_stage, ExportConfig(input="model"), name="onnx", out=root / "onnx", input=src)
    bench = root / "set" / "HR"
    bench.mkdir(parents=True)
    shutil.copy(SKIMAGE / "chelsea.png", bench / "chelsea.png")
    return root, src, art


def test_upscale_eval_and_doctor_runwithout_extras(onnx_artifact):
    root, src, art = onnx_artifact
    up = without_extras("upscale", art.path, SKIMAGE / "coffee.png", root / "sr.png")
    assert up.returncode == 0, up.stderr
    assert "LEAKED []" in up.stdout and (root / "sr.png").is_file()
    from edgesr.imaging import read_image
    assert read_image(root / "sr.png").shape == (800, 1200, 3)
    ev = without_extras("eval", art.path, "--set", root / "set")
    assert ev.returncode == 0, ev.stderr
    assert "set: PSNR-Y" in ev.stdout and "LEAKED []" in ev.stdout
    doc = without_extras("doctor")
    assert doc.returncode == 0, doc.stderr
    out = " ".join(doc.stdout.split())
    assert "backend: torch" in out and "PyTorch is not installed" in out and "LEAKED []" in out


def test_commands_that_need_the_training_extra_say_so(onnx_artifact):
    root, src, art = onnx_artifact
    run = without_extras("run")
    assert run.returncode == 2 and "needs the training extra" in run.stderr and "pip install 'edgesr[train]'" in run.stderr
    model = without_extras("upscale", src.path, SKIMAGE / "coffee.png", root / "sr2.png")
    assert model.returncode == 2
    assert "the torch backend cannot run here: PyTorch is not installed. Install PyTorch" in " ".join(model.stderr.split())
    assert "Traceback" not in run.stderr + model.stderr
    listing = without_extras("models")  # rich took '[train]' for markup: it printed pip install 'edgesr'
    assert "architectures: need PyTorch (pip install 'edgesr[train]')" in listing.stdout


def test_engines_build_and_check_from_an_onnx_artifact_with_the_rtx_extra_alone(onnx_artifact, tmp_path):
    """`pip install 'edgesr[rtx]'` (TensorRT for RTX and ONNX, no PyTorch): build-engine and check run on an ONNX
    artifact (they asked for the training extra); a model artifact, which must be exported first, still says so."""
    pytest.importorskip("tensorrt_rtx")
    root, src, art = onnx_artifact
    chk = without_extras("check", art.path, allow="onnx")
    assert chk.returncode == 0 and "ready for TensorRT" in chk.stdout and "LEAKED []" in chk.stdout, chk.stderr
    eng = without_extras("build-engine", art.path, "--out", tmp_path / "engine", allow="onnx")
    assert eng.returncode == 0 and (tmp_path / "engine" / "model.engine").is_file(), eng.stderr
    assert "LEAKED []" in eng.stdout
    model = without_extras("build-engine", src.path, "--out", tmp_path / "e2", allow="onnx")
    assert model.returncode == 2 and "(a model artifact: exported to ONNX first)` needs the training extra" in \
        " ".join(model.stderr.split())
    bare = without_extras("check", art.path)  # without ONNX: the extra that brings it
    assert bare.returncode == 2 and "pip install 'edgesr[rtx]'" in bare.stderr


def test_no_function_is_longer_than_80_lines():
    """Long bodies hide policies; the CLI's argument table (one declaration per option) is the one exception."""
    long = []
    for area in ["edgesr", *AREAS]:
        for path in sorted((REPO / area).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name != "build_parser":
                    n = node.end_lineno - node.lineno + 1
                    if n > 80:
                        long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name} ({n} lines)")
    assert long == []
