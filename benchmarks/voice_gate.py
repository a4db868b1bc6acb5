"""What the voice gate does, measured through the runtime on real encoded clips.

    python benchmarks/voice_gate.py            # needs ../shared (TFEID, RAVDESS, speech_more); ~25 min on 2 cores
    python benchmarks/voice_gate.py --quick    # a quarter of the material, ~7 min
    python benchmarks/voice_gate.py --part stills --part speech   # some of the parts

1. Faces without a voice: each held-out TFEID photo (performers 24-29) as a moving 640x360 H.264
   clip with an AAC track of sound without speech (coloured noise at a level, a studio's room tone),
   read by `Recognizer.predict` with the gate (default) and without it (`voice_gate=False`), and
   the same clip without an audio track (the face alone). Accuracy with calm counted as neutral.
   1b. The same sounds under FER+ test faces (in the wild), through `predict_arrays`.
2. Speech that must pass: the centred window of utterances no model here was tuned on for the
   gate (RAVDESS actors 03-24 and four more corpora, every 12th / 30 per corpus), clean and under
   the recording conditions the robustness test uses: the share of windows the gate would give to
   the face alone (seconds of voice under MIN_VOICE_S).
3. Cost: the gate's time per window against the MFCC's and the model's, from the same predictions.
RAVDESS actors 01-02 are never read.
"""
from __future__ import annotations

import argparse
import functools
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from media import noise, write_clip  # noqa: E402  (test-side helpers: coloured noise, clips with PyAV)

SHARED = REPO.parent / "shared" / "data"
RATE = 16000
SECONDS = 4.0


@functools.lru_cache(maxsize=1)
def ravdess_03_24() -> list[Path]:
    """RAVDESS takes of actors 03-24 (01-02 are held out: never read here)."""
    paths = sorted(SHARED.glob("ravdess_speech_16k/Actor_*/*.flac"))
    return [p for p in paths if p.parent.name not in ("Actor_01", "Actor_02")]


_HEADS: dict[int, np.ndarray] = {}  # room tone read so far, by file index: each file read once a run


