"""Exceptions FlexUNet raises for bad input, and :func:`one_line` / :func:`unwrap_worker_error` for messages.

Every user-facing failure is a :class:`FlexUNetError` whose message is one line
that names the file or key, the value, and what was expected.  The CLI prints
``flexunet: error: <message>`` and exits non-zero; a traceback is shown only
with ``--debug``.
"""


class FlexUNetError(Exception):
    """Base class of all errors caused by the user's input or environment."""


class ConfigError(FlexUNetError):
    """A config file is unreadable, or a value has the wrong type or contradicts another."""


class DataError(FlexUNetError):
    """An image, mask, volume or folder is missing, corrupt or inconsistent."""


class CheckpointError(FlexUNetError):
    """A checkpoint is corrupt, unsafe, or belongs to another architecture."""


class TrainingAborted(FlexUNetError):
    """Training stopped on purpose: non-finite loss or a signal."""


def unwrap_worker_error(exc: BaseException) -> BaseException:
    """The exception as it was raised inside a DataLoader worker process.

    torch re-raises a worker's exception in the main process as the same class whose message is
    ``"Caught DataError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):
    ...\nflexunet.errors.DataError: <message>"``.  This returns a new exception of the same class
    holding only ``<message>`` (the traceback's last line), or ``exc`` itself when it is not such a
    wrapper.
    """
    text = str(exc)
    if not text.startswith("Caught ") or "Original Traceback" not in text:
        return exc
    lines = [line for line in text.splitlines() if line.strip()]
    last = lines[-1].strip()
    cls = type(exc)
    msg = last
    for prefix in (f"{cls.__module__}.{cls.__qualname__}: ", f"{cls.__qualname__}: "):
        if last.startswith(prefix):
            msg = last[len(prefix):]
            break
    try:
        return cls(msg)
    except Exception:
        return exc


def one_line(exc: BaseException) -> str:
    """``exc``'s message on one line (worker wrappers removed, line breaks folded)."""
    text = str(unwrap_worker_error(exc))
    return " ".join(part.strip() for part in text.splitlines() if part.strip())
