"""Architectures, registry and artifacts: parameter counts, round trips, mismatched checkpoints."""

import json

import pytest
import torch
import torch.nn.functional as F

from edgesr.artifacts import ArtifactError, content_hash, read_artifact
from edgesr.modelio import load_model, save_model
from edgesr.models import MODELS, build_model

TINY = [
    {"type": "abpn", "scale": 2, "channels": 8, "n_body": 2},
    {"type": "abpn", "scale": 3, "channels": 8, "n_body": 1},
    {"type": "edsr", "scale": 2, "n_resblocks": 2, "n_feats": 8, "anchor": "nearest"},
    {"type": "edsr", "scale": 4, "n_resblocks": 1, "n_feats": 8},
]


@pytest.mark.parametrize("spec,expected", [
    ({"type": "edsr", "scale": 4}, 1_518_000),                           # EDSR baseline x4: 1.52M
    ({"type": "edsr", "scale": 4, "n_resblocks": 32, "n_feats": 256, "res_scale": 0.1}, 43_100_000),  # EDSR x4 43.1M
    ({"type": "abpn", "scale": 3}, 36_000),                               # ABPN paper config (28 ch), ~36k at x3
])
def test_parameter_counts_match_papers(spec, expected):
    n = sum(p.numel() for p in build_model(spec).parameters())
    assert abs(n - expected) / expected < 0.01, n


def test_registry_names_known_entries_on_a_miss():
    with pytest.raises(KeyError, match="unknown architecture 'edsrr'.*abpn.*edsr"):
        build_model({"type": "edsrr"})
    with pytest.raises(KeyError, match="registered twice"):
        MODELS.register("edsr")(object)
    with pytest.raises(TypeError, match="abpn"):
        build_model({"type": "abpn", "chanels": 3})


@pytest.mark.parametrize("spec", TINY, ids=lambda s: f"{s['type']}x{s['scale']}")
def test_odd_sizes_and_round_trip(spec, tmp_path):
    model = build_model(spec).eval()
    x = torch.rand(2, 3, 13, 7)
    y = model(x)
    assert y.shape == (2, 3, 13 * spec["scale"], 7 * spec["scale"])
    art = save_model(tmp_path / "a", model, name="a", arch=spec)
    again = load_model(tmp_path / "a")
    assert torch.equal(again(x), y)
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert manifest["arch"] == spec and manifest["scales"] == [spec["scale"]] and manifest["hash"] == art.hash


def test_anchor_models_start_near_nearest_upsampling():
    """The residual nets learn only a correction: at init the output is close to the anchor."""
    x = torch.rand(1, 3, 16, 16)
    for spec in ({"type": "abpn", "scale": 2, "channels": 8, "n_body": 2},):
        model = build_model(spec).eval()
        nearest = F.interpolate(x, scale_factor=2, mode="nearest")
        assert (model(x) - nearest).abs().mean() < 0.2


def _swap_payload(art_dir, data: bytes, rehash: bool) -> None:
    """Replace an artifact's payload; ``rehash``: also record the new hash (a consistent but foreign artifact)."""
    (art_dir / "model.safetensors").write_bytes(data)
    if rehash:
        m = json.loads((art_dir / "manifest.json").read_text())
        m["hash"] = content_hash(art_dir / "model.safetensors")
        (art_dir / "manifest.json").write_text(json.dumps(m))


def test_mismatched_checkpoint_is_refused_with_the_fix(tmp_path):
    save_model(tmp_path / "big", build_model({"type": "abpn", "scale": 2, "channels": 16, "n_body": 2}), name="big",
               arch={"type": "abpn", "scale": 2, "channels": 16, "n_body": 2})
    save_model(tmp_path / "small", build_model(TINY[0]), name="small", arch=TINY[0])
    big = (tmp_path / "big" / "model.safetensors").read_bytes()
    # The big model's weights under the small model's manifest: the content hash refuses them first ...
    _swap_payload(tmp_path / "small", big, rehash=False)
    with pytest.raises(ArtifactError, match=r"small/model\.safetensors: content hash [0-9a-f]{16} differs from the "
                                            r"[0-9a-f]{16} recorded in .*small/manifest\.json.*Re-run the stage"):
        load_model(tmp_path / "small")
    # ... and with the hash rewritten to match, the architecture check names the mismatch.
    _swap_payload(tmp_path / "small", big, rehash=True)
    with pytest.raises(ArtifactError, match=r"small/model\.safetensors.*do not fit.*shape mismatch.*same artifact"):
        load_model(tmp_path / "small")
    _swap_payload(tmp_path / "small", b"\x00garbage", rehash=True)
    with pytest.raises(ArtifactError, match="corrupt or truncated"):
        load_model(tmp_path / "small")
    with pytest.raises(ArtifactError, match="not an edgesr artifact"):
        read_artifact(tmp_path)


