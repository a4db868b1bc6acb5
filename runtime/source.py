"""Media sources: a file, a pipe, a URL or a device, decoded once, audio and video together.

`open_source` checks and opens what the user named; `MediaSource.events` decodes it in one pass
and yields, in arrival order, the frames that the windows sample (each converted to RGB once, with
the sample times it stands for) and the audio as mono float32 at the spec's rate, positioned in
samples from the source's time 0. Which frames are needed comes from a `TargetClock` over the
windows (see window.py), so:

- a packet whose frame no window samples, and that no other frame refers to, is not decoded at
  all (the decoder's skip_frame=NONREF, set packet by packet: B-frames of H.264/HEVC);
- only sampled frames are converted to RGB;
- a single window seeks near its start and stops once it is covered;
- `realtime=True` releases packets at the pace of their timestamps, as a camera would deliver them.
"""
from __future__ import annotations

import bisect
import errno
import os
import stat
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np

from .errors import InputError
from .spec import FeatureSpec
from .window import Window, audio_start, frame_step

AUDIO_SUFFIXES = {".wav", ".flac", ".mp3", ".m4a", ".aac", ".ogg", ".oga", ".opus", ".wma", ".aiff", ".aif"}
# What a folder search counts as media (anything else under a folder is skipped and said).
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
MEDIA_SUFFIXES = {".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".ts", ".mts", ".m2ts",
                  ".flv", ".wmv", ".3gp", ".ogv"} | AUDIO_SUFFIXES | IMAGE_SUFFIXES
SKIPPABLE_CODECS = {"h264", "hevc"}
# A single window seeks this far before its start: the keyframe at or before that point, and
# audio packets stored a little after the video ones, still precede the window.
SEEK_MARGIN_S = 0.5
MAX_SIDE = 1280  # frames larger than this (4K, ...) are scaled down while converting to RGB
URL_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://", "srt://", "hls+http://")
# Formats FFmpeg opens as "video" that are not media: text shown as a picture.
_NOT_CLIPS = {"tty": "a text file, not media"}
# A still image (a photo, a face set's picture) is a one-frame video: its frame is held for the
# whole window, so the model gets the face alone, as a silent clip of a still face would give it.
STILL_WARNING = "a still image: its one frame is the whole window (the face alone, no audio)"
_OS_REASONS = {errno.EACCES: "permission denied", errno.EPERM: "permission denied",
               errno.ENAMETOOLONG: "file name too long", errno.ELOOP: "too many levels of symbolic links",
               errno.ENOENT: "no such file", errno.ENOTDIR: "no such file (a parent is not a folder)"}


# ---------------------------------------------------------------------------------------------
# Events a source yields
@dataclass
class Frame:
    id: int                 # index of the frame in display order (sampled frames share nothing else)
    time: float             # seconds of the source
    rgb: np.ndarray         # uint8 (h, w, 3), upright, at most MAX_SIDE
    targets: list[float]    # the sample times this frame is on screen at
    held: bool              # shown past the end of the video (the last frame, held)
    arrival: float          # perf_counter() when its packet arrived


@dataclass
class Audio:
    start: int              # first sample, counted at spec.sample_rate from the source's time 0
    samples: np.ndarray     # float32 mono, finite, in [-1, 1]
    arrival: float
    repaired: int = 0       # non-finite samples that were zeroed


@dataclass
class End:
    video_end: float | None  # time of the last video frame (None: no video)
    audio_end: int | None    # one past the last audio sample (None: no audio)
    warnings: list[str] = field(default_factory=list)
    frames_seen: int = 0     # video frames the decoder put out (skipped ones are not decoded)


@dataclass
class MediaInfo:
    name: str
    duration: float | None
    has_video: bool
    has_audio: bool
    fps: float | None
    seekable: bool
    warnings: list[str] = field(default_factory=list)
    still: bool = False     # a still image (see STILL_WARNING)


