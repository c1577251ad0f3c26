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


@dataclass(frozen=True)
class PackageSpec:
    """A package named for reading, with what version of it is wanted: ``narf`` or
    ``narf@^1.2`` (``selector`` None: the command's default, ``latest``)."""

    package: str
    selector: Selector | None = None

    @classmethod
    def parse(cls, text: str | PackageSpec) -> PackageSpec:
        """``PKG`` or ``PKG@SELECTOR`` (no name or version holds an ``@``, so the first one
        splits them); :class:`UsageError` (exit 2) for an empty selector or a malformed one."""
        if isinstance(text, PackageSpec):
            return text
        package, at, wanted = text.partition("@")
        if not at:
            return cls(text)
        if not wanted:
            raise UsageError(
                f"{shown(text)} names no version after '@'",
                "write PKG@SELECTOR, e.g. narf@1.2.0, narf@stable or narf@^1.2",
                reason="bad-selector",
            )
        return cls(package, Selector.parse(wanted))

    def wanted(self, default: str | Selector = "latest") -> Selector:
        return self.selector or Selector.parse(default)

    def __str__(self) -> str:
        return self.package if self.selector is None else f"{self.package}@{self.selector}"
