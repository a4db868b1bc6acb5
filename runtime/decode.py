"""Raw frames and samples of one clip's centred window, as the engine samples them.

For training caches and tests that need the decoded pixels and samples themselves; inference goes
through the engine (engine.py), which reads the same source events.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .engine import AudioBuffer
from .errors import InputError
from .source import Audio, End, Frame, MediaSource, sanitise  # noqa: F401  (sanitise: public helper)
from .spec import FeatureSpec
from .window import Window, audio_start, centred, sample_times

window_for = centred  # the single clip's window (window.py defines it)


@dataclass
class DecodedClip:
    window: Window
    duration: float | None
    frames: list[np.ndarray] | None  # spec.frames RGB uint8 arrays (repeats share one array)
    frame_ids: list[int] | None      # which decoded frame each sample shows
    audio: np.ndarray | None         # float32 mono, exactly spec.n_samples long
    has_video: bool = False
    has_audio: bool = False
    warnings: list[str] = field(default_factory=list)


def decode_clip(path: str | Path, spec: FeatureSpec) -> DecodedClip:
    """Decode the centred window of `path`. Raises InputError on anything that is not media."""
    with MediaSource(path, spec) as source:
        info = source.info
        window = centred(info.duration, spec)
        targets = [round(float(t), 6) for t in sample_times(window, spec)]
        frames: list = [None] * len(targets)
        ids: list = [None] * len(targets)
        audio = AudioBuffer()
        warnings = list(info.warnings)
        held = 0
        for event in source.events([window], seek=True, stop_when_covered=True):
            if isinstance(event, Frame):
                for t in event.targets:
                    k = targets.index(t)
                    frames[k], ids[k] = event.rgb, event.id
                    held += event.held
            elif isinstance(event, Audio):
                audio.add(event)
            elif isinstance(event, End):
                warnings.extend(event.warnings)
    video = frames if info.has_video and all(f is not None for f in frames) else None
    if info.has_video and video is None:
        warnings.append("video stream has no decodable frame: faces absent")
    elif held and not info.still:
        warnings.append(f"video ends before the window: last frame held for {held} of {spec.frames} samples")
    samples = None
    if info.has_audio:
        if audio.first is None:
            warnings.append("audio stream has no decodable sample: audio absent")
        else:
            samples = audio.read(audio_start(window, spec), spec.n_samples)
            if info.duration is not None and info.duration < spec.window_s:
                warnings.append(f"clip is {info.duration:.2f} s, shorter than the {spec.window_s} s window: "
                                "audio end-padded")
    if video is None and samples is None:
        raise InputError(path, "no decodable audio or video (corrupt or truncated)")
    return DecodedClip(window, info.duration, video, ids if video is not None else None, samples,
                       info.has_video, info.has_audio, warnings)
