"""CPU fusion recipe: frozen pretrained face trunk (cached features), RAVDESS speech, modality dropout.

No paired RAVDESS video exists here, so each utterance is paired, afresh every epoch, with a
still face of the same emotion (calm utterances with neutral faces: faces carry no calm), shown
as a 15-frame clip of slightly moving views. Faces are split three ways so no evaluation face
was ever trained on: train = FER+ train + TFEID train performers, validation = FER+ valid,
test = FER+ test + TFEID test performers. Speakers are split by the fold's actors.

Modality dropout ("hard", the exact part of the paper's soft-hard scheme that cached features
allow): each batch is tripled with (zero MFCC, faces) and (MFCC, no-face faces), where "no face"
is the trunk's feature of an all-zero image, exactly what the runtime feeds when no face is found.
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from mer.runtime.spec import FeatureSpec

from .audio_cache import SpeechCache, mfcc_batch
from .face_features import FaceFeatures
from .fusion import MerModel
from .metrics import summarise
from .ravdess import Fold


@dataclasses.dataclass
class FusionRecipe:
    fusion: str = "ia"
    epochs: int = 15
    batch: int = 16
    lr: float = 1e-3
    weight_decay: float = 0.05
    face_size: int = 112
    audio_norm: str = "none"
    speed: float = 0.0           # speed perturbation of the speech (see audio_cache.mfcc_batch)
    seed: int = 1


@dataclasses.dataclass
class FacePools:
    train: dict[int, np.ndarray]
    val: dict[int, np.ndarray]
    test: dict[int, np.ndarray]

    @classmethod
    def split(cls, faces: FaceFeatures, tfeid_test: tuple[str, ...]) -> "FacePools":
        src = faces.source
        tfeid_held = np.isin(src, [f"tfeid:{p}" for p in tfeid_test])
        train = (src == "ferplus:train") | (np.char.startswith(src.astype(str), "tfeid:") & ~tfeid_held)
        return cls(faces.by_label(train), faces.by_label(src == "ferplus:valid"),
                   faces.by_label((src == "ferplus:test") | tfeid_held))


def pair_faces(labels: np.ndarray, pool: dict[int, np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """One face image of the same emotion for each utterance label."""
    return np.array([rng.choice(pool[int(c)]) for c in labels])


def video_batch(faces: FaceFeatures, images: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
    """(B * 15, 1024) trunk features of one moving 'clip' per image."""
    return torch.from_numpy(np.concatenate([faces.clip(int(i), rng) for i in images]))


@torch.no_grad()
def no_face_feature(model: MerModel) -> torch.Tensor:
    """The trunk's feature of an all-zero face: the runtime's input when no face is found."""
    model.visual_model.eval()
    zeros = torch.zeros(1, 15, model.image_size, model.image_size, 3, dtype=torch.uint8)
    return model.visual_model.forward_features(model.prepare_faces(zeros))[:1]


@torch.no_grad()
def evaluate(model: MerModel, video: torch.Tensor, audio: np.ndarray, labels: np.ndarray,
             blank: torch.Tensor) -> dict:
    """Accuracy with both modalities, audio only (no-face video) and video only (zero MFCC)."""
    model.eval()
    n = len(labels)
    out = {}
    for name, v, a in (("audiovisual", video, audio), ("audio_only", blank.expand(n * 15, -1), audio),
                       ("video_only", video, np.zeros_like(audio))):
        logits = torch.cat([model.forward_features(v[s * 15:(s + 64) * 15], torch.from_numpy(a[s:s + 64]))
                            for s in range(0, n, 64)])
        out[name] = summarise(labels, logits.argmax(1).numpy())
    return out


def build_model(recipe: FusionRecipe, spec: FeatureSpec, trunk_state: dict, audio_state: dict | None) -> MerModel:
    model = MerModel(recipe.fusion, n_mfcc=spec.n_mfcc, face_size=recipe.face_size, audio_norm=recipe.audio_norm)
    missing, unexpected = model.visual_model.load_state_dict(trunk_state, strict=False)
    assert not unexpected and all(k.startswith(("conv1d", "classifier")) for k in missing), (missing, unexpected)
    if audio_state is not None:
        model.audio_model.load_state_dict(audio_state)
    for name, p in model.visual_model.named_parameters():
        p.requires_grad = name.startswith("conv1d")  # the trunk stays frozen; the temporal head trains
    return model


def train_fusion_fold(cache: SpeechCache, faces: FaceFeatures, pools: FacePools, spec: FeatureSpec, fold: Fold,
                      recipe: FusionRecipe, trunk_state: dict, audio_state: dict | None, log=print,
                      keep_last: bool = False) -> tuple[MerModel, dict]:
    """Train on fold.train, keep the best epoch on fold.val (or the last one), score fold.test."""
    torch.manual_seed(recipe.seed)
    rng = np.random.default_rng(recipe.seed)
    model = build_model(recipe, spec, trunk_state, audio_state)
    blank = no_face_feature(model)
    tr, va, te = cache.select(fold.train), cache.select(fold.val), cache.select(fold.test)
    eval_rng = np.random.default_rng(1234)  # fixed pairings: every epoch and run sees the same eval set
    val_set = (video_batch(faces, pair_faces(cache.labels[va], pools.val, eval_rng), eval_rng),
               mfcc_batch(cache, va, spec), cache.labels[va])
    test_set = (video_batch(faces, pair_faces(cache.labels[te], pools.test, eval_rng), eval_rng),
                mfcc_batch(cache, te, spec), cache.labels[te])
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    steps = recipe.epochs * int(np.ceil(len(tr) / recipe.batch))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=recipe.lr, total_steps=steps, pct_start=0.1)
    best, history = None, []
    for epoch in range(recipe.epochs):
        model.train()
        model.visual_model.apply(lambda m: m.eval() if isinstance(m, torch.nn.BatchNorm2d) else None)
        t0, losses = time.time(), []
        order = rng.permutation(tr)
        for s in range(0, len(order), recipe.batch):
            idx = order[s:s + recipe.batch]
            y = torch.from_numpy(cache.labels[idx])
            video = video_batch(faces, pair_faces(cache.labels[idx], pools.train, rng), rng)
            audio = torch.from_numpy(mfcc_batch(cache, idx, spec, rng, speed=recipe.speed))
            b = len(idx)
            # Hard modality dropout: originals, (no audio, video), (audio, no face).
            video3 = torch.cat([video, video, blank.expand(b * 15, -1)])
            audio3 = torch.cat([audio, torch.zeros_like(audio), audio])
            loss = F.cross_entropy(model.forward_features(video3, audio3), y.repeat(3))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step(); sched.step()
            losses.append(loss.item())
        val = evaluate(model, *val_set, blank)
        row = {"epoch": epoch, "loss": float(np.mean(losses)), "seconds": round(time.time() - t0, 1),
               **{f"val_{k}": v["accuracy"] for k, v in val.items()}}
        history.append(row)
        log(json.dumps({"fold": fold.name, "fusion": recipe.fusion, **row}))
        if best is None or keep_last or val["audiovisual"]["accuracy"] > best["val"]["audiovisual"]["accuracy"]:
            best = {"epoch": epoch, "val": val, "state": {k: v.clone() for k, v in model.state_dict().items()}}
    test_last = evaluate(model, *test_set, blank)  # fixed epoch count, no selection: the shipped protocol
    model.load_state_dict(best["state"])
    test = evaluate(model, *test_set, blank)
    return model, {"fold": fold.name, "fusion": recipe.fusion, "test_actors": fold.test, "val_actors": fold.val,
                   "best_epoch": best["epoch"], "val": best["val"], "test": test, "test_last_epoch": test_last,
                   "history": history, "recipe": dataclasses.asdict(recipe)}
