"""Decoding one window of both streams: placement by time, centring, padding, rotation."""
from __future__ import annotations

import numpy as np
import pytest

from mer.runtime.decode import decode_clip, window_for
from mer.runtime.spec import DEFAULT_SPEC
from media import write_clip

SPEC = DEFAULT_SPEC


def _numbered_frames(n: int, step: int, size=(160, 120)) -> list[np.ndarray]:
    """Flat frames of brightness i * step (step 0: all black)."""
    w, h = size
    return [np.full((h, w, 3), i * step, np.uint8) for i in range(n)]


def _barcoded_frames(n: int, size=(160, 120)) -> list[np.ndarray]:
    """Frame i shows i in binary as 8 black/white stripes: survives any encoder's rounding."""
    w, h = size
    frames = []
    for i in range(n):
        frame = np.zeros((h, w, 3), np.uint8)
        for bit in range(8):
            if i >> bit & 1:
                frame[:, bit * w // 8:(bit + 1) * w // 8] = 255
        frames.append(frame)
    return frames


def _read_barcode(frame: np.ndarray) -> int:
    w = frame.shape[1]
    return sum(1 << bit for bit in range(8) if frame[:, bit * w // 8 + 4:(bit + 1) * w // 8 - 4].mean() > 128)


def _tone_burst(seconds: float, at: float, rate: int = 16000) -> np.ndarray:
    wave = np.zeros(int(seconds * rate), np.float32)
    t = np.arange(int(0.05 * rate)) / rate
    wave[int(at * rate): int(at * rate) + len(t)] = 0.5 * np.sin(2 * np.pi * 1000 * t)
    return wave


def test_window_is_centred_on_long_clips_and_starts_at_zero_on_short_ones():
    assert window_for(60.0, SPEC).start == pytest.approx(28.2)
    assert window_for(3.0, SPEC).start == 0.0
    assert window_for(None, SPEC).start == 0.0


@pytest.mark.parametrize("fps", [10.0, 12.5, 29.97])
def test_frames_are_sampled_by_time_in_the_centred_window(tmp_path, fps):
    path = write_clip(tmp_path / "numbered.mp4", _barcoded_frames(int(5.0 * fps)), fps)
    clip = decode_clip(path, SPEC)
    assert clip.window.start == pytest.approx((clip.duration - SPEC.window_s) / 2, abs=1e-6)
    levels = np.array([_read_barcode(f) for f in clip.frames])
    targets = clip.window.start + (np.arange(15) + 0.5) * SPEC.window_s / 15
    expected = np.floor(targets * fps + 1e-6)
    # A target that falls exactly on a frame boundary may show either neighbour.
    on_boundary = np.abs(targets * fps - np.round(targets * fps)) < 1e-3
    ok = (levels == expected) | (on_boundary & (levels == expected - 1))
    assert ok.all(), (levels.round(2), expected)


def test_audio_and_video_come_from_the_same_window(tmp_path):
    # A burst at 3.0 s of a 6 s clip sits 1.8 s into the centred window [1.2, 4.8].
    audio = _tone_burst(6.0, 3.0)
    path = write_clip(tmp_path / "burst.mp4", _numbered_frames(60, 4), 10.0, audio)
    clip = decode_clip(path, SPEC)
    assert clip.window.start == pytest.approx(1.2, abs=0.05)
    energy = np.convolve(clip.audio ** 2, np.ones(160), "same")
    assert abs(energy.argmax() / 16000 - (3.0 + 0.025 - clip.window.start)) < 0.03
    assert len(clip.audio) == SPEC.n_samples


def test_short_clip_is_end_padded_and_holds_its_last_frame(tmp_path):
    path = write_clip(tmp_path / "short.mp4", _numbered_frames(8, 20), 10.0, _tone_burst(0.8, 0.1), crf=0)
    clip = decode_clip(path, SPEC)
    assert clip.window.start == 0.0
    assert len(clip.audio) == SPEC.n_samples and not clip.audio[int(1.0 * 16000):].any()
    assert len(clip.frames) == 15 and clip.frame_ids[-1] == 7
    assert any("shorter than" in w for w in clip.warnings)
    assert any("last frame held" in w for w in clip.warnings)


def test_rotated_clip_is_turned_upright(tmp_path):
    upright = np.zeros((320, 240, 3), np.uint8)
    upright[:40] = 255  # a white band along the top of a portrait picture
    stored = np.ascontiguousarray(np.rot90(upright, 1))
    path = write_clip(tmp_path / "portrait.mp4", [stored] * 20, 10.0, rotation=-90)
    frame = decode_clip(path, SPEC).frames[0]
    assert frame.shape == (320, 240, 3)
    assert frame[:30].mean() > 200 and frame[-200:].mean() < 30


def test_4k_frames_are_scaled_down_while_converting(tmp_path):
    path = write_clip(tmp_path / "uhd.mp4", _numbered_frames(5, 40, size=(3840, 2160)), 5.0)
    frame = decode_clip(path, SPEC).frames[0]
    assert frame.shape == (720, 1280, 3)


def test_decoding_stops_once_the_window_is_covered(tmp_path, monkeypatch):
    """A 60 s clip: only frames around the centred window are decoded, not the whole minute."""
    import av

    path = write_clip(tmp_path / "minute.mp4", _numbered_frames(600, 0), 10.0)
    decoded = []
    original = av.VideoFrame.to_ndarray
    monkeypatch.setattr(av.VideoFrame, "to_ndarray", lambda self, *a, **k: decoded.append(self.time) or original(self, *a, **k))
    clip = decode_clip(path, SPEC)
    assert clip.window.start == pytest.approx(28.2, abs=0.01)
    assert len(decoded) == 15 and min(decoded) >= 28.2 and max(decoded) <= 31.8


def test_cover_art_in_an_audio_file_is_not_video(tmp_path):
    import av
    from fractions import Fraction

    path = tmp_path / "with_cover.flac"
    with av.open(str(path), "w") as out:
        audio = out.add_stream("flac", rate=16000)
        audio.layout = "mono"
        cover = out.add_stream("mjpeg", rate=1)
        cover.width, cover.height, cover.pix_fmt = 64, 64, "yuvj420p"
        cover.disposition = av.stream.Disposition.attached_pic
        for packet in cover.encode(av.VideoFrame.from_ndarray(np.full((64, 64, 3), 200, np.uint8), format="rgb24")):
            out.mux(packet)
        for packet in cover.encode(None):
            out.mux(packet)
        src = av.AudioFrame.from_ndarray(_tone_burst(2.0, 0.5)[None], format="flt", layout="mono")
        src.sample_rate, src.pts, src.time_base = 16000, 0, Fraction(1, 16000)
        resampler = av.AudioResampler(format="s16", layout="mono", rate=16000)
        for frame in resampler.resample(src) + resampler.resample(None):
            for packet in audio.encode(frame):
                out.mux(packet)
        for packet in audio.encode(None):
            out.mux(packet)
    clip = decode_clip(path, SPEC)
    assert not clip.has_video and clip.frames is None and clip.audio is not None


def test_broken_float_samples_do_not_poison_the_features():
    """Float PCM with NaN/inf (both decode and predict_arrays pass audio through sanitise)."""
    from mer.runtime.decode import sanitise
    from mer.runtime.mfcc import mfcc

    wave = _tone_burst(4.0, 0.5)
    wave[100:200] = np.nan
    wave[300] = np.inf
    clean, repaired = sanitise(wave)
    assert repaired == 101
    assert np.isfinite(clean).all() and np.abs(clean).max() <= 1.0
    assert np.isfinite(mfcc(clean[: SPEC.n_samples], SPEC)).all()


def test_a_text_file_ffmpeg_opens_as_a_picture_is_not_media(tmp_path):
    from mer.runtime.errors import InputError

    path = tmp_path / "notes.nfo"
    path.write_bytes(b"hello, this is a text file\n" * 200)
    with pytest.raises(InputError, match="text file"):
        decode_clip(path, SPEC)
