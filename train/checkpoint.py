"""mer checkpoints: the model's constructor config, its weights, the feature spec it was trained
on and a line saying what data trained it. Reference-format files (`state_dict` only) load too."""
from __future__ import annotations

from importlib import resources
from pathlib import Path

import torch

from mer.runtime.spec import DEFAULT_SPEC, FeatureSpec

from .efficientface import load_reference_checkpoint
from .fusion import MerModel

# The reference code's features (librosa defaults at 22.05 kHz): what its checkpoints expect.
PAPER_SPEC = FeatureSpec(sample_rate=22050, n_fft=2048, win_length=2048, hop_length=512, fmax=11025.0)


def bundled_checkpoint(fusion: str) -> Path:
    return Path(str(resources.files("mer.train") / "checkpoints" / f"{fusion}.pt"))


def save_checkpoint(path: Path, model: MerModel, spec: FeatureSpec, trained_on: str, **extra) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({"format": "mer/1", "config": model.config(), "state_dict": model.state_dict(),
                "spec": spec.to_json(), "trained_on": trained_on, **extra}, tmp)
    tmp.replace(path)


def load_checkpoint(path: Path, fusion: str | None = None) -> tuple[MerModel, FeatureSpec, str]:
    """(model, spec, trained_on). A reference checkpoint needs `fusion` and gets PAPER_SPEC."""
    blob = torch.load(str(path), map_location="cpu", weights_only=False)
    if isinstance(blob, dict) and blob.get("format") == "mer/1":
        if fusion is not None and blob["config"]["fusion"] != fusion:
            raise ValueError(f"{path}: checkpoint holds a {blob['config']['fusion']!r} model, not {fusion!r}")
        return model_of(blob, path), FeatureSpec.from_json(blob["spec"]), blob["trained_on"]
    if fusion is None:
        raise ValueError(f"{path}: a reference-format checkpoint needs --fusion")
    model = MerModel(fusion)
    missing, _ = load_reference_checkpoint(model, path)
    if len(missing) == len(model.state_dict()):
        raise ValueError(f"{path}: no tensor of this checkpoint fits a {fusion!r} model")
    return model, PAPER_SPEC, f"reference checkpoint {path.name} (RGB/BGR and crops may differ from mer's)"


def model_of(blob: dict, path: Path) -> MerModel:
    """The model of a loaded mer/1 checkpoint `blob` (read from `path`, named in errors)."""
    model = MerModel(**blob["config"])
    missing, unexpected = model.load_state_dict(blob["state_dict"], strict=False)
    if unexpected or set(missing) - {"temperature", "class_bias"}:  # from before calibration (or its bias)
        raise ValueError(f"{path}: checkpoint does not fit its own config (missing {missing}, unexpected {unexpected})")
    return model


def untrained(fusion: str, seed: int = 0) -> tuple[MerModel, FeatureSpec, str]:
    """Randomly initialised (seeded, so the same call gives the same weights)."""
    torch.manual_seed(seed)
    return MerModel(fusion), DEFAULT_SPEC, "nothing (randomly initialised, untrained)"


def bundled_or_untrained(fusion: str) -> tuple[MerModel, FeatureSpec, str]:
    """The bundled trained model of `fusion`, or a seeded untrained one where none ships."""
    source = bundled_checkpoint(fusion)
    return load_checkpoint(source, fusion) if source.is_file() else untrained(fusion)
