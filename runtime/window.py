"""The analysis window, defined once: where windows sit in a recording and what each one samples.

Every path that turns media into model inputs (a single clip, a timeline, a live source, training's
caches) cuts its windows here, so that train and serve see the same thing:

- a window is `spec.window_s` long; face frame k is the frame on screen at
  `start + (k + 0.5) * window_s / frames` seconds (by time, so any frame rate works);
- its audio is `spec.n_samples` samples from the STFT hop at or nearest its start: audio windows
  sit on the MFCC's own hop grid (at most half a hop, 11.5 ms by default, from the video start),
  so overlapping windows share their inner STFT frames exactly instead of recomputing them;
- one clip is analysed in the window centred on it (a shorter one starts at 0 and is end-padded);
- a timeline steps windows from 0 by a hop, and its last window ends at the end of the recording.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .spec import FeatureSpec


@dataclass(frozen=True)
class Window:
    start: float  # seconds of the source
    end: float

    @property
    def centre(self) -> float:
        return (self.start + self.end) / 2


def frame_step(spec: FeatureSpec) -> float:
    """Seconds between two face samples of a window (0.24 s by default)."""
    return spec.window_s / spec.frames


MIN_HOP_S, MAX_HOP_S = 0.04, 3600.0  # a hop below ~one video frame would only repeat windows


def hop_problem(hop: float) -> str | None:
    """Why `hop` cannot step a timeline, or None (one message for the CLI, API and service)."""
    if not MIN_HOP_S <= hop <= MAX_HOP_S:
        return f"hop must be between {MIN_HOP_S:g} and {MAX_HOP_S:g} seconds, got {hop:g}"
    return None


def default_hop(spec: FeatureSpec) -> float:
    """The timeline's default hop: 0.96 s by default, the multiple of the face-sample step nearest
    1 s. Windows on that grid sample the same frames as their neighbours (each frame is decoded,
    converted and searched once for about four windows); a hop of exactly 1 s would share none."""
    step = frame_step(spec)
    return max(1, round(1.0 / step)) * step


def sample_times(window: Window, spec: FeatureSpec) -> np.ndarray:
    """The `spec.frames` times (seconds of the source) whose on-screen frames the window shows."""
    return window.start + (np.arange(spec.frames) + 0.5) * frame_step(spec)


def audio_start(window: Window, spec: FeatureSpec) -> int:
    """First audio sample (at spec.sample_rate, from the source's time 0) of the window, on the
    STFT hop grid."""
    return int(round(window.start * spec.sample_rate / spec.hop_length)) * spec.hop_length


def centred(duration: float | None, spec: FeatureSpec) -> Window:
    """The one window of a single clip: centred on a longer clip, from 0 on a shorter (or unknown) one."""
    start = max(0.0, (duration - spec.window_s) / 2) if duration else 0.0
    return Window(start, start + spec.window_s)


def timeline(duration: float | None, spec: FeatureSpec, hop: float) -> list[Window]:
    """Windows from 0 every `hop` seconds; the last one ends at `duration` (it is moved back from
    the hop grid when the grid would overshoot). A recording no longer than one window, or of
    unknown length, gets the single window at 0."""
    if hop <= 0:
        raise ValueError(f"hop must be > 0 seconds, got {hop}")
    w = spec.window_s
    if not duration or duration <= w + 1e-6:
        return [Window(0.0, w)]
    n = math.floor((duration - w) / hop + 1e-6)
    windows = [Window(k * hop, k * hop + w) for k in range(n + 1)]
    if windows[-1].end < duration - 1e-3:
        windows.append(Window(duration - w, duration))
    return windows


def grid(k: int, spec: FeatureSpec, hop: float) -> Window:
    """Window k of a live source (unknown end): the hop grid from 0."""
    return Window(k * hop, k * hop + spec.window_s)


class Endless:
    """The hop grid from 0 without end (a live source, a stream of unknown length). Iterable any
    number of times, each from the start: the decoder and the engine walk it independently."""

    def __init__(self, spec: FeatureSpec, hop: float):
        self.spec, self.hop = spec, hop

    def __iter__(self):
        k = 0
        while True:
            yield grid(k, self.spec, self.hop)
            k += 1
