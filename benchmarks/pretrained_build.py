"""Copy trained artifacts of a run into the package as pretrained models, measured.

    python -m edgesr.benchmarks.pretrained_build --run runs/pretrained_x2 --set ../shared/data/benchmark/Set5 \
        --set ../shared/data/benchmark/Set14 NAME=STAGE[@BACKEND] [NAME=STAGE[@BACKEND] ...]

Each STAGE artifact of the run directory is copied (verified) into ``edgesr/pretrained/NAME/``, its parent
record pointed at the pretrained name it came from, then evaluated through the protocol (every head of a
multi-scale artifact, on LR made at its scale: ``quality_by_scale``) on the sets with
the backend users get by default for its kind (OpenVINO for a graph quantized with ``target: openvino``;
``@BACKEND`` names it, e.g. one INT8 file shipped twice, as NAME-int8 and as NAME-int8-ov measured on
OpenVINO); ``index.json`` records the numbers, the parameters and MACs
(640x360 LR), the recipe, command and training steps. ``--degradation NAME`` (repeatable; for models trained
on ``data.degradation: general``) also records the quality on LR made each such way beside bicubic of that LR
(``quality_by_degradation``) and what the model was trained on (``trained_on``). ``tests/test_pretrained.py``
re-evaluates every model and checks the recorded PSNR to 0.01 dB.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from edgesr.artifacts import read_artifact
from edgesr.files import atomic_write_text

from edgesr.pretrained import ROOT


def _ancestor(up: str | None, copied: dict, run: Path):
    """The parent an artifact's record names: a file copied by this build, a stage of the run (an intermediate
    one not shipped, e.g. the post-training graph a QAT graph was trained from), or a pretrained name."""
    if not up:
        return None
    if up in copied.values():
        return read_artifact(ROOT / up)
    if (run / Path(up).name).is_dir():
        return read_artifact(run / Path(up).name)
    try:
        return read_artifact(up)
    except Exception:  # noqa: BLE001 - a parent recorded on another machine: no model to count
        return None


def _measure(art, backend: str | None, set_paths: list[str]) -> tuple[str, dict]:
    """(the backend, {scale: quality per set}) of ``art``: every head of a multi-scale artifact, each on LR made at
    its own scale, on the runtime the artifact is made for (OpenVINO for target openvino, else the default)."""
    from edgesr.benchmarks.quality import measure_quality
    from edgesr.data.datasets import load_pairs, set_name
    from edgesr.runtime import default_backend, open_backend

    scales = art.manifest.scales
    last = (art.manifest.get("transforms") or [{}])[-1]
    backend = backend or ("openvino" if last.get("target") == "openvino" else default_backend(art))
    by_scale = {}
    for sc in scales:
        sets = {set_name(s): load_pairs(s, sc, split="eval") for s in set_paths}
        with open_backend(art, backend, threads=0, scale=sc if len(scales) > 1 else None) as b:
            by_scale[sc] = measure_quality(b, sets, sc, art.manifest.size_multiple)
    return backend, by_scale


def _measure_degradations(art, backend: str, set_paths: list[str], degradations: list[str]) -> dict:
    """{degradation: {set: {psnr, ssim, bicubic_psnr, gain_db}}} at the artifact's scale."""
    from edgesr.benchmarks.quality import measure_degradations
    from edgesr.data.datasets import load_pairs, set_name
    from edgesr.runtime import open_backend

    sets = {set_name(s): load_pairs(s, art.scale, split="eval") for s in set_paths}
    multi = len(art.manifest.scales) > 1
    with open_backend(art, backend, threads=0, scale=art.scale if multi else None) as b:
        res = measure_degradations(b, sets, art.scale, degradations, art.manifest.size_multiple)
    return {d: {s: {k: round(res[s][d][k], 4) for k in ("psnr", "ssim", "bicubic_psnr", "gain_db")} for s in res}
            for d in degradations}


def _trained_on(model_art) -> str:
    """The training LR of a model artifact: ``bicubic`` (the protocol) or the mix's name."""
    rec = ((model_art.manifest.get("training") or {}).get("degradation") if model_art is not None else None) or "bicubic"
    return rec if isinstance(rec, str) else rec.get("name", "general")


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True)
    ap.add_argument("--set", action="append", required=True)
    ap.add_argument("--degradation", action="append", default=[], metavar="NAME",
                    help="also record quality on LR made this way (repeatable; see edgesr eval --degradation)")
    ap.add_argument("pairs", nargs="+", metavar="NAME=STAGE[@BACKEND]")
    return ap


