"""The two failures a user can cause: a bad input file, and a model the runtime cannot serve."""
from __future__ import annotations

from pathlib import Path


class MerError(Exception):
    """Base class: the message is one line, fit to print as is."""


class InputError(MerError):
    """An input that cannot be read as media (missing, unreadable, corrupt, not media)."""

    def __init__(self, path: str | Path, reason: str):
        self.path, self.reason = str(path), reason
        super().__init__(f"{printable(path)}: {reason}")


class ModelError(MerError):
    """A model file that is missing, not ONNX, or made for features this runtime cannot produce."""

    def __init__(self, path: str | Path, reason: str):
        self.path, self.reason = str(path), reason
        super().__init__(f"{path}: {reason}")


def printable(name: str | Path) -> str:
    """A name fit for a one-line message: control characters (a newline in a file name) escaped."""
    text = str(name)
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text)
