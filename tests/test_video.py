"""Video upscaling: frame count, rate and timestamps kept, audio copied, each frame exactly the single-image
upscale of the decoded frame (lossless mode), bad input named. A short video made from a real photograph."""

import numpy as np
import pytest

from edgesr.cli import main
from edgesr.runtime import Upscaler, open_backend

av = pytest.importorskip("av")
from edgesr.benchmarks.video_bench import make_test_video  # noqa: E402
from edgesr.video import VideoOptions, probe, upscale_video  # noqa: E402


@pytest.fixture(scope="module")
def student(tiny_student):
    return tiny_student


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return make_test_video(tmp_path_factory.mktemp("v") / "in.mp4", frames=40, size=(36, 64), fps=30)


def _frames(path):
    with av.open(str(path)) as c:
        return [(f.to_ndarray(format="rgb24"), f.pts, f.time) for f in c.decode(video=0)]


@pytest.mark.parametrize("suffix", [".mkv", ".mp4"])
def test_lossless_video_frames_equal_single_image_upscales(student, clip, tmp_path, suffix):
    up = Upscaler(open_backend(student, threads=1))
    dst = tmp_path / f"out{suffix}"
    r = upscale_video(up, clip, dst, VideoOptions(lossless=True, batch=3), show_progress=False)
    src_info, out_info = probe(clip), probe(dst)
    assert r.frames == src_info["frames"] == out_info["frames"] == 40
    assert out_info["fps"] == src_info["fps"] == 30 and out_info["size"] == (72, 128)
    assert out_info["audio"] and r.audio_packets > 0
    ins, outs = _frames(clip), _frames(dst)
    for (lr, _, t_in), (sr, _, t_out) in zip(ins, outs):
        np.testing.assert_array_equal(sr, up.upscale(lr))  # batched through the backend, equal to one by one
        # Timestamps kept (Matroska shifts a whole file so that the AAC priming starts at 0: compare from the
        # first frame).
        assert t_out - outs[0][2] == pytest.approx(t_in - ins[0][2], abs=1e-3)


def test_default_video_keeps_count_rate_and_audio_through_the_cli(student, clip, tmp_path, capsys):
    dst = tmp_path / "out.mp4"
    assert main(["upscale", str(student.path), str(clip), str(dst)]) == 0
    printed = capsys.readouterr().out
    assert "40 frames 64x36 -> 128x72 at 30 fps (libx264, audio copied)" in printed
    info = probe(dst)
    assert info["frames"] == 40 and info["fps"] == 30 and info["audio"]
    with av.open(str(dst)) as c:
        assert c.streams.video[0].codec_context.name == "h264" and c.streams.video[0].format.name == "yuv420p"
        assert c.streams.audio[0].codec_context.name == "aac"
    # H.264 at CRF 18 keeps the exact frames' content (not every pixel: it is lossy, and this untrained
    # network's output is noisy): 4x4 block means agree, and frame 10 matches exact frame 10, not 20.
    up = Upscaler(open_backend(student, threads=1))
    ins, outs = _frames(clip), _frames(dst)

    def blocks(img):
        return img.astype(float).reshape(18, 4, 32, 4, 3).mean(axis=(1, 3))

    near = np.abs(blocks(outs[10][0]) - blocks(up.upscale(ins[10][0]))).mean()
    far = np.abs(blocks(outs[10][0]) - blocks(up.upscale(ins[20][0]))).mean()
    assert near < 3 < far
    # No audio when asked; an existing output is kept.
    assert main(["upscale", str(student.path), str(clip), str(tmp_path / "mute.mkv"), "--no-audio"]) == 0
    assert not probe(tmp_path / "mute.mkv")["audio"]
    capsys.readouterr()
    assert main(["upscale", str(student.path), str(clip), str(dst)]) == 2
    assert "exists; refusing to overwrite" in capsys.readouterr().err


def test_bad_videos_are_named_and_leave_nothing_behind(student, clip, tmp_path, capsys):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(clip.read_bytes()[:300])
    assert main(["upscale", str(student.path), str(broken), str(tmp_path / "o.mp4")]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "broken.mp4" in err and ("cannot open this video" in err or "decoding failed" in err)
    assert not (tmp_path / "o.mp4").exists() and not list(tmp_path.glob(".o.mp4*"))
    assert main(["upscale", str(student.path), str(clip), str(tmp_path / "o.gif")]) == 2
    assert "names no video container" in capsys.readouterr().err
    assert main(["upscale", str(student.path), str(clip), str(tmp_path / "o.webm"), "--lossless"]) == 2
    assert "lossless output in .webm: use .mkv (FFV1)" in capsys.readouterr().err
