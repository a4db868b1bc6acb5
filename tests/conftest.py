"""Shared fixtures: real speech and faces, clips encoded with PyAV, exported models.

`speech` and `face` come from ../shared (RAVDESS speech, TFEID faces) when it is there, and
otherwise from the small real fixtures committed in tests/fixtures/ (see its README), so a fresh
clone runs the same tests. Tests that need the full data trees (thousands of RAVDESS files)
are marked `needs_shared` and skip with the reason when it is absent."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

SHARED = Path(os.environ.get("MER_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))
SPEECH = SHARED / "data" / "ravdess_speech_16k"
TFEID = SHARED / "data" / "faces" / "tfeid" / "images"
FIXTURES = Path(__file__).resolve().parent / "fixtures"
FIXTURE_SPEECH = FIXTURES / "speech_en.flac"     # eSpeak NG, one English sentence, 4.5 s, 16 kHz mono
FIXTURE_FACE = FIXTURES / "face_astronaut.jpg"   # public-domain NASA portrait (skimage astronaut), 256x256
DEFAULT_SPEECH = "03-01-03-02-01-01-03.flac"
DEFAULT_FACE = "0111b01.jpg"
needs_shared = pytest.mark.skipif(not SPEECH.is_dir() or not TFEID.is_dir(),
                                  reason=f"needs the RAVDESS speech tree and TFEID faces under {SHARED} "
                                         "(set MER_SHARED); tests/fixtures has one utterance and one face only")


def speech_path(name: str | None = None) -> Path:
    """A RAVDESS file by name from ../shared; with no name, the default utterance, or the fixture
    when ../shared is absent."""
    if name is None:
        if not SPEECH.is_dir():
            return FIXTURE_SPEECH
        name = DEFAULT_SPEECH
    actor = name.split("-")[-1].split(".")[0]
    path = SPEECH / f"Actor_{actor}" / name
    if not path.is_file():
        pytest.skip(f"RAVDESS file {name} not found under {SPEECH} (set MER_SHARED)")
    return path


def face_path(name: str | None = None) -> Path:
    """A TFEID crop by name from ../shared; with no name, the default one, or the fixture when
    ../shared is absent."""
    if name is None:
        if not TFEID.is_dir():
            return FIXTURE_FACE
        name = DEFAULT_FACE
    path = TFEID / name
    if not path.is_file():
        pytest.skip(f"TFEID face {name} not found under {TFEID} (set MER_SHARED)")
    return path


def read_speech(name: str | None = None) -> tuple[np.ndarray, int]:
    """Speech as mono float32 at 16 kHz: a RAVDESS utterance (default: actor 03, happy, strong),
    or tests/fixtures/speech_en.flac when ../shared is absent and no name is given."""
    from mer.runtime.decode import decode_clip
    from mer.runtime.spec import FeatureSpec

    clip = decode_clip(speech_path(name), FeatureSpec(window_s=6.0))
    n = int(round(clip.duration * 16000))
    return clip.audio[:n], 16000


def read_face(name: str | None = None) -> np.ndarray:
    """A face crop as RGB uint8 256x256: TFEID (default: performer 01, happy), or
    tests/fixtures/face_astronaut.jpg when ../shared is absent and no name is given."""
    import cv2

    return cv2.imread(str(face_path(name)))[:, :, ::-1].copy()


@pytest.fixture(scope="session")
def speech() -> np.ndarray:
    return read_speech()[0]


@pytest.fixture(scope="session")
def face() -> np.ndarray:
    return read_face()


@pytest.fixture(scope="session")
def clip_factory(tmp_path_factory, face, speech):
    """make(name, seconds=..., fps=..., size=(w, h), audio=True, faces=1, rotation=0, codec=...)."""
    from media import place_face, write_clip

    root = tmp_path_factory.mktemp("clips")

    def make(name: str, seconds: float | None = None, fps: float = 30.0, size: tuple[int, int] = (1280, 720),
             audio: bool = True, faces: int = 1, rotation: int = 0, codec: str = "libx264") -> Path:
        wave = speech
        if seconds is not None and seconds * 16000 < len(speech):
            # A clip shorter than the utterance keeps its loudest stretch: someone is talking in
            # it (RAVDESS's first second is the studio before the actor speaks).
            n = int(seconds * 16000)
            total = np.concatenate([[0.0], np.cumsum(speech.astype(np.float64) ** 2)])
            start = int(np.argmax(total[n:] - total[:-n]))
            wave = speech[start:start + n]
        elif seconds is not None:
            reps = int(np.ceil(seconds * 16000 / len(speech)))
            wave = np.tile(speech, reps)[: int(seconds * 16000)]
        duration = len(wave) / 16000
        w, h = size
        frames = []
        for i in range(int(round(duration * fps))):
            t = i / fps
            if faces == 0:
                frame = np.full((h, w, 3), 90, np.uint8)
                frame[h // 3: h // 2, w // 3: w // 2] = (40, 160, 60)  # an object, not a face
            elif faces == 1:
                frame = place_face(face, w, h, t)
            else:  # a large face on the left, a smaller one on the right
                frame = np.full((h, w, 3), 90, np.uint8)
                import cv2
                big, small = int(h * 0.55), int(h * 0.3)
                frame[h // 5: h // 5 + big, w // 10: w // 10 + big] = cv2.resize(face, (big, big))
                frame[h // 3: h // 3 + small, w * 6 // 10: w * 6 // 10 + small] = cv2.resize(face, (small, small))
            if rotation:
                frame = np.ascontiguousarray(np.rot90(frame, -rotation // 90))
            frames.append(frame)
        return write_clip(root / name, frames, fps, wave if audio else None, 16000, codec=codec, rotation=rotation)

    return make


def _export(fusion: str, out: Path) -> Path:
    from mer.export.onnx_export import export_onnx
    from mer.train import checkpoint as ckpt

    model, spec, trained_on = ckpt.bundled_or_untrained(fusion)
    return export_onnx(model, spec, out / f"{fusion}.onnx", trained_on)


@pytest.fixture(scope="session")
def exported(tmp_path_factory):
    """fusion -> exported fp32 ONNX path (exported once per session)."""
    pytest.importorskip("torch")
    out = tmp_path_factory.mktemp("exports")
    cache: dict[str, Path] = {}

    def get(fusion: str) -> Path:
        if fusion not in cache:
            cache[fusion] = _export(fusion, out)
        return cache[fusion]

    return get


@pytest.fixture(scope="session")
def recognizer(exported):
    from mer.runtime import Recognizer

    with Recognizer(exported("ia"), backend="cpu") as rec:
        yield rec