def room_tone(n: int, rng: np.random.Generator) -> np.ndarray:
    """RAVDESS's own studio between takes: the first 0.25 s of takes (before the actor speaks) of
    actors 03-24, strung together in a random order, as recorded."""
    import soundfile as sf

    paths = ravdess_03_24()
    for i in (picks := rng.choice(len(paths), n // 4000 + 1)):
        if i not in _HEADS:
            _HEADS[i] = sf.read(paths[i], dtype="float32")[0][:4000]
    return np.concatenate([_HEADS[i] for i in picks])[:n]


SOUNDS = ("no audio track (the face alone)", "white noise -50 dBFS", "pink noise -40 dBFS",
          "brown noise -30 dBFS (a rumble)", "RAVDESS room tone, as recorded")


def sounds(rng: np.random.Generator) -> dict[str, np.ndarray | None]:
    """SOUNDS, SECONDS long, in that order (each drawn from `rng`)."""
    return dict(zip(SOUNDS, (None, noise("white", SECONDS, -50, rng), noise("pink", SECONDS, -40, rng),
                             noise("brown", SECONDS, -30, rng), room_tone(int(SECONDS * RATE), rng))))


def accuracy_table(title: str, right: dict[tuple[str, bool], list[bool]]) -> None:
    print(f"\n{title}; accuracy %, calm counted as neutral:")
    print("| audio | gate on (default) | gate off |")
    print("|---|---|---|")
    for name in SOUNDS:
        on, off = right[(name, True)], right.get((name, False))
        print(f"| {name} | {100 * np.mean(on):.1f} | {100 * np.mean(off):.1f} |" if off else
              f"| {name} | {100 * np.mean(on):.1f} | (same) |")


def readers(audio: np.ndarray | None, gated, plain) -> tuple:
    """(gate on?, recogniser) pairs: without audio the gate has nothing to decide."""
    return ((True, gated), (False, plain)) if audio is not None else ((True, gated),)


def faces_without_voice(quick: bool, work: Path) -> None:
    from mer.runtime import Recognizer
    from mer.train.calibrate import face_labels
    from mer.train.face_clips import FPS, moving_frames
    from mer.train.face_data import load_tfeid
    from mer.train.pretrain_faces import TFEID_TEST_PERFORMERS

    tfeid = load_tfeid(SHARED / "faces" / "tfeid")
    held = tfeid.subset(np.isin(tfeid.groups, TFEID_TEST_PERFORMERS))
    pick = np.arange(len(held.labels))[::4 if quick else 1]
    rng = np.random.default_rng(0)
    right: dict[tuple[str, bool], list[bool]] = {}
    timings: dict[str, list[float]] = {}
    gated, plain = Recognizer(), Recognizer(voice_gate=False)
    t0 = time.perf_counter()
    for n, i in enumerate(pick):
        frames = moving_frames(held.images[i], rng, int(SECONDS * FPS))
        for name, audio in sounds(rng).items():
            clip = write_clip(work / f"{n}.mp4", frames, FPS, audio=audio)
            for on, rec in readers(audio, gated, plain):
                result = rec.predict(clip)
                right.setdefault((name, on), []).append(face_labels(result.index) == held.labels[i])
                if on and audio is not None:
                    for k, v in result.timings_ms.items():
                        timings.setdefault(k, []).append(v)
        if n % 20 == 0:
            print(f"  {n + 1}/{len(pick)} photos, {time.perf_counter() - t0:.0f} s", flush=True)
    accuracy_table(f"1. Held-out TFEID faces (performers 24-29, {len(pick)} photos) as {SECONDS:g} s H.264 clips "
                   "with sound but no voice", right)
    print("\n3. Per window with the gate on (p50 ms): " +
          ", ".join(f"{k} {np.median(v):.1f}" for k, v in timings.items()))
    gated.close(); plain.close()


def stills_without_voice(quick: bool) -> None:
    """FER+ test faces (in-the-wild, 48x48 grey) through `predict_arrays`: the face as 15 frames,
    with each sound, gate on and off."""
    import cv2

    from mer.runtime import Recognizer
    from mer.train.calibrate import face_labels
    from mer.train.face_data import load_ferplus

    fer = load_ferplus(SHARED / "faces" / "ferplus.npz")
    test = fer.subset(fer.groups == "test")
    pick = np.random.default_rng(0).choice(len(test.labels), 250 if quick else 1000, replace=False)
    rng = np.random.default_rng(1)
    right: dict[tuple[str, bool], list[bool]] = {}
    gated, plain = Recognizer(), Recognizer(voice_gate=False)
    for i in pick:
        face = cv2.resize(test.images[i], (224, 224), interpolation=cv2.INTER_LINEAR)
        faces = np.repeat(np.repeat(face[None, :, :, None], 3, 3), 15, 0)
        for name, audio in sounds(rng).items():
            for on, rec in readers(audio, gated, plain):
                index = rec.predict_arrays(faces, audio).index
                right.setdefault((name, on), []).append(face_labels(index) == test.labels[i])
    accuracy_table(f"1b. FER+ test faces ({len(pick)} drawn at random, seed 0) through predict_arrays, the face "
                   "as 15 frames, with sound but no voice", right)
    gated.close(); plain.close()


def speech_passes(quick: bool) -> None:
    from mer.runtime.decode import decode_clip
    from mer.runtime.spec import DEFAULT_SPEC as spec
    from mer.runtime.voice import MIN_VOICE_S, voiced_s
    from mer.train import speech_augment as A

    rav = ravdess_03_24()[::12 * (4 if quick else 1)]
    more = []
    for corpus in ("tess", "emodb", "urdu", "turev"):
        files = sorted((SHARED / "speech_more" / corpus).rglob("*.opus"))
        more += files[::max(1, len(files) // 30)][:8 if quick else 30]
    paths = rav + more
    clips = [decode_clip(p, spec).audio for p in paths]
    n = spec.n_samples
    out: dict[str, list[float]] = {}
    for k, (path, x) in enumerate(zip(paths, clips)):
        r = np.random.default_rng(k)
        others = [clips[(k + j * 37) % len(clips)] for j in (1, 2, 3)]
        corpus = "ravdess" if "ravdess" in str(path) else path.relative_to(SHARED / "speech_more").parts[0]
        conditions = {"clean": x, "gain -24 dB": A.gain(x, -24),
                      "source 8 kHz": A.resample(A.resample(x, RATE, 8000), 8000, RATE)[:n],
                      "mp3 32 kb/s": A.codec_roundtrip(x, RATE, "mp3", 32000),
                      "pink noise 10 dB SNR": A.add_noise(x, 10.0, A.coloured_noise("pink", len(x), r)),
                      "white noise 10 dB SNR": A.add_noise(x, 10.0, A.coloured_noise("white", len(x), r)),
                      "babble 10 dB SNR": A.add_noise(x, 10.0, A.coloured_noise("babble", len(x), r, others)),
                      "room RT60 0.6 s": A.reverberate(x, A.room_response(0.6, RATE, r))}
        for name, y in conditions.items():
            out.setdefault(name, []).append(voiced_s(np.asarray(y, np.float32)[:n]))
            if name == "clean":
                out.setdefault(f"{corpus}, clean", []).append(out[name][-1])
    print(f"\n2. Speech windows the gate would give to the face alone (voice under {MIN_VOICE_S:g} s), "
          f"{len(rav)} RAVDESS (actors 03-24) + {len(more)} other-corpus utterances:")
    print("| condition | windows | gated | p5 of voice, s | median, s |")
    print("|---|---|---|---|---|")
    for name, v in out.items():
        v = np.array(v)
        print(f"| {name} | {len(v)} | {np.sum(v < MIN_VOICE_S)} | {np.percentile(v, 5):.2f} | {np.median(v):.2f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--part", action="append", choices=["clips", "stills", "speech"], help="only these parts")
    args = ap.parse_args()
    if not (SHARED / "faces" / "tfeid").is_dir():
        sys.exit(f"voice_gate: needs {SHARED} (TFEID faces, RAVDESS and the other speech corpora)")
    parts = args.part or ["clips", "stills", "speech"]
    if "clips" in parts:
        with tempfile.TemporaryDirectory(prefix="mer-voice-") as work:
            faces_without_voice(args.quick, Path(work))
    if "stills" in parts:
        stills_without_voice(args.quick)
    if "speech" in parts:
        speech_passes(args.quick)


if __name__ == "__main__":
    main()
