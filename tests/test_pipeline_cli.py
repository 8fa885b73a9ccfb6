"""The recipe runner end to end on a tiny recipe, recipe validation, and the CLI."""

import importlib.resources
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from edgesr.cli import main
from edgesr.config import RecipeError, load_recipe, parse_recipe
from edgesr.imaging import read_image

TINY = {
    "name": "tiny", "scale": 2, "threads": 2, "data": {"patch_size": 24},
    "stages": [
        {"name": "teacher", "stage": "train", "model": {"type": "edsr", "n_resblocks": 1, "n_feats": 8,
                                                          "anchor": "nearest"}, "steps": 20, "val_every": 10},
        {"name": "student", "stage": "distill", "teacher": "teacher",
         "model": {"type": "abpn", "channels": 8, "n_body": 2}, "steps": 40, "val_every": 20},
        {"name": "pruned", "stage": "prune", "input": "student", "ratio": 0.25, "teacher": "teacher",
         "finetune_steps": 10},
        {"name": "teacher_onnx", "stage": "export", "input": "teacher"},
        {"name": "student_onnx", "stage": "export", "input": "student"},
        {"name": "pruned_onnx", "stage": "export", "input": "pruned"},
        {"name": "int8", "stage": "quantize", "input": "student_onnx", "calibration_images": 4,
         "calibration_patch": 48},
    ],
    "benchmark": {"variants": ["bicubic", "bicubic_pillow", "teacher", "student", "pruned", "int8"], "input_size": [45, 80],
                  "backends": ["onnxruntime", "openvino"], "runs": 5, "max_seconds": 1},
}
SKIMAGE = Path(str(importlib.resources.files("skimage.data")))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    (root / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    eval_set = root / "eval" / "HR"
    eval_set.mkdir(parents=True)
    for name in ("chelsea.png", "coffee.png"):
        shutil.copy(SKIMAGE / name, eval_set / name)
    assert main(["run", str(root / "tiny.yaml"), "--out", str(root / "out"), "--eval", str(root / "eval"),
                 "--eval", "builtin"]) == 0
    return root


@pytest.mark.slow
def test_run_writes_report_results_and_plot(tiny_run):
    out = tiny_run / "out"
    results = json.loads((out / "results.json").read_text())
    names = ["bicubic", "teacher", "student", "pruned", "int8"]
    assert [(v["variant"], v["backend"]) for v in results["variants"]] == [
        (n, b) for n in names for b in ("onnxruntime", "openvino")] + [("bicubic_pillow", "pillow")]
    assert results["timing"]["mode"] == "interleaved" and results["timing"]["pairs"] == 11
    report = (out / "report.md").read_text()
    for v in results["variants"]:
        assert set(v["quality"]) == {"eval", "builtin"}
        assert v["latency"]["input"] == [1, 3, 45, 80] and v["latency"]["output"] == [1, 3, 90, 160]
        assert v["latency"]["p50_ms"] > 0 and v["latency"]["runs"] == results["timing"]["rounds"] >= 5
        assert v["latency"]["min_ms"] <= v["latency"]["p10_ms"] <= v["latency"]["p50_ms"] <= v["latency"]["p90_ms"]
        # Every number in the report comes from the run's results.
        assert f"{v['quality']['eval']['psnr']:.2f}" in report and f"{v['latency']['p50_ms']:.1f}" in report
    row = {(v["variant"], v["backend"]): v for v in results["variants"]}
    for b in ("onnxruntime", "openvino"):
        int8, student = row["int8", b], row["student", b]
        assert int8["precision"] == "int8" and int8["vs_parent"]["parent"] == "student"
        delta = int8["quality"]["builtin"]["psnr"] - student["quality"]["builtin"]["psnr"]
        assert int8["vs_parent"]["psnr_delta"]["builtin"] == pytest.approx(delta)
        sp = int8["vs_parent"]["speedup"]
        # The speed-up is the ratio of the medians of the same interleaved rounds.
        assert len(student["times_ms"]) == len(int8["times_ms"]) == results["timing"]["rounds"]
        assert sp["ratio"] == pytest.approx(np.median(student["times_ms"]) / np.median(int8["times_ms"]), abs=1e-4)
        assert sp["ci95"][0] <= sp["ratio"] <= sp["ci95"][1]
    # The same file on two runtimes: quality and speed compared per variant against the first backend.
    ov = row["student", "openvino"]["vs_reference_backend"]
    assert ov["backend"] == "onnxruntime" and "vs_reference_backend" not in row["student", "onnxruntime"]
    assert ov["psnr_delta"]["eval"] == pytest.approx(row["student", "openvino"]["quality"]["eval"]["psnr"]
                                                     - row["student", "onnxruntime"]["quality"]["eval"]["psnr"])
    assert "## Backends against onnxruntime" in report and "## Fastest backend per variant" in report
    assert row["pruned", "onnxruntime"]["macs"] < row["student", "onnxruntime"]["macs"]  # pruned has fewer MACs
    assert results["machine"]["isa"] is not None and "ISA:" in report
    assert any((out / "openvino_cache").iterdir())  # compiled models kept for the next run
    steps = {s["name"]: s.get("train_steps") for s in results["stages"]}
    assert steps["teacher"] == 20 and steps["student"] == 40  # the steps each trained stage reached, recorded
    assert "| teacher | train | ran |" in report and "| 20 |" in report
    assert (out / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    peak = results["machine"]["peak"]
    assert peak["fp32_matmul_gops"] > 0 and peak["int8_matmul_gops"] > 0 and "Machine yardstick" in report
    manifest = json.loads((out / "int8" / "manifest.json").read_text())
    assert manifest["transforms"][-1]["type"] == "quantize" and manifest["transforms"][0]["type"] == "distill"
    assert abs(results["protocol_reference_bicubic"]["builtin"] - row["bicubic", "onnxruntime"]["quality"]["builtin"]["psnr"]) < 0.05
    # Pillow's resize, the bicubic users call: timed in the same rounds, scored by the same protocol (its
    # a = -0.5 kernel on 8-bit data lands within a few hundredths of a dB of the graph's)
    pil = row["bicubic_pillow", "pillow"]
    assert len(pil["times_ms"]) == results["timing"]["rounds"] and pil["backend_info"]["convert_ms"] > 0
    assert abs(pil["quality"]["builtin"]["psnr"] - row["bicubic", "onnxruntime"]["quality"]["builtin"]["psnr"]) < 0.1


@pytest.mark.slow
def test_rerun_reuses_unchanged_stages_and_keeps_every_measured_set(tiny_run, capsys):
    """Re-running on one eval set reuses the artifacts, re-measures that set, carries the other set's numbers
    (same artifact hashes) marked as reused, and keeps the previous report files under history/."""
    out = tiny_run / "out"
    before = {p.name: (p / "manifest.json").read_text() for p in out.iterdir() if (p / "manifest.json").is_file()}
    first = json.loads((out / "results.json").read_text())
    capsys.readouterr()
    assert main(["run", str(tiny_run / "tiny.yaml"), "--out", str(out), "--eval", "builtin"]) == 0
    printed = capsys.readouterr().err  # progress and stage lines go to stderr
    results = json.loads((out / "results.json").read_text())
    statuses = {s["name"]: s["status"] for s in results["stages"]}
    assert statuses["teacher"] == statuses["int8"] == "reused" and statuses["data"] == "ran"
    teacher = next(s for s in results["stages"] if s["name"] == "teacher")
    assert teacher["built_seconds"] == next(s for s in first["stages"] if s["name"] == "teacher")["seconds"]
    assert "teacher: unchanged, reused the artifact built" in " ".join(printed.split())
    assert (out / "teacher" / "manifest.json").read_text() == before["teacher"]
    assert results["eval_sets_measured"] == ["builtin"] and results["eval_sets_reused"] == ["eval"]
    for old, new in zip(first["variants"], results["variants"]):
        assert new["quality"]["eval"]["psnr"] == old["quality"]["eval"]["psnr"] and new["quality"]["eval"]["reused"]
        assert "reused" not in new["quality"]["builtin"]
    archived = out / results["previous_results"]
    assert json.loads((archived / "results.json").read_text()) == first
    assert (archived / "report.md").is_file() and (archived / "pareto.png").is_file()
    report = (out / "report.md").read_text()
    assert "† measured by an earlier run" in report and f"{first['variants'][2]['quality']['eval']['psnr']:.2f}†" in report


@pytest.mark.slow
def test_upscale_and_eval_commands(tiny_run, tmp_path, capsys):
    out = tiny_run / "out"
    src = tmp_path / "in.png"
    shutil.copy(SKIMAGE / "chelsea.png", src)
    assert main(["upscale", str(out / "int8"), str(src), str(tmp_path / "sr.png"), "--tile", "64"]) == 0
    assert read_image(tmp_path / "sr.png").shape == (600, 902, 3)
    assert main(["eval", str(out / "student_onnx"), "--set", str(tiny_run / "eval")]) == 0
    assert "eval: PSNR-Y" in capsys.readouterr().out


@pytest.mark.slow
def test_upscale_refuses_to_overwrite_its_input(tiny_run, tmp_path):
    src = tmp_path / "in.png"
    shutil.copy(SKIMAGE / "chelsea.png", src)
    before = src.read_bytes()
    assert main(["upscale", str(tiny_run / "out" / "student"), str(src), str(src)]) == 2
    assert src.read_bytes() == before


def test_cli_errors_name_the_file(tmp_path, capsys):
    assert main(["eval", str(tmp_path), "--set", "builtin"]) == 2
    assert "not an edgesr artifact" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**TINY, "stages": [{**TINY["stages"][0], "stpes": 3}]}))
    assert main(["run", str(bad)]) == 2
    assert "stpes" in capsys.readouterr().err


