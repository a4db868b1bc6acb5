"""Where the data beside the project lives: `$MER_SHARED`, else `../shared` next to the repo."""
from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def shared_dir() -> Path:
    return Path(os.environ.get("MER_SHARED", REPO_ROOT.parent / "shared"))


def data_dir() -> Path:
    return shared_dir() / "data"
