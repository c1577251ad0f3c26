"""Validation of package names, versions and file names.

They become single segments of storage keys and local paths, so anything that could climb out of
a folder (``..``, ``/``), hide (leading ``.``), look like an option (leading ``-``) or not survive
every store and file system (spaces, non-ASCII) is refused before any storage call.
"""

from __future__ import annotations

import re
from typing import TypeGuard

from .errors import UsageError

MAX_LENGTH = 128
_SEGMENT = re.compile(r"[A-Za-z0-9_+][A-Za-z0-9._+-]*\Z")
RESERVED_VERSIONS = frozenset({"latest"})
_ALLOWED = "letters, digits and . _ + - (not starting with . or -, at most 128 characters)"


def clip(value: object, limit: int = 200) -> str:
    """``value`` as text, cut to ``limit`` characters keeping both ends (a path's file name).

    Messages echo what the user typed or what storage holds, and either can be megabytes long;
    an error must stay one readable line.
    """
    text = value if isinstance(value, str) else str(value)
    if len(text) <= limit:
        return text
    head = limit * 2 // 3
    return f"{text[:head]}...{text[len(text) - (limit - head - 3) :]}"


def shown(value: object, limit: int = 60) -> str:
    """``value`` quoted for a message (``repr``), cut to about ``limit`` characters."""
    if isinstance(value, str):
        return repr(value if len(value) <= limit else value[: limit - 3] + "...")
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def is_valid_segment(value: object) -> TypeGuard[str]:
    """True when ``value`` may be used as a package name, version or file name."""
    return isinstance(value, str) and 0 < len(value) <= MAX_LENGTH and bool(_SEGMENT.match(value))


def check_segment(value: str, what: str) -> str:
    """Return ``value`` or raise a :class:`UsageError` saying what is wrong with it."""
    if not is_valid_segment(value):
        raise UsageError(f"invalid {what} {shown(value)}: use only {_ALLOWED}", reason="bad-name")
    return value


def check_package(name: str) -> str:
    return check_segment(name, "package name")


def check_filename(name: str) -> str:
    return check_segment(name, "file name")


def check_version(version: str, *, for_push: bool = False) -> str:
    """Validate a version; ``latest`` is a selector, never a version that can be pushed."""
    check_segment(version, "version")
    if for_push and version in RESERVED_VERSIONS:
        raise UsageError(
            f"{shown(version)} is reserved and cannot be pushed as a version",
            "choose a concrete version such as 1.0.0",
            reason="reserved-version",
        )
    return version


_X_COMPONENT = re.compile(r"^[vV]?(?:\d+\.)*[xX](?:\.[0-9A-Za-z*]+)*$")


def is_constraint(text: str) -> bool:
    """Whether ``text`` is a range expression rather than an exact version or a tag."""
    return any(ch in text for ch in "^~><=,*| \t") or bool(_X_COMPONENT.match(text))


def check_tag(tag: str) -> str:
    """Tags follow the name rules and must not read as a range, so selectors stay unambiguous."""
    check_segment(tag, "tag")
    if is_constraint(tag):
        raise UsageError(
            f"invalid tag {shown(tag)}: it reads as a version range", "choose a word such as stable or beta"
        )
    return tag
