"""The voice gate: audio without a voice is not read as speech where a face can answer alone.

Real detector (the bundled Silero VAD on ONNX Runtime), real speech (RAVDESS or the committed eSpeak
utterance), real encoded clips; the noise is generated (white, pink, brown: what a room, a fan or
a street leaves on a microphone when nobody speaks)."""
from __future__ import annotations

import numpy as np
import pytest

from mer.runtime.voice import MIN_VOICE_S, VoiceTrack, voiced_s

from media import noise

RATE = 16000


def test_speech_has_a_voice_and_noise_has_none(speech):
    assert voiced_s(speech) >= 1.0  # a sentence: well over a second of voice
    for kind, db in (("white", -40), ("pink", -30), ("brown", -25), ("brown", -55)):
        assert voiced_s(noise(kind, 3.6, db)) < MIN_VOICE_S, (kind, db)
    assert voiced_s(np.zeros(3 * RATE, np.float32)) == 0


def test_speech_in_noise_keeps_its_voice(speech):
    # 10 dB SNR, the harsh end of the range: the voice must still be found.
    x = speech + noise("pink", len(speech) / RATE, 0) * np.sqrt(np.mean(speech ** 2)) / 10 ** 0.5
    assert voiced_s(x.astype(np.float32)) >= 0.5 * voiced_s(speech)


def test_a_track_counts_the_chunks_inside_a_window_whatever_the_chunking(speech):
    x = np.concatenate([noise("pink", 4.0, -45), speech, noise("pink", 4.0, -45, seed=1)]).astype(np.float32)
    whole, pieces = VoiceTrack(), VoiceTrack()
    whole.add(1000, x)
    at = 1000
    for size in np.random.default_rng(0).integers(1, 3000, 400):  # a decoder's ragged chunks
        pieces.add(at, x[at - 1000:at - 1000 + size])
        at += size
        if at - 1000 >= len(x):
            break
    lead, talk = 1000, 1000 + 4 * RATE
    assert whole.voiced_s(lead, int(3.6 * RATE)) < MIN_VOICE_S    # the noise before anyone speaks
    assert whole.voiced_s(talk, len(speech)) >= 1.0               # the sentence
    for start in (lead, talk, talk + 12345):
        assert pieces.voiced_s(start, int(3.6 * RATE)) == whole.voiced_s(start, int(3.6 * RATE))


def test_a_lazy_track_decides_as_the_whole_window_does_and_stops_once_it_has_voice(speech):
    n = int(3.6 * RATE)
    for x, voiced in ((np.resize(speech, n), True), (noise("brown", 3.6, -30), False)):
        eager, lazy = VoiceTrack(), VoiceTrack(lazy=True)
        at = 0
        for part in np.array_split(x.astype(np.float32), 37):  # audio arrives in pieces
            eager.add(at, part)
            lazy.add(at, part)
            at += len(part)
        whole = eager.voiced_s(0, n)
        early = lazy.voiced_s(0, n, enough=MIN_VOICE_S)
        assert (whole >= MIN_VOICE_S) == (early >= MIN_VOICE_S) == voiced
        if voiced:
            assert len(lazy._p) < len(eager._p)   # the rest of the window was not read
        else:
            assert early == whole and len(lazy._p) == len(eager._p)


# -- in the engine: a face with noise answers as the face alone --------------------------------
@pytest.fixture(scope="module")
def face_clips(tmp_path_factory, face, speech):
    from media import place_face, write_clip

    root = tmp_path_factory.mktemp("voice")
    frames = [place_face(face, 640, 360, i / 25) for i in range(int(4.0 * 25))]
    return {"noise": write_clip(root / "noise.mp4", frames, 25.0, audio=noise("brown", 4.0, -30)),
            "silent": write_clip(root / "silent.mp4", frames, 25.0, audio=None),
            "speech": write_clip(root / "speech.mp4", frames, 25.0,
                                 audio=np.resize(speech, 4 * RATE).astype(np.float32))}


@pytest.fixture(scope="module")
def ungated(exported):
    from mer.runtime import Recognizer

    with Recognizer(exported("ia"), backend="cpu", voice_gate=False) as rec:
        yield rec


