"""Crash-safe file writing and safe output paths.

Every file FlexUNet writes (NIfTI volumes, manifests, reports) goes through this
module so that a crash, a full disk or Ctrl-C never leaves a truncated file
under the final name: the data is written to a temporary file in the *same
folder* as the target, flushed and ``fsync``-ed, and only then moved over the
target with :func:`os.replace` (atomic on POSIX and Windows within one file
system).  If anything raises before the rename, the temporary file is removed
and an existing target is left exactly as it was.

:func:`safe_child` builds an output path from a name that came from the input
(a file name, a case id) and refuses names that would escape the output
folder.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import tempfile
from pathlib import Path
from typing import IO, Iterable, Iterator

from flexunet.errors import DataError
from flexunet.io.trace import note_write

__all__ = [
    "atomic_write",
    "atomic_temp_path",
    "atomic_save_bytes",
    "atomic_save_text",
    "atomic_save_figure",
    "atomic_copy",
    "atomic_copytree",
    "save_output_text",
    "safe_child",
]

# Extensions made of two parts that must stay together at the end of a
# temporary name (nibabel decides on gzip from ".nii.gz").
_DOUBLE_SUFFIXES = (".nii.gz", ".tar.gz", ".tar.bz2", ".tar.xz", ".mrc.gz")


def _current_umask() -> int:
    """The process umask, read without changing it where the OS allows."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _target_suffix(path: Path) -> str:
    name = path.name.lower()
    for suffix in _DOUBLE_SUFFIXES:
        if name.endswith(suffix):
            return path.name[-len(suffix):]
    return path.suffix


def _make_temp(path: Path) -> Path:
    """Create (empty) and return a unique temporary file beside ``path``.

    The name is ``.<stem>.tmp-XXXX<suffix>`` so that it keeps the target's
    extension (".nii.gz" included) and is hidden from directory listings.
    The file gets the permissions a normal ``open(path, "w")`` would give it,
    or the existing target's permissions when the target exists.
    """
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise DataError(f"{parent}: output folder does not exist; expected an existing directory")
    suffix = _target_suffix(path)
    stem = path.name[: len(path.name) - len(suffix)] if suffix else path.name
    fd, tmp_name = tempfile.mkstemp(prefix=f".{stem}.tmp-", suffix=suffix, dir=parent)
    os.close(fd)
    try:
        mode = path.stat().st_mode & 0o7777
    except OSError:
        mode = 0o666 & ~_current_umask()
    with contextlib.suppress(OSError):
        os.chmod(tmp_name, mode)
    return Path(tmp_name)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (best effort; not possible on Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _remove_quietly(path: Path) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


@contextlib.contextmanager
def atomic_temp_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it onto ``path`` on success.

    For writers that want a file *name* rather than an open file (nibabel,
    mrcfile).  The temporary name ends with the target's extension (".nii.gz"
    is kept whole).  On a clean exit the file is fsync-ed and renamed over
    ``path``; on an exception it is deleted and ``path`` is untouched.
    """
    target = Path(path)
    tmp = _make_temp(target)
    try:
        yield tmp
        _fsync_file(tmp)
        os.replace(tmp, target)
    except BaseException:
        _remove_quietly(tmp)
        raise
    _fsync_dir(target.parent if str(target.parent) else Path("."))


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb", encoding: str | None = None,
                 newline: str | None = None) -> Iterator[IO]:
    """Open a temporary file for writing that replaces ``path`` when the block ends.

    ``mode`` is ``"wb"`` (binary, the default) or ``"w"`` (text; ``encoding``
    defaults to UTF-8).  If the ``with`` block raises, the temporary file is
    removed and any existing ``path`` keeps its old content.
    """
    if mode not in ("w", "wb", "wt"):
        raise ValueError(f"atomic_write mode {mode!r}: expected 'wb' or 'w'")
    binary = "b" in mode
    if binary and (encoding is not None or newline is not None):
        raise ValueError("atomic_write: encoding/newline apply to text mode only")
    target = Path(path)
    tmp = _make_temp(target)
    try:
        if binary:
            fh = open(tmp, "wb")
        else:
            fh = open(tmp, "w", encoding=encoding or "utf-8", newline=newline)
        with fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        _remove_quietly(tmp)
        raise
    _fsync_dir(target.parent if str(target.parent) else Path("."))


def atomic_save_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; return ``Path(path)``."""
    with atomic_write(path, "wb") as fh:
        fh.write(data)
    return Path(path)