def main(argv=None) -> int:
    from edgesr.modelio import load_model
    from edgesr.models import count_macs, deploy_form

    args = _parser().parse_args(argv)
    chosen = {}
    for i, pair in enumerate(args.pairs):
        if "@" in pair:
            args.pairs[i], backend = pair.split("@", 1)
            chosen[pair.split("=", 1)[0]] = backend
    run = Path(args.run)
    idx_path = ROOT / "index.json"
    idx = json.loads(idx_path.read_text()) if idx_path.is_file() else {"models": {}}
    results = json.loads((run / "results.json").read_text()) if (run / "results.json").is_file() else {}
    copied = {}
    for pair in args.pairs:
        name, stage = pair.split("=", 1)
        src = read_artifact(run / stage)
        dst = ROOT / name
        if dst.exists():
            shutil.rmtree(dst)
        shutil.copytree(src.path, dst)
        copied[stage] = name
    for pair in args.pairs:
        name, stage = pair.split("=", 1)
        dst = ROOT / name
        manifest = json.loads((dst / "manifest.json").read_text())
        parent = manifest.get("parent")
        if parent and Path(parent.get("path", "")).name in copied:
            parent["path"] = copied[Path(parent["path"]).name]  # a pretrained name, resolved by read_artifact
        manifest["name"] = name
        atomic_write_text(dst / "manifest.json", json.dumps(manifest, indent=2) + "\n")
        art = read_artifact(dst)
        scale, scales = art.scale, art.manifest.scales
        backend, by_scale = _measure(art, chosen.get(name), args.set)
        quality = by_scale[scale]
        model_art = art
        while model_art is not None and model_art.kind != "model":
            up = (model_art.manifest.get("parent") or {}).get("path")
            model_art = _ancestor(up, copied, run)
        macs = params = None
        if model_art is not None:
            deployed, _ = deploy_form(load_model(model_art), model_art.manifest["arch"])
            macs, params = count_macs(deployed, (360, 640))
        before = idx["models"].get(name) or {}
        same_file = before.get("hash") == art.hash  # re-copied unchanged: keep where it came from
        idx["models"][name] = {
            "dir": name, "kind": art.kind, "precision": art.manifest["precision"], "scale": scale,
            "arch": (model_art.manifest["arch"] if model_art is not None else art.manifest.get("arch")),
            "params": params, "macs_640x360": macs,
            "eval_backend": backend,
            "quality": {s: {"psnr": round(q["psnr"], 4), "ssim": round(q["ssim"], 4)} for s, q in quality.items()},
            **({"scales": scales, "quality_by_scale": {
                str(sc): {s: {"psnr": round(q["psnr"], 4), "ssim": round(q["ssim"], 4)} for s, q in qs.items()}
                for sc, qs in by_scale.items()}} if len(scales) > 1 else {}),
            "training_steps": (model_art.manifest.get("metrics") or {}).get("train_steps") if model_art else None, "recipe": results.get("recipe"),
            "command": results.get("command"), "stage": stage, "hash": art.hash}
        if args.degradation:
            idx["models"][name]["trained_on"] = _trained_on(model_art)
            idx["models"][name]["quality_by_degradation"] = _measure_degradations(
                art, backend, args.set, list(dict.fromkeys(args.degradation)))
        if same_file:
            for key in ("training_steps", "recipe", "command", "stage", "warm_start"):
                if key in before:
                    idx["models"][name][key] = before[key]
        elif model_art is not None and model_art is not art:
            model_entry = idx["models"].get(model_art.manifest.get("name") or "") or {}
            for key in ("training_steps", "warm_start"):  # derived files: the training is their model's
                if key in model_entry:
                    idx["models"][name][key] = model_entry[key]
        for sc, qs in by_scale.items():
            print(f"{name}: {art.kind} {art.manifest['precision']} x{sc} " +
                  ", ".join(f"{s} {q['psnr']:.2f} dB" for s, q in qs.items()))
    atomic_write_text(idx_path, json.dumps(idx, indent=2, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
