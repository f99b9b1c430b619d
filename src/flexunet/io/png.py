"""Atomic PNG writes (temp file in the same folder, then rename)."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .trace import note_write


def save_png_atomic(img, path: str | os.PathLike) -> None:
    """Save a PIL image as PNG at ``path`` without ever leaving a half-written file there."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".png.tmp", dir=path.parent)
    os.close(fd)
    try:
        img.save(tmp, format="PNG")
        os.replace(tmp, path)
        note_write(path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
