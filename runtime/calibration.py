"""Calibration maths, torch-free: temperature scaling, its fit, and how to check it.

Logits become logits / T before the softmax, one T per condition the runtime can feed (both
modalities, voice only, face only). T changes no label, only how sure the model says it is (Guo et
al., ICML 2017). Training fits the bundled models' temperatures with these functions
(train/calibrate.py says on what); `mer-eval --calibrate` fits them again on a user's own labelled
clips (runtime/evaluate.py), where no torch is installed.
"""
from __future__ import annotations

import numpy as np

from .spec import LABELS

BINS = 15
NEUTRAL, CALM = LABELS.index("neutral"), LABELS.index("calm")


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def face_scores(probs: np.ndarray) -> np.ndarray:
    """A face's 8 probabilities with calm counted as neutral (calm's column left at 0): how a face
    alone is scored, since calm speech is trained with neutral faces and face sets have no calm."""
    p = probs.copy()
    p[:, NEUTRAL] += p[:, CALM]
    p[:, CALM] = 0
    return p


def face_labels(labels: np.ndarray) -> np.ndarray:
    """Labels as a face is scored (face_scores): calm counted as neutral."""
    return np.where(labels == CALM, NEUTRAL, labels)


def nll(logits: np.ndarray, labels: np.ndarray, t: float, calm_as_neutral: bool = False) -> float:
    """Mean negative log-likelihood of softmax(logits / t); `calm_as_neutral`: of face_scores."""
    z = logits / t
    z = z - z.max(1, keepdims=True)
    log_norm = np.log(np.exp(z).sum(1))
    if calm_as_neutral:
        z = z.copy()
        z[:, NEUTRAL] = np.logaddexp(z[:, NEUTRAL], z[:, CALM])
    return float(np.mean(log_norm - z[np.arange(len(labels)), labels]))


def fit_temperature(logits: np.ndarray, labels: np.ndarray, calm_as_neutral: bool = False) -> float:
    """The T in [0.05, 20] minimising the NLL: a log-spaced grid, then golden-section refinement
    (the NLL is convex in 1/T, so the grid's best cell holds the minimum)."""
    def f(t: float) -> float:
        return nll(logits, labels, t, calm_as_neutral)

    grid = np.exp(np.linspace(np.log(0.05), np.log(20.0), 120))
    k = int(np.argmin([f(t) for t in grid]))
    lo, hi = np.log(grid[max(0, k - 1)]), np.log(grid[min(len(grid) - 1, k + 1)])
    g = (np.sqrt(5) - 1) / 2
    for _ in range(40):
        a, b = hi - g * (hi - lo), lo + g * (hi - lo)
        if f(np.exp(a)) < f(np.exp(b)):
            hi = b
        else:
            lo = a
    return float(np.exp((lo + hi) / 2))


def reliability(probs: np.ndarray, labels: np.ndarray, bins: int = BINS) -> list[dict]:
    """Equal-width confidence bins: each bin's mean confidence, accuracy and count."""
    conf, right = probs.max(1), probs.argmax(1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1]), 0, bins - 1)
    return [{"lo": float(edges[b]), "hi": float(edges[b + 1]), "n": int((which == b).sum()),
             "confidence": float(conf[which == b].mean()) if (which == b).any() else None,
             "accuracy": float(right[which == b].mean()) if (which == b).any() else None} for b in range(bins)]


def ece(probs: np.ndarray, labels: np.ndarray, bins: int = BINS) -> float:
    """Expected calibration error: the count-weighted mean |accuracy - confidence| over the bins."""
    rows = [r for r in reliability(probs, labels, bins) if r["n"]]
    return float(sum(r["n"] * abs(r["accuracy"] - r["confidence"]) for r in rows) / len(labels))


def plot_reliability(curves: dict[str, tuple[np.ndarray, np.ndarray | None, np.ndarray]], path, title: str,
                     after_tag: str = "after") -> None:
    """One panel per condition, (before, after or None, labels): accuracy against confidence.
    matplotlib comes with MediaPipe (a runtime dependency)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(curves), figsize=(4.2 * len(curves), 4.2), squeeze=False)
    for ax, (name, (before, after_, labels)) in zip(axes[0], curves.items()):
        ax.plot([0, 1], [0, 1], color="0.6", lw=1, ls="--", label="perfect")
        for probs, style, tag in ((before, "o-", "before"), (after_, "s-", after_tag)):
            if probs is None:
                continue
            rows = [r for r in reliability(probs, labels) if r["n"] >= 5]
            ax.plot([r["confidence"] for r in rows], [r["accuracy"] for r in rows], style, ms=4,
                    label=f"{tag} (ECE {ece(probs, labels):.3f})")
        ax.set(title=name.replace("_", " "), xlabel="confidence (top probability)", xlim=(0, 1), ylim=(0, 1))
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left", fontsize=8)
    axes[0][0].set_ylabel("accuracy")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