# ---------------------------------------------------------------------------------------------
# Which frames are wanted
class TargetClock:
    """The sample times of a sequence of windows (finite, or endless for a live source), popped in
    time order. Windows are pulled from the sequence only as far as time has got, so an endless
    grid costs nothing ahead of the stream."""

    def __init__(self, windows: Iterable[Window], spec: FeatureSpec):
        self.finite = isinstance(windows, (list, tuple))
        self._windows = iter(windows)
        self._next: Window | None = next(self._windows, None)
        self._step = frame_step(spec)
        self._frames = spec.frames
        self.pending: list[float] = []  # sorted, unique (rounded to the microsecond)

    def _pull_until(self, t: float) -> None:
        while self._next is not None and self._next.start <= t:
            for k in range(self._frames):
                target = round(self._next.start + (k + 0.5) * self._step, 6)
                i = bisect.bisect_left(self.pending, target)
                if i == len(self.pending) or self.pending[i] != target:
                    self.pending.insert(i, target)
            self._next = next(self._windows, None)

    def first(self) -> float | None:
        """The earliest target not yet served."""
        while True:
            head = self.pending[0] if self.pending else None
            if self._next is None or (head is not None and self._next.start > head):
                return head
            self._pull_until(head if head is not None else self._next.start)

    def pop_through(self, t: float) -> list[float]:
        """Targets at or before t (the frame on screen since before them is now known)."""
        out = []
        while (head := self.first()) is not None and head < t:
            out.append(self.pending.pop(0))
        return out

    def any_in(self, lo: float, hi: float) -> bool:
        self._pull_until(hi)
        i = bisect.bisect_left(self.pending, lo)
        return i < len(self.pending) and self.pending[i] < hi

    @property
    def done(self) -> bool:
        return self.first() is None


# ---------------------------------------------------------------------------------------------
# Opening
def _stat_reason(path: str) -> str | None:
    """Why `path` cannot be read as a media file, or None. Pipes and FIFOs are fine (read as streams)."""
    try:
        st = os.stat(path)
    except OSError as exc:
        return _OS_REASONS.get(exc.errno, exc.strerror or type(exc).__name__)
    if stat.S_ISDIR(st.st_mode):
        return "is a directory, not a media file"
    if stat.S_ISREG(st.st_mode) and st.st_size == 0:
        return "empty file (0 bytes)"
    if not os.access(path, os.R_OK):
        return "permission denied"
    if not stat.S_ISREG(st.st_mode):
        return None  # a FIFO or device: opening it to check would consume its writer's first open
    try:  # os.access answers for the real, not the effective, user: really open it
        os.close(os.open(path, os.O_RDONLY))
    except OSError as exc:
        return _OS_REASONS.get(exc.errno, exc.strerror or type(exc).__name__)
    return None


def is_url(source) -> bool:
    return isinstance(source, str) and source.lower().startswith(URL_SCHEMES)


def ffmpeg_reason(exc: Exception) -> str:
    msg = getattr(exc, "strerror", None) or str(exc)
    return msg.split(":")[0].strip() if msg else type(exc).__name__


def open_container(source: str, name: str | None = None, options: dict | None = None, fmt: str | None = None):
    """An av InputContainer for a file path, '-' (stdin), a FIFO, a URL, a device, or a binary
    file object (bytes a service receives). Raises InputError."""
    name = name or str(source)
    if isinstance(source, str) and source != "-" and not is_url(source) and fmt is None:
        reason = _stat_reason(source)
        if reason:
            raise InputError(name, reason)
    try:
        # Tags in other encodings than UTF-8 (old WAV/MP3 tags) must not make a good file unreadable.
        target = sys.stdin.buffer if source == "-" else source
        container = av.open(target, mode="r", format=fmt, options=options or {}, metadata_errors="replace",
                            timeout=(10.0, 10.0) if is_url(source) else None)
    except av.error.FFmpegError as exc:
        raise InputError(name, f"not a readable media file ({ffmpeg_reason(exc)})") from None
    except OSError as exc:
        raise InputError(name, _OS_REASONS.get(exc.errno, exc.strerror or type(exc).__name__)) from None
    fmt_name = container.format.name
    for tag, reason in _NOT_CLIPS.items():
        if fmt_name == tag or (tag.startswith("_") and fmt_name.endswith(tag)):
            container.close()
            raise InputError(name, reason)
    return container


def video_stream(container):
    """The first real video stream: cover art in audio files (attached pictures) is not video."""
    for s in container.streams.video:
        if not s.disposition & av.stream.Disposition.attached_pic:
            return s
    return None


def _duration(container) -> float | None:
    if container.duration:
        return container.duration / av.time_base
    spans = [float(s.duration * s.time_base) for s in container.streams if s.duration and s.time_base]
    return max(spans) if spans else None


