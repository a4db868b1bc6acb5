"""The face-alone classifier: a linear read of the face trunk's features, fitted on the trunk's own
training faces, that answers, with the fusion head, for a clip given no speech
(MerModel.face_alone_logits; its share of the answer is chosen on FER+ valid by `mer-train face-alone`).

Why not the fusion head alone: it meets the face-alone case only through modality dropout, and
learns it from cached features of 15 views of one still, behind a temporal head fitted on the same
training faces. A linear classifier over the same features has far fewer ways to overfit them,
reads each frame as the trunk's own classifier was trained to, and measured better on held-out
faces (MODEL_CARD.md, *The face alone read by a classifier over the trunk*). The head, trained on
class-balanced draws, still finds rare classes more often, hence the mix.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .efficientface import FEATURE_DIM
from .face_features import FaceFeatures
from .pretrain_faces import TFEID_TEST_PERFORMERS

TFEID_REPEAT = 4  # TFEID's training photos count this many times, as in the trunk's own training


def training_rows(faces: FaceFeatures) -> np.ndarray:
    """Row indices of the trunk's own training faces: FER+ train once, TFEID's training performers
    TFEID_REPEAT times (colour photos at the runtime's framing, 900 against FER+'s 28,000)."""
    fer = np.flatnonzero(faces.source == "ferplus:train")
    tfeid = np.flatnonzero(faces.tfeid(TFEID_TEST_PERFORMERS)[0])
    return np.concatenate([fer] + [tfeid] * TFEID_REPEAT)


def fit(faces: FaceFeatures, epochs: int = 6, seed: int = 0, lr: float = 1e-3, batch: int = 512) -> nn.Linear:
    """A linear classifier over every cached view of the training rows, clean and degraded as video
    (faces.video, when cached): frames of a real clip are both. Calm is never a target (a face
    cannot tell it from neutral), so its logit learns to stay low."""
    rows = training_rows(faces)
    banks = [faces.feats] + ([faces.video] if faces.video is not None else [])
    x = torch.from_numpy(np.concatenate([b[rows].reshape(-1, FEATURE_DIM) for b in banks]).astype(np.float32))
    y = torch.from_numpy(np.tile(np.repeat(faces.labels[rows], faces.feats.shape[1]), len(banks)))
    torch.manual_seed(seed)
    fc = nn.Linear(FEATURE_DIM, 8)
    opt = torch.optim.AdamW(fc.parameters(), lr=lr, weight_decay=1e-2)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=gen)
        for s in range(0, len(x), batch):
            b = order[s:s + batch]
            loss = nn.functional.cross_entropy(fc(x[b]), y[b], label_smoothing=0.05)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return fc
