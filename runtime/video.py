"""Video upscaling through PyAV (its wheels carry FFmpeg): decode -> infer -> encode in three threads joined
by bounded queues, so memory stays flat however long the video; frames are batched into the backend. The
frame rate, frame count and timestamps of the input are kept, the audio stream is copied as it is (no
re-encoding), and the codec, quality and pixel format are options with defaults users expect (H.264 CRF 18
in yuv420p; VP9 for WebM). ``lossless=True`` writes RGB without loss (FFV1 in .mkv, or H.264 RGB at QP 0 in
.mp4/.mov), so each output frame is exactly the upscaled decoded input frame. ``pip install 'edgesr[video]'``.
Torch-free.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path


from edgesr.errors import EdgesrError, UsageError

__all__ = ["VIDEO_SUFFIXES", "VideoError", "VideoOptions", "VideoResult", "upscale_video", "probe"]

VIDEO_SUFFIXES = (".mp4", ".mkv", ".webm", ".mov", ".avi")
_END = object()


class VideoError(EdgesrError, RuntimeError):
    """A video that cannot be read or written as asked; the message names the file and the fix."""


@dataclass(frozen=True)
class VideoOptions:
    codec: str | None = None
    """Encoder (FFmpeg name). Default: libx264 (.mp4/.mkv/.mov/.avi), libvpx-vp9 (.webm); lossless: ffv1
    (.mkv) or libx264rgb (.mp4/.mov)."""
    crf: int = 18
    """Constant-rate quality for x264/VP9 (lower is better; 18 is visually lossless for most content)."""
    pix_fmt: str | None = None
    """Output pixel format; default yuv420p (what every player plays), bgr0 (FFV1) / rgb24 (x264rgb) when
    lossless."""
    lossless: bool = False
    batch: int = 4
    """Frames per backend call."""
    queue_frames: int = 8
    """Frames held between two threads at most (memory bound)."""
    audio: bool = True
    """Copy the audio stream (when the input has one)."""


@dataclass
class VideoResult:
    frames: int = 0
    fps: float = 0.0
    """The input's average frame rate (kept in the output)."""
    seconds: float = 0.0
    """Wall-clock of the whole job."""
    model_seconds: float = 0.0
    """Time spent inside the backend (inference only)."""
    audio_packets: int = 0
    in_size: tuple[int, int] = (0, 0)
    out_size: tuple[int, int] = (0, 0)
    codec: str = ""
    rss_mb: list[float] = field(default_factory=list)
    """Resident memory sampled every 25 frames (Linux), to show that it stays flat."""

    @property
    def end_to_end_fps(self) -> float:
        return self.frames / self.seconds if self.seconds else 0.0

    @property
    def model_fps(self) -> float:
        return self.frames / self.model_seconds if self.model_seconds else 0.0


def _av():
    try:
        import av
    except ImportError as exc:
        raise UsageError(f"video needs PyAV, which is not installed ({exc}): pip install 'edgesr[video]'") from exc
    return av


def _rss_mb() -> float:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def probe(path: str | Path) -> dict:
    """Frame count (decoded), average frame rate, size, and whether there is audio."""
    av = _av()
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        n = sum(1 for _ in c.decode(v))
        return {"frames": n, "fps": float(v.average_rate), "size": (v.height, v.width),
                "audio": bool(c.streams.audio), "time_base": str(v.time_base)}


def _encoder(suffix: str, opts: VideoOptions) -> tuple[str, str, dict]:
    if opts.lossless:
        if opts.codec not in (None, "ffv1", "libx264rgb"):
            raise UsageError(f"lossless video is written with ffv1 (.mkv) or libx264rgb (.mp4/.mov), not {opts.codec}")
        codec = opts.codec or ("ffv1" if suffix in (".mkv", ".avi") else "libx264rgb")
        if codec == "libx264rgb" and suffix not in (".mp4", ".mov", ".mkv"):
            raise UsageError(f"lossless output in {suffix}: use .mkv (FFV1) or .mp4/.mov (H.264 RGB)")
        pix = opts.pix_fmt or ("bgr0" if codec == "ffv1" else "rgb24")
        return codec, pix, ({"qp": "0", "preset": "veryfast"} if codec == "libx264rgb" else {})
    codec = opts.codec or ("libvpx-vp9" if suffix == ".webm" else "libx264")
    options = {"crf": str(opts.crf)}
    if codec == "libx264":
        options["preset"] = "veryfast"
        if suffix == ".avi":  # AVI stores no presentation times: reordered (B) frames would shift every frame
            options["bf"] = "0"
    if codec == "libvpx-vp9":
        options.update({"b:v": "0", "deadline": "realtime", "cpu-used": "8", "row-mt": "1"})
    return codec, opts.pix_fmt or "yuv420p", options


