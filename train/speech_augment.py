"""What a recording does to speech, applied to clean utterances: level, sample rate, codec, noise, room.

Everything here is NumPy and PyAV (FFmpeg's real encoders and resampler, the ones user files come
through), no torch, so tests use the same transformations on real utterances. Audio is float32
mono at `rate` Hz in [-1, 1].
"""
from __future__ import annotations

import io

import av
import numpy as np

# (container, encoder, bitrates in b/s). Low rates on purpose: phone apps and meeting recorders.
CODECS = {"aac": ("adts", "aac", (32_000, 64_000, 96_000)),
          "mp3": ("mp3", "libmp3lame", (32_000, 64_000, 128_000)),
          "opus": ("ogg", "libopus", (16_000, 24_000, 48_000))}
# Rates user recordings come at; 8 kHz (telephone) is the one that removes half the spectrum.
SOURCE_RATES = (8000, 22050, 44100, 48000)
NOISES = ("white", "pink", "babble")


def _frame(x: np.ndarray, rate: int) -> av.AudioFrame:
    frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(x, np.float32)[None], format="flt", layout="mono")
    frame.sample_rate = rate
    return frame


def _drain(frames, resampler: av.AudioResampler) -> np.ndarray:
    out = [f.to_ndarray().reshape(-1) for frame in frames for f in resampler.resample(frame)]
    out += [f.to_ndarray().reshape(-1) for f in resampler.resample(None)]
    return np.concatenate(out).astype(np.float32) if out else np.zeros(0, np.float32)


def resample(x: np.ndarray, rate: int, to: int) -> np.ndarray:
    """`x` at `rate` resampled to `to` Hz by libswresample (the runtime's resampler)."""
    if rate == to:
        return x.astype(np.float32)
    return _drain([_frame(x, rate)], av.AudioResampler(format="flt", layout="mono", rate=to))


def encode(x: np.ndarray, rate: int, codec: str, bitrate: int) -> bytes:
    """The bytes of a real `codec` file (AAC in ADTS, MP3, Opus in Ogg) holding `x`."""
    container_format, encoder, _ = CODECS[codec]
    buf = io.BytesIO()
    with av.open(buf, "w", format=container_format) as out:
        stream = out.add_stream(encoder, rate=rate, layout="mono")
        stream.bit_rate = bitrate
        for packet in stream.encode(_frame(x, rate)):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buf.getvalue()


def decode(data: bytes, rate: int) -> np.ndarray:
    """Mono float32 at `rate` from an in-memory audio file."""
    with av.open(io.BytesIO(data)) as container:
        resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
        return _drain(container.decode(audio=0), resampler)


def _same_length(y: np.ndarray, n: int) -> np.ndarray:
    """`y` cut or end-padded with zeros to n samples (encoders and resamplers add or drop a few)."""
    return np.pad(y[:n], (0, max(0, n - len(y))))


def codec_roundtrip(x: np.ndarray, rate: int, codec: str, bitrate: int) -> np.ndarray:
    """`x` through a lossy encoder and back, at its length (encoder delay kept: real files carry it too)."""
    return _same_length(decode(encode(x, rate, codec, bitrate), rate), len(x))


def add_noise(x: np.ndarray, snr_db: float, noise: np.ndarray) -> np.ndarray:
    """`x` plus `noise` (tiled to its length) scaled to `snr_db` below the speech's power."""
    noise = np.resize(noise, len(x)).astype(np.float32)
    speech_power = float(np.mean(x ** 2)) + 1e-12
    scale = np.sqrt(speech_power / (10 ** (snr_db / 10)) / (float(np.mean(noise ** 2)) + 1e-12))
    return (x + scale * noise).astype(np.float32)


def coloured_noise(kind: str, n: int, rng: np.random.Generator, others: list[np.ndarray] | None = None) -> np.ndarray:
    """White, pink (1/f power) or babble (three other utterances summed) noise of n samples."""
    if kind == "white":
        return rng.standard_normal(n).astype(np.float32)
    if kind == "pink":
        spectrum = np.fft.rfft(rng.standard_normal(n))
        spectrum /= np.sqrt(np.maximum(np.arange(len(spectrum)), 1))
        return np.fft.irfft(spectrum, n).astype(np.float32)
    if not others:
        raise ValueError("babble needs other utterances")
    picks = [others[j] for j in rng.integers(0, len(others), 3)]
    return np.sum([np.resize(np.roll(p, int(rng.integers(0, max(1, len(p))))), n) for p in picks], axis=0)


def room_response(rt60: float, rate: int, rng: np.random.Generator) -> np.ndarray:
    """A synthetic room impulse response: the direct path, then exponentially decaying diffuse
    reflections reaching -60 dB at `rt60` seconds (the textbook statistical model)."""
    t = np.arange(int(rt60 * rate)) / rate
    tail = rng.standard_normal(len(t)) * np.exp(-6.9078 * t / rt60)
    tail[: int(0.002 * rate)] = 0.0  # the first reflections arrive a few ms after the direct sound
    h = 0.5 * tail / np.sqrt(np.sum(tail ** 2))
    h[0] = 1.0
    return h.astype(np.float32)


def reverberate(x: np.ndarray, h: np.ndarray) -> np.ndarray:
    """`x` convolved with `h` (FFT), cut to its length and brought back to its RMS level."""
    n = len(x) + len(h) - 1
    y = np.fft.irfft(np.fft.rfft(x, n) * np.fft.rfft(h, n), n)[: len(x)]
    return (y * np.sqrt((np.mean(x ** 2) + 1e-12) / (np.mean(y ** 2) + 1e-12))).astype(np.float32)


def gain(x: np.ndarray, db: float) -> np.ndarray:
    """Level change, clipped to [-1, 1] as an integer PCM recording would be."""
    return np.clip(x * np.float32(10 ** (db / 20)), -1.0, 1.0).astype(np.float32)


def random_recording(x: np.ndarray, rate: int, rng: np.random.Generator, others: list[np.ndarray]) -> np.ndarray:
    """One random recording condition: room (p 0.3), noise at 10-30 dB SNR (p 0.6), level ±12 dB,
    a source at another sample rate (p 0.4; 8 kHz half the time) and a lossy codec (p 0.5)."""
    if rng.random() < 0.3:
        x = reverberate(x, room_response(float(rng.uniform(0.2, 0.9)), rate, rng))
    if rng.random() < 0.6:
        kind = NOISES[int(rng.integers(0, len(NOISES)))]
        x = add_noise(x, float(rng.uniform(10, 30)), coloured_noise(kind, len(x), rng, others))
    x = gain(x / max(1e-6, float(np.abs(x).max())) * 0.5, float(rng.uniform(-12, 12)))
    if rng.random() < 0.4:
        source = 8000 if rng.random() < 0.5 else int(rng.choice(SOURCE_RATES[1:]))
        x = _same_length(resample(resample(x, rate, source), source, rate), len(x))
    if rng.random() < 0.5:
        codec = str(rng.choice(list(CODECS)))
        x = codec_roundtrip(x, rate, codec, int(rng.choice(CODECS[codec][2])))
    return x
