"""Exceptions FlexUNet raises for bad input.

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
