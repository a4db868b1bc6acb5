"""Speech of every corpus as the runtime sees it, under several recording conditions, cached once.

Each utterance is decoded once by the runtime's decoder; view 0 is its clean runtime window, views
1.. are the same utterance under a random recording condition (speech_augment.random_recording)
with the window shifted by up to ±0.25 s, and 30 % of them cut to a short recording (0.6-2 s):
users' clips can be a word long, and a branch that only heard 2-4 s utterances labels a 1 s word
by its length (a first leave-TurEV-DB-out run, single words, called 95 % of them fearful). MFCCs are stored with MAX_MFCC coefficients: the DCT is
orthonormal, so the first k rows are exactly the k-coefficient MFCC, and one cache serves every
n_mfcc up to MAX_MFCC. Building costs ~20 ms a view (the codecs); training then reads features.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import multiprocessing
import time
from pathlib import Path

import numpy as np

from mer.runtime.mfcc import mfcc
from mer.runtime.spec import FeatureSpec

from .audio_cache import cut_window, decode_cached
from .ravdess import Fold
from .speech_augment import random_recording
from .speech_corpora import Utterance, ravdess_speaker

VIEWS = 6
MAX_MFCC = 40
MAX_SHIFT_S = 0.25
SHORT_P, SHORT_S = 0.3, (0.6, 2.0)  # share of views cut to a short recording, and its length range
VERSION = 2  # bump when the augmentation changes: the cache name changes with it


@dataclasses.dataclass
class SpeechViews:
    mfcc: np.ndarray        # float32 (N, VIEWS, MAX_MFCC, T), memory-mapped
    labels: np.ndarray      # int64 (N,)
    corpus: np.ndarray      # str (N,)
    speaker: np.ndarray     # str (N,), "<corpus>:<id>"
    paths: list[str]

    def features(self, idx: np.ndarray, views: np.ndarray | int, n_mfcc: int) -> np.ndarray:
        """(len(idx), n_mfcc, T) float32: view `views` (one per index, or one for all) of each."""
        views = np.broadcast_to(np.asarray(views), idx.shape)
        order = np.argsort(idx, kind="stable")  # memory-map reads in file order
        out = np.empty((len(idx), n_mfcc, self.mfcc.shape[-1]), np.float32)
        out[order] = self.mfcc[idx[order], views[order], :n_mfcc]
        return out

    def where(self, corpus: str | None = None, speakers=None, exclude_corpus: str | None = None) -> np.ndarray:
        mask = np.ones(len(self.labels), bool)
        if corpus is not None:
            mask &= self.corpus == corpus
        if exclude_corpus is not None:
            mask &= self.corpus != exclude_corpus
        if speakers is not None:
            mask &= np.isin(self.speaker, list(speakers))
        return np.flatnonzero(mask)


def other_views(first: np.ndarray, n_views: int, rng: np.random.Generator) -> np.ndarray:
    """For each view index in `first`, a random different one: the second view of a consistency pair."""
    return (first + rng.integers(1, n_views, len(first))) % n_views


@dataclasses.dataclass
class SpeechSplit:
    name: str
    train: np.ndarray   # indices into the SpeechViews
    val: np.ndarray
    test: np.ndarray


def fold_split(views: SpeechViews, fold: Fold, corpora: tuple[str, ...]) -> SpeechSplit:
    """A RAVDESS actor fold: its training actors plus every speaker of the other `corpora` train;
    validation and test are its RAVDESS actors only."""
    def actors(group) -> np.ndarray:
        return views.where("ravdess", [ravdess_speaker(a) for a in group])

    others = np.flatnonzero(np.isin(views.corpus, [c for c in corpora if c != "ravdess"]))
    return SpeechSplit(fold.name, np.concatenate([actors(fold.train), others]), actors(fold.val), actors(fold.test))


def _views_of(args) -> tuple[list[int], np.ndarray]:
    """Worker: the views of one chunk of utterances (babble comes from the chunk's other voices)."""
    chunk, spec, views, seed = args
    spec40 = dataclasses.replace(spec, n_mfcc=MAX_MFCC)
    decoded = [decode_cached(Path(path), spec) for _, path in chunk]
    voices = [audio[: int(duration * spec.sample_rate)] for audio, duration in decoded]
    out = np.zeros((len(chunk), views, MAX_MFCC, spec.n_frames_audio), np.float32)
    for j, ((i, _), (audio, duration)) in enumerate(zip(chunk, decoded)):
        rng = np.random.default_rng([seed, i])
        others = voices[:j] + voices[j + 1:]
        for v in range(views):
            if v == 0:
                wave = cut_window(audio, duration, spec)
            else:
                heard, length = audio, duration
                if rng.random() < SHORT_P and duration > SHORT_S[0]:
                    # A short recording: a stretch of the utterance as a file of its own (a word, a
                    # clip cut by a user), end-padded in the window as the runtime pads short files.
                    length = float(rng.uniform(SHORT_S[0], min(SHORT_S[1], duration)))
                    start = int(rng.uniform(0, duration - length) * spec.sample_rate)
                    heard = np.zeros_like(audio)
                    heard[:int(length * spec.sample_rate)] = audio[start:start + int(length * spec.sample_rate)]
                else:
                    heard = audio.copy()
                m = int(length * spec.sample_rate)
                heard[:m] = random_recording(heard[:m], spec.sample_rate, rng, others)
                wave = cut_window(heard, length, spec, float(rng.uniform(-MAX_SHIFT_S, MAX_SHIFT_S)))
            out[j, v] = mfcc(wave, spec40)
    return [i for i, _ in chunk], out


def build_views(utterances: list[Utterance], spec: FeatureSpec, cache_dir: Path, views: int = VIEWS,
                seed: int = 0, workers: int = 2, log=print) -> SpeechViews:
    """The views of every utterance, built (resumably: chunks already written are kept) or loaded."""
    key = json.dumps([[str(u.path) for u in utterances], spec.to_json(), views, seed, VERSION])
    name = f"speech-views-{hashlib.sha1(key.encode()).hexdigest()[:12]}"
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    array_path, done_path = cache_dir / f"{name}.npy", cache_dir / f"{name}.done.npy"
    shape = (len(utterances), views, MAX_MFCC, spec.n_frames_audio)
    if array_path.exists():
        feats = np.load(array_path, mmap_mode="r+")
        done = np.load(done_path)
    else:
        feats = np.lib.format.open_memmap(array_path, "w+", np.float32, shape)
        done = np.zeros(len(utterances), bool)
    todo = [(i, str(utterances[i].path)) for i in np.flatnonzero(~done)]
    if todo:
        chunks = [(todo[s:s + 32], spec, views, seed) for s in range(0, len(todo), 32)]
        t0 = time.time()
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            for k, (idx, out) in enumerate(pool.imap_unordered(_views_of, chunks)):
                feats[idx] = out
                done[idx] = True
                if k % 10 == 0 or k == len(chunks) - 1:
                    feats.flush()
                    np.save(done_path, done)
                    log(f"speech views: {done.sum()}/{len(done)} utterances ({time.time() - t0:.0f} s)")
        feats.flush()
        np.save(done_path, done)
    feats = np.load(array_path, mmap_mode="r")
    return SpeechViews(feats, np.array([u.label for u in utterances]), np.array([u.corpus for u in utterances]),
                       np.array([u.speaker for u in utterances]), [str(u.path) for u in utterances])