def test_rewriting_an_artifact_replaces_it_whole(tmp_path):
    a = save_model(tmp_path / "a", build_model(TINY[0]), name="a", arch=TINY[0])
    with pytest.raises(ArtifactError, match=r"holds a 'model' artifact \(a\) already; pass --overwrite"):
        save_model(tmp_path / "a", build_model(TINY[1]), name="a", arch=TINY[1])
    assert read_artifact(tmp_path / "a").hash == a.hash
    b = save_model(tmp_path / "a", build_model(TINY[1]), name="a", arch=TINY[1], overwrite=True)
    assert read_artifact(tmp_path / "a").hash == b.hash != a.hash
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]


def test_an_artifact_is_never_written_over_other_files_or_its_input(tmp_path):
    """A folder holding a user's files is never replaced by an artifact, even with overwrite; nor an artifact
    holding extra files; nor the artifact a new one is made from."""
    import torch

    user = tmp_path / "photos"
    user.mkdir()
    (user / "notes.txt").write_text("keep me")
    for overwrite in (False, True):
        with pytest.raises(ArtifactError, match=r"photos: holds 1 file\(s\) \(notes\.txt\) and is not an edgesr artifact"):
            save_model(user, build_model(TINY[0]), name="x", arch=TINY[0], overwrite=overwrite)
    assert sorted(p.name for p in user.iterdir()) == ["notes.txt"]
    a = save_model(tmp_path / "a", build_model(TINY[0]), name="a", arch=TINY[0])
    (a.path / "mine.png").write_bytes(b"x")
    with pytest.raises(ArtifactError, match=r"holds an artifact and other files \(mine\.png\)"):
        save_model(a.path, build_model(TINY[0]), name="a", arch=TINY[0], overwrite=True)
    (a.path / "mine.png").unlink()
    with pytest.raises(ArtifactError, match=r"is the input artifact; refusing to write over it"):
        save_model(a.path, build_model(TINY[0]), name="a", arch=TINY[0], parent=a, overwrite=True)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert save_model(empty, build_model(TINY[0]), name="e", arch=TINY[0]).manifest["files"] == ["model.safetensors"]
    bad = build_model(TINY[0])
    with torch.no_grad():
        next(bad.parameters()).fill_(float("nan"))
    with pytest.raises(ArtifactError, match=r"weights hold NaN or Inf in 1 tensor"):
        save_model(tmp_path / "nan", bad, name="nan", arch=TINY[0])
    assert not (tmp_path / "nan").exists()


def test_manifests_are_read_through_typed_accessors_and_written_unchanged(tmp_path):
    """A typed Manifest (issue 30): accessors with the defaults old manifests need (the shipped files have no
    input_size), the same JSON on disk."""
    import json

    from edgesr.artifacts import Manifest, read_artifact

    art = read_artifact("msrep-s-x2-int8")
    m = art.manifest
    assert isinstance(m, Manifest) and m.kind == "onnx" and m.precision.startswith("int8")
    assert m.scales == [2] and m.size_multiple == int(json.loads((art.path / "manifest.json").read_text()).get(
        "size_multiple", 1)) and m.input_size is None and m.max_batch is None
    assert m.last_quantization()["type"] in ("quantize", "qat", "qat_onnx")
    assert json.dumps(m, sort_keys=True) == json.dumps(json.loads((art.path / "manifest.json").read_text()),
                                                       sort_keys=True)
    old = Manifest({"kind": "model", "scales": ["4"]})  # what an older manifest may lack
    assert (old.precision, old.scales, old.size_multiple, old.transforms, old.last_quantization()) == \
        ("fp32", [4], 1, [], {})
