"""The pretrained models shipped inside the package: each one re-evaluated on Set5 through the protocol
matches the PSNR its index records (to 0.01 dB), and a pretrained name works wherever an artifact path does."""

import shutil

import numpy as np
import pytest

from edgesr import pretrained
from edgesr.artifacts import ArtifactError, read_artifact
from edgesr.benchmarks.quality import measure_quality
from edgesr.cli import main
from edgesr.data.datasets import load_pairs
from edgesr.runtime import Upscaler, open_backend

SHIPPED = pretrained.names()


def test_models_are_shipped_with_their_records():
    assert len(SHIPPED) >= 4
    for name, rec in pretrained.index().items():
        art = read_artifact(name)  # a bare name resolves to the packaged artifact, hash verified
        assert art.path == pretrained.path_of(name) and art.hash == rec["hash"]
        assert rec["training_steps"] and rec["command"] and rec["recipe"] and "Set5" in rec["quality"]


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_model_reproduces_its_recorded_psnr(name, benchmark_root):
    """Every head of a multi-scale model too, each on LR made at its own scale."""
    rec = pretrained.index()[name]
    art = read_artifact(name)
    recorded = {int(s): q for s, q in rec.get("quality_by_scale", {str(art.scale): rec["quality"]}).items()}
    assert sorted(recorded) == sorted(art.manifest.scales) and recorded[art.scale] == rec["quality"]
    for scale, quality in recorded.items():
        pairs = load_pairs(benchmark_root / "Set5", scale, split="eval")
        with open_backend(art, rec["eval_backend"], threads=2, scale=scale if len(recorded) > 1 else None) as b:
            q = measure_quality(b, {"Set5": pairs}, scale, art.manifest.get("size_multiple", 1))["Set5"]
        assert q["psnr"] == pytest.approx(quality["Set5"]["psnr"], abs=0.01), scale
        assert q["ssim"] == pytest.approx(quality["Set5"]["ssim"], abs=1e-3), scale


GENERAL = [n for n, r in pretrained.index().items() if r.get("quality_by_degradation")]


@pytest.mark.parametrize("name", GENERAL)
def test_general_model_reproduces_its_recorded_gains_on_each_lr(name, benchmark_root):
    """The models shipped for frames not made by MATLAB's bicubic: their recorded Set5 quality on LR made each
    named way (and the gain over bicubic of that LR) is what the file computes, and it is a gain everywhere."""
    from edgesr.benchmarks.quality import measure_degradations

    rec = pretrained.index()[name]
    art = read_artifact(name)
    recorded = rec["quality_by_degradation"]
    assert {"bicubic", "cubic-aliased"} <= set(recorded) and rec["trained_on"] != "bicubic"
    pairs = load_pairs(benchmark_root / "Set5", art.scale, split="eval")
    with open_backend(art, rec["eval_backend"], threads=2) as b:
        got = measure_degradations(b, {"Set5": pairs}, art.scale, list(recorded))["Set5"]
    for d, q in recorded.items():
        assert got[d]["psnr"] == pytest.approx(q["Set5"]["psnr"], abs=0.01), d
        assert got[d]["gain_db"] == pytest.approx(q["Set5"]["gain_db"], abs=0.01) and q["Set5"]["gain_db"] > 0, d
    assert recorded["bicubic"]["Set5"]["psnr"] == pytest.approx(rec["quality"]["Set5"]["psnr"], abs=1e-3)


def test_pretrained_names_work_in_the_cli_and_the_api(tmp_path, capsys):
    name = next(n for n in SHIPPED if n.endswith("x2-int8"))
    img = np.asarray(load_pairs("builtin", 2, split="valid")[0].lr)[:40, :40]
    with Upscaler.open(name, "onnxruntime", threads=1) as up:
        assert up.upscale(img).shape == (80, 80, 3)
    assert main(["models"]) == 0
    listing = capsys.readouterr().out
    assert all(n in listing for n in SHIPPED)
    assert pretrained.index()[name]["hash"][:8] in listing  # what a load stage pins
    with pytest.raises(ArtifactError, match=f"Did you mean the pretrained model '{name}'"):
        read_artifact(name.replace("int8", "int7"))


def test_a_recipe_starts_from_a_pretrained_model(tmp_path):
    import yaml

    name = next(n for n in SHIPPED if n.startswith("msrep-s-x2") and pretrained.index()[n]["kind"] == "model")
    recipe = {"name": "from_pretrained", "scale": 2, "threads": 2,
              "stages": [{"name": "student", "stage": "load", "path": name},
                         {"name": "student_onnx", "stage": "export", "input": "student"}]}
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    assert main(["run", str(tmp_path / "r.yaml"), "--out", str(tmp_path / "run"), "--only", "student_onnx"]) == 0
    loaded = read_artifact(tmp_path / "run" / "student")
    assert loaded.hash == pretrained.index()[name]["hash"]
    assert read_artifact(tmp_path / "run" / "student_onnx").manifest["parent"]["hash"] == loaded.hash


def test_a_load_stage_pins_the_version_it_was_made_with(tmp_path, capsys):
    """``hash:`` on a load stage: the version of a pretrained name (or folder) the recipe was made with. The same
    version loads; another one (a newer edgesr ships the name anew, a folder rewritten) is refused when the recipe
    loads, naming both hashes and the fix, before anything is written; a folder changed after the recipe loaded is
    refused by the stage itself."""
    import yaml

    from edgesr.config import RecipeError, load_recipe
    from edgesr.pipeline import run_recipe

    name = "msrep-s-x2"
    shipped = pretrained.index()[name]["hash"]
    recipe = {"name": "pinned", "scale": 2, "threads": 2,
              "stages": [{"name": "student", "stage": "load", "path": name, "hash": shipped[:8]}]}
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe))
    assert main(["run", str(path), "--out", str(tmp_path / "run"), "--only", "student"]) == 0
    assert read_artifact(tmp_path / "run" / "student").hash == shipped

    other = pretrained.index()["msrep-m-x2"]["hash"]
    recipe["stages"][0]["hash"] = other
    path.write_text(yaml.safe_dump(recipe))
    assert main(["run", str(path), "--out", str(tmp_path / "run2"), "--only", "student"]) == 2
    err = capsys.readouterr().err
    assert f"the pretrained model '{name}' of this edgesr is {shipped}, not the {other} the recipe pins" in err
    assert f"set hash: {shipped} to accept this one" in err and not (tmp_path / "run2").exists()
    recipe["stages"][0]["hash"] = 12345678  # YAML's reading of an all-digit prefix
    path.write_text(yaml.safe_dump(recipe))
    with pytest.raises(RecipeError, match="got the number 12345678 .*write the value in quotes"):
        load_recipe(path)

    folder = tmp_path / "mine"
    shutil.copytree(read_artifact(name).path, folder)
    recipe["stages"][0].update(path=str(folder), hash=shipped)
    path.write_text(yaml.safe_dump(recipe))
    loaded = load_recipe(path)
    shutil.rmtree(folder)
    shutil.copytree(read_artifact("msrep-s-x2-general").path, folder)  # rewritten after the recipe loaded
    with pytest.raises(ArtifactError, match=f"{folder} now holds .*, not the {shipped} the recipe pins"):
        run_recipe(loaded, tmp_path / "run3", only=["student"])
    assert not (tmp_path / "run3" / "student").exists()