def test_a_face_with_noise_and_no_voice_is_read_as_the_face_alone(recognizer, ungated, face_clips):
    gated = recognizer.predict(face_clips["noise"])
    alone = recognizer.predict(face_clips["silent"])
    assert gated.audio is False and gated.faces_detected == 15
    assert any("no voice in this window's audio" in w for w in gated.warnings)
    assert gated.probabilities == pytest.approx(alone.probabilities, abs=1e-5)
    # Ungated, the same noise goes down the speech path and moves the answer.
    heard = ungated.predict(face_clips["noise"])
    assert heard.audio is True and not any("no voice" in w for w in heard.warnings)
    assert max(abs(heard.probabilities[k] - alone.probabilities[k]) for k in alone.probabilities) > 1e-3


def test_the_table_says_noise_where_the_gate_left_the_audio_out(exported, face_clips):
    from test_cli import run_cli

    proc = run_cli(face_clips["noise"], face_clips["speech"], face_clips["silent"], "--model", exported("ia"))
    rows = {line.split()[0]: line.split() for line in proc.stdout.splitlines()[1:]}
    assert [rows[str(face_clips[k])][4] for k in ("noise", "speech", "silent")] == ["noise", "yes", "no"]


def test_speech_passes_the_gate_unchanged(recognizer, ungated, face_clips):
    gated, plain = recognizer.predict(face_clips["speech"]), ungated.predict(face_clips["speech"])
    assert gated.audio is True and not any("no voice" in w for w in gated.warnings)
    assert gated.probabilities == pytest.approx(plain.probabilities, abs=1e-6)
    assert gated.timings_ms["voice"] > 0


def test_audio_alone_is_read_even_without_a_voice(recognizer, tmp_path):
    # No face to fall back on: the audio is all there is, and it is read (as before the gate).
    from media import write_audio

    result = recognizer.predict(write_audio(tmp_path / "hum.wav", noise("brown", 4.0, -30)))
    assert result.audio is True and result.faces_detected == 0


def test_a_timeline_reads_the_face_alone_where_nobody_speaks(recognizer, face, speech, tmp_path):
    from media import place_face, write_clip

    talk = np.resize(speech, 5 * RATE)
    audio = np.concatenate([talk, noise("pink", 9.0, -40)]).astype(np.float32)
    frames = [place_face(face, 640, 360, i / 25) for i in range(int(14.0 * 25))]
    clip = write_clip(tmp_path / "talk_then_listen.mp4", frames, 25.0, audio=audio)
    results = list(recognizer.timeline(clip))
    for r in results:
        start, end = r.window
        if end <= 4.5:        # inside the talk
            assert r.audio is True, r.window
        elif start >= 5.5:    # a second after the talk ends: noise only
            assert r.audio is False and any("no voice" in w for w in r.warnings), r.window
    assert any(r.audio for r in results) and not all(r.audio for r in results)


def test_without_onnxruntime_the_gate_is_off_and_says_so(recognizer, face_clips, monkeypatch):
    # A TensorRT-only install has no ONNX Runtime for the detector: the audio is read as speech,
    # and the record says the gate was off (the model's own session is already loaded).
    import sys

    from mer.runtime import voice

    monkeypatch.setattr(voice, "_session", None)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` now raises ImportError
    result = recognizer.predict(face_clips["noise"])
    assert result.audio is True and voice.GATE_OFF in result.warnings


def test_arrays_are_gated_as_files_are(recognizer, face, speech):
    import cv2

    faces = np.repeat(cv2.resize(face, (224, 224))[None], 15, 0)
    hum = recognizer.predict_arrays(faces, noise("brown", 4.0, -30))
    alone = recognizer.predict_arrays(faces, None)
    talk = recognizer.predict_arrays(faces, np.resize(speech, 4 * RATE))
    assert hum.audio is False and any("no voice" in w for w in hum.warnings)
    assert hum.probabilities == pytest.approx(alone.probabilities, abs=1e-6)
    assert talk.audio is True and not any("no voice" in w for w in talk.warnings)
    assert recognizer.predict_arrays(None, noise("brown", 4.0, -30)).audio is True  # no face: read as it is
