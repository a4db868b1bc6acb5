"""Command-line options shared by mer-infer, mer-serve and mer-batch: one flag, one text.

Light on purpose (click only): each CLI imports it at start-up, before any heavy module.
"""
from __future__ import annotations

import click


def voice_gate():
    """`--voice-gate/--no-voice-gate` (runtime/voice.py): the value is passed to `Recognizer`."""
    return click.option("--voice-gate/--no-voice-gate", default=True, show_default=True,
                        help="A window with a face but no voice in its audio (room noise, a listener) is read "
                             "from the face alone; off, any audio is read as speech.")
