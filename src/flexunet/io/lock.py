"""A lock file that keeps two processes out of one folder (two trainings into one ``model_dir``).

The lock is a small JSON file holding the holder's PID, host, process start time and the
time the lock was taken.  It appears atomically and complete: it is written to a temporary
file beside it and hard-linked to its final name, which fails when the name exists, so of
two processes only one gets it.  A lock whose holder no longer runs (same host; the PID is
gone or now belongs to a process started at another time) is stale: it is removed with a
warning and taken.  A lock held by a live process, or by one on another host (which cannot
be checked from here), is refused with a one-line :class:`~flexunet.errors.DataError`.
"""
from __future__ import annotations

import contextlib
import json
import os
import socket
import tempfile
import time
import warnings
from pathlib import Path
from typing import Iterator, Optional

from ..errors import DataError

__all__ = ["LockHeld", "StaleLockWarning", "folder_lock", "read_lock"]


class StaleLockWarning(UserWarning):
    """A lock left by a process that no longer runs was removed."""


class LockHeld(DataError):
    """The folder is locked by another live process."""


def _process_start(pid: int) -> Optional[float]:
    """Start time (seconds since the epoch) of process ``pid``, or None when it does not run."""
    import psutil

    try:
        return float(psutil.Process(pid).create_time())
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return None
    except psutil.Error:  # access denied and the like: it runs, its start time is unknown
        return float("nan")


def read_lock(path: str | os.PathLike) -> Optional[dict]:
    """The holder recorded in a lock file.

    Args:
        path: the lock file.

    Returns:
        ``{"pid", "host", "process_start", "started", "command"}``, or None when there is no lock
        file.

    Raises:
        DataError: when the file exists but is not a lock written by :func:`folder_lock`.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise DataError(f"{path}: lock file cannot be read ({exc.strerror or exc}); expected a readable "
                        "lock file, or none") from None
    try:
        info = json.loads(text)
        if not isinstance(info, dict) or not isinstance(info.get("pid"), int):
            raise ValueError("no pid")
    except ValueError:
        raise DataError(f"{path}: lock file holds {text[:60]!r}; expected a lock written by FlexUNet "
                        "(delete the file if no training runs in this folder)") from None
    return info


def _is_stale(info: dict) -> bool:
    """True when the lock's holder is known to run no more (only decidable on the same host)."""
    if info.get("host") != socket.gethostname():
        return False
    pid = info["pid"]
    if pid == os.getpid():
        return False
    start = _process_start(pid)
    if start is None:
        return True
    recorded = info.get("process_start")
    if isinstance(recorded, (int, float)) and start == start:  # not NaN: compare, a reused PID differs
        return abs(start - float(recorded)) > 1.0
    return False


def _describe(info: dict) -> str:
    return (f"PID {info.get('pid')} on {info.get('host', '?')}, started {info.get('started', '?')}"
            + (f": {info['command']}" if info.get("command") else ""))


def _link_new(path: Path, text: str) -> bool:
    """Create ``path`` holding ``text`` unless it exists; True when this call created it."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        except OSError:  # a file system without hard links: exclusive create, then write
            try:
                out = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(out, "w", encoding="utf-8") as fh:
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())
        return True
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def _remove_if_same(path: Path, info: dict) -> None:
    """Remove the stale lock ``path`` unless another process replaced it meanwhile."""
    aside = path.with_name(f".{path.name}.stale-{os.getpid()}")
    try:
        os.replace(path, aside)
    except FileNotFoundError:
        return
    try:
        moved = json.loads(aside.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        moved = None
    if moved != info:  # a live lock taken after the stale one was read: put it back
        with contextlib.suppress(OSError):
            os.link(aside, path)
    with contextlib.suppress(OSError):
        os.unlink(aside)


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike, name: str, what: str, command: str = "") -> Iterator[Path]:
    """Hold ``folder/name`` as a lock for the duration of the block.

    Args:
        folder: an existing folder.
        name: the lock file's name in it.
        what: what the folder is, for messages (e.g. ``"[train] model_dir"``).
        command: the holder's command line, recorded for whoever finds the lock.

    Yields:
        The lock file's path; it is removed when the block ends (also on an exception).

    Raises:
        LockHeld: when a live process (or one on another host) holds the lock.
        DataError: when the lock file is unreadable or not a FlexUNet lock.
    """
    path = Path(folder) / name
    own = {"pid": os.getpid(), "host": socket.gethostname(), "process_start": _process_start(os.getpid()),
           "started": time.strftime("%Y-%m-%d %H:%M:%S"), "command": command}
    if own["process_start"] != own["process_start"]:  # NaN is not valid JSON
        own["process_start"] = None
    text = json.dumps(own)
    for _ in range(5):
        if _link_new(path, text):
            break
        info = read_lock(path)
        if info is None:  # released between the two calls: try again
            continue
        if not _is_stale(info):
            raise LockHeld(
                f"{path}: {what} {folder} is in use by another training ({_describe(info)}); expected one "
                f"training per {what}: wait for it to end, stop it, or set another {what} (delete the lock "
                "file only if that process no longer runs)")
        warnings.warn(f"{path}: removed a stale lock of a training that no longer runs ({_describe(info)})",
                      StaleLockWarning, stacklevel=3)
        _remove_if_same(path, info)
    else:
        raise LockHeld(f"{path}: could not take the lock of {what} {folder} after 5 tries; expected it to be "
                       "free or held by a live training")
    try:
        yield path
    finally:
        with contextlib.suppress(OSError, DataError):
            if read_lock(path) == own:
                path.unlink()
