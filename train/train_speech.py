"""The audio branch on several corpora: balanced draws over corpus and class, recording-condition views.

Each epoch draws `draws` utterances with replacement, weighted so that every corpus carries the
same mass and, within a corpus, every class it has the same mass: TESS (2,800 clips, 2 speakers)
cannot drown EMO-DB (454), and RAVDESS's neutral (half its other classes) is not under-learnt.
Each draw takes one random view of the utterance (speech_views: clean or a recording condition).
Evaluation always uses the clean view (view 0): the runtime's window of the real file.
"""
from __future__ import annotations

import dataclasses
import json
import time

import numpy as np
import torch
import torch.nn.functional as F

from .audio_cnn import AudioCNN
from .metrics import summarise
from .speech_views import SpeechViews, other_views
from .train_audio import _mask_time


@dataclasses.dataclass
class SpeechRecipe:
    n_mfcc: int = 10
    input_norm: str = "level"    # c0's mean removed (audio_cnn.AudioCNN.normalise)
    width: int = 1               # AudioCNN inner-layer width multiplier
    dilation: int = 1            # AudioCNN block i dilated by dilation ** i
    epochs: int = 32             # 16 under-fitted five corpora (fold test03-06: 44-51 %; 32 epochs: 54-64 %)
    draws: int = 4000            # utterances per epoch
    batch: int = 64
    lr: float = 3e-3
    weight_decay: float = 0.05
    time_masks: int = 2
    label_smoothing: float = 0.05
    ravdess_share: float = 0.5   # > 0: RAVDESS's share of the draws (the rest balanced over the others)
    average_last: int = 0        # > 0: the last model is the mean of the last N epochs' weights (see average_weights)
    consistency: float = 0.0     # > 0: each batch holds two views of every utterance drawn, and this weighs the
                                 # Jensen-Shannon divergence between their predictions (see consistency_loss)
    seed: int = 1


def balanced_weights(views: SpeechViews, idx: np.ndarray, shares: dict[str, float] | None = None) -> np.ndarray:
    """Draw probabilities over `idx`: each corpus equal mass (or the mass given in `shares`, the
    rest split equally among the others), each of its classes equal mass."""
    corpus, labels = views.corpus[idx], views.labels[idx]
    w = np.zeros(len(idx))
    names = np.unique(corpus)
    shares = {c: s for c, s in (shares or {}).items() if c in names and s > 0}
    rest = (1.0 - sum(shares.values())) / max(1, len(names) - len(shares))
    for c in names:
        in_c = corpus == c
        classes = np.unique(labels[in_c])
        for k in classes:
            cell = in_c & (labels == k)
            w[cell] = shares.get(c, rest) / (len(classes) * cell.sum())
    return w / w.sum()


@torch.no_grad()
def logits_of(model: torch.nn.Module, feats: np.ndarray) -> np.ndarray:
    model.eval()
    return np.concatenate([model(torch.from_numpy(feats[i:i + 512])).numpy() for i in range(0, len(feats), 512)])


def score(views: SpeechViews, model: torch.nn.Module, idx: np.ndarray, n_mfcc: int) -> dict:
    """Accuracy and UAR (over the classes present) on the clean views of `idx`, argmax over all 8."""
    return summarise(views.labels[idx], logits_of(model, views.features(idx, 0, n_mfcc)).argmax(1))


def _drawn_batches(views: SpeechViews, train: np.ndarray, p: np.ndarray, recipe: SpeechRecipe,
                   rng: np.random.Generator, draws: int):
    """(features, labels) batches of `draws` balanced draws, each a random view, time-masked."""
    drawn = rng.choice(train, size=draws, p=p)
    for s in range(0, len(drawn), recipe.batch):
        idx = drawn[s:s + recipe.batch]
        x = views.features(idx, rng.integers(0, views.mfcc.shape[1], len(idx)), recipe.n_mfcc)
        yield torch.from_numpy(_mask_time(x, rng, recipe.time_masks)), torch.from_numpy(views.labels[idx])


