"""Index a RAVDESS tree as users have it, and actor-disjoint folds always named by actor.

File names are `MM-VV-EE-II-SS-RR-AA.ext`: modality (01 audio-video, 02 video-only, 03 audio-only),
vocal channel (01 speech, 02 song), emotion 01-08 (mer's label order), intensity, statement,
repetition, actor. An audiovisual take (01-*) is paired with its audio twin (03-*, same fields).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

HELD_OUT_ACTORS = (1, 2)  # reserved test speakers: never train, tune or select on them
_NAME = re.compile(r"^(0[123])-(0[12])-(0[1-8])-(0[12])-(0[12])-(0[12])-(\d\d)$")
MEDIA_EXT = {".wav", ".flac", ".mp3", ".m4a", ".mp4", ".avi", ".mkv", ".mov", ".webm"}


class RavdessError(ValueError):
    """A tree that is not RAVDESS-shaped."""


@dataclass(frozen=True)
class Take:
    """One utterance: its emotion, actor, and the files that carry it."""
    key: str                 # the name fields after the modality, e.g. "01-03-02-01-01-07"
    emotion: int             # 0..7 in mer.runtime.LABELS order
    intensity: int           # 1 normal, 2 strong
    actor: int
    audio: Path | None       # 03-* audio-only file
    video: Path | None       # 01-* audiovisual file (02-* video-only when no 01-* exists)


def index_ravdess(root: Path, speech_only: bool = True) -> list[Take]:
    """All takes under `root` (any folder layout), sorted by actor then key.

    Raises RavdessError when the tree has no RAVDESS-named media or names clash.
    """
    root = Path(root)
    if not root.is_dir():
        raise RavdessError(f"{root}: not a directory")
    found: dict[str, dict[str, Path]] = {}
    bad: list[str] = []
    for path in sorted(root.rglob("*")):
        if path.suffix.lower() not in MEDIA_EXT or not path.is_file():
            continue
        m = _NAME.match(path.stem)
        if not m:
            bad.append(path.name)
            continue
        modality, channel = m.group(1), m.group(2)
        if speech_only and channel != "01":
            continue
        key = path.stem[3:]
        slot = found.setdefault(key, {})
        if modality in slot:
            raise RavdessError(f"{path}: duplicate of {slot[modality]}")
        slot[modality] = path
    if not found:
        hint = f" (e.g. {bad[0]!r} is not a RAVDESS name)" if bad else ""
        raise RavdessError(f"{root}: no RAVDESS media files found{hint}")
    takes = []
    for key, slot in found.items():
        fields = key.split("-")
        takes.append(Take(key=key, emotion=int(fields[1]) - 1, intensity=int(fields[2]), actor=int(fields[5]),
                          audio=slot.get("03"), video=slot.get("01") or slot.get("02")))
    return sorted(takes, key=lambda t: (t.actor, t.key))


@dataclass(frozen=True)
class Fold:
    name: str
    test: tuple[int, ...]
    val: tuple[int, ...]
    train: tuple[int, ...]


def _folds(tests: list[tuple[int, ...]], vals: list[tuple[int, ...]], actors: range) -> list[Fold]:
    return [Fold(f"test{test[0]:02d}-{test[-1]:02d}", test, val,
                 tuple(a for a in actors if a not in test and a not in val))
            for test, val in zip(tests, vals)]


def _quads(*starts: int) -> list[tuple[int, ...]]:
    return [tuple(range(s, s + 4)) for s in starts]


# The paper's folds (needs all 24 actors): test 1-4, 5-8, ..., 17-20; validation the next four.
PAPER = _folds(_quads(1, 5, 9, 13, 17), _quads(5, 9, 13, 17, 21), range(1, 25))
# The actors at hand (03-24; 01-02 are held out): test 3-6, 7-10, 11-14, 15-18, 19-24;
# validation the next group's first four, the last fold validating on 3-6.
AT_HAND = _folds(_quads(3, 7, 11, 15) + [tuple(range(19, 25))], _quads(7, 11, 15, 19, 3), range(3, 25))
PRESETS = {"paper": PAPER, "actors03-24": AT_HAND}


def check_no_held_out(takes: list[Take]) -> list[Take]:
    """Drop takes of the held-out actors (01, 02) so nothing trains, tunes or selects on them."""
    return [t for t in takes if t.actor not in HELD_OUT_ACTORS]