def atomic_copy(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Copy the file ``src`` to ``dst`` atomically (a reader sees the old file or the whole copy).

    Returns:
        ``Path(dst)``.
    """
    import shutil

    with atomic_temp_path(dst) as tmp:
        shutil.copyfile(src, tmp)
    return Path(dst)


def atomic_copytree(src: str | os.PathLike, dst: str | os.PathLike, ignore: Iterable[str] = ()) -> Path:
    """Copy the folder ``src`` to the new folder ``dst``: into a hidden temporary folder beside ``dst``,
    then renamed, so ``dst`` appears complete or not at all.

    Args:
        src: the folder to copy.
        dst: the copy; must not exist.
        ignore: file names (glob patterns) left out.

    Returns:
        ``Path(dst)``.

    Raises:
        FileExistsError: ``dst`` exists.
    """
    import shutil
    import tempfile

    target = Path(dst)
    if target.exists():
        raise FileExistsError(errno.EEXIST, "folder exists", str(target))
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        shutil.copytree(src, tmp, ignore=shutil.ignore_patterns(*ignore) if ignore else None, dirs_exist_ok=True)
        os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _fsync_dir(target.parent)
    return target


def atomic_save_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically (UTF-8, newlines as given); return ``Path(path)``."""
    with atomic_write(path, "w", encoding=encoding, newline="") as fh:
        fh.write(text)
    return Path(path)


def save_output_text(path: str | os.PathLike, text: str) -> Path:
    """Create ``path``'s folder, write ``text`` there atomically and record the write.

    For the report files of training and evaluation (CSV, JSON): the folder is
    made when missing, and the write is logged for ``FLEXUNET_TRACE_WRITES``
    (:mod:`flexunet.io.trace`).  Returns ``Path(path)``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_save_text(path, text)
    note_write(path)
    return path


def atomic_save_figure(fig, path: str | os.PathLike, fmt: str = "png") -> Path:
    """Render a matplotlib figure to ``path`` atomically (``fig.savefig`` into a temporary file).

    The folder must exist.  Returns ``Path(path)``.
    """
    with atomic_write(path, "wb") as fh:
        fig.savefig(fh, format=fmt)
    return Path(path)


_WINDOWS_DRIVE = re.compile(r"^[A-Za-z]:")


def safe_child(out_dir: str | os.PathLike, name: str) -> Path:
    """Return ``out_dir / name`` for a single, plain file or folder name.

    Policy: names are **rejected, never rewritten**.  ``name`` must be one path
    component: a :class:`~flexunet.errors.DataError` is raised for an empty
    name, ``"."``, ``".."``, any name holding ``/`` or ``\\`` (so ``"../evil"``,
    ``"a/b"`` and absolute paths are refused), a Windows drive prefix
    (``"C:x"``), a NUL or other control character.  As a last guard the
    resolved result (symbolic links followed) must still lie inside the
    resolved ``out_dir``; an existing symlink pointing elsewhere is refused.

    Callers that hold a full input path should pass its base name
    (``Path(p).name``) explicitly.
    """
    if not isinstance(name, str):
        raise DataError(f"output name {name!r}: expected a string")
    problem = None
    if name in ("", ".", ".."):
        problem = "is empty or a relative folder reference"
    elif "/" in name or "\\" in name:
        problem = "holds a path separator"
    elif _WINDOWS_DRIVE.match(name):
        problem = "starts with a drive letter"
    elif any(ord(c) < 32 or c == "\x7f" for c in name):
        problem = "holds a control character"
    if problem:
        raise DataError(
            f"output name {name!r} under {out_dir}: {problem}; expected a single plain file name"
        )
    base = Path(out_dir)
    child = base / name
    root = base.resolve()
    resolved = child.resolve()
    if not resolved.is_relative_to(root):
        raise DataError(
            f"output name {name!r} under {out_dir}: resolves to {resolved}, outside the output folder; "
            "expected a path inside it"
        )
    if resolved == root:
        raise DataError(f"output name {name!r} under {out_dir}: resolves to the output folder itself; "
                        "expected a file name inside it")
    return child
