"""Encode real talking-face test clips with PyAV: a still face moved over a frame, plus speech.

No paired RAVDESS video exists here, so tests build clips from a real face (a TFEID crop from
../shared, or tests/fixtures/face_astronaut.jpg) and real speech (RAVDESS audio, or
tests/fixtures/speech_en.flac). Only numpy, av and OpenCV are needed (no torch). Test-side code:
not part of the installed package (pytest puts tests/ on sys.path: `from media import ...`).
For benchmark footage that decodes like a real camera's, see benchmarks/footage.py.
"""
from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def noise(kind: str, seconds: float, dbfs: float, seed: int | np.random.Generator = 0, rate: int = 16000) -> np.ndarray:
    """Coloured noise at an RMS level, float32 mono: white (flat), pink (1/f power) or brown (1/f^2,
    a rumble): what a room, a fan or a street leaves on a microphone when nobody speaks."""
    n = int(seconds * rate)
    spectrum = np.fft.rfft(np.random.default_rng(seed).standard_normal(n))
    k = np.maximum(np.arange(len(spectrum)), 1)
    spectrum /= {"white": 1, "pink": np.sqrt(k), "brown": k}[kind]
    x = np.fft.irfft(spectrum, n)
    return (x / np.sqrt(np.mean(x ** 2)) * 10 ** (dbfs / 20)).astype(np.float32)


def place_face(face: np.ndarray, width: int, height: int, t: float, scale: float = 1.0,
               background: int = 90) -> np.ndarray:
    """A (height, width, 3) frame with `face` (RGB) pasted near the centre, swaying with time t."""
    import cv2

    frame = np.full((height, width, 3), background, np.uint8)
    side = int(min(width, height) * 0.45 * scale)
    face = cv2.resize(face, (side, side), interpolation=cv2.INTER_AREA if side < face.shape[0] else cv2.INTER_LINEAR)
    x = (width - side) // 2 + int(12 * np.sin(2 * np.pi * 0.7 * t))
    y = (height - side) // 2 + int(6 * np.cos(2 * np.pi * 0.5 * t))
    frame[y:y + side, x:x + side] = face
    return frame


def write_clip(path: Path, frames: list[np.ndarray] | None, fps: float = 30.0,
               audio: np.ndarray | None = None, sample_rate: int = 16000, audio_rate: int = 44100,
               codec: str = "libx264", rotation: int = 0, crf: int = 23, audio_offset: float = 0.0) -> Path:
    """Write an mp4/mkv/webm... with H.264 (or `codec`) video and AAC/Opus audio.

    `audio_offset` starts the audio that many seconds into the clip. `crf` 0 makes H.264 lossless (tests that read pixel values back). `rotation` (degrees, counter-clockwise) is stored as display-matrix side data the way phones
    do; the stored frames are then the picture turned the other way.
    """
    path = Path(path)
    with av.open(str(path), "w") as out:
        vstream = astream = None
        if frames is not None:
            h, w = frames[0].shape[:2]
            vstream = out.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
            vstream.width, vstream.height, vstream.pix_fmt = w, h, "yuv420p"
            vstream.options = {"preset": "ultrafast", "crf": str(crf)} if codec == "libx264" else {}
        if audio is not None:
            acodec = "libopus" if path.suffix == ".webm" else "aac"
            rate = 48000 if acodec == "libopus" else audio_rate
            astream = out.add_stream(acodec, rate=rate)
            astream.layout = "stereo"
        if frames is not None:
            for rgb in frames:
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
                for packet in vstream.encode(frame):
                    out.mux(packet)
            for packet in vstream.encode(None):
                out.mux(packet)
        if audio is not None:
            _encode_audio(out, astream, audio, sample_rate, audio_offset)
    if rotation:
        _set_display_rotation(path, rotation)
    return path


def _set_display_rotation(path: Path, degrees: int) -> None:
    """Write a display matrix into the mp4's video track header (tkhd), as phones do.

    `degrees` is counter-clockwise, as FFmpeg's av_display_rotation_get reports it (a phone held
    upright records -90: the stored frames must be turned 90 degrees clockwise to be shown).
    """
    import struct

    data = bytearray(path.read_bytes())
    at = data.find(b"tkhd")
    if at < 0:
        raise ValueError(f"{path}: no tkhd box (display rotation needs an mp4/mov)")
    version = data[at + 4]
    matrix_at = at + 8 + (20 if version == 0 else 32) + 16
    rad = np.deg2rad(degrees)
    cos, sin = round(np.cos(rad)) * 65536, round(np.sin(rad)) * 65536
    data[matrix_at:matrix_at + 36] = struct.pack(">9i", cos, -sin, 0, sin, cos, 0, 0, 0, 1 << 30)
    path.write_bytes(bytes(data))


def _encode_audio(out: av.container.OutputContainer, stream, audio: np.ndarray, sample_rate: int,
                  offset: float = 0.0) -> None:
    """Resample mono float audio to the stream's format, layout and frame size, and mux it."""
    resampler = av.AudioResampler(format=stream.format.name, layout=stream.layout.name, rate=stream.rate,
                                  frame_size=stream.frame_size or None)
    src = av.AudioFrame.from_ndarray(np.asarray(audio, np.float32)[None, :], format="flt", layout="mono")
    src.sample_rate, src.pts, src.time_base = sample_rate, round(offset * sample_rate), Fraction(1, sample_rate)
    for frame in resampler.resample(src) + resampler.resample(None):
        for packet in stream.encode(frame):
            out.mux(packet)
    for packet in stream.encode(None):
        out.mux(packet)


def write_audio(path: Path, audio: np.ndarray, sample_rate: int = 16000) -> Path:
    """Audio-only file; codec from the suffix (.wav PCM, .flac, .mp3, .m4a AAC, .ogg Opus)."""
    path = Path(path)
    codec = {".wav": "pcm_s16le", ".flac": "flac", ".mp3": "libmp3lame", ".m4a": "aac", ".ogg": "libopus"}[path.suffix]
    with av.open(str(path), "w") as out:
        rate = 48000 if codec == "libopus" else (44100 if codec in ("libmp3lame", "aac") else sample_rate)
        stream = out.add_stream(codec, rate=rate)
        stream.layout = "mono"
        _encode_audio(out, stream, audio, sample_rate)
    return path


def write_archive(root: Path, make_clip, tag: str) -> Path:
    """A folder as users keep them: 3 real clips (one at the top, two in a subfolder), a corrupt
    one, a hidden copy and a text file. `make_clip(name, seconds=, size=)` writes a real clip."""
    (root / "day1").mkdir(parents=True)
    (root / ".cache").mkdir()
    for i, name in enumerate(["a.mp4", "day1/b.mp4", "day1/c.mp4"]):
        (root / name).write_bytes(make_clip(f"{tag}{i}.mp4", seconds=2.0 + i, size=(320, 240)).read_bytes())
    (root / "day1" / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(4000))
    (root / ".cache" / "x.mp4").write_bytes((root / "a.mp4").read_bytes())
    (root / "notes.txt").write_text("not media")
    return root