def test_debug_shows_the_traceback_of_a_user_error(tmp_path):
    from edgesr.artifacts import ArtifactError

    with pytest.raises(ArtifactError, match="not an edgesr artifact"):
        main(["--debug", "eval", str(tmp_path), "--set", "builtin"])


def test_recipe_validation():
    with pytest.raises(RecipeError, match=r"unknown key 'stpes' \(did you mean 'steps'\?\)"):
        parse_recipe({**TINY, "stages": [{**TINY["stages"][0], "stpes": 3}]})
    with pytest.raises(RecipeError, match="teacher: 'nope' is not a stage defined before"):
        parse_recipe({**TINY, "stages": [{**TINY["stages"][1], "teacher": "nope"}]})
    with pytest.raises(RecipeError, match="steps: expected an integer"):
        parse_recipe({**TINY, "stages": [{**TINY["stages"][0], "steps": "many"}]})
    with pytest.raises(RecipeError, match=r"loss: unknown loss 'l1_lmua'.*did you mean 'l1_luma'"):
        parse_recipe({**TINY, "stages": [{**TINY["stages"][0], "loss": "l1_lmua"}]})
    with pytest.raises(RecipeError, match="benchmark variant 'ghost'"):
        parse_recipe({**TINY, "benchmark": {"variants": ["ghost"]}})
    with pytest.raises(RecipeError, match="benchmark backend 'openvio'.*did you mean 'openvino'"):
        parse_recipe({**TINY, "benchmark": {**TINY["benchmark"], "backends": ["onnxruntime", "openvio"]}})
    with pytest.raises(RecipeError, match="scale 5 not supported"):
        parse_recipe({**TINY, "scale": 5})
    with pytest.raises(RecipeError, match="method.*not one of"):
        parse_recipe({**TINY, "stages": TINY["stages"][:5] + [{**TINY["stages"][6], "method": "magic"}]})


