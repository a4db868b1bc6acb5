"""The streaming engine: a source's events in, each window's model inputs out, in window order.

    for inputs in window_inputs(source, windows, spec, cropper):  # windows: a list, or endless
        ...  # inputs.faces (15, 224, 224, 3) uint8 or None, inputs.mfcc (n_mfcc, T) or None

Every sampled frame is searched for faces once, when it arrives (in time order, so the face track
follows one person from window to window), and its crop is shared by every window that samples
it. Audio goes into one buffer per source; window MFCCs share their inner STFT frames (WindowMfcc).
Presence is measured per window: how much of the window the audio really covers, and how many of
its samples show a face; a mostly-missing modality is reported absent (zeros to the model) or
warned about, never silently zero-filled.
"""
from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np

from .faces import FaceCropper
from .mfcc import WindowMfcc, mfcc as compute_mfcc
from .source import Audio, End, Frame, MediaInfo, MediaSource
from .spec import FeatureSpec
from .voice import GATE_OFF, SAMPLE_RATE as VOICE_RATE, VoiceTrack, no_voice
from .voice import track as voice_track
from .window import Window, audio_start, centred, sample_times

AUDIO_ABSENT_BELOW = 0.5    # a window whose audio covers less than half of it has no audio
AUDIO_WARN_BELOW = 0.98     # ... and one that covers less than this says so
SILENCE_PEAK = 1e-4         # -80 dBFS: digital silence, not a voice
STALE_HOLD_S = 1.0          # a video frame held this long past its time is not the window's video


@dataclass
class WindowInputs:
    window: Window
    faces: np.ndarray | None       # uint8 (frames, size, size, 3) RGB, None: no face / no video
    mfcc: np.ndarray | None        # float32 (n_mfcc, T), None: no audio in this window
    faces_detected: int            # samples whose own frame showed a face
    warnings: list[str]
    arrival: float                 # perf_counter() of the event that completed the window
    timings_ms: dict[str, float] = field(default_factory=dict)


class AudioBuffer:
    """Mono samples by position from the source's time 0, kept only as far back as still needed.
    A source's chunks are contiguous from its first sample."""

    def __init__(self) -> None:
        self._chunks: list[np.ndarray] = []
        self._data = np.zeros(0, np.float32)
        self.base = 0                  # stream position of the first kept sample
        self.first: int | None = None  # first position that held real audio
        self.end = 0                   # one past the last real sample
        self.repaired: list[tuple[int, int]] = []  # (position, non-finite samples zeroed)

    def add(self, chunk: Audio) -> None:
        if self.first is None:
            self.first = self.base = self.end = chunk.start
        self._chunks.append(chunk.samples)
        if chunk.repaired:
            self.repaired.append((self.end, chunk.repaired))
        self.end += len(chunk.samples)

    def _kept(self) -> np.ndarray:
        if self._chunks:  # join the chunks that came since the last read, once
            self._data = np.concatenate([self._data, *self._chunks])
            self._chunks = []
        return self._data

    def read(self, start: int, count: int) -> np.ndarray:
        """Samples [start, start + count), zeros where there is no audio."""
        data, out = self._kept(), np.zeros(count, np.float32)
        lo, hi = max(start, self.base), min(start + count, self.end)
        if hi > lo:
            out[lo - start:hi - start] = data[lo - self.base:hi - self.base]
        return out

    def coverage(self, start: int, count: int) -> float:
        """Share of [start, start + count) that real audio covers."""
        if self.first is None:
            return 0.0
        return max(0, min(start + count, self.end) - max(start, self.first)) / count

    def repaired_in(self, start: int, count: int) -> int:
        return sum(n for pos, n in self.repaired if start <= pos < start + count)

    def drop_before(self, position: int) -> None:
        cut = position - self.base
        if cut > 1 << 18:  # trim in large steps: each trim copies what is left
            self._data = self._kept()[cut:].copy()
            self.base = position
            self.repaired = [(p, n) for p, n in self.repaired if p >= position]


@dataclass
class _Open:
    """A window waiting for its samples."""
    window: Window
    targets: list[float]
    frames: list[int | None]
    stale: int = 0
    held: int = 0

    @property
    def video_complete(self) -> bool:
        return all(f is not None for f in self.frames)


