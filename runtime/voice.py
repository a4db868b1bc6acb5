"""Is someone speaking? A voice-activity gate in front of the speech branch.

The speech branch learned emotion from voices. Audio without one (a room's hum, a fan, traffic,
a studio's own silence) is not "no information" to it: read as speech, such a window moves the
fused answer towards whatever that noise resembles. So a window that shows a face but whose audio
holds less than `MIN_VOICE_S` of voice is given to the model as "audio absent" (what modality
dropout taught it) and the face alone answers. Without a face the audio is read as it is: there
is nothing to fall back on.

Voice is found by Silero VAD v6.2 (MIT; `assets/vad/`, the 16 kHz ONNX file of the `silero-vad`
6.2.3 wheel), run by the ONNX Runtime the model already uses, on one thread: one speech
probability per 32 ms chunk, its input level raised first (quiet speech is missed otherwise).
The detector is recurrent, so a stream is read once, in order (`VoiceTrack`); each window then
counts the voiced chunks it covers, the way windows share their STFT frames.
"""
from __future__ import annotations

import threading
from importlib import resources
from pathlib import Path

import numpy as np

SAMPLE_RATE = 16000   # the detector's rate (the runtime's spec rate; other rates turn the gate off)
CHUNK = 512           # samples per speech probability: 32 ms, fixed by the model
CONTEXT = 64          # samples of the previous chunk the model sees before each chunk
SPEECH_P = 0.5        # a chunk is voiced at this probability or above (Silero's own default)
MIN_VOICE_S = 0.2     # a window with less voice than this has no speech to read (see MODEL_CARD)
# The detector hears level: speech of five corpora made 24 dB quieter was missed in 19 windows
# of 230. So its input is raised towards LEVEL_DBFS (its RMS followed over ~LEVEL_TAU_S), never
# lowered, by at most MAX_GAIN_DB: then 2 of 230; noise raised so is still not speech to it
# (MODEL_CARD, "Windows without a voice").
LEVEL_DBFS, LEVEL_TAU_S, MAX_GAIN_DB = -30.0, 0.5, 24.0

_TARGET, _MAX_GAIN = 10 ** (LEVEL_DBFS / 20), 10 ** (MAX_GAIN_DB / 20)
_FOLLOW = float(np.exp(-CHUNK / (SAMPLE_RATE * LEVEL_TAU_S)))  # the level's memory per chunk
_session = None
_lock = threading.Lock()


def model_path() -> Path:
    return Path(str(resources.files("mer.runtime") / "assets" / "vad" / "silero_vad_16k_op15.onnx"))


def _detector():
    """One ONNX Runtime session per process (run() is thread-safe; each track keeps its own state)."""
    global _session
    with _lock:
        if _session is None:
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.intra_op_num_threads = options.inter_op_num_threads = 1  # 0.15 ms a chunk: not worth a pool
            options.log_severity_level = 3
            _session = ort.InferenceSession(str(model_path()), options, providers=["CPUExecutionProvider"])
        return _session


class VoiceTrack:
    """Speech probabilities of one stream, 32 ms at a time, by stream position.

    `add(start, samples)` takes the stream's contiguous chunks in order; `voiced_s(start, count)` is
    the voice in samples [start, start + count): the chunks whose centre lies inside, times 32 ms.
    `lazy` (one window, nothing after it): samples are read only when `voiced_s` asks, and only
    until `enough` voice is found; the decision is the same, the rest of the window is not read."""

    def __init__(self, lazy: bool = False) -> None:
        self._session = _detector()
        self._state = np.zeros((2, 1, 128), np.float32)
        self._context = np.zeros(CONTEXT, np.float32)
        self._rate = np.array(SAMPLE_RATE, np.int64)
        self._level: float | None = None  # the input's RMS, followed chunk by chunk
        self.lazy = lazy
        self.first: int | None = None     # stream position of chunk 0
        self._unread = np.zeros(0, np.float32)
        self._p: list[float] = []
        self._base = 0                    # index of self._p[0] among all chunks

    def add(self, start: int, samples: np.ndarray) -> None:
        if self.first is None:
            self.first = start
        self._unread = np.concatenate([self._unread, np.asarray(samples, np.float32)])
        if not self.lazy:
            while self._step():
                pass

    def _step(self) -> float | None:
        """Read the next whole chunk of unread samples: its speech probability, None if none is whole."""
        if len(self._unread) < CHUNK:
            return None
        chunk, self._unread = self._unread[:CHUNK], self._unread[CHUNK:]
        rms = float(np.sqrt(np.mean(np.square(chunk, dtype=np.float64)) + 1e-12))
        self._level = rms if self._level is None else _FOLLOW * self._level + (1 - _FOLLOW) * rms
        gain = min(_MAX_GAIN, max(1.0, _TARGET / self._level))
        x = np.concatenate([self._context, np.clip(chunk * gain, -1, 1)]).astype(np.float32)[None]
        p, self._state = self._session.run(None, {"input": x, "state": self._state, "sr": self._rate})
        self._context = x[0, -CONTEXT:]
        self._p.append(float(p[0, 0]))
        return self._p[-1]

    def voiced_s(self, start: int, count: int, enough: float | None = None) -> float:
        if self.first is None:
            return 0.0
        # Chunk k spans [first + k * CHUNK, first + (k + 1) * CHUNK); its centre must be inside.
        lo = max(0, -(-(start - self.first - CHUNK // 2) // CHUNK))
        hi = (start + count - self.first - CHUNK // 2 - 1) // CHUNK + 1
        voiced = sum(x >= SPEECH_P for x in self._p[max(0, lo - self._base):max(0, hi - self._base)])
        if self.lazy:
            need = np.inf if enough is None else enough * SAMPLE_RATE / CHUNK
            while voiced < need and self._base + len(self._p) < hi and (p := self._step()) is not None:
                voiced += self._base + len(self._p) - 1 >= lo and p >= SPEECH_P
        return voiced * CHUNK / SAMPLE_RATE

    def drop_before(self, position: int) -> None:
        """Forget chunks that end before `position` (no window will ask for them again)."""
        if self.first is None:
            return
        k = (position - self.first) // CHUNK
        if k - self._base > 4096:  # in large steps, like the audio buffer
            del self._p[:k - self._base]
            self._base = k


GATE_OFF = "voice gate off: it runs on onnxruntime, which is not installed here (any audio is read as speech)"


def track(lazy: bool = False) -> VoiceTrack | None:
    """A new track, or None where ONNX Runtime is missing (a TensorRT-only install): no gate then."""
    try:
        return VoiceTrack(lazy)
    except ImportError:
        return None


NO_VOICE = "no voice in this window's audio"


def no_voice(track: VoiceTrack, start: int, count: int) -> str | None:
    """The gate's decision for samples [start, start + count) of a window that shows a face: None
    when they hold MIN_VOICE_S of voice (read them as speech), else the warning that says why the
    face answers alone (it starts with NO_VOICE)."""
    said = track.voiced_s(start, count, enough=MIN_VOICE_S)
    if said >= MIN_VOICE_S:
        return None
    return f"{NO_VOICE} ({said:.2f} s of speech, under {MIN_VOICE_S:g} s): audio input absent, the face alone answers"


def voiced_s(samples: np.ndarray) -> float:
    """Seconds of voice in 16 kHz mono `samples`, read from their start (what a window of a
    stream that starts with it would count)."""
    one = VoiceTrack()
    one.add(0, np.asarray(samples, np.float32))
    return one.voiced_s(0, len(samples))
