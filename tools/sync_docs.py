"""Regenerate docs/config.md, the config reference, from the schema (python tools/sync_docs.py).

The reference is the text of ``flexunet.config.reference_markdown()`` between two markers; the rest
of docs/config.md is kept as written.  ``tools/docs_check.py`` (``make docs-check``) fails when the
file is out of date.
"""
from __future__ import annotations

import sys
from pathlib import Path

from flexunet.config import reference_markdown

ROOT = Path(__file__).resolve().parents[1]
CONFIG_DOC = ROOT / "docs" / "config.md"
START, END = "<!-- config-reference:start -->", "<!-- config-reference:end -->"


def synced(text: str) -> str:
    """``text`` with the part between the markers replaced by the current reference.

    Raises:
        ValueError: when ``text`` lacks either marker.
    """
    if START not in text or END not in text:
        raise ValueError(f"expected the markers {START} and {END}")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{reference_markdown()}\n{END}{tail}"


def main() -> int:
    CONFIG_DOC.write_text(synced(CONFIG_DOC.read_text()))
    print(f"updated {CONFIG_DOC.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
