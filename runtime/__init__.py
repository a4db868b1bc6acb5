"""mer's torch-free runtime: clip -> faces + MFCC -> ONNX model -> emotion.

    from mer.runtime import Recognizer
    with Recognizer() as rec:
        print(rec.predict("clip.mp4").to_dict())

Names are imported on first use, so `import mer.runtime` and `mer-infer --help` start fast.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "Recognizer": "recognizer", "Result": "recognizer", "bundled_model": "recognizer",
    "DEFAULT_FUSION": "contract", "FUSIONS": "contract",
    "FeatureSpec": "spec", "DEFAULT_SPEC": "spec", "LABELS": "spec",
    "MerError": "errors", "InputError": "errors", "ModelError": "errors",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
