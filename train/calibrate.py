"""Confidence that means something: temperature scaling per modality condition, and how to check it.

A temperature T divides the logits before the softmax; it changes no label, only how sure the
model says it is. One T per condition (both modalities, voice only, face only) because a model
is over-confident by different amounts when it hears and sees than when it only hears. T is
fitted by minimising the negative log-likelihood on validation folds (Guo et al., ICML 2017) and
folded into the exported graph (MerModel.temperature), so every backend serves calibrated scores.
"""
from __future__ import annotations

import numpy as np

BINS = 15


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def nll(logits: np.ndarray, labels: np.ndarray, t: float) -> float:
    z = logits / t
    z = z - z.max(1, keepdims=True)
    return float(np.mean(np.log(np.exp(z).sum(1)) - z[np.arange(len(labels)), labels]))


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The T in [0.05, 20] minimising the NLL: a log-spaced grid, then golden-section refinement
    (the NLL is convex in 1/T, so the grid's best cell holds the minimum)."""
    grid = np.exp(np.linspace(np.log(0.05), np.log(20.0), 120))
    k = int(np.argmin([nll(logits, labels, t) for t in grid]))
    lo, hi = np.log(grid[max(0, k - 1)]), np.log(grid[min(len(grid) - 1, k + 1)])
    g = (np.sqrt(5) - 1) / 2
    for _ in range(40):
        a, b = hi - g * (hi - lo), lo + g * (hi - lo)
        if nll(logits, labels, np.exp(a)) < nll(logits, labels, np.exp(b)):
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


def plot_reliability(curves: dict[str, tuple[np.ndarray, np.ndarray]], path, title: str) -> None:
    """One panel per condition: accuracy against confidence before and after, with bin counts."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(curves), figsize=(4.2 * len(curves), 4.2), squeeze=False)
    for ax, (name, (before, after_, labels)) in zip(axes[0], curves.items()):
        ax.plot([0, 1], [0, 1], color="0.6", lw=1, ls="--", label="perfect")
        for probs, style, tag in ((before, "o-", "before"), (after_, "s-", "after")):
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
