"""Train the audio branch alone on RAVDESS speech, fold by fold (actor-disjoint).

The epoch is chosen on the fold's validation actors; the test actors are scored at that epoch
only. Features come from the runtime's decoder and NumPy MFCC (see audio_cache).
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
from .audio_cnn import AudioCNN
from .metrics import summarise
from .ravdess import Fold


@dataclasses.dataclass
class AudioRecipe:
    epochs: int = 30
    batch: int = 32
    lr: float = 2e-3
    weight_decay: float = 0.05
    input_norm: str = "none"
    augment: bool = True
    time_masks: int = 2          # SpecAugment-style masks on the MFCC frames
    mixup: float = 0.0
    speed: float = 0.0           # speed perturbation: factor within 1 +- speed
    seed: int = 1


@torch.no_grad()
def predict(model: torch.nn.Module, feats: np.ndarray) -> np.ndarray:
    model.eval()
    return np.concatenate([model(torch.from_numpy(feats[i:i + 256])).argmax(1).numpy()
                           for i in range(0, len(feats), 256)])


def _mask_time(x: np.ndarray, rng: np.random.Generator, n: int, width: int = 12) -> np.ndarray:
    for row in x:
        for _ in range(n):
            w = rng.integers(0, width + 1)
            s = rng.integers(0, row.shape[1] - w + 1)
            row[:, s:s + w] = row.mean(1, keepdims=True)
    return x


def train_fold(cache: SpeechCache, spec: FeatureSpec, fold: Fold, recipe: AudioRecipe, out: Path | None = None,
               log=print, keep_last: bool = False) -> dict:
    """Train on fold.train; keep the best epoch on fold.val (or the last); score fold.test."""
    torch.manual_seed(recipe.seed)
    rng = np.random.default_rng(recipe.seed)
    tr, va, te = cache.select(fold.train), cache.select(fold.val), cache.select(fold.test)
    val_x, test_x = mfcc_batch(cache, va, spec), mfcc_batch(cache, te, spec)
    model = AudioCNN(spec.n_mfcc, 8, recipe.input_norm)
    opt = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    steps = recipe.epochs * int(np.ceil(len(tr) / recipe.batch))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=recipe.lr, total_steps=steps, pct_start=0.1)
    best, history = None, []
    for epoch in range(recipe.epochs):
        model.train()
        t0, losses = time.time(), []
        order = rng.permutation(tr)
        for s in range(0, len(order), recipe.batch):
            idx = order[s:s + recipe.batch]
            x = mfcc_batch(cache, idx, spec, rng if recipe.augment else None, speed=recipe.speed)
            if recipe.augment and recipe.time_masks:
                x = _mask_time(x, rng, recipe.time_masks)
            y = torch.from_numpy(cache.labels[idx])
            xt = torch.from_numpy(x)
            if recipe.mixup > 0:
                lam = float(rng.beta(recipe.mixup, recipe.mixup))
                perm = torch.from_numpy(rng.permutation(len(idx)))
                logits = model(lam * xt + (1 - lam) * xt[perm])
                loss = lam * F.cross_entropy(logits, y) + (1 - lam) * F.cross_entropy(logits, y[perm])
            else:
                loss = F.cross_entropy(model(xt), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step(); sched.step()
            losses.append(loss.item())
        val = summarise(cache.labels[va], predict(model, val_x))
        row = {"epoch": epoch, "loss": float(np.mean(losses)), "val_accuracy": val["accuracy"], "val_uar": val["uar"],
               "seconds": round(time.time() - t0, 1)}
        history.append(row)
        log(json.dumps({"fold": fold.name, **row}))
        if best is None or keep_last or val["accuracy"] > best["val"]["accuracy"]:
            best = {"epoch": epoch, "val": val, "state": {k: v.clone() for k, v in model.state_dict().items()}}
    # The last epoch's test score too: a fixed epoch count with no selection is how the shipped
    # model is made (trained on every actor, nothing left to select on).
    test_last = summarise(cache.labels[te], predict(model, test_x))
    model.load_state_dict(best["state"])
    test = summarise(cache.labels[te], predict(model, test_x))
    result = {"fold": fold.name, "test_actors": fold.test, "val_actors": fold.val, "best_epoch": best["epoch"],
              "val": best["val"], "test": test, "test_last_epoch": test_last, "history": history,
              "recipe": dataclasses.asdict(recipe)}
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        torch.save({"state_dict": best["state"], "input_norm": recipe.input_norm, "spec": spec.to_json(),
                    "fold": fold.name}, out / f"audio-{fold.name}.pt")
        (out / f"audio-{fold.name}.json").write_text(json.dumps(result, indent=1))
    return result
