"""Decode one analysis window of a clip, audio and video together, in a single pass (PyAV).

The window is `spec.window_s` long, centred on a longer clip and starting at 0 on a shorter one.
Face frame k is the frame on screen at `start + (k + 0.5) * window / frames` seconds, so any or
a variable frame rate works. Decoding stops as soon as both streams have passed the window, and
only the frames that are sampled are converted to RGB.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np

from .errors import InputError
from .spec import FeatureSpec

MAX_SIDE = 1280  # frames larger than this (4K, ...) are scaled down while converting to RGB
# Formats FFmpeg opens as "video" that are not clips: still images, and text shown as a picture.
_NOT_CLIPS = {"image2": "a still image, not a clip", "_pipe": "a still image, not a clip",
              "tty": "a text file, not media"}


@dataclass
class Window:
    start: float  # seconds from the clip's start
    end: float


@dataclass
class DecodedClip:
    window: Window
    duration: float | None
    frames: list[np.ndarray] | None  # spec.frames RGB uint8 arrays (repeats share one array)
    frame_ids: list[int] | None      # which decoded frame each sample shows (to detect once each)
    audio: np.ndarray | None         # float32 mono, exactly spec.n_samples long
    has_video: bool = False          # the file has a (non-cover-art) video stream
    has_audio: bool = False
    warnings: list[str] = field(default_factory=list)


def window_for(duration: float | None, spec: FeatureSpec) -> Window:
    """Centre the window on a clip longer than it; start at 0 otherwise (end-padded)."""
    start = max(0.0, (duration - spec.window_s) / 2) if duration else 0.0
    return Window(start, start + spec.window_s)


def _open(path: Path) -> av.container.InputContainer:
    if not path.exists():
        raise InputError(path, "no such file")
    if path.is_dir():
        raise InputError(path, "is a directory, not a media file")
    if path.stat().st_size == 0:
        raise InputError(path, "empty file (0 bytes)")
    if not os.access(path, os.R_OK):
        raise InputError(path, "permission denied")
    try:
        # Tags in other encodings than UTF-8 (old WAV/MP3 tags) must not make a good file unreadable.
        container = av.open(str(path), mode="r", metadata_errors="replace")
    except av.error.FFmpegError as exc:
        raise InputError(path, f"not a readable media file ({_ffmpeg_reason(exc)})") from None
    for tag, reason in _NOT_CLIPS.items():
        if container.format.name == tag or (tag.startswith("_") and container.format.name.endswith(tag)):
            container.close()
            raise InputError(path, reason)
    if not container.streams.video and not container.streams.audio:
        container.close()
        raise InputError(path, "has no audio or video stream")
    return container


def _ffmpeg_reason(exc: Exception) -> str:
    msg = getattr(exc, "strerror", None) or str(exc)
    return msg.split(":")[0].strip() if msg else type(exc).__name__


def _duration(container: av.container.InputContainer) -> float | None:
    if container.duration:
        return container.duration / av.time_base
    spans = [float(s.duration * s.time_base) for s in container.streams if s.duration and s.time_base]
    return max(spans) if spans else None


def _rgb(frame: av.VideoFrame) -> np.ndarray:
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


class _VideoSampler:
    """Picks the frame on screen at each target time from frames arriving in order."""

    def __init__(self, targets: np.ndarray):
        self.targets = targets
        self.frames: list[np.ndarray] = []
        self.frame_ids: list[int] = []
        self._prev: av.VideoFrame | None = None
        self._prev_id = -1
        self._prev_rgb: np.ndarray | None = None
        self.count = 0  # frames seen so far
        self.first_t: float | None = None

    @property
    def done(self) -> bool:
        return len(self.frames) == len(self.targets)

    def _take_prev(self) -> None:
        if self._prev_rgb is None:
            self._prev_rgb = _rgb(self._prev)
        self.frames.append(self._prev_rgb)
        self.frame_ids.append(self._prev_id)

    def push(self, frame: av.VideoFrame, t: float) -> None:
        if self.first_t is None:
            self.first_t = t
        while not self.done and t > self.targets[len(self.frames)]:
            if self._prev is None:  # the stream starts after the target: use its first frame
                self._prev, self._prev_id = frame, self.count
            self._take_prev()
        if self._prev is not frame:
            self._prev, self._prev_id, self._prev_rgb = frame, self.count, None
        self.count += 1

    def finish(self) -> int:
        """Hold the last frame for targets past the end; returns how many were held."""
        held = 0
        while not self.done and self._prev is not None:
            self._take_prev()
            held += 1
        return held


class _AudioCollector:
    """Resamples to mono float32 at the spec's rate and keeps what covers the window."""

    def __init__(self, spec: FeatureSpec, window: Window):
        self.spec, self.window = spec, window
        self.resampler = av.AudioResampler(format="flt", layout="mono", rate=spec.sample_rate)
        self.chunks: list[np.ndarray] = []
        self.first_t: float | None = None
        self.n = 0

    @property
    def done(self) -> bool:
        return self.first_t is not None and self.first_t + self.n / self.spec.sample_rate >= self.window.end + 0.05

    def push(self, frame: av.AudioFrame | None, t: float | None) -> None:
        if frame is not None and self.first_t is None:
            self.first_t = t if t is not None else 0.0
        for out in self.resampler.resample(frame):
            chunk = out.to_ndarray().reshape(-1)
            self.chunks.append(chunk)
            self.n += len(chunk)

    def samples(self) -> np.ndarray:
        """Exactly spec.n_samples: cropped to the window, zero-padded where the audio ends."""
        self.push(None, None)  # flush the resampler's tail
        audio = np.concatenate(self.chunks) if self.chunks else np.zeros(0, np.float32)
        audio = sanitise(audio)
        offset = round(((self.first_t or 0.0) - self.window.start) * self.spec.sample_rate)
        out = np.zeros(self.spec.n_samples, np.float32)
        src_start = max(0, -offset)
        dst_start = max(0, offset)
        count = max(0, min(len(audio) - src_start, self.spec.n_samples - dst_start))
        out[dst_start:dst_start + count] = audio[src_start:src_start + count]
        return out