def rgb_of(frame: av.VideoFrame) -> np.ndarray:
    """RGB uint8 of a frame, shrunk to MAX_SIDE and turned upright by its display matrix."""
    w, h = frame.width, frame.height
    scale = min(1.0, MAX_SIDE / max(w, h))
    if scale < 1.0:
        w, h = max(2, round(w * scale / 2) * 2), max(2, round(h * scale / 2) * 2)
        rgb = frame.to_ndarray(format="rgb24", width=w, height=h)
    else:  # no size given: swscale's unscaled converter, half the time of an explicit same size
        rgb = frame.to_ndarray(format="rgb24")
    # `rotation` is the display matrix's counter-clockwise angle: rotate by it to show upright.
    quarter_turns = round((getattr(frame, "rotation", 0) or 0) / 90) % 4
    return np.ascontiguousarray(np.rot90(rgb, quarter_turns)) if quarter_turns else rgb


def streams_of(*streams):
    return [s for s in streams if s is not None]


def sanitise(audio: np.ndarray) -> tuple[np.ndarray, int]:
    """NaN/inf samples (broken float PCM) would turn every MFCC into NaN: zero them and clip to
    [-1, 1]. Returns the clean samples and how many were not finite (worth a warning)."""
    finite = np.isfinite(audio)
    bad = int(audio.size - np.count_nonzero(finite))
    if bad:
        audio = np.where(finite, audio, np.float32(0))
    return np.clip(audio, -1.0, 1.0, out=audio if audio.flags.writeable else None), bad


# ---------------------------------------------------------------------------------------------
# Decoding
class _LateSeek(Exception):
    """A seek landed after the first target (some containers seek coarsely)."""


class _Sampler:
    """Turns frames arriving in display order into `Frame` events: the frame on screen at each target."""

    def __init__(self, clock: TargetClock, convert=None):
        self.clock = clock
        self.convert = convert or rgb_of
        self.prev: tuple[av.VideoFrame, float, int, float] | None = None  # frame, time, id, arrival
        self.count = 0
        self.first_t: float | None = None
        self.last_t: float | None = None

    def push(self, frame: av.VideoFrame, t: float, arrival: float) -> Frame | None:
        if self.first_t is None:
            self.first_t = t
        out = None
        if self.prev is not None:
            targets = self.clock.pop_through(t)
            if targets:
                f, ft, fid, farr = self.prev
                out = Frame(fid, ft, self.convert(f), targets, False, farr)
        elif self.clock.first() is not None and self.clock.first() < t:
            # The stream starts after a target: its first frame stands in for the ones before it.
            out = Frame(self.count, t, self.convert(frame), self.clock.pop_through(t), False, arrival)
        self.prev = (frame, t, self.count, arrival)
        self.last_t = t
        self.count += 1
        return out

    def finish(self) -> Frame | None:
        """The last frame is on screen at every target left before `end` (held past the end)."""
        if self.prev is None:
            return None
        f, ft, fid, farr = self.prev
        # An endless grid (a live source) holds the last frame only for the samples just past it.
        targets = self.clock.pop_through(float("inf") if self.clock.finite else ft + 1.0)
        if not targets:
            return None
        return Frame(fid, ft, self.convert(f), targets, True, farr)


