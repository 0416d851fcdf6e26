"""Exceptions that the CLI turns into one readable line (and a FAILED MLflow run).

Every error a user can cause by their input derives from :class:`RobustctlError` and carries a
``hint``: the command or override that fixes it.
"""

from __future__ import annotations


class RobustctlError(Exception):
    """An error caused by input or environment, shown without a traceback."""

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  hint: {self.hint}"


class ConfigError(RobustctlError, ValueError):
    """Unknown option or key, wrong type or out-of-range value (also a ``ValueError``)."""


class DataError(RobustctlError):
    """A dataset that is missing, corrupt or inconsistent."""


class CheckpointError(RobustctlError):
    """A checkpoint that is missing, truncated, unsafe or from another model."""


class TrackingError(RobustctlError):
    """MLflow store unreachable, or a run id that does not exist."""


class TrainingDiverged(RobustctlError):
    """The loss became NaN or infinite."""

    exit_code = 3


class TrainingOutOfMemory(RobustctlError):
    """Training ran out of device memory (never retried with smaller batches: that changes the
    results)."""

    exit_code = 3
