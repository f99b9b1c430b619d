"""Atomic PNG writes (temp file in the same folder, then rename)."""
from __future__ import annotations

import os
from pathlib import Path

from .trace import note_write


def save_png_atomic(img, path: str | os.PathLike) -> None:
    """Save a PIL image as PNG at ``path`` without ever leaving a half-written file there."""
    from .atomic import atomic_temp_path

    path = Path(path)
    with atomic_temp_path(path) as tmp:
        img.save(tmp, format="PNG")
    note_write(path)
