"""Emotional speech corpora beyond RAVDESS, indexed onto mer's eight labels, speaker by speaker.

Every corpus names its emotions its own way; the maps below are the one place that says how
they land on mer's labels (`LABELS`). What is dropped, and why:
- EMO-DB *boredom*: no mer class is near it (it is low-arousal and negative; calling it calm or
  sad would teach the branch that boredom sounds like either).
- TESS *pleasant surprise* becomes *surprised*: mer's surprised is not marked for valence.
- TurEV-DB *calm* is kept as *calm*: with RAVDESS, the only other corpus that separates calm from
  neutral.
Speakers are prefixed by the corpus ("emodb:03"), so splits are speaker-disjoint across corpora.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mer.runtime.spec import LABELS

from .ravdess import check_no_held_out, index_ravdess

CORPORA = ("ravdess", "tess", "emodb", "urdu", "turev")
L = {name: i for i, name in enumerate(LABELS)}

TESS = {"angry": L["angry"], "disgust": L["disgust"], "fear": L["fearful"], "happy": L["happy"],
        "neutral": L["neutral"], "pleasant_surprise": L["surprised"], "ps": L["surprised"], "sad": L["sad"]}
EMODB = {"W": L["angry"], "L": None, "N": L["neutral"], "F": L["happy"], "A": L["fearful"], "T": L["sad"],
         "E": L["disgust"]}
URDU = {"Angry": L["angry"], "Happy": L["happy"], "Neutral": L["neutral"], "Sad": L["sad"]}
TUREV = {"Angry": L["angry"], "Sad": L["sad"], "Calm": L["calm"], "Happy": L["happy"]}
AUDIO = {".opus", ".wav", ".flac", ".ogg", ".mp3"}


class CorpusError(ValueError):
    """A corpus folder that is missing or not shaped as its README says."""


@dataclass(frozen=True)
class Utterance:
    path: Path
    corpus: str
    speaker: str   # "<corpus>:<id>"
    label: int     # index into LABELS


def _files(root: Path) -> list[Path]:
    if not root.is_dir():
        raise CorpusError(f"{root}: not a directory")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in AUDIO and p.is_file())
    if not files:
        raise CorpusError(f"{root}: no audio files")
    return files


def _tess(root: Path) -> list[Utterance]:
    out = []
    for p in _files(root):
        speaker, _, emotion = p.parent.name.partition("_")  # folder OAF_angry, YAF_pleasant_surprise
        out.append(Utterance(p, "tess", f"tess:{speaker.upper()}", TESS[emotion.lower()]))
    return out


def _emodb(root: Path) -> list[Utterance]:
    out = []
    for p in _files(root):
        label = EMODB[p.stem[5]]  # 03a01Fa: speaker 03, text a01, emotion F, version a
        if label is not None:
            out.append(Utterance(p, "emodb", f"emodb:{p.stem[:2]}", label))
    return out


def _by_folder(corpus: str, labels: dict[str, int]):
    def index(root: Path) -> list[Utterance]:
        # The speaker id is the name's first field: SM1_F10_A010 (URDU), 1157_kz_acik (TurEV-DB).
        return [Utterance(p, corpus, f"{corpus}:{p.stem.split('_')[0]}", labels[p.parent.name]) for p in _files(root)]
    return index


def ravdess_speaker(actor: int) -> str:
    """The speaker id of a RAVDESS actor, as the index names it."""
    return f"ravdess:{actor:02d}"


def _ravdess(root: Path) -> list[Utterance]:
    takes = check_no_held_out(index_ravdess(root))  # actors 01-02 are never trained or tuned on
    return [Utterance(t.audio, "ravdess", ravdess_speaker(t.actor), t.emotion) for t in takes if t.audio is not None]


INDEXERS = {"ravdess": _ravdess, "tess": _tess, "emodb": _emodb, "urdu": _by_folder("urdu", URDU),
            "turev": _by_folder("turev", TUREV)}


def corpus_root(data: Path, corpus: str) -> Path:
    return data / "ravdess_speech_16k" if corpus == "ravdess" else data / "speech_more" / corpus


def index_corpora(data: Path, corpora: tuple[str, ...] = CORPORA) -> list[Utterance]:
    """Every usable utterance of `corpora` under the shared data folder, in a stable order."""
    out = []
    for corpus in corpora:
        try:
            out.extend(INDEXERS[corpus](corpus_root(data, corpus)))
        except KeyError as exc:
            raise CorpusError(f"{corpus_root(data, corpus)}: unexpected emotion name {exc}") from None
    return out