class _Faces:
    """Per-frame face results, searched once per frame, kept while an open window needs them. A
    still's one frame gives a window's worth of views of its face (FaceCropper.still)."""

    def __init__(self, cropper: Callable[[], FaceCropper], still: bool = False):
        self._make = cropper
        self.cropper: FaceCropper | None = None
        self.crops: dict[int, tuple[np.ndarray | None, int, float]] = {}  # id -> crop, faces in frame, time
        self.still = still
        self.views: np.ndarray | None = None  # a still's views (frames, size, size, 3)

    def add(self, frame: Frame) -> None:
        if frame.id in self.crops:
            return
        if self.cropper is None:
            self.cropper = self._make()
            self.cropper.reset_track()
        if self.still:
            found = self.cropper.still(frame.rgb)
            self.views = found.faces if found.detected else None
        else:
            found = self.cropper([frame.rgb], [frame.id], keep_track=True)
        self.crops[frame.id] = (found.faces[0] if found.detected else None, found.max_faces, frame.time)

    def skip(self, frame: Frame) -> None:
        """A frame the engine had no time for (live, behind): known, but not searched."""
        self.crops.setdefault(frame.id, (None, 0, frame.time))

    def drop_before(self, t: float) -> None:
        for fid in [k for k, v in self.crops.items() if v[2] < t]:
            del self.crops[fid]


def window_inputs(events: Iterable[Frame | Audio | End], info: MediaInfo, windows: Iterable[Window],
                  spec: FeatureSpec, cropper: Callable[[], FaceCropper], *, share_mfcc: bool = True,
                  live_lag_s: float | None = None, voice_gate: bool = True) -> Iterator[WindowInputs]:
    """Model inputs of each window of `windows` (sorted by start; a list or endless), in order.

    `live_lag_s`: a live source; frames that arrive while the engine is more than this behind are
    not searched, and windows that would need them are skipped (said in the next window's warnings).
    `voice_gate`: a window with a face whose audio holds no voice gets the face alone (voice.py).
    """
    finite = isinstance(windows, (list, tuple))
    faces = _Faces(cropper, still=info.still)
    audio = AudioBuffer()
    # The detector runs at 16 kHz only; a model with another rate reads its audio ungated.
    gated = voice_gate and info.has_audio and spec.sample_rate == VOICE_RATE
    # One window (a clip's): its track may stop reading once the window has voice enough.
    voice = voice_track(lazy=finite and len(windows) == 1) if gated else None
    if gated and voice is None:
        info.warnings.append(GATE_OFF)
    mfcc_of = WindowMfcc(spec) if share_mfcc else None
    pending = iter(windows)
    upcoming: Window | None = next(pending, None)
    open_: deque[_Open] = deque()
    by_target: dict[float, list[tuple[_Open, int]]] = {}
    clock = {"decode": 0.0, "faces": 0.0, "voice": 0.0}
    ended: End | None = None
    skipped: list[Window] = []
    stale_ids: set[int] = set()

    def open_until(t: float) -> None:
        nonlocal upcoming
        while upcoming is not None and upcoming.start <= t:
            targets = [round(float(x), 6) for x in sample_times(upcoming, spec)]
            entry = _Open(upcoming, targets, [None] * len(targets))
            open_.append(entry)
            for k, target in enumerate(targets):
                by_target.setdefault(target, []).append((entry, k))
            upcoming = next(pending, None)

    def ready(entry: _Open) -> bool:
        if ended is not None:
            return True
        a_end = audio_start(entry.window, spec) + spec.n_samples
        return (not info.has_video or entry.video_complete) and (not info.has_audio or audio.end >= a_end)

    t_prev = time.perf_counter()
    for event in events:
        now = time.perf_counter()
        clock["decode"] += now - t_prev
        if isinstance(event, Frame):
            open_until(max(event.targets))
            behind = live_lag_s is not None and now - event.arrival > live_lag_s
            if behind:
                faces.skip(event)
                stale_ids.add(event.id)
            else:
                faces.add(event)
            for target in event.targets:
                for entry, k in by_target.pop(target, ()):
                    entry.frames[k] = event.id
                    if event.held:
                        entry.held += 1
                        entry.stale += target - event.time > STALE_HOLD_S
            clock["faces"] += time.perf_counter() - now
        elif isinstance(event, Audio):
            audio.add(event)
            if voice is not None:
                voice.add(event.start, event.samples)
                clock["voice"] += time.perf_counter() - now
            open_until(audio.end / spec.sample_rate)
        elif isinstance(event, End):
            ended = event
            if finite:
                open_until(float("inf"))
            else:  # an endless grid stops at the last window the data fills (or the first window)
                data_end = max(event.video_end or 0.0, (event.audio_end or 0) / spec.sample_rate)
                open_until(max(0.0, data_end - spec.window_s + 1e-6))
                while len(open_) > 1 and open_[-1].window.end > data_end + spec.window_s / spec.frames:
                    open_.pop()
        while open_ and ready(open_[0]):
            entry = open_.popleft()
            for target in entry.targets:
                by_target.pop(target, None)
            if live_lag_s is not None and any(f in stale_ids for f in entry.frames):
                skipped.append(entry.window)
                continue
            inputs = _build(entry, faces, audio, voice, mfcc_of, info, spec, ended, event)
            if skipped:
                inputs.warnings.append(
                    f"skipped {len(skipped)} window(s) from {skipped[0].start:.2f} s to {skipped[-1].end:.2f} s: "
                    "the machine could not keep up with the live source")
                skipped.clear()
            inputs.timings_ms = {"decode": clock["decode"] * 1e3, "faces": clock["faces"] * 1e3,
                                 "voice": clock["voice"] * 1e3 + inputs.timings_ms.get("voice", 0.0),
                                 "mfcc": inputs.timings_ms.get("mfcc", 0.0)}
            clock = {"decode": 0.0, "faces": 0.0, "voice": 0.0}
            yield inputs
            if open_:
                faces.drop_before(open_[0].window.start - 1.0)
                audio.drop_before(audio_start(open_[0].window, spec) - spec.n_fft)
                if voice is not None:
                    voice.drop_before(audio_start(open_[0].window, spec))
            stale_ids = {i for i in stale_ids if i in faces.crops}
        t_prev = time.perf_counter()
        if ended is not None:
            break