def _paired_batches(views: SpeechViews, train: np.ndarray, p: np.ndarray, recipe: SpeechRecipe,
                    rng: np.random.Generator, draws: int):
    """Like _drawn_batches, but each batch is batch/2 utterances seen twice, in two different random
    views (clean or a recording condition): rows [:n] and [n:] are the same utterances. The same
    number of rows per epoch, so the cost per epoch does not change."""
    drawn = rng.choice(train, size=draws // 2, p=p)
    n_views = views.mfcc.shape[1]
    for s in range(0, len(drawn), recipe.batch // 2):
        idx = drawn[s:s + recipe.batch // 2]
        first = rng.integers(0, n_views, len(idx))
        second = other_views(first, n_views, rng)
        x = np.concatenate([views.features(idx, first, recipe.n_mfcc), views.features(idx, second, recipe.n_mfcc)])
        yield torch.from_numpy(_mask_time(x, rng, recipe.time_masks)), torch.from_numpy(np.tile(views.labels[idx], 2))


def consistency_loss(logits: torch.Tensor) -> torch.Tensor:
    """Jensen-Shannon divergence between the predictions of rows [:n] and [n:] (two views of the same
    utterances), as AugMix's consistency term (Hendrycks et al., ICLR 2020).

    Why: the recording must not decide the emotion. Cross-entropy on each view alone only asks both
    to be right; on the many utterances the branch gets wrong or nearly wrong it lets a noise or a
    codec move the answer, which is what the robustness test counts (a label kept under a condition)."""
    p_a, p_b = logits.float().softmax(1).chunk(2)
    log_m = ((p_a + p_b) / 2).clamp_min(1e-7).log()
    return (F.kl_div(log_m, p_a, reduction="batchmean") + F.kl_div(log_m, p_b, reduction="batchmean")) / 2


@torch.no_grad()
def view_agreement(views: SpeechViews, model: torch.nn.Module, idx: np.ndarray, n_mfcc: int) -> float:
    """Share of the recording-condition views (1..) of `idx` given the label of their clean view:
    the robustness test's measure, on the cached views of held-out speakers."""
    clean = logits_of(model, views.features(idx, 0, n_mfcc)).argmax(1)
    kept = [logits_of(model, views.features(idx, v, n_mfcc)).argmax(1) == clean for v in range(1, views.mfcc.shape[1])]
    return float(np.mean(kept))


@torch.no_grad()
def average_weights(model: torch.nn.Module, states: list[dict], batches) -> None:
    """Load the mean of `states` into `model`, then re-estimate its batch-norm statistics on `batches`.

    Why: one fold's accuracy swings by +-5 points with the epoch it stops at (test03-06: 54.6-64.2 %
    over epochs and runs); the mean of the last epochs' weights sits between those minima and
    swings less. Averaged weights no longer match the running statistics any epoch collected, so
    those are measured again, as SWA does (Izmailov et al., UAI 2018)."""
    mean = {k: torch.stack([s[k].float() for s in states]).mean(0).to(states[0][k].dtype) for k in states[0]}
    model.load_state_dict(mean)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative mean over every batch below
    model.train()
    for x, _ in batches:
        model(x)
    for m in norms:
        m.momentum = 0.1
    model.eval()


def train_speech(views: SpeechViews, train: np.ndarray, recipe: SpeechRecipe, evals: dict[str, np.ndarray],
                 select_on: str | None = None, log=print) -> tuple[dict, dict]:
    """Train on `train`; score every set in `evals` each epoch (clean views). The epoch kept is the
    best on `evals[select_on]` (accuracy), or the last one; with recipe.average_last, the mean of
    the last epochs' weights instead. Returns (state_dict, result)."""
    torch.manual_seed(recipe.seed)
    rng = np.random.default_rng(recipe.seed)
    model = AudioCNN(recipe.n_mfcc, 8, recipe.input_norm, recipe.width, recipe.dilation)
    opt = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    steps_per_epoch = int(np.ceil(recipe.draws / recipe.batch))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=recipe.lr, total_steps=recipe.epochs * steps_per_epoch,
                                                pct_start=0.1)
    p = balanced_weights(views, train, {"ravdess": recipe.ravdess_share})
    eval_feats = {name: views.features(idx, 0, recipe.n_mfcc) for name, idx in evals.items()}
    best, history, kept = None, [], []
    for epoch in range(recipe.epochs):
        model.train()
        t0, losses = time.time(), []
        batches = (_paired_batches if recipe.consistency > 0 else _drawn_batches)(views, train, p, recipe, rng,
                                                                                     recipe.draws)
        for x, y in batches:
            logits = model(x)
            loss = F.cross_entropy(logits, y, label_smoothing=recipe.label_smoothing)
            if recipe.consistency > 0:
                loss = loss + recipe.consistency * consistency_loss(logits)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step(); sched.step()
            losses.append(loss.item())
        scores = {name: summarise(views.labels[evals[name]], logits_of(model, f).argmax(1))
                  for name, f in eval_feats.items()}
        row = {"epoch": epoch, "loss": round(float(np.mean(losses)), 4), "seconds": round(time.time() - t0, 1),
               **{f"{name}_acc": round(s["accuracy"], 4) for name, s in scores.items()}}
        history.append(row)
        log(json.dumps(row))
        if epoch >= recipe.epochs - recipe.average_last:
            kept.append({k: v.clone() for k, v in model.state_dict().items()})
        if best is None or select_on is None or scores[select_on]["accuracy"] > best["scores"][select_on]["accuracy"]:
            best = {"epoch": epoch, "scores": scores, "state": {k: v.clone() for k, v in model.state_dict().items()}}
    result = {"best_epoch": best["epoch"], "selected_on": select_on, "scores": best["scores"], "last_epoch": scores,
              "history": history, "recipe": dataclasses.asdict(recipe)}
    if recipe.average_last:
        # The averaged model replaces the last epoch (what ships); the plain last epoch is kept beside it.
        average_weights(model, kept, _drawn_batches(views, train, p, recipe, rng, recipe.draws))
        scores = {name: summarise(views.labels[evals[name]], logits_of(model, f).argmax(1))
                  for name, f in eval_feats.items()}
        # Averaging replaces epoch selection: it is what is kept, also where a selection was asked for.
        result.update(last_epoch=scores, scores=scores, best_epoch=recipe.epochs - 1,
                      last_epoch_not_averaged=result["last_epoch"], selected_not_averaged=result["scores"])
        log(json.dumps({"epoch": f"mean of the last {recipe.average_last}",
                        **{f"{name}_acc": round(s["accuracy"], 4) for name, s in scores.items()}}))
        best = {"state": model.state_dict()}
    # How often a recording condition changes the answer, for the model that ships (the last epoch).
    result["view_agreement"] = {name: round(view_agreement(views, model, idx, recipe.n_mfcc), 4)
                                for name, idx in evals.items()}
    log(json.dumps({"view_agreement": result["view_agreement"]}))
    return best["state"], result
