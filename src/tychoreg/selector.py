"""What a user asks for when they name a version: ``latest``, a tag or exact version, or a range.

Parsed once, where the text comes in (a command-line argument, a declared package, a Python
call), into a :class:`Selector`; everything below works with the parsed value, so a range is
never parsed twice and a malformed one fails before any request.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from .errors import UsageError
from .names import clip, is_constraint, is_valid_segment, shown

if TYPE_CHECKING:
    from .ranges import Constraint

Kind = Literal["latest", "name", "range"]


@dataclass(frozen=True)
class Selector:
    """``kind`` is ``latest``, ``name`` (a tag or an exact version: which one depends on the
    package) or ``range`` (then ``constraint`` holds it, parsed)."""

    text: str
    kind: Kind
    constraint: Constraint | None = None

    @classmethod
    def parse(cls, text: str | Selector) -> Selector:
        """The selector ``text`` says; :class:`UsageError` (exit 2) when it is malformed."""
        if isinstance(text, Selector):
            return text
        if text == "latest":
            return cls(text, "latest")
        if is_valid_segment(text) and not is_constraint(text):
            return cls(text, "name")
        from .ranges import parse_constraint  # noqa: PLC0415 - ranges, semver, packaging: ~7 ms, only for ranges

        try:
            constraint = parse_constraint(text)
        except ValueError as exc:
            raise UsageError(
                f"invalid version or range {shown(text)}: {clip(exc, 160)}",
                "give a version (1.2.0), a tag (latest, stable) or a range (^1.2, >=1.2,<2, 1.x)",
                reason="bad-selector",
            ) from None
        return cls(text, "range", constraint)

    @classmethod
    def exact(cls, text: str | Selector) -> Selector:
        """For commands that change one version: ``latest``, a tag or a version, never a range."""
        selector = cls.parse(text)
        if selector.kind == "range":
            raise UsageError(
                f"{shown(selector.text)} is a range; this command needs one exact version",
                "name one version",
                reason="range-not-allowed",
            )
        return selector

    def __str__(self) -> str:
        return self.text
