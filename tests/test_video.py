"""Video upscaling: frame count, rate and timestamps kept, audio copied, each frame exactly the single-image
upscale of the decoded frame (lossless mode), bad input named. A short video made from a real photograph."""

import os
from fractions import Fraction

import numpy as np
import pytest

from edgesr.cli import main
from edgesr.runtime import Upscaler, open_backend

av = pytest.importorskip("av")
from edgesr.benchmarks.video_bench import make_test_video  # noqa: E402
from edgesr.runtime.video import VideoOptions, probe, upscale_video  # noqa: E402


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


def _times(path):
    with av.open(str(path)) as c:
        return [f.time for f in c.decode(video=0)]


@pytest.mark.parametrize("suffix", [".mp4", ".mkv", ".mov"])
def test_a_variable_frame_rate_video_keeps_each_frames_time(student, tmp_path, suffix):
    """As phones record: every third frame lasts twice as long (it crashed: 'Invalid argument ... returned 22',
    the encoder's 1/rate clock cannot hold those times). Matroska starts at 0 too (the AAC priming before the
    first frame shifted every frame by 21 ms)."""
    phone = make_test_video(tmp_path / "phone.mp4", frames=24, size=(36, 64), fps=30, vfr=True)
    ins = _times(phone)
    assert len(set(np.round(np.diff(ins), 4))) == 2  # the input really is variable-rate
    up = Upscaler(open_backend(student, threads=1))
    r = upscale_video(up, phone, tmp_path / f"out{suffix}", VideoOptions(batch=5), show_progress=False)
    assert r.frames == 24 and probe(tmp_path / f"out{suffix}")["audio"]
    assert _times(tmp_path / f"out{suffix}") == pytest.approx(ins, abs=1e-3)


def test_avi_declares_the_rate_and_frame_count_it_holds(student, clip, tmp_path):
    """AVI has a frame rate and no timestamps: frames are numbered at the input's rate (it declared 600 fps and
    1,800 frames for 90, from the input's 1/15360 clock)."""
    up = Upscaler(open_backend(student, threads=1))
    dst = tmp_path / "out.avi"
    upscale_video(up, clip, dst, VideoOptions(batch=4), show_progress=False)
    with av.open(str(dst)) as c:
        v = c.streams.video[0]
        assert (v.average_rate, v.frames, v.time_base) == (30, 40, Fraction(1, 30))
    got, ins = _times(dst), _times(clip)
    # (FFmpeg's AVI reader dates H.264 frames one frame late; the spacing is the input's)
    assert len(got) == 40 and np.allclose(np.diff(got), np.diff(ins), atol=1e-3)


def test_codec_container_and_audio_are_checked_before_decoding(student, clip, tmp_path, capsys):
    """Each ended in 'RuntimeError: cannot join thread before it is started', which hid the cause."""
    cases = [(["o.webm"], "the input's audio is aac, which a .webm file cannot hold (it is copied, not re-encoded); "
                          "pass --no-audio, or write .mp4"),
             (["o.mp4", "--codec", "h265x"], "--codec h265x: this FFmpeg"),
             (["o.mp4", "--codec", "aac"], "--codec aac: is an audio encoder"),
             (["o.webm", "--codec", "libx264", "--no-audio"], "a .webm file cannot hold libx264 video; use --codec"),
             (["o.mp4", "--pix-fmt", "rgb48"], "--pix-fmt rgb48: libx264 does not encode it; it takes yuv420p")]
    for args, message in cases:
        assert main(["upscale", str(student.path), str(clip), str(tmp_path / args[0]), *args[1:]]) == 2, args
        err = " ".join(capsys.readouterr().err.split())
        assert message in err and "Traceback" not in err, (args, err)
    assert not list(tmp_path.iterdir())  # nothing written, no temporary left
    # With the audio left out, the same .webm is written.
    assert main(["upscale", str(student.path), str(clip), str(tmp_path / "o.webm"), "--no-audio"]) == 0
    assert probe(tmp_path / "o.webm")["frames"] == 40


def test_the_first_error_of_a_pipeline_thread_is_the_one_raised(clip, tmp_path):
    from edgesr.errors import EdgesrError

    class Failing:
        scale = 2

        def upscale_batch(self, frames):
            raise EdgesrError("the model failed on frame 1")

    with pytest.raises(EdgesrError, match="the model failed on frame 1"):
        upscale_video(Failing(), clip, tmp_path / "o.mp4", show_progress=False)
    assert not list(tmp_path.iterdir())


def test_a_killed_upscales_temporary_file_is_removed_by_the_next_run(student, clip, tmp_path):
    """kill -9 leaves '.out.mp4.XXXXXXXX.tmp' (no cleanup code runs); the next write of that output removes it.
    A temporary a live writer holds (locked), and files edgesr did not make, are kept."""
    import fcntl

    stale = tmp_path / ".out.mp4.k1lled0x.tmp"
    stale.write_bytes(b"\0" * 4096)
    live = tmp_path / ".out.mp4.w0rking1.tmp"
    live.write_bytes(b"\0")
    others = [tmp_path / ".out.mp4.notes.tmp", tmp_path / ".other.mp4.k1lled0x.tmp", tmp_path / "out.mp4.k1lled0x.tmp"]
    for p in others:
        p.write_text("mine")
    fd = os.open(live, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        assert main(["upscale", str(student.path), str(clip), str(tmp_path / "out.mp4")]) == 0
    finally:
        os.close(fd)
    assert not stale.exists() and live.exists() and all(p.read_text() == "mine" for p in others)
    assert probe(tmp_path / "out.mp4")["frames"] == 40