# Containers that cannot store a timestamp below zero: FFmpeg shifts the whole file so that the earliest packet
# (the AAC encoder's priming, 1,024 samples before the first frame) starts at 0, which moved every frame by 21 ms.
_NON_NEGATIVE_TS = (".mkv", ".webm", ".avi")
# AVI has no timestamps, only a frame rate: a variable-rate input is written at its average rate.
_CONSTANT_RATE = (".avi",)


def _check_output(av, dst: Path, codec: str, pix_fmt: str, ain) -> None:
    """Codec, pixel format and audio against the container, before anything is decoded (each failed only once
    the pipeline ran, behind an unrelated thread error)."""
    import io

    fmt = _container_format(dst)
    with av.open(io.BytesIO(), "w", format=fmt) as probe_out:
        supported = set(probe_out.supported_codecs)
    try:
        enc = av.codec.Codec(codec, "w")
    except (av.codec.codec.UnknownCodecError, ValueError):
        usual = [c for c in ("libx264", "libx265", "libvpx-vp9", "libsvtav1", "ffv1", "mpeg4") if c in supported]
        raise UsageError(f"--codec {codec}: this FFmpeg (PyAV {av.__version__}) has no encoder of that name; for "
                         f"{dst.suffix} use one of {', '.join(usual)}") from None
    if enc.type != "video":
        raise UsageError(f"--codec {codec}: is an {enc.type} encoder; give a video encoder (libx264, libvpx-vp9, ffv1)")
    if enc.name not in supported:
        usual = [c for c in ("libx264", "libx265", "libvpx-vp9", "libsvtav1", "ffv1") if c in supported]
        raise UsageError(f"{dst}: a {dst.suffix} file cannot hold {codec} video; use --codec "
                         f"{' / '.join(usual)}, or another container (.mkv holds all of them)")
    formats = [f.name for f in (enc.video_formats or ())]
    if formats and pix_fmt not in formats:
        raise UsageError(f"--pix-fmt {pix_fmt}: {codec} does not encode it; it takes {', '.join(formats[:12])}"
                         f"{' ...' if len(formats) > 12 else ''} (yuv420p plays everywhere)")
    if ain is not None and ain.codec_context.name not in supported:
        holds = []
        for s in (".mp4", ".mkv", ".mov", ".webm"):
            with av.open(io.BytesIO(), "w", format=_container_format(Path("x" + s))) as other:
                if s != dst.suffix.lower() and ain.codec_context.name in other.supported_codecs:
                    holds.append(s)
        raise UsageError(f"{dst}: the input's audio is {ain.codec_context.name}, which a {dst.suffix} file cannot hold "
                         f"(it is copied, not re-encoded); pass --no-audio, or write {' or '.join(holds) or '.mkv'}")


@dataclass
class _Frame:
    """A decoded (then upscaled) video frame between the pipeline's threads, with its time."""

    image: object
    """H x W x 3 uint8 RGB."""
    pts: int | None
    time_base: object
    time: float | None


@dataclass
class _AudioPacket:
    """An audio packet copied as it is, in its place among the frames."""

    packet: object