class MediaSource:
    """One opened source. `events(windows)` decodes it once for those windows (see module doc)."""

    def __init__(self, source: str | Path, spec: FeatureSpec, *, name: str | None = None,
                 realtime: bool = False, fmt: str | None = None, options: dict | None = None):
        self.source = source if hasattr(source, "read") else str(source)  # a path, URL, '-', or a file object
        self.spec, self.realtime = spec, realtime
        self.name = name or str(self.source)
        self._fmt, self._options = fmt, options
        self._open()
        c = self.container
        rate = self.vstream.average_rate or self.vstream.guessed_rate if self.vstream is not None else None
        seekable = isinstance(self.source, str) and self.source != "-" and not is_url(self.source) \
            and os.path.isfile(self.source)
        self.info = MediaInfo(self.name, _duration(c), self.vstream is not None, self.astream is not None,
                              float(rate) if rate else None, seekable)
        fmt_name = c.format.name
        self.info.still = fmt_name == "image2" or fmt_name.endswith("_pipe")
        if self.info.still:
            self.info.warnings.append(STILL_WARNING)
        elif self.info.duration is None:
            self.info.warnings.append("duration unknown: windows start at 0 s")
        self.origin = c.start_time / av.time_base if c.start_time else 0.0
        # A stream with no end in sight (a device, a network stream, a pipe of unknown length)
        # is analysed on the endless hop grid rather than a planned timeline.
        self.endless = fmt is not None or (not seekable and self.info.duration is None) or is_url(self.source)

    def _open(self) -> None:
        self.container = c = open_container(self.source, self.name, self._options, self._fmt)
        self.vstream = video_stream(c)
        self.astream = c.streams.audio[0] if c.streams.audio else None
        if self.vstream is None and self.astream is None:
            c.close()
            raise InputError(self.name, "has no audio or video stream" + (" (only cover art)" if c.streams.video else ""))

    def close(self) -> None:
        self.container.close()

    def __enter__(self) -> "MediaSource":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def events(self, windows: list[Window] | Iterable[Window], *, seek: bool = False,
               stop_when_covered: bool = False) -> Iterator[Frame | Audio | End]:
        """Decode for `windows` (sorted by start). `seek`: jump near the first window's start (a
        single window of a file); `stop_when_covered`: end once every window is covered."""
        windows = list(windows) if isinstance(windows, (list, tuple)) else windows
        first_start = windows[0].start if isinstance(windows, list) and windows else 0.0
        margins = [SEEK_MARGIN_S, 10.0, None] if seek and self.info.seekable and first_start > SEEK_MARGIN_S else [None]
        for attempt, margin in enumerate(margins):
            if attempt:  # reopen after a late seek; the last attempt decodes from the start
                self.container.close()
                self._open()
            try:
                yield from self._decode(windows, None if margin is None else first_start - margin, stop_when_covered,
                                        check_late=margin is not None)
                return
            except _LateSeek:
                continue
            except av.error.FFmpegError as exc:
                raise InputError(self.name, f"corrupt or truncated media ({ffmpeg_reason(exc)})") from None
            except (ValueError, OverflowError, UnicodeError) as exc:  # PyAV raises these on odd streams
                raise InputError(self.name, f"could not decode ({type(exc).__name__}: {exc})") from None

    def _decode(self, windows, seek_to: float | None, stop_when_covered: bool, check_late: bool):
        spec, c, vs, as_ = self.spec, self.container, self.vstream, self.astream
        clock = TargetClock(windows, spec) if vs is not None else None
        sampler = _Sampler(clock) if clock is not None else None
        last = windows[-1] if isinstance(windows, list) and windows else None
        audio_needed_to = audio_start(last, spec) + spec.n_samples if last is not None and stop_when_covered else None
        resampler = av.AudioResampler(format="flt", layout="mono", rate=spec.sample_rate) if as_ is not None else None
        # Per-packet skipping only where it is known to be exact: H.264/HEVC B-frames at a sane rate
        # (other decoders, VP8 among them, treat skip_frame differently and would drop frames).
        skippable = vs is not None and vs.codec_context.name in SKIPPABLE_CODECS and \
            self.info.fps is not None and 1 <= self.info.fps <= 240
        fdur = 1.0 / self.info.fps if skippable else None
        state = {"audio_next": None, "errors": 0, "pace0": None}
        arrivals: dict[int, float] = {}
        buf: list = []  # events of this step; held back while a seek may still prove late
        if vs is not None:
            vs.thread_type = "AUTO"
        if seek_to is not None and seek_to > 0:
            c.seek(int((self.origin + seek_to) * av.time_base), backward=True)

        def on_video(frames, now):
            for frame in frames:
                t = frame.time - self.origin if frame.time is not None else sampler.count * (fdur or 1 / 30)
                arrival = arrivals.pop(frame.pts, now) if frame.pts is not None else now
                if check_late and sampler.first_t is None:
                    first = clock.first()
                    if first is not None and t > first + (fdur or 1 / 30):
                        raise _LateSeek
                event = sampler.push(frame, t, arrival)
                if event is not None:
                    buf.append(event)

        def on_audio(frames, now):
            for frame in frames:
                if frame is not None and state["audio_next"] is None:
                    t0 = (frame.time - self.origin) if frame.time is not None else 0.0
                    state["audio_next"] = int(round(t0 * spec.sample_rate))
                    # Audio that starts late in the file is not a late seek: only a stream that
                    # began before the target and still lands after it is.
                    began = float((as_.start_time or 0) * (as_.time_base or 0)) - self.origin
                    if check_late and vs is None and t0 > seek_to + 1.02 and began < seek_to:
                        raise _LateSeek
                if state["audio_next"] is None:
                    continue
                for chunk in resampler.resample(frame):
                    samples, bad = sanitise(chunk.to_ndarray().reshape(-1))
                    buf.append(Audio(state["audio_next"], samples, now, bad))
                    state["audio_next"] += len(samples)

        # An audio stream that begins after the last window needs no waiting for.
        audio_begins = float(as_.start_time * as_.time_base) - self.origin \
            if as_ is not None and as_.start_time is not None and as_.time_base else None

        def audio_covered() -> bool:
            if as_ is None or audio_needed_to is None:
                return as_ is None
            if state["audio_next"] is None:
                return audio_begins is not None and audio_begins * spec.sample_rate >= audio_needed_to
            return state["audio_next"] >= audio_needed_to

        video_done = vs is None
        for packet in c.demux(*streams_of(vs, as_)):
            now = time.perf_counter()
            if self.realtime:
                state["pace0"], now = self._pace(packet, state["pace0"])
            if packet.stream is vs and not video_done:
                tp = float(packet.pts * packet.time_base) - self.origin if packet.pts is not None else None
                if tp is not None:
                    arrivals[packet.pts] = now
                # Skip the decode of a disposable frame no window samples (refs are always decoded).
                needed = tp is None or fdur is None or clock.any_in(tp - 0.1 * fdur, tp + 1.1 * fdur)
                vs.codec_context.skip_frame = "DEFAULT" if needed else "NONREF"
                try:
                    on_video(packet.decode(), now)
                except av.error.InvalidDataError:
                    state["errors"] += 1
                if len(arrivals) > 256:  # frames the decoder dropped never come back for theirs
                    for k in sorted(arrivals)[:-64]:
                        del arrivals[k]
                video_done = stop_when_covered and clock.done
            elif packet.stream is as_ and not audio_covered():
                try:
                    on_audio(packet.decode(), now)
                except (av.error.InvalidDataError, ValueError):  # ValueError: format changed mid-stream
                    state["errors"] += 1
            if check_late and (vs is None or sampler.first_t is not None) and (as_ is None or state["audio_next"] is not None):
                check_late = False  # both streams landed in time: release what was held back
            if not check_late:
                yield from buf
                buf.clear()
            if stop_when_covered and video_done and audio_covered():
                break
        else:  # the end of the stream (demux's last, empty packets flushed the decoders)
            if state["audio_next"] is not None:
                on_audio([None], time.perf_counter())
        yield from buf
        if sampler is not None and (tail := sampler.finish()) is not None:
            yield tail
        if state["errors"] and state["audio_next"] is None and (sampler is None or sampler.count == 0):
            # Packets failed and nothing came out (random bytes named .jpg, a stream cut before its
            # first keyframe): say so, rather than let the caller report a readable file with no face
            # and no voice in it. After a seek, first try from further back (nothing was yielded yet).
            if seek_to is not None:
                raise _LateSeek
            raise InputError(self.name, f"corrupt or unreadable media ({state['errors']} packet(s) failed to decode "
                                        "and no frame or sample came out)")
        warnings = [f"{state['errors']} packet(s) failed to decode and were skipped"] if state["errors"] else []
        yield End(sampler.last_t if sampler is not None else None, state["audio_next"], warnings,
                  sampler.count if sampler is not None else 0)

    def _pace(self, packet, pace0):
        """Hold a packet until its time has come, as a live source would deliver it."""
        ts = packet.dts if packet.dts is not None else packet.pts
        now = time.perf_counter()
        if ts is None:
            return pace0, now
        t = float(ts * packet.time_base)
        if pace0 is None:
            return (now, t), now
        due = pace0[0] + (t - pace0[1])
        if due > now:
            time.sleep(due - now)
            now = time.perf_counter()
        return pace0, now