def _build(entry: _Open, faces: _Faces, audio: AudioBuffer, voice: VoiceTrack | None, mfcc_of: WindowMfcc | None,
           info: MediaInfo, spec: FeatureSpec, ended: End | None, event) -> WindowInputs:
    w = entry.window
    warnings: list[str] = []
    # Faces: each sample's own crop, or the nearest sample's (a frame without a face borrows it).
    face_crops, detected, max_faces = None, 0, 0
    if not info.has_video:
        warnings.append("no video stream: visual input absent")
    elif all(f is None for f in entry.frames) or (w.start > 0 and entry.stale * 2 > len(entry.frames)):
        warnings.append(f"video ends before this window ({len(entry.frames) - entry.held} of "
                        f"{len(entry.frames)} samples shown): visual input absent")
    else:
        own = [faces.crops.get(f, (None, 0, 0.0)) if f is not None else (None, 0, 0.0) for f in entry.frames]
        max_faces = max(n for _, n, _ in own)
        found = [i for i, (crop, _, _) in enumerate(own) if crop is not None]
        detected = len(found)
        if found and faces.views is not None and len(faces.views) == len(own):
            face_crops = faces.views.copy()  # a still: views of its face, not one crop repeated
        elif found:
            face_crops = np.empty((len(own), spec.image_size, spec.image_size, 3), np.uint8)
            for i in range(len(own)):
                face_crops[i] = own[min(found, key=lambda j: (abs(j - i), j))][0]
        else:
            warnings.append("no face found in any sampled frame: visual input absent")
        if max_faces > 1:
            warnings.append(f"up to {max_faces} faces in a frame: the largest was used (and followed)")
        if entry.held and face_crops is not None and not info.still:
            warnings.append(f"video ends before the window: last frame held for {entry.held} of {len(entry.frames)} samples")
    # Audio: measured coverage of this window, not the stream's mere existence.
    t0 = time.perf_counter()
    spent = {"voice": 0.0}  # seconds the gate read here (a lazy track reads at this point)
    feats = None
    if not info.has_audio:
        if not info.still:  # its own warning says so
            warnings.append("no audio stream: audio input absent")
    else:
        first = audio_start(w, spec)
        # Coverage of the part of the window inside the recording: a clip shorter than the window
        # is all there is, and its audio counts in full.
        inside = spec.n_samples if info.duration is None else \
            min(spec.n_samples, max(1, round(info.duration * spec.sample_rate) - first))
        covered = audio.coverage(first, spec.n_samples) * spec.n_samples / inside
        samples = audio.read(first, spec.n_samples)
        short = info.duration is not None and info.duration < spec.window_s
        if short and covered > 0:
            warnings.append(f"clip is {info.duration:.2f} s, shorter than the {spec.window_s} s window: audio end-padded")
        if covered < AUDIO_ABSENT_BELOW:
            warnings.append(f"audio covers {covered:.0%} of this window: audio input absent")
        elif float(np.abs(samples).max()) < SILENCE_PEAK:
            warnings.append("audio is digital silence in this window: audio input absent")
        elif voice is not None and face_crops is not None and (gated := _gate(voice, first, spec, spent)):
            # Noise read as speech would pull the face's answer (voice.py); without a face there is
            # nothing to fall back on, so audio-only input is read as it is.
            warnings.append(gated)
        else:
            if covered < AUDIO_WARN_BELOW:
                warnings.append(f"audio covers {covered:.0%} of this window: the rest is silence")
            feats = mfcc_of(audio.read, first) if mfcc_of is not None else compute_mfcc(samples, spec)
        repaired = audio.repaired_in(first, spec.n_samples)
        if repaired:
            warnings.append(f"{repaired} non-finite audio sample(s) (NaN/inf) zeroed")
    if ended is not None and ended.warnings:
        warnings.extend(ended.warnings)
    arrival = getattr(event, "arrival", time.perf_counter())
    return WindowInputs(w, face_crops, feats, detected, warnings, arrival,
                        {"voice": spent["voice"] * 1e3, "mfcc": (time.perf_counter() - t0 - spent["voice"]) * 1e3})