def test_builtin_quickstart_recipe_parses():
    recipe = load_recipe(Path(str(importlib.resources.files("edgesr.benchmarks") / "recipes" / "quickstart.yaml")))
    assert recipe.benchmark.variants == ("bicubic", "bicubic_pillow", "teacher", "student", "pruned", "int8", "int8_qat")
    assert recipe.benchmark.backends == ("onnxruntime", "openvino")
    assert recipe.benchmark.input_size == (360, 640)
    assert recipe.data.train == "builtin" and recipe.data.eval == ("builtin",)


def test_doctor_reports_what_this_machine_has_and_prints_no_import_noise(capfd):
    import importlib.util

    assert main(["doctor"]) == 0
    captured = capfd.readouterr()
    out = " ".join(captured.out.split())
    row = out[out.index("│ tensorrt "):].split("│ pycuda")[0]
    assert ("unavailable" in row) == (importlib.util.find_spec("tensorrt") is None)
    assert "onnxruntime" in out and "CPUExecutionProvider" in out
    from edgesr.hostinfo import u8s8_saturates

    assert ("no VNNI/AMX" in out) == u8s8_saturates() and "CPU INT8" in out
    # torchao's CUDA-only kernels fail to load on CPU machines: explained in its row, not printed as errors
    assert "Failed to load" not in captured.err and "Failed to load" not in captured.out
    assert "register_constant" not in captured.err


