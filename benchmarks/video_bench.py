"""Video upscaling benchmark: a video made from a real photograph (a pan across scikit-image's astronaut, with
a 440 Hz audio track), upscaled end to end; records the frame count and rate in and out, audio kept, end-to-end fps beside the
model's fps inside the same run (sharing the cores with decoding and encoding) and alone (frames in memory,
nothing else running), and resident memory over the run. A first pass with a stand-in that only repeats pixels
(``codec_alone``) measures decoding and encoding without a model: with both on the same cores the end-to-end
rate cannot pass 1 / (1 / model + 1 / codec), which is recorded beside it.

    python -m edgesr.benchmarks.video_bench ARTIFACT --frames 1000 --size 360x640 --out benchmarks/results/video/run.json
"""

from __future__ import annotations

import argparse
import importlib.resources
import json
import sys
from pathlib import Path

import numpy as np

from edgesr.files import atomic_write_text

from .latency import machine_info

__all__ = ["make_test_video"]


def make_test_video(path: str | Path, frames: int = 30, size: tuple[int, int] = (72, 128), fps: int = 25,
                    audio: bool = True, vfr: bool = False) -> Path:
    """An H.264 .mp4 (or any container PyAV writes) panning across a real photograph, with AAC audio.
    ``vfr``: a variable frame rate as phones record (time base 1/90000; every third frame lasts twice as
    long)."""
    from fractions import Fraction

    import av
    from PIL import Image

    h, w = size
    photo = np.asarray(Image.open(Path(str(importlib.resources.files("skimage.data"))) / "astronaut.png").convert("RGB"))
    if h > photo.shape[0] or w > photo.shape[1]:
        reps = (-(-h // photo.shape[0]) + 1, -(-w // photo.shape[1]) + 1, 1)
        photo = np.tile(photo, reps)
    ph, pw = photo.shape[:2]
    path = Path(path)
    with av.open(str(path), "w") as c:
        v = c.add_stream("libx264", rate=fps, options={"crf": "12", "preset": "ultrafast"})
        v.width, v.height, v.pix_fmt = w, h, "yuv420p"
        tick = Fraction(1, 90000) if vfr else Fraction(1, fps)
        if vfr:
            v.codec_context.time_base = v.time_base = tick
        t = 0
        a = None
        if audio:
            a = c.add_stream("aac", rate=48000)
            a.layout = "mono"
        sample = 0
        for i in range(frames):
            y, x = (3 * i) % max(ph - h, 1), (5 * i) % max(pw - w, 1)
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(photo[y:y + h, x:x + w]), format="rgb24")
            frame.pts, frame.time_base = t, tick
            t += (2 if vfr and i % 3 == 2 else 1) * int(1 / (fps * tick))
            for p in v.encode(frame):
                c.mux(p)
            while a is not None and sample < t * tick * 48000:
                k = np.arange(sample, sample + 1024)
                af = av.AudioFrame.from_ndarray((0.3 * np.sin(2 * np.pi * 440 * k / 48000)).astype(np.float32)[None],
                                                format="fltp", layout="mono")
                af.sample_rate, af.pts = 48000, sample
                for p in a.encode(af):
                    c.mux(p)
                sample += 1024
        for p in v.encode():
            c.mux(p)
        if a is not None:
            for p in a.encode():
                c.mux(p)
    return path


def _model_alone_fps(up, src: Path, batch: int, frames: int = 200) -> float:
    """Frames per second of the model alone on the first ``frames`` decoded frames (held in memory), in
    batches as the video pipeline runs them, with no decoder or encoder beside it."""
    import time

    import av

    with av.open(str(src)) as c:
        imgs = [f.to_ndarray(format="rgb24") for _, f in zip(range(frames), c.decode(video=0))]
    up.upscale_batch(imgs[:batch])  # warm-up
    t0 = time.perf_counter()
    for i in range(0, len(imgs), batch):
        up.upscale_batch(imgs[i:i + batch])
    return len(imgs) / (time.perf_counter() - t0)


class _NearestCopy:
    """A stand-in upscaler that only repeats pixels (about a millisecond a frame): the video pipeline run with it
    measures what decoding, encoding and the queues cost on this machine without a model."""

    def __init__(self, scale: int):
        self.scale = scale

    def upscale_batch(self, frames):
        return [np.repeat(np.repeat(f, self.scale, 0), self.scale, 1) for f in frames]


def main(argv=None) -> int:
    from edgesr.artifacts import read_artifact
    from edgesr.runtime import Upscaler, open_backend
    from edgesr.runtime.video import VideoOptions, probe, upscale_video

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("artifact")
    ap.add_argument("--frames", type=int, default=1000)
    ap.add_argument("--size", default="360x640", help="input HxW")
    ap.add_argument("--backend")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--work", default="runs/video_bench")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    h, w = (int(v) for v in args.size.split("x"))
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    src = make_test_video(work / f"in_{args.frames}_{h}x{w}.mp4", args.frames, (h, w))
    art = read_artifact(args.artifact)
    backend = open_backend(art, args.backend, threads=args.threads)
    up = Upscaler(backend, size_multiple=art.manifest.size_multiple)
    alone_fps = _model_alone_fps(up, src, args.batch)
    print(f"model alone (decoded frames in memory, batch {args.batch}, nothing else running): {alone_fps:.2f} fps")
    rows = {"model_alone": {"fps": round(alone_fps, 2), "frames": 200, "batch": args.batch}}
    for name, upscaler in (("codec_alone", _NearestCopy(up.scale)), ("h264", up)):
        opts = VideoOptions(batch=args.batch)
        dst = work / f"out_{name}.mp4"
        r = upscale_video(upscaler, src, dst, opts, overwrite=True, show_progress=False)
        pin, pout = probe(src), probe(dst)
        rss = r.rss_mb
        growth = round(max(rss[4:]) - rss[3], 1) if len(rss) > 4 else None  # after frame 100 (sampled every 25)
        rows[name] = {"frames_in": pin["frames"], "frames_out": pout["frames"], "fps_in": pin["fps"],
                      "fps_out": pout["fps"], "audio_in": pin["audio"], "audio_out": pout["audio"],
                      "audio_packets_copied": r.audio_packets, "size_out": pout["size"], "codec": r.codec,
                      "seconds": round(r.seconds, 2), "end_to_end_fps": round(r.end_to_end_fps, 2),
                      "model_fps": round(r.model_fps, 2),
                      "end_to_end_over_model": round(r.end_to_end_fps / r.model_fps, 3) if r.model_fps else None,
                      "rss_mb_every_25_frames": rss, "rss_growth_after_frame_100_mb": growth}
        rows[name]["end_to_end_over_model_alone"] = round(r.end_to_end_fps / alone_fps, 3)
        if name == "h264":  # what two cores allow when the model and the codec take turns: 1 / (1/model + 1/codec)
            codec = rows["codec_alone"]["end_to_end_fps"]
            bound = 1.0 / (1.0 / alone_fps + 1.0 / codec)
            rows[name]["serial_bound_fps"] = round(bound, 2)
            rows[name]["end_to_end_over_serial_bound"] = round(r.end_to_end_fps / bound, 3)
        print(json.dumps({name: {k: v for k, v in rows[name].items() if k != "rss_mb_every_25_frames"}}, indent=1))
    result = {"command": "python -m edgesr.benchmarks.video_bench " + " ".join(argv if argv is not None else sys.argv[1:]),
              "artifact": args.artifact, "backend": backend.describe(), "input": {"frames": args.frames, "hw": [h, w]},
              "machine": machine_info(), "runs": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(args.out), json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