def _gate(voice: VoiceTrack, first: int, spec: FeatureSpec, spent: dict[str, float]) -> str | None:
    """voice.no_voice on the window's audio, its time kept (a lazy track reads here)."""
    t0 = time.perf_counter()
    gated = no_voice(voice, first, spec.n_samples)
    spent["voice"] += time.perf_counter() - t0
    return gated


def clip_window(path, spec: FeatureSpec, cropper: Callable[[], FaceCropper], voice_gate: bool = True) -> WindowInputs:
    """The one window of a clip (centred on it), from the same engine: a single prediction, the
    export's parity check and training's caches all take a clip's inputs from here."""
    with MediaSource(path, spec) as source:
        window = centred(source.info.duration, spec)
        events = source.events([window], seek=True, stop_when_covered=True)
        item = next(window_inputs(events, source.info, [window], spec, cropper, share_mfcc=False,
                                  voice_gate=voice_gate))
    item.warnings[:0] = source.info.warnings
    return item


def model_inputs(item: WindowInputs, spec: FeatureSpec) -> tuple[np.ndarray, np.ndarray]:
    """faces uint8 (frames, size, size, 3) and MFCC float32 (n_mfcc, T) for the model; a missing
    modality is zeros, which is how modality dropout taught the model "absent"."""
    faces = item.faces if item.faces is not None else np.zeros(spec.faces_shape, np.uint8)
    feats = item.mfcc if item.mfcc is not None else np.zeros(spec.mfcc_shape, np.float32)
    return faces, feats


def clip_inputs(path, spec: FeatureSpec, cropper: Callable[[], FaceCropper],
                voice_gate: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """A clip's model inputs exactly as `Recognizer.predict` builds them."""
    return model_inputs(clip_window(path, spec, cropper, voice_gate), spec)


# ---------------------------------------------------------------------------------------------
_DONE = object()


class _Failure:
    def __init__(self, exc: BaseException):
        self.exc = exc


def in_background(make: Callable[[], Iterator], maxsize: int = 64) -> Iterator:
    """Run a generator in its own thread (decoding overlaps the face search and the model: PyAV,
    MediaPipe and ONNX Runtime release the GIL), handing items over through a bounded queue."""
    q: queue.Queue = queue.Queue(maxsize)
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def run() -> None:
        gen = make()
        try:
            for item in gen:
                if not put(item):
                    break
        except BaseException as exc:  # handed to the consumer, raised there
            put(_Failure(exc))
        finally:
            gen.close()
            put(_DONE)

    thread = threading.Thread(target=run, name="mer-source", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is _DONE:
                return
            if isinstance(item, _Failure):
                raise item.exc
            yield item
    finally:
        stop.set()
        thread.join(timeout=10)