@pytest.mark.slow
def test_only_runs_the_named_stages_and_what_they_need(tiny_run, tmp_path):
    from edgesr.pipeline import stages_needed

    recipe = load_recipe(tiny_run / "tiny.yaml")
    assert stages_needed(recipe, ["int8"]) == {"int8", "student_onnx", "student", "teacher"}
    with pytest.raises(RecipeError, match="--only names no stage \\['nope'\\]"):
        stages_needed(recipe, ["nope"])
    out = tmp_path / "only"
    assert main(["run", str(tiny_run / "tiny.yaml"), "--out", str(out), "--only", "teacher"]) == 0
    assert (out / "teacher" / "manifest.json").is_file() and not (out / "student").exists()
    assert not (out / "results.json").exists()


def test_a_stage_trained_on_a_gpu_finishes_on_a_machine_without_one(tmp_path, monkeypatch, capsys):
    """`device: cuda` is refused where there is no GPU only for a stage that must run: its artifact, trained on a
    lent GPU and brought into the run directory, is reused, and the CPU stages after it run here. (The "GPU" run
    is this CPU with PyTorch told it has one.) A changed configuration would have to train again: refused before
    anything runs, naming the run directory."""
    import edgesr.fitting
    from edgesr.pipeline import stages_needed, stages_to_run

    recipe = {"name": "g", "scale": 2, "threads": 2, "data": {"patch_size": 16},
              "stages": [{"name": "s", "stage": "train", "model": {"type": "abpn", "channels": 8, "n_body": 1},
                          "steps": 4, "batch_size": 2, "val_every": 4, "device": "cuda", "workers": 1},
                         {"name": "s_onnx", "stage": "export", "input": "s"}]}
    path, out = tmp_path / "g.yaml", tmp_path / "run"
    path.write_text(yaml.safe_dump(recipe))
    with monkeypatch.context() as gpu:
        gpu.setattr(torch.cuda, "is_available", lambda: True)
        gpu.setattr(edgesr.fitting, "resolve_device", lambda name: torch.device("cpu"))
        assert main(["run", str(path), "--out", str(out), "--only", "s"]) == 0
    with pytest.raises(RecipeError, match="stages\\[0\\] \\(s\\).device: cuda, but PyTorch sees no CUDA GPU"):
        load_recipe(path)  # loading alone still says so
    loaded = load_recipe(path, devices=False)
    assert [s.name for s in stages_to_run(loaded, out, stages_needed(loaded, ["s_onnx"]))] == ["s_onnx"]
    built = (out / "s" / "manifest.json").read_text()
    assert main(["run", str(path), "--out", str(out), "--only", "s_onnx"]) == 0
    assert (out / "s_onnx" / "manifest.json").is_file() and (out / "s" / "manifest.json").read_text() == built
    recipe["stages"][0]["steps"] = 5  # another training: it would have to run here
    path.write_text(yaml.safe_dump(recipe))
    capsys.readouterr()
    assert main(["run", str(path), "--out", str(out / "again")]) == 2
    err = capsys.readouterr().err
    assert "stages[0] (s).device: cuda, but PyTorch sees no CUDA GPU here" in err
    assert f"bring its artifact into {out / 'again'}" in err and not (out / "again").exists()
    assert main(["run", str(path), "--out", str(out), "--only", "s_onnx"]) == 2
    assert (out / "s" / "manifest.json").read_text() == built


