"""Frozen-trunk features of still faces, cached: the visual input of CPU fusion training.

Each face image gets VIEWS augmented views (small shifts, rotations, scale, flips, light jitter),
each passed once through the pretrained EfficientFace trunk at the model's internal face size.
A training "clip" is 15 frames drawn from one image's views: a face that moves a little, as in a
video. The trunk is frozen, so this is exact, and 4x cheaper than running it every epoch.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from .augment import augment, degrade, resize, to_float_nchw
from .efficientface import EfficientFaceTemporal
from .face_data import FaceSet

VIEWS = 4


@dataclass
class FaceFeatures:
    feats: np.ndarray    # float16 (N, VIEWS, 1024)
    labels: np.ndarray   # int64 (N,) mer label of each image
    source: np.ndarray   # str (N,): "ferplus:train", "tfeid:07", ...
    video: np.ndarray | None = None  # float16 (N, VIEWS, 1024): the same images as video degrades them, or None
    mirror: np.ndarray | None = None  # float16 (N, VIEWS, 1024): each view's mirror image (mirror_features), or None

    def tfeid(self, held_out: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
        """Masks of TFEID's photos: those of its training performers, and of the performers in `held_out`."""
        held = np.isin(self.source, [f"tfeid:{p}" for p in held_out])
        return np.char.startswith(self.source.astype(str), "tfeid:") & ~held, held

    def by_label(self, mask: np.ndarray) -> dict[int, np.ndarray]:
        """Image indices per label among `mask`; calm (1) borrows neutral (0) faces."""
        out = {c: np.flatnonzero(mask & (self.labels == c)) for c in range(8)}
        out[1] = out[0]
        return out

    def clip(self, i: int, rng: np.random.Generator, frames: int = 15, video: float = 0.0) -> np.ndarray:
        """(frames, 1024) features of a 'clip' of image i: views in a random walk; with `video` > 0 each
        frame is, with that probability, a degraded view instead (blurred, low-resolution, compressed,
        occluded: frames of a real clip differ from one another, and some are hard to read)."""
        views = rng.integers(0, self.feats.shape[1], size=frames)
        out = self.feats[i, views].astype(np.float32)
        if self.mirror is not None:  # as a model with mirror_faces reads a clip: frames 1, 3, ... mirrored
            out[1::2] = self.mirror[i, views[1::2]]
        if video > 0:  # only here: the clean path draws exactly what it always drew
            hit = rng.random(frames) < video
            out[hit] = self.video[i, views[hit]]
        return out


def _views(faces: FaceSet, size: int, views: int, batch: int, seed: int, video: bool):
    """Yield (first row, view, images) for each batch and view, augmented as `extract` says. One
    seeded generator per call, so a second pass draws exactly the same views (`mirror_features`)."""
    gen = torch.Generator().manual_seed(seed)
    for s in range(0, len(faces.labels), batch):
        x = to_float_nchw(torch.from_numpy(faces.images[s:s + batch]))
        for v in range(views):
            if video:
                xv = degrade(augment(x, size, gen, max_rot_deg=15, scale=(0.85, 1.15), shift=0.08, jitter=0.3,
                                     grey_p=0.2), gen, p=1.0)
            else:
                xv = resize(x, size) if v == 0 else augment(x, size, gen, max_rot_deg=8, scale=(0.9, 1.1),
                                                             shift=0.05, jitter=0.2, grey_p=0.0)
            yield s, v, xv


@torch.no_grad()
def extract(trunk: EfficientFaceTemporal, faces: FaceSet, size: int, views: int = VIEWS, batch: int = 128,
            seed: int = 0, desc: str = "faces", video: bool = False) -> np.ndarray:
    """(N, views, 1024) float16. View 0 is the plain image; the others are augmented. With `video`,
    every view is augmented harder (pose, scale, colour or grey) and degraded as video degrades a
    face (augment.degrade at p 1: blur or motion blur, a low-resolution source, JPEG, a covered
    mouth, each on about half the views)."""
    trunk.eval()
    out = np.zeros((len(faces.labels), views, trunk.conv5[0].out_channels), np.float16)
    total = -(-len(faces.labels) // batch) * views
    for s, v, xv in tqdm(_views(faces, size, views, batch, seed, video), total=total, desc=f"trunk features: {desc}",
                         unit="view", mininterval=30):
        out[s:s + len(xv), v] = trunk.forward_features(xv).numpy().astype(np.float16)
    return out


@torch.no_grad()
def mirror_features(trunk: EfficientFaceTemporal, faces: FaceSet, size: int, rows: np.ndarray, views: int = VIEWS,
                    batch: int = 128, seed: int = 0) -> np.ndarray:
    """(len(rows), views, 1024) float16: the trunk's features of the *mirror image* of each view
    `extract(..., seed=seed)` made of the images at `rows` (sorted): the same augmentations drawn
    again, only those rows passed through the trunk. A model with `mirror_faces` reads every other
    frame of a clip so (train/fusion.py; FaceFeatures.clip)."""
    trunk.eval()
    out = np.zeros((len(rows), views, trunk.conv5[0].out_channels), np.float16)
    for s, v, xv in _views(faces, size, views, batch, seed, video=False):
        lo, hi = np.searchsorted(rows, [s, s + len(xv)])
        if hi > lo:
            out[lo:hi, v] = trunk.forward_features(xv[rows[lo:hi] - s].flip(-1)).numpy().astype(np.float16)
    return out


def load_or_extract(path: Path, trunk: EfficientFaceTemporal, sets: dict[str, FaceSet], size: int,
                    video: bool = False) -> FaceFeatures:
    """Features of every image in `sets` (name -> FaceSet), cached at `path` (`video`: degraded views)."""
    if path.exists():
        blob = np.load(path)
        return FaceFeatures(blob["feats"], blob["labels"], blob["source"])
    feats, labels, source = [], [], []
    for name, faces in sets.items():
        feats.append(extract(trunk, faces, size, desc=f"{name}{' as video' if video else ''}", video=video,
                             seed=1 if video else 0))
        labels.append(faces.labels)
        source.append(np.array([f"{name}:{g}" for g in faces.groups]))
    result = FaceFeatures(np.concatenate(feats), np.concatenate(labels), np.concatenate(source))
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path.with_suffix(".tmp.npz"), feats=result.feats, labels=result.labels, source=result.source)
    path.with_suffix(".tmp.npz").replace(path)
    return result
