"""mer's torch-free runtime: clip -> faces + MFCC -> ONNX model -> emotion.

    from mer.runtime import Recognizer
    with Recognizer() as rec:
        print(rec.predict("clip.mp4").to_dict())
"""
from .errors import InputError, MerError, ModelError
from .recognizer import DEFAULT_FUSION, FUSIONS, Recognizer, Result, bundled_model
from .spec import DEFAULT_SPEC, LABELS, FeatureSpec

__all__ = ["Recognizer", "Result", "FeatureSpec", "DEFAULT_SPEC", "LABELS", "FUSIONS", "DEFAULT_FUSION",
           "MerError", "InputError", "ModelError", "bundled_model"]