def sanitise(audio: np.ndarray) -> np.ndarray:
    """NaN/inf samples (broken float PCM) would turn every MFCC into NaN: zero them, clip to [-1, 1]."""
    if not np.isfinite(audio).all():
        audio = np.nan_to_num(audio, nan=0.0, posinf=0.0, neginf=0.0)
    return np.clip(audio, -1.0, 1.0, out=audio if audio.flags.writeable else None)


class _LateSeek(Exception):
    """The seek landed after the window start (some containers seek coarsely)."""


def decode_clip(path: str | Path, spec: FeatureSpec) -> DecodedClip:
    """Decode the analysis window of `path`. Raises InputError on anything that is not media."""
    path = Path(path)
    for allow_seek in (True, False):  # a seek that lands late is retried from the start
        container = _open(path)
        try:
            return _decode(path, container, spec, allow_seek)
        except _LateSeek:
            continue
        except av.error.FFmpegError as exc:
            raise InputError(path, f"corrupt or truncated media ({_ffmpeg_reason(exc)})") from None
        except (ValueError, OverflowError, UnicodeError) as exc:  # PyAV raises these on odd streams
            raise InputError(path, f"could not decode ({type(exc).__name__}: {exc})") from None
        finally:
            container.close()
    raise AssertionError("unreachable")


def _video_stream(container: av.container.InputContainer):
    """The first real video stream: cover art in audio files (attached pictures) is not video."""
    for stream in container.streams.video:
        if not stream.disposition & av.stream.Disposition.attached_pic:
            return stream
    return None


def _decode(path: Path, container: av.container.InputContainer, spec: FeatureSpec, allow_seek: bool) -> DecodedClip:
    duration = _duration(container)
    window = window_for(duration, spec)
    origin = container.start_time / av.time_base if container.start_time else 0.0
    vstream = _video_stream(container)
    astream = container.streams.audio[0] if container.streams.audio else None
    if vstream is None and astream is None:
        raise InputError(path, "has no audio or video stream (only cover art)")
    warnings: list[str] = []
    if duration is None:
        warnings.append("clip duration unknown: window starts at 0 s")

    step = spec.window_s / spec.frames
    sampler = _VideoSampler(window.start + (np.arange(spec.frames) + 0.5) * step) if vstream else None
    audio = _AudioCollector(spec, window) if astream else None
    if vstream is not None:
        vstream.thread_type = "AUTO"
    seeked = allow_seek and window.start > 1.0
    if seeked:
        # Land on the keyframe before the window (with a margin for audio interleaving).
        try:
            container.seek(int((origin + window.start - 1.0) * av.time_base), backward=True)
        except av.error.FFmpegError:
            raise _LateSeek from None

    streams = [s for s in (vstream, astream) if s is not None]
    decode_errors = 0
    fps = float(vstream.average_rate) if vstream is not None and vstream.average_rate else 25.0
    for packet in container.demux(*streams):
        if packet.stream is vstream and sampler is not None and not sampler.done:
            try:
                for frame in packet.decode():
                    t = frame.time - origin if frame.time is not None else sampler.count / fps
                    sampler.push(frame, t)
            except av.error.InvalidDataError:
                decode_errors += 1
        elif packet.stream is astream and audio is not None and not audio.done:
            try:
                for frame in packet.decode():
                    audio.push(frame, frame.time - origin if frame.time is not None else None)
            except (av.error.InvalidDataError, ValueError):  # ValueError: the format changed mid-stream
                decode_errors += 1
        if (sampler is None or sampler.done) and (audio is None or audio.done):
            break
    if seeked and ((sampler is not None and sampler.first_t is not None and sampler.first_t > sampler.targets[0])
                   or (audio is not None and audio.first_t is not None and audio.first_t > window.start + 0.02)):
        raise _LateSeek

    frames = frame_ids = None
    if sampler is not None:
        held = sampler.finish()
        if sampler.done:
            frames, frame_ids = sampler.frames, sampler.frame_ids
            if held:
                warnings.append(f"video ends before the window: last frame held for {held} of {spec.frames} samples")
        else:
            warnings.append("video stream has no decodable frame: faces absent")
    samples = None
    if audio is not None:
        if audio.first_t is None:
            warnings.append("audio stream has no decodable sample: audio absent")
        else:
            samples = audio.samples()
            if duration is not None and duration < spec.window_s:
                warnings.append(f"clip is {duration:.2f} s, shorter than the {spec.window_s} s window: audio end-padded")
    if frames is None and samples is None:
        raise InputError(path, "no decodable audio or video (corrupt or truncated)")
    if decode_errors:
        warnings.append(f"{decode_errors} packet(s) failed to decode and were skipped")
    return DecodedClip(window, duration, frames, frame_ids, samples, vstream is not None, astream is not None, warnings)
