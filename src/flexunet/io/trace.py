"""Optional write tracing, for tests that check which process writes what (e.g. only DDP rank 0).

Set ``FLEXUNET_TRACE_WRITES=/some/folder``; every output file FlexUNet writes is
then logged as ``<rank> <path>`` in ``<folder>/writes-<pid>.log``.
"""
from __future__ import annotations

import os


def note_write(path) -> None:
    folder = os.environ.get("FLEXUNET_TRACE_WRITES")
    if not folder:
        return
    rank = os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0"))
    with open(os.path.join(folder, f"writes-{os.getpid()}.log"), "a", encoding="utf-8") as fh:
        fh.write(f"{rank} {path}\n")
