"""Typed errors that users see.

Every failure a user can cause or meet is one of these; the CLI maps ``exit_code`` to the process
status and prints ``str(error)`` (what happened) plus ``hint`` (what to do). Anything else that
escapes is a bug and is reported as such.
"""

from __future__ import annotations


class TychoError(Exception):
    """Base of user-facing errors: a message, an optional hint, an exit status."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


class UsageError(TychoError):
    """Bad arguments: invalid names, a missing file to push (exit 2)."""

    exit_code = 2


class ConfigError(TychoError):
    """Missing or malformed configuration (exit 2)."""

    exit_code = 2


class OperationError(TychoError):
    """The operation could not be done (exit 1)."""


class NotFound(OperationError):
    """No such package or version, or no ``latest`` yet."""


class AlreadyExists(OperationError):
    """Package or version exists; versions are immutable."""


class IntegrityError(OperationError):
    """Stored data does not match what was recorded at push."""


class StorageError(OperationError):
    """The store failed: network, permissions, a damaged object."""