@pytest.mark.slow
def test_load_stage_copies_a_verified_artifact(tiny_run, tmp_path, capsys):
    recipe = {"name": "l", "scale": 2, "threads": 2, "data": {"patch_size": 24},
              "stages": [{"name": "s", "stage": "load", "path": str(tiny_run / "out" / "student")},
                         {"name": "s_onnx", "stage": "export", "input": "s"}],
              "benchmark": {"variants": ["s"], "input_size": [20, 20], "runs": 5, "max_seconds": 1, "peak": False}}
    (tmp_path / "l.yaml").write_text(yaml.safe_dump(recipe))
    assert main(["run", str(tmp_path / "l.yaml"), "--out", str(tmp_path / "out"), "--eval", "builtin"]) == 0
    copied = json.loads((tmp_path / "out" / "s" / "manifest.json").read_text())
    original = json.loads((tiny_run / "out" / "student" / "manifest.json").read_text())
    assert copied["hash"] == original["hash"]
    tampered = tmp_path / "tampered"
    shutil.copytree(tiny_run / "out" / "student", tampered)
    data = bytearray((tampered / "model.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (tampered / "model.safetensors").write_bytes(bytes(data))
    recipe["stages"][0]["path"] = str(tampered)
    (tmp_path / "l.yaml").write_text(yaml.safe_dump(recipe))
    capsys.readouterr()
    assert main(["run", str(tmp_path / "l.yaml"), "--out", str(tmp_path / "out2"), "--eval", "builtin"]) == 2
    assert "differs from the" in capsys.readouterr().err
    assert not (tmp_path / "out2" / "s").exists()


def test_a_full_disk_is_an_error_message_not_a_traceback(tmp_path, capsys, monkeypatch):
    """ENOSPC while writing the output image (monkeypatched: a real full disk cannot be made here without
    privileges): one line naming the file and the fix, exit 1, nothing partial at the destination."""
    import errno
    import os

    from edgesr import files

    src = tmp_path / "in.png"
    shutil.copy(SKIMAGE / "chelsea.png", src)
    real = os.fdopen

    def full(fd, *a, **kw):
        fh = real(fd, *a, **kw)
        fh.write = lambda data: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space left on device",
                                                               str(tmp_path / "sr.png")))
        return fh

    monkeypatch.setattr(files.os, "fdopen", full)
    assert main(["upscale", "msrep-s-x2-int8", str(src), str(tmp_path / "sr.png")]) == 1
    err = capsys.readouterr().err
    assert "sr.png: the disk is full (No space left on device). Free some space" in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.png"]


def test_every_recipe_of_the_project_loads():
    """benchmarks/recipes: each one is checked as `edgesr run` checks it at load (keywords, heads, scales,
    loaded artifacts); the ones that need another run's output or a GPU say exactly that."""
    cuda = "PyTorch sees no CUDA GPU here"
    needs = {"compress_x2.yaml": ["runs/zoo_x2/msrep_s: not an edgesr artifact"],
             "fsrcnn_tail_x2.yaml": ["runs/qat_onnx_x2/fsrcnn_res_onnx: not an edgesr artifact"],
             "deep_cpu_x2.yaml": ["runs/luma_cpu_x2_luma/luma: not an edgesr artifact"],
             "m_cpu_x2.yaml": ["runs/m_first/msrep-m-x2: not an edgesr artifact"],
             "m_cpu_x4.yaml": ["runs/m4_first/msrep-m-x4: not an edgesr artifact"],
             "s_cpu_x4.yaml": ["runs/s4_first/msrep-s-x4: not an edgesr artifact"],
             "float_ends_x2.yaml": ["runs/student_gpu_x2/kd: not an edgesr artifact"],
             "s4_gpu_x2.yaml": ["runs/deep_cpu_x2_b4/b4_long: not an edgesr artifact", cuda],
             "m_gpu_x2.yaml": ["runs/m_cpu_x2/m: not an edgesr artifact", cuda],
             **{f"{n}.yaml": [cuda]
                for n in ("distill_gpu_x2", "student_gpu_x2", "student3_gpu_x2", "student3_rescale_gpu_x2")}}
    recipes = sorted((Path(__file__).resolve().parents[1] / "benchmarks" / "recipes").glob("*.yaml"))
    assert len(recipes) > 25

    def applies(reason: str) -> bool:  # the other run's output is not on this machine (a clean clone), or no GPU
        return not Path(reason.split(":")[0]).exists() if reason.startswith("runs/") else not torch.cuda.is_available()

    for path in recipes:
        expected = [r for r in needs.get(path.name, ()) if applies(r)]
        if expected:  # the first that applies is named, whichever it is
            with pytest.raises(RecipeError, match="|".join(map(re.escape, expected))):
                load_recipe(path)
        else:
            load_recipe(path)


def test_an_option_added_later_does_not_rerun_the_stages_built_before_it():
    """A stage option added with a default that keeps the earlier behaviour (``metadata={"fingerprint":
    "when_set"}``, qat_onnx's ``train_zero_points``) enters the stage's fingerprint only when set: upgrading
    edgesr does not re-run (or refuse the checkpoints of) every qat_onnx stage a run directory already holds."""
    from edgesr.compress.qat import QatOnnxConfig
    from edgesr.pipeline import _config_identity

    plain = _config_identity(QatOnnxConfig(input="q"))
    assert "train_zero_points" not in plain and plain["train_scales"] is True and plain["input"] == "q"
    assert _config_identity(QatOnnxConfig(input="q", train_zero_points=True))["train_zero_points"] is True
