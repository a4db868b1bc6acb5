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

# The maths lives with the runtime (torch-free, also used by `mer-eval --calibrate`); the names are
# kept here for training code.
from mer.runtime.calibration import (BINS, CALM, NEUTRAL, ece, face_labels, face_scores, fit_temperature,
                                     nll, plot_reliability, reliability, softmax)

__all__ = ["BINS", "CALM", "NEUTRAL", "ece", "face_labels", "face_scores", "fit_temperature", "nll",
           "plot_reliability", "reliability", "softmax"]
