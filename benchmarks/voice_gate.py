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
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
RATE = 16000
SECONDS = 4.0


def coloured(kind: str, n: int, dbfs: float, rng: np.random.Generator) -> np.ndarray:
    spectrum = np.fft.rfft(rng.standard_normal(n))
    k = np.maximum(np.arange(len(spectrum)), 1)
    spectrum /= {"white": 1, "pink": np.sqrt(k), "brown": k}[kind]
    x = np.fft.irfft(spectrum, n)
    return (x / np.sqrt(np.mean(x ** 2)) * 10 ** (dbfs / 20)).astype(np.float32)


def room_tone(n: int, rng: np.random.Generator) -> np.ndarray:
    """RAVDESS's own studio between takes: the first 0.25 s of takes (before the actor speaks) of
    actors 03-24, strung together in a random order, as recorded."""
    import soundfile as sf

    paths = sorted(SHARED.glob("ravdess_speech_16k/Actor_*/*.flac"))
    paths = [p for p in paths if p.parent.name not in ("Actor_01", "Actor_02")]
    heads = [sf.read(paths[i], dtype="float32")[0][:4000] for i in rng.choice(len(paths), n // 4000 + 1)]
    return np.concatenate(heads)[:n]


def sounds(n: int, rng: np.random.Generator) -> dict[str, np.ndarray | None]:
    return {"no audio track (the face alone)": None,
            "white noise -50 dBFS": coloured("white", n, -50, rng),
            "pink noise -40 dBFS": coloured("pink", n, -40, rng),
            "brown noise -30 dBFS (a rumble)": coloured("brown", n, -30, rng),
            "RAVDESS room tone, as recorded": room_tone(n, rng)}


def faces_without_voice(quick: bool, work: Path) -> None:
    sys.path.insert(0, str(REPO / "tests"))
    from media import write_clip

    from mer.runtime import Recognizer
    from mer.runtime.spec import LABELS
    from mer.train.face_clips import FPS, moving_frames
    from mer.train.face_data import load_tfeid
    from mer.train.pretrain_faces import TFEID_TEST_PERFORMERS

    NEUTRAL, CALM = LABELS.index("neutral"), LABELS.index("calm")
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
        for name, audio in sounds(int(SECONDS * RATE), rng).items():
            clip = write_clip(work / f"{n}.mp4", frames, FPS, audio=audio)
            for on, rec in ((True, gated), (False, plain)) if audio is not None else ((True, gated),):
                result = rec.predict(clip)
                index = NEUTRAL if result.index == CALM else result.index  # a face alone cannot tell calm from neutral
                right.setdefault((name, on), []).append(index == held.labels[i])
                if on and audio is not None:
                    for k, v in result.timings_ms.items():
                        timings.setdefault(k, []).append(v)
        if n % 20 == 0:
            print(f"  {n + 1}/{len(pick)} photos, {time.perf_counter() - t0:.0f} s", flush=True)
    print(f"\n1. Held-out TFEID faces (performers 24-29, {len(pick)} photos) as {SECONDS:g} s H.264 clips "
          "with sound but no voice; accuracy %, calm counted as neutral:")
    print("| audio | gate on (default) | gate off |")
    print("|---|---|---|")
    for name in sounds(16, np.random.default_rng(0)):
        on, off = right[(name, True)], right.get((name, False))
        print(f"| {name} | {100 * np.mean(on):.1f} | {100 * np.mean(off):.1f} |" if off else
              f"| {name} | {100 * np.mean(on):.1f} | (same) |")
    print("\n3. Per window with the gate on (p50 ms): " +
          ", ".join(f"{k} {np.median(v):.1f}" for k, v in timings.items()))
    gated.close(); plain.close()


def stills_without_voice(quick: bool) -> None:
    """FER+ test faces (in-the-wild, 48x48 grey) through `predict_arrays`: the face as 15 frames,
    with each sound, gate on and off."""
    import cv2

    from mer.runtime import Recognizer
    from mer.runtime.spec import LABELS
    from mer.train.face_data import load_ferplus

    NEUTRAL, CALM = LABELS.index("neutral"), LABELS.index("calm")
    fer = load_ferplus(SHARED / "faces" / "ferplus.npz")
    test = fer.subset(fer.groups == "test")
    pick = np.random.default_rng(0).choice(len(test.labels), 250 if quick else 1000, replace=False)
    rng = np.random.default_rng(1)
    right: dict[tuple[str, bool], list[bool]] = {}
    gated, plain = Recognizer(), Recognizer(voice_gate=False)
    for i in pick:
        face = cv2.resize(test.images[i], (224, 224), interpolation=cv2.INTER_LINEAR)
        faces = np.repeat(np.repeat(face[None, :, :, None], 3, 3), 15, 0)
        for name, audio in sounds(int(SECONDS * RATE), rng).items():
            for on, rec in ((True, gated), (False, plain)) if audio is not None else ((True, gated),):
                index = rec.predict_arrays(faces, audio).index
                index = NEUTRAL if index == CALM else index
                right.setdefault((name, on), []).append(index == test.labels[i])
    print(f"\n1b. FER+ test faces ({len(pick)} drawn at random, seed 0) through predict_arrays, the face "
          "as 15 frames, with sound but no voice; accuracy %, calm counted as neutral:")
    print("| audio | gate on (default) | gate off |")
    print("|---|---|---|")
    for name in sounds(16, np.random.default_rng(0)):
        on, off = right[(name, True)], right.get((name, False))
        print(f"| {name} | {100 * np.mean(on):.1f} | {100 * np.mean(off):.1f} |" if off else
              f"| {name} | {100 * np.mean(on):.1f} | (same) |")
    gated.close(); plain.close()


def speech_passes(quick: bool) -> None:
    from mer.runtime.decode import decode_clip
    from mer.runtime.spec import DEFAULT_SPEC as spec
    from mer.runtime.voice import MIN_VOICE_S, voiced_s
    from mer.train import speech_augment as A

    rav = sorted(SHARED.glob("ravdess_speech_16k/Actor_*/*.flac"))
    rav = [p for p in rav if p.parent.name not in ("Actor_01", "Actor_02")][::12 * (4 if quick else 1)]
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
