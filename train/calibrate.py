"""Confidence that means something: calibration per modality condition, and how to check it.

Logits become logits / T before the softmax, one T per condition the runtime can feed (both
modalities, voice only, face only). T changes no label, only how sure the model says it is (Guo et
al., ICML 2017); it is fitted by minimising the negative log-likelihood and folded into the exported
graph (MerModel.temperature), so every backend serves calibrated scores.

Where each T is fitted: with speech present, on the RAVDESS folds' validation actors. The face
alone, on FER+ *valid* faces in their natural mix with calm counted as neutral (face_scores): a
face cannot tell calm from neutral, and RAVDESS's pairs, with twice as much calm as neutral, would
teach the face-alone scores that prior. A per-class bias fitted on those pairs (v0.3 to v0.5) did
exactly that: it cost held-out faces 1 to 3 points of accuracy (MODEL_CARD, *Confidence*). The
graph keeps its slot (MerModel.class_bias), at zero.
"""
from __future__ import annotations

import numpy as np

# The maths lives with the runtime (torch-free, also used by `mer-eval --calibrate`); the names are
# kept here for training code.
from mer.runtime.calibration import (BINS, CALM, NEUTRAL, ece, face_labels, face_scores, fit_temperature,  # noqa: F401
                                     nll, reliability, softmax)


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
