"""Command-line options shared by mer-infer, mer-serve and mer-batch: one flag, one text, one check.

Light on purpose (click and the torch-free contract only): each CLI imports it at start-up, before
any heavy module.
"""
from __future__ import annotations

import click

from .contract import BACKENDS, FUSIONS


def model(help_text: str = "ONNX model file or TensorRT engine (default: the bundled model).", name: str = "model_path"):
    """`--model PATH`: a model file instead of the bundled one."""
    return click.option("--model", name, help=help_text)


def fusion():
    """`--fusion lt|it|ia`: one of the bundled models (with --model, a usage error: `check_model`)."""
    return click.option("--fusion", type=click.Choice(FUSIONS), help="Use the bundled model of this fusion.")


def backend(help_text: str = "Execution backend; 'auto' picks the best that actually runs."):
    return click.option("--backend", type=click.Choice(BACKENDS), default="auto", show_default=True, help=help_text)


def hop(help_text: str = "Seconds between windows (default 0.96: 4 face samples, so neighbouring windows "
                         "share frames)."):
    """`--hop S`: the timeline's step; checked by `check_hop` against the one rule (window.hop_problem)."""
    return click.option("--hop", type=float, help=help_text)


def voice_gate():
    """`--voice-gate/--no-voice-gate` (runtime/voice.py): the value is passed to `Recognizer`."""
    return click.option("--voice-gate/--no-voice-gate", default=True, show_default=True,
                        help="A window with a face but no voice in its audio (room noise, a listener) is read "
                             "from the face alone; off, any audio is read as speech.")


def check_model(model_path: str | None, fusion_name: str | None) -> None:
    if model_path is not None and fusion_name:
        raise click.UsageError("give --model or --fusion, not both")


def check_hop(hop_s: float | None) -> None:
    from .window import hop_problem  # numpy: imported once a hop is given

    if hop_s is not None and (problem := hop_problem(hop_s)):
        raise click.UsageError(f"--{problem}")