LIVE_PROBE = {"probesize": "65536", "analyzeduration": "1000000", "fflags": "nobuffer"}


class _Unseekable:
    """A pipe's file object as FFmpeg should see it: read only (no seek to try and fail)."""

    def __init__(self, raw):
        self.raw = raw

    def read(self, n: int = -1) -> bytes:
        return self.raw.read(n)


# ---------------------------------------------------------------------------------------------
# Live devices, written against OpenCV's and FFmpeg's documented APIs (where each was verified:
# the README's "What was verified where")
class CameraSource:
    """A camera through OpenCV (V4L2 on Linux): frames timed by their arrival."""

    endless = True

    def __init__(self, device: str, spec: FeatureSpec, t0: float | None = None):
        import cv2

        self.spec, self.t0 = spec, t0 if t0 is not None else time.perf_counter()
        self.cap = cv2.VideoCapture(int(device) if device.isdigit() else device)
        if not self.cap.isOpened():
            raise InputError(device, "cannot open this camera (no such device, or it is busy)")
        fps = self.cap.get(cv2.CAP_PROP_FPS) or None
        self.info = MediaInfo(device, None, True, False, fps, False)

    def events(self, windows) -> Iterator[Frame | End]:
        import cv2

        sampler = _Sampler(TargetClock(windows, self.spec), lambda bgr: cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        while True:
            ok, bgr = self.cap.read()
            now = time.perf_counter()
            if not ok:
                break
            event = sampler.push(bgr, now - self.t0, now)
            if event is not None:
                yield event
        yield End(sampler.last_t, None, [])

    def close(self) -> None:
        self.cap.release()


class _ArrivalClocked:
    """A device source whose samples are placed by arrival time on a shared clock (t0), so a
    camera and a microphone opened together line up."""

    def __init__(self, inner: MediaSource, t0: float):
        self.inner, self.t0, self.info, self.endless = inner, t0, inner.info, True

    def events(self, windows):
        shift = None
        for event in self.inner.events(windows):
            if isinstance(event, Audio):
                if shift is None:
                    shift = int(round((event.arrival - self.t0) * self.inner.spec.sample_rate)) - event.start
                event.start += shift
            elif isinstance(event, End) and event.audio_end is not None and shift is not None:
                event.audio_end += shift
            yield event

    def close(self) -> None:
        self.inner.close()


class MergedSource:
    """A camera and a microphone as one source: both read at once, events in arrival order."""

    endless = True

    def __init__(self, video, audio):
        self.video, self.audio = video, audio
        self.info = MediaInfo(f"{video.info.name}+{audio.info.name}", None, True, True, video.info.fps, False)

    def events(self, windows):
        import queue
        import threading

        q: queue.Queue = queue.Queue(512)
        windows = list(windows) if isinstance(windows, list) else windows
        ends: list[End] = []

        def pump(src, wins):
            try:
                for event in src.events(wins):
                    q.put(event)
            except BaseException as exc:  # handed over, raised in the consumer
                q.put(exc)
            finally:
                q.put(None)

        # The audio side needs no frame targets: give it no windows to sample.
        threads = [threading.Thread(target=pump, args=(self.video, windows), daemon=True),
                   threading.Thread(target=pump, args=(self.audio, []), daemon=True)]
        for t in threads:
            t.start()
        running = len(threads)
        while running:
            event = q.get()
            if event is None:
                running -= 1
            elif isinstance(event, BaseException):
                raise event
            elif isinstance(event, End):
                ends.append(event)
            else:
                yield event
        video_end = next((e.video_end for e in ends if e.video_end is not None), None)
        audio_end = next((e.audio_end for e in ends if e.audio_end is not None), None)
        yield End(video_end, audio_end, [w for e in ends for w in e.warnings])

    def close(self) -> None:
        self.video.close()
        self.audio.close()


def open_live(source, spec: FeatureSpec, *, realtime: bool = False, t0: float | None = None):
    """A live source by name: a camera ("0", "/dev/video0"), a microphone ("mic" = ALSA's default,
    "alsa:hw:1"), both ("0+mic"), a URL, "-" (stdin), a FIFO, or a file (paced with `realtime`)."""
    t0 = time.perf_counter() if t0 is None else t0
    if hasattr(source, "read"):  # a stream of bytes (a service's live upload)
        # Probe little before the first frames come out: the defaults (5 MB, 5 s) would hold a
        # browser's 1.5 Mb/s stream for half a minute before the first window.
        return MediaSource(_Unseekable(source), spec, name="stream", options=LIVE_PROBE)
    if "+" in source and not is_url(source) and not os.path.exists(source):
        video, audio = source.split("+", 1)
        return MergedSource(open_live(video, spec, t0=t0), open_live(audio, spec, t0=t0))
    if source.isdigit() or source.startswith("/dev/video"):
        return CameraSource(source, spec, t0)
    if source == "mic" or source.startswith("alsa:"):
        device = "default" if source == "mic" else source[5:]
        return _ArrivalClocked(MediaSource(device, spec, name=source, fmt="alsa"), t0)
    if source == "-":
        return MediaSource(source, spec, options=LIVE_PROBE)
    return MediaSource(source, spec, realtime=realtime)
