"""Accuracy, unweighted average recall (UAR) and the confusion matrix."""
from __future__ import annotations

import numpy as np


def confusion(labels: np.ndarray, preds: np.ndarray, n: int = 8) -> np.ndarray:
    """Rows: true class, columns: predicted class."""
    return np.bincount(labels * n + preds, minlength=n * n).reshape(n, n)


def summarise(labels: np.ndarray, preds: np.ndarray, n: int = 8) -> dict:
    cm = confusion(labels, preds, n)
    support = cm.sum(1)
    recalls = np.diag(cm)[support > 0] / support[support > 0]
    return {"accuracy": float((labels == preds).mean()) if len(labels) else float("nan"),
            "uar": float(recalls.mean()) if len(recalls) else float("nan"),
            "n": int(len(labels)), "confusion": cm.tolist()}