class _Pipeline:
    """decode -> infer -> encode joined by bounded queues; the decode and infer threads hand their first error to
    the main thread (which encodes) and stop when ``stop`` is set."""

    def __init__(self, upscaler, src: Path, inp, vin, ain, options: VideoOptions, res: VideoResult):
        self.upscaler, self.src, self.inp, self.vin, self.ain, self.options, self.res = \
            upscaler, src, inp, vin, ain, options, res
        self.q_dec: queue.Queue = queue.Queue(maxsize=options.queue_frames)
        self.q_enc: queue.Queue = queue.Queue(maxsize=options.queue_frames)
        self.errors: list[BaseException] = []
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.decode, daemon=True),
                        threading.Thread(target=self.infer, daemon=True)]

    def put(self, q: queue.Queue, item) -> None:
        while not self.stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def decode(self) -> None:
        try:
            streams = [self.vin] + ([self.ain] if self.ain is not None else [])
            for packet in self.inp.demux(*streams):
                if self.stop.is_set():
                    break
                if packet.stream.type == "audio":
                    if packet.dts is not None:
                        self.put(self.q_dec, _AudioPacket(packet))
                    continue
                for frame in packet.decode():
                    self.put(self.q_dec, _Frame(frame.to_ndarray(format="rgb24"), frame.pts, frame.time_base,
                                                frame.time))
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            self.errors.append(VideoError(f"{self.src}: decoding failed ({exc}); the file may be truncated or corrupt"))
        finally:
            self.put(self.q_dec, _END)

    def _flush(self, pending: list[_Frame]) -> None:
        if not pending:
            return
        t0 = time.perf_counter()
        outs = self.upscaler.upscale_batch([f.image for f in pending])
        self.res.model_seconds += time.perf_counter() - t0
        for f, o in zip(pending, outs):
            self.put(self.q_enc, _Frame(o, f.pts, f.time_base, f.time))
        pending.clear()

    def infer(self) -> None:
        try:
            pending: list[_Frame] = []
            while True:
                item = self.q_dec.get()
                if item is _END:
                    self._flush(pending)
                    break
                if isinstance(item, _AudioPacket):
                    self._flush(pending)  # keep the interleaving of audio and video as it was
                    self.put(self.q_enc, item)
                    continue
                pending.append(item)
                if len(pending) >= self.options.batch:
                    self._flush(pending)
        except BaseException as exc:  # noqa: BLE001
            self.errors.append(exc)
        finally:
            self.put(self.q_enc, _END)

    def close(self) -> None:
        self.stop.set()
        for t in self.threads:
            if t.ident is not None:  # started (a failure before the start left them unstarted)
                t.join(timeout=5)
        self.inp.close()


class _Encoder:
    """The output container: the video stream (the input's time base unless the container needs a constant
    rate), the copied audio stream, and the timestamps each frame gets."""

    def __init__(self, av, out, dst: Path, vin, ain, codec: str, pix_fmt: str, codec_opts: dict, rate, scale: int):
        self.av, self.out, self.dst, self.rate = av, out, dst, rate
        self.vout = out.add_stream(codec, rate=rate, options=codec_opts)
        self.vout.width, self.vout.height = vin.width * scale, vin.height * scale
        self.vout.pix_fmt = pix_fmt
        self.constant = dst.suffix.lower() in _CONSTANT_RATE
        if not self.constant:  # each frame keeps its timestamp (variable frame rate, as phones record)
            self.vout.codec_context.time_base = vin.time_base
            self.vout.time_base = vin.time_base
        self.last_pts = None
        self.aout = out.add_stream_from_template(ain) if ain is not None else None

    def audio(self, packet) -> bool:
        if self.dst.suffix.lower() in _NON_NEGATIVE_TS and packet.pts is not None and \
                packet.pts + (packet.duration or 0) <= 0:
            return False  # encoder priming wholly before the first frame (see _NON_NEGATIVE_TS)
        packet.stream = self.aout
        self.out.mux(packet)
        return True

    def video(self, f: _Frame) -> None:
        frame = self.av.VideoFrame.from_ndarray(f.image, format="rgb24")
        pts, time_base, last = f.pts, f.time_base, self.last_pts
        if self.constant or pts is None:  # frame numbers at the (average) rate
            pts = round(f.time * self.rate) if f.time is not None else (last + 1 if last is not None else 0)
            time_base = 1 / self.rate
            if last is not None and pts <= last:
                pts = last + 1
        elif last is not None and pts <= last:  # a repeated or backward timestamp (a sloppy muxer): one tick
            pts = last + 1  # later, as players show it, not refused
        self.last_pts = pts
        frame.pts, frame.time_base = pts, time_base
        for packet in self.vout.encode(frame):
            self.out.mux(packet)

    def finish(self) -> None:
        for packet in self.vout.encode():
            self.out.mux(packet)


