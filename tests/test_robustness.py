"""The recording must not decide the emotion: real utterances keep their label through what
recordings do to them: level, another source sample rate, a lossy codec, noise and a room.

Each condition is a real file, written by FFmpeg's own encoders and resampler (PyAV), and read back
by the runtime (`Recognizer.predict`), exactly as a user's file would be. The label of each
transformed file is compared with the label of the clean file, over a set of utterances:
real emotional speech from ../shared (RAVDESS actors 03-24 and the four other corpora) when it is
there, otherwise eSpeak NG utterances made on the spot (and the committed one), so a fresh clone
tests the same thing on less varied speech.

The bar: every condition keeps the clean label on at least 60 % of the set, and 80 % over all
conditions together. The bundled v0.1 model (RAVDESS only) failed both (pink noise at 20 dB SNR
kept 18 of 48 labels, an 8 kHz source 23); v0.2 to v0.5 pass both. On the eSpeak set the floors sit
close to what one model of a recipe scores: a seed-2 model of the v0.4 recipe alone fails three of
them (the bundled v0.5 averages three seeds). The issue's goal, 90 % in every condition, is **not
met** yet (v0.5: pink noise 43 of 48): the per-condition figures are in MODEL_CARD.md.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import av
import numpy as np
import pytest

from conftest import FIXTURE_SPEECH, SHARED

from mer.runtime.decode import decode_clip
from mer.runtime.spec import DEFAULT_SPEC, LABELS
from mer.train import speech_augment as A

RATE = DEFAULT_SPEC.sample_rate
FLOOR, MEAN_FLOOR = 0.60, 0.80
MIN_SET = 10
# A candidate model instead of the bundled one (MER_ROBUSTNESS_MODEL=runs/x/ia.onnx pytest -s ... -k survive):
# how the model card's "tried, not shipped" columns were measured, by the same test.
CANDIDATE = os.environ.get("MER_ROBUSTNESS_MODEL") or None
# eSpeak NG voices x sentences: 24 utterances of varied pitch, rate and length (0.9-3.5 s).
ESPEAK_VOICES = [("en-us+f3", 150, 70), ("en-us+m3", 130, 35), ("en+f2", 175, 60), ("en+m1", 115, 25),
                 ("en-us+f4", 190, 80), ("en+m7", 140, 45)]
ESPEAK_TEXTS = ["Kids are talking by the door.", "Dogs are sitting by the door.",
                "I really did not expect to see you here today, of all days.", "Stop it. Now."]


def _real_utterances() -> list[Path]:
    """Three utterances per emotion from RAVDESS, and eight from each other corpus, fixed by name."""
    ravdess = SHARED / "data" / "ravdess_speech_16k"
    picked = []
    for emotion in range(1, 9):
        picked += sorted(ravdess.glob(f"Actor_*/03-01-{emotion:02d}-02-0[12]-01-*.flac"))[::7][:3]
    for corpus in ("tess", "emodb", "urdu", "turev"):
        picked += sorted((SHARED / "data" / "speech_more" / corpus).rglob("*.opus"))[::97][:8]
    return picked


@pytest.fixture(scope="module")
def utterances(tmp_path_factory) -> list[np.ndarray]:
    paths = _real_utterances()
    if not paths:
        folder = tmp_path_factory.mktemp("espeak")
        paths = [FIXTURE_SPEECH]
        if shutil.which("espeak-ng"):
            for k, ((voice, speed, pitch), text) in enumerate((v, t) for v in ESPEAK_VOICES for t in ESPEAK_TEXTS):
                out = folder / f"espeak{k}.wav"
                subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", str(out), text],
                               check=True)
                paths.append(out)
    if len(paths) < MIN_SET:
        pytest.skip(f"needs {SHARED}/data (real speech) or espeak-ng for a set of at least {MIN_SET} utterances")
    spec = DEFAULT_SPEC
    return [decode_clip(p, spec).audio for p in paths]


def _write(path: Path, audio: np.ndarray, rate: int, codec: str = "pcm_s16le", bitrate: int | None = None) -> Path:
    """A real file: WAV (16-bit PCM) by default, or the codec's own container."""
    if codec in A.CODECS:
        path.write_bytes(A.encode(audio, rate, codec, bitrate or A.CODECS[codec][2][0]))
        return path
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=rate, layout="mono")
        frame = av.AudioFrame.from_ndarray((np.clip(audio, -1, 1) * 32767).astype(np.int16)[None], format="s16",
                                           layout="mono")
        frame.sample_rate = rate
        for packet in list(stream.encode(frame)) + list(stream.encode(None)):
            out.mux(packet)
    return path


