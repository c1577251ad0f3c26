"""The documents a registry stores, and the results its operations return.

Stored documents are parsed defensively: a ``tycho.json`` or version record is input from whoever
can write to the bucket, so a wrong type, an unsafe ``localname`` or a lying record is reported as
damage instead of being trusted.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import IntegrityError
from .names import is_valid_segment

FORMAT = 1
_HEX64 = frozenset("0123456789abcdef")


def _load_object(raw: bytes, what: str) -> dict[str, Any]:
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise IntegrityError(f"{what} is not valid JSON", "repair or re-create it") from None
    if not isinstance(data, dict):
        raise IntegrityError(f"{what} is not a JSON object", "repair or re-create it")
    return data


@dataclass
class PackageDoc:
    """``PKG/tycho.json``: 0.4.0's two fields, plus any other keys, kept as they are.

    Fields are checked when used, not when read: a damaged ``localname`` must not stop a pull
    with ``--outfile`` or a ``promote`` that repairs ``latest``.
    """

    package: str
    localname: Any
    latest: Any = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, package: str, raw: bytes) -> PackageDoc:
        data = _load_object(raw, f"package {package}'s tycho.json")
        return cls(package, data.pop("localname", None), data.pop("latest", None), data)

    def checked_localname(self) -> str:
        if not is_valid_segment(self.localname):
            raise IntegrityError(
                f"package {self.package}'s tycho.json has an unsafe or missing localname {self.localname!r}",
                f"pull with --outfile PATH, and repair localname in {self.package}/tycho.json")
        return self.localname

    def checked_latest(self) -> str | None:
        if self.latest is not None and not is_valid_segment(self.latest):
            raise IntegrityError(f"package {self.package}'s tycho.json has an invalid latest {self.latest!r}",
                                 f"repair it with: tychoreg promote {self.package} VERSION")
        return self.latest

    def to_bytes(self) -> bytes:
        # Same shape as 0.4.0 writes: localname, latest first, two-space indent.
        return json.dumps({"localname": self.localname, "latest": self.latest, **self.extra},
                          indent=2).encode()


@dataclass(frozen=True)
class VersionRecord:
    """``PKG/.tycho/versions/VERSION.json``: written once, before the data becomes visible."""

    version: str
    size: int
    sha256: str
    pushed_at: str
    pushed_by: str | None = None
    note: str | None = None

    @classmethod
    def parse(cls, package: str, version: str, raw: bytes) -> VersionRecord:
        what = f"the record of {package} {version}"
        data = _load_object(raw, what)
        size, sha = data.get("size"), data.get("sha256")
        if (data.get("version") != version or not isinstance(size, int) or isinstance(size, bool)
                or size < 0 or not isinstance(sha, str) or len(sha) != 64 or not set(sha) <= _HEX64):
            raise IntegrityError(f"{what} is damaged (wrong version, size or sha256)",
                                 f"repair or remove {package}/.tycho/versions/{version}.json; without it the "
                                 "version pulls unverified")
        pushed_at = data.get("pushed_at")
        by, note = data.get("pushed_by"), data.get("note")
        return cls(version, size, sha, pushed_at if isinstance(pushed_at, str) else "",
                   by if isinstance(by, str) else None, note if isinstance(note, str) else None)

    def to_bytes(self) -> bytes:
        return json.dumps({"format": FORMAT, "version": self.version, "size": self.size,
                           "sha256": self.sha256, "pushed_at": self.pushed_at,
                           "pushed_by": self.pushed_by, "note": self.note}, indent=2).encode()


@dataclass(frozen=True)
class PackageInfo:
    """One row of ``list``; ``problem`` says why ``latest`` could not be read, if so."""

    name: str
    latest: str | None
    localname: str | None
    problem: str | None = None


@dataclass(frozen=True)
class VersionInfo:
    """One version as ``list-versions`` shows it; None where the pushing tool recorded nothing.

    ``problem`` says why a record exists but could not be used (damage), so a damaged version is
    not mistaken for one that was simply pushed without a record.
    """

    version: str
    size: int
    sha256: str | None = None
    pushed_at: str | None = None
    pushed_by: str | None = None
    note: str | None = None
    problem: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"version": self.version, "size": self.size, "sha256": self.sha256,
                "pushed_at": self.pushed_at}


@dataclass(frozen=True)
class PullResult:
    """What a pull did. ``checked_by`` is ``sha256``, ``etag`` (0.4.0 versions) or ``size``."""

    package: str
    version: str
    path: Path
    downloaded: bool
    checked_by: str

    @property
    def verified(self) -> bool:
        return self.checked_by == "sha256"
