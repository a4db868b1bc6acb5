"""Accuracy, UAR and the confusion matrix: they live with the runtime (torch-free, also used by
`mer-eval`); the names are kept here for training code."""
from mer.runtime.metrics import confusion, summarise

__all__ = ["confusion", "summarise"]