def _open_input(av, src: Path, options: VideoOptions):
    """(container, video stream, audio stream or None, frame rate), refused with the reason."""
    try:
        inp = av.open(str(src))
    except (av.FFmpegError, OSError) as exc:
        raise VideoError(f"{src}: cannot open this video ({exc}); the file is corrupt, truncated or not a video") from exc
    if not inp.streams.video:
        inp.close()
        raise VideoError(f"{src}: has no video stream")
    vin = inp.streams.video[0]
    vin.thread_type = "AUTO"
    ain = inp.streams.audio[0] if (options.audio and inp.streams.audio) else None
    rate = vin.average_rate or vin.guessed_rate or vin.base_rate
    if not rate:
        inp.close()
        raise VideoError(f"{src}: its video stream declares no frame rate; remux it with one (ffmpeg -r)")
    return inp, vin, ain, rate


def upscale_video(upscaler, src: str | Path, dst: str | Path, options: VideoOptions = VideoOptions(), *,
                  overwrite: bool = False, show_progress: bool = True) -> VideoResult:
    """Upscale every frame of ``src`` into ``dst`` (``upscaler``: an :class:`edgesr.runtime.Upscaler`). The
    output is written to a temporary file beside ``dst`` and moved into place when complete."""
    av = _av()
    from edgesr.files import atomic_path

    src, dst = Path(src), Path(dst)
    if dst.suffix.lower() not in VIDEO_SUFFIXES:
        raise UsageError(f"{dst}: the suffix {dst.suffix or '(none)'!r} names no video container; use one of "
                         f"{', '.join(VIDEO_SUFFIXES)}")
    if dst.exists() and not overwrite:
        raise UsageError(f"{dst}: exists; refusing to overwrite it. Pass --overwrite, or choose another output path.")
    if dst.resolve() == src.resolve():
        raise UsageError(f"{dst}: is the input video; choose another output path")
    codec, pix_fmt, codec_opts = _encoder(dst.suffix.lower(), options)
    inp, vin, ain, rate = _open_input(av, src, options)
    try:
        _check_output(av, dst, codec, pix_fmt, ain)
    except BaseException:
        inp.close()
        raise
    res = VideoResult(fps=float(rate), in_size=(vin.height, vin.width), codec=codec)
    res.out_size = (vin.height * upscaler.scale, vin.width * upscaler.scale)
    pipe = _Pipeline(upscaler, src, inp, vin, ain, options, res)
    t_start = time.perf_counter()
    try:
        with atomic_path(dst) as tmp:
            out = av.open(str(tmp), mode="w", format=_container_format(dst))
            try:
                enc = _Encoder(av, out, dst, vin, ain, codec, pix_fmt, codec_opts, rate, upscaler.scale)
                for t in pipe.threads:
                    t.start()
                _encode_all(pipe, enc, res, vin.frames or 0, t_start, show_progress)
                if pipe.errors:
                    raise pipe.errors[0]
                enc.finish()
            finally:
                out.close()
    except BaseException as exc:
        pipe.stop.set()
        if pipe.errors and pipe.errors[0] is not exc:  # a pipeline thread failed first: that is the cause
            raise pipe.errors[0] from exc
        raise
    finally:
        pipe.close()
    res.seconds = time.perf_counter() - t_start
    return res


def _encode_all(pipe: _Pipeline, enc: _Encoder, res: VideoResult, total: int, t_start: float,
                show_progress: bool) -> None:
    """The main thread's part: every upscaled frame and audio packet into the container, in order."""
    from edgesr.progress import progress_bar

    with progress_bar("video", total or 1, enabled=show_progress) as bar:
        while True:
            item = pipe.q_enc.get()
            if item is _END:
                break
            if isinstance(item, _AudioPacket):
                res.audio_packets += enc.audio(item.packet)
                continue
            enc.video(item)
            res.frames += 1
            if res.frames % 25 == 0:
                res.rss_mb.append(round(_rss_mb(), 1))
            elapsed = time.perf_counter() - t_start
            bar.update(min(res.frames, total) if total else 1,
                       f"{res.frames / elapsed:.1f} fps (model {res.model_fps:.1f})")


def _container_format(dst: Path) -> str:
    return {".mp4": "mp4", ".mov": "mov", ".mkv": "matroska", ".webm": "webm", ".avi": "avi"}[dst.suffix.lower()]