def _conditions(x: np.ndarray, others: list[np.ndarray], folder: Path, k: int) -> dict[str, Path]:
    """Each recording condition of utterance x, as a file; the issue's ranges at their harsh end
    where a range is given (SNR 10 dB is tested separately below, as a measured figure)."""
    rng = np.random.default_rng(k)
    out = {"clean": _write(folder / f"{k}-clean.wav", x, RATE),
           "gain -12 dB": _write(folder / f"{k}-quiet.wav", A.gain(x, -12), RATE),
           "gain +12 dB (clipped)": _write(folder / f"{k}-loud.wav", A.gain(x, 12), RATE)}
    for rate in A.SOURCE_RATES:
        out[f"source at {rate} Hz"] = _write(folder / f"{k}-{rate}.wav", A.resample(x, RATE, rate), rate)
    for codec, ext in (("aac", "aac"), ("mp3", "mp3"), ("opus", "opus")):
        out[f"{codec} {A.CODECS[codec][2][0] // 1000} kb/s"] = _write(folder / f"{k}.{ext}", x, RATE, codec)
    for kind in ("pink", "babble"):
        noisy = A.add_noise(x, 20.0, A.coloured_noise(kind, len(x), rng, others))
        out[f"{kind} noise 20 dB SNR"] = _write(folder / f"{k}-{kind}.wav", noisy, RATE)
    out["room RT60 0.6 s"] = _write(folder / f"{k}-room.wav", A.reverberate(x, A.room_response(0.6, RATE, rng)), RATE)
    return out


def test_labels_survive_recording_conditions(utterances, tmp_path):
    from mer.runtime import Recognizer

    rec = Recognizer(CANDIDATE)
    labels: dict[str, list[str]] = {}
    for k, x in enumerate(utterances):
        x = x[: np.flatnonzero(np.abs(x) > 1e-4).max() + 1] if np.any(np.abs(x) > 1e-4) else x  # drop end padding
        others = [o for j, o in enumerate(utterances) if j != k]
        for name, path in _conditions(x, others, tmp_path, k).items():
            labels.setdefault(name, []).append(rec.predict(path).label)
    clean = labels.pop("clean")
    assert all(label in LABELS for label in clean)
    agreement = {name: float(np.mean([a == b for a, b in zip(got, clean)])) for name, got in labels.items()}
    print(f"\n{CANDIDATE or 'bundled model'}: agreement with the clean file over {len(clean)} utterances:",
          ", ".join(f"{name} {round(a * len(clean))}/{len(clean)}" for name, a in agreement.items()))
    failing = {name: round(a, 2) for name, a in agreement.items() if a < FLOOR}
    assert not failing, f"label agreement with the clean file below {FLOOR} over {len(clean)} utterances: {failing}"
    mean = float(np.mean(list(agreement.values())))
    assert mean >= MEAN_FLOOR, f"label agreement over all conditions {mean:.2f} < {MEAN_FLOOR}"


def test_the_bundled_model_is_blind_to_recording_level():
    # The bundled ia removes c0's mean inside its graph (audio_norm "level"): the same speech at
    # -20 dB or +6 dB, before any file or codec rounds it, must give the same probabilities.
    # Without that, a quiet microphone changes the answer (v0.2 kept 39 of 48 labels at -12 dB).
    from conftest import read_speech

    from mer.runtime import Recognizer

    x, _ = read_speech()
    x = 0.5 * x / np.abs(x).max()
    with Recognizer() as rec:
        if '"audio_norm": "level"' not in rec.info.metadata.get("mer.model_config", ""):
            pytest.skip("the bundled model was trained without level normalisation")
        probs = [np.array(list(rec.predict_arrays(audio=x * 10 ** (db / 20)).probabilities.values()))
                 for db in (0.0, -20.0, 6.0)]
    assert np.abs(probs[1] - probs[0]).max() < 1e-3 and np.abs(probs[2] - probs[0]).max() < 1e-3
