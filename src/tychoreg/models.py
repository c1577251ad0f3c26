"""The documents a registry stores, and the results its operations return.

Stored documents are parsed defensively: a ``tycho.json`` or version record is input from whoever
can write to the bucket, so a wrong type, an unsafe ``localname`` or a lying record is reported as
damage instead of being trusted.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from .errors import IntegrityError
from .names import is_valid_segment

if TYPE_CHECKING:
    from .pack import Packed

FORMAT = 1
#: The key of ``tycho.json`` under which tychoreg keeps what 0.4.0 does not know (tags, yanks).
EXTENSION = "tychoreg"
_HEX64 = frozenset("0123456789abcdef")
#: The data object's metadata name for the push that wrote it (S3 ``x-amz-meta-tycho-push-id``).
PUSH_ID = "tycho-push-id"
#: Claims a record may remember having taken over (each took a claim timeout to become stale).
MAX_REPLACED = 16
#: How a version's bytes are checked: its recorded SHA-256, its S3 ETag recomputed, or only its size.
CheckedBy = Literal["sha256", "etag", "size"]


def _load_object(raw: bytes, what: str) -> dict[str, Any]:
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise IntegrityError(f"{what} is not valid JSON", "repair or re-create it") from None
    except RecursionError:  # nested deeper than any document of ours; planted or damaged
        raise IntegrityError(
            f"{what} is nested too deeply to be a document of ours", "repair or re-create it"
        ) from None
    if not isinstance(data, dict):
        raise IntegrityError(f"{what} is not a JSON object", "repair or re-create it")
    return data


@dataclass
class PackageDoc:
    """``PKG/tycho.json``: 0.4.0's two fields, plus any other keys, kept as they are.

    Fields are checked when used, not when read: a damaged ``localname`` must not stop a pull
    to another destination or a ``promote`` that repairs ``latest``.
    """

    package: str
    # Both as stored: any JSON value until checked (:meth:`checked_localname`,
    # :meth:`checked_latest`). Any rather than object: ``packages()`` lists the stored
    # localname and ``yank`` reports the stored latest as they are.
    localname: Any
    latest: Any = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, package: str, raw: bytes) -> PackageDoc:
        data = _load_object(raw, f"package {package}'s tycho.json")
        return cls(package, data.pop("localname", None), data.pop("latest", None), data)

    def checked_localname(self) -> str:
        if is_valid_segment(self.localname):
            return self.localname
        raise IntegrityError(
            f"package {self.package}'s tycho.json has an unsafe or missing localname {self.localname!r}",
            f"repair localname in {self.package}/tycho.json",
            reason="bad-localname",
            package=self.package,
        )

    def checked_latest(self) -> str | None:
        if self.latest is None or is_valid_segment(self.latest):
            return self.latest
        raise IntegrityError(
            f"package {self.package}'s tycho.json has an invalid latest {self.latest!r}",
            "promote a version to repair it",
            reason="bad-latest",
            package=self.package,
        )

    # -- tychoreg's additions, under the "tychoreg" key (see docs/FORMAT.md) ----------------
    def _section(self, name: str) -> dict[str, Any]:
        ours = self.extra.get(EXTENSION)
        value = ours.get(name) if isinstance(ours, dict) else None
        return value if isinstance(value, dict) else {}

    def _set_section(self, name: str, value: dict[str, Any]) -> None:
        ours = self.extra.get(EXTENSION)
        if not isinstance(ours, dict):
            ours = self.extra[EXTENSION] = {}
        if value:
            ours[name] = dict(sorted(value.items()))
        else:
            ours.pop(name, None)
        if not ours:
            del self.extra[EXTENSION]

    @property
    def tags(self) -> dict[str, str]:
        """Every tag, ``latest`` included, that points to a well-formed version name."""
        tags = {k: v for k, v in self._section("tags").items() if is_valid_segment(k) and is_valid_segment(v)}
        if is_valid_segment(self.latest):
            tags["latest"] = self.latest
        return dict(sorted(tags.items()))

    def set_tag(self, tag: str, version: str | None) -> None:
        """Point ``tag`` at ``version`` (None removes it); ``latest`` stays 0.4.0's own field."""
        if tag == "latest":
            self.latest = version
            return
        tags = self._section("tags")
        if version is None:
            tags.pop(tag, None)
        else:
            tags[tag] = version
        self._set_section("tags", tags)

    @property
    def yanked(self) -> dict[str, dict[str, Any]]:
        """Yanked versions: ``{version: {"reason", "at", "by"}}``."""
        return {k: (v if isinstance(v, dict) else {}) for k, v in self._section("yanked").items()}

    def set_yanked(self, version: str, entry: dict[str, Any] | None) -> None:
        yanked = self._section("yanked")
        if entry is None:
            yanked.pop(version, None)
        else:
            yanked[version] = entry
        self._set_section("yanked", yanked)

    def to_bytes(self) -> bytes:
        # Same shape as 0.4.0 writes: localname, latest first, two-space indent.
        return json.dumps({"localname": self.localname, "latest": self.latest, **self.extra}, indent=2).encode()


@dataclass(frozen=True)
class VersionRecord:
    """``PKG/.tycho/versions/VERSION.json``: written once, before the data becomes visible.

    ``push_id`` names the push that wrote it; the same id is in the data object's metadata
    (:data:`PUSH_ID`), so a reader can tell whether this record describes the stored bytes.
    ``etag`` is the ETag the data object was to have (S3 makes it from the bytes): a listing of
    the data then tells, without a request per version, which records may not describe it, and
    on a store that keeps no metadata it still tells whose the data is.
    ``replaced`` keeps the claims this record took over (stale ones, see docs/FORMAT.md): if
    the push that made one of them was alive after all and committed its data, that claim is
    the record that describes the data, and nothing is lost.
    """

    version: str
    size: int
    sha256: str
    pushed_at: str
    pushed_by: str | None = None
    note: str | None = None
    push_id: str | None = None
    replaced: tuple[VersionRecord, ...] = ()
    etag: str | None = None

    @classmethod
    def parse(cls, package: str, version: str, raw: bytes) -> VersionRecord:
        return cls.from_object(package, version, _load_object(raw, f"the record of {package} {version}"))

    @classmethod
    def from_object(cls, package: str, version: str, data: dict[str, Any], *, nested: bool = False) -> VersionRecord:
        what = f"the record of {package} {version}"
        size, sha = data.get("size"), data.get("sha256")
        if (
            data.get("version") != version
            or not isinstance(size, int)
            or isinstance(size, bool)
            or size < 0
            or not isinstance(sha, str)
            or len(sha) != 64
            or not set(sha) <= _HEX64
        ):
            raise IntegrityError(
                f"{what} is damaged (wrong version, size or sha256)",
                f"repair or remove {package}/.tycho/versions/{version}.json",
            )
        pushed_at = data.get("pushed_at")
        by, note, push_id, etag = data.get("pushed_by"), data.get("note"), data.get("push_id"), data.get("etag")
        replaced: tuple[VersionRecord, ...] = ()
        earlier = data.get("replaced")
        if not nested and isinstance(earlier, list):
            replaced = tuple(
                cls.from_object(package, version, e, nested=True)
                for e in earlier[:MAX_REPLACED]
                if isinstance(e, dict) and _well_formed(e, version)
            )
        return cls(
            version,
            size,
            sha,
            pushed_at if isinstance(pushed_at, str) else "",
            by if isinstance(by, str) else None,
            note if isinstance(note, str) else None,
            push_id if isinstance(push_id, str) and push_id else None,
            replaced,
            etag if isinstance(etag, str) and etag else None,
        )

    def replacing(self, old: VersionRecord) -> VersionRecord:
        """This claim, taking over ``old``: it remembers ``old`` and what ``old`` remembered."""
        earlier = (replace(old, replaced=()), *old.replaced)
        return replace(self, replaced=tuple(r for r in earlier if r.push_id)[:MAX_REPLACED])

    def describing(
        self, data_push_id: str | None, data_etag: str | None = None, *, keeps_metadata: bool = False
    ) -> VersionRecord | None:
        """The record (this one, or one it replaced) that describes the data, which the push
        ``data_push_id`` wrote and whose ETag is ``data_etag``; None when none does.

        The push id decides when the data has one. Data without one was written by a client
        that does not claim (0.4.0), or kept by a store that drops metadata. Then an expected
        ETag decides where both are known; else, on a store that ``keeps_metadata``, a record
        with a push id does not describe it (the data is not a tychoreg push's), and on one
        that does not, the record whose size fits is taken. Records from before push ids
        describe whatever is there, as they always did."""
        if data_push_id is not None:
            if self.push_id is None or self.push_id == data_push_id:
                return self
            return next((r for r in self.replaced if r.push_id == data_push_id), None)
        if self.push_id is None:
            return self
        if self.etag and data_etag:
            if _same_etag(self.etag, data_etag):
                return self
            return next((r for r in self.replaced if r.etag and _same_etag(r.etag, data_etag)), None)
        return None if keeps_metadata else self

    def to_object(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "format": FORMAT,
            "version": self.version,
            "size": self.size,
            "sha256": self.sha256,
            "pushed_at": self.pushed_at,
            "pushed_by": self.pushed_by,
            "note": self.note,
        }
        if self.push_id:
            out["push_id"] = self.push_id
        if self.etag:
            out["etag"] = self.etag
        if self.replaced:
            out["replaced"] = [r.to_object() for r in self.replaced]
        return out

    def to_bytes(self) -> bytes:
        return json.dumps(self.to_object(), indent=2).encode()


def record_for_data(
    package: str,
    version: str,
    record: VersionRecord,
    push_id: str | None,
    etag: str | None = None,
    *,
    keeps_metadata: bool = False,
) -> VersionRecord:
    """The record that describes the stored data (its push id and ETag): ``record`` itself, or a
    claim it took over; an integrity error when none does."""
    found = record.describing(push_id, etag, keeps_metadata=keeps_metadata)
    if found is None:
        raise IntegrityError(
            f"{package} {version} is damaged: its record belongs to another push than its data",
            "re-push it as a new version",
            reason="foreign-record",
            package=package,
            version=version,
        )
    return found


def _same_etag(a: str, b: str) -> bool:
    return a.strip('"').lower() == b.strip('"').lower()


def _well_formed(data: dict[str, Any], version: str) -> bool:
    try:
        VersionRecord.from_object("", version, data, nested=True)
    except IntegrityError:
        return False
    return True


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
    tags: tuple[str, ...] = ()
    yanked: bool = False
    yank_reason: str | None = None
    #: Who signed it, as the trusted signers name them (None: not checked; empty: unsigned).
    signers: tuple[str, ...] | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "version": self.version,
            "size": self.size,
            "sha256": self.sha256,
            "pushed_at": self.pushed_at,
            "pushed_by": self.pushed_by,
            "note": self.note,
            "tags": list(self.tags),
            "yanked": self.yanked,
            "yank_reason": self.yank_reason,
        }
        if self.signers is not None:
            out["signed_by"] = list(self.signers)
        return out


@dataclass(frozen=True)
class PullResult:
    """What a pull did. ``checked_by`` is ``sha256``, ``etag`` (0.4.0 versions) or ``size``."""

    package: str
    version: str
    path: Path
    downloaded: bool
    checked_by: CheckedBy
    #: Set when the version was pulled by its exact version although yanked.
    yanked: bool = False
    yank_reason: str | None = None
    #: How often an interrupted transfer was resumed with a ranged read.
    resumes: int = 0
    #: The bytes came from the shared cache (no download).
    from_cache: bool = False
    #: ``path`` is a folder the archive was unpacked into (``--extract``).
    extracted: bool = False
    #: Who signed it, as the trusted signers name them (None: no trust configured; empty: unsigned).
    signers: tuple[str, ...] | None = None

    #: The version's size and SHA-256 (None: pushed by a tool that recorded none).
    size: int | None = None
    sha256: str | None = None
    #: Delta pulls: bytes taken from local files, and bytes read from the store (None when the
    #: store was not read, e.g. the destination or the cache held the version).
    reused: int = 0
    fetched: int | None = None

    @property
    def verified(self) -> bool:
        return self.checked_by == "sha256"

    def to_json(self) -> dict[str, Any]:
        """What ``--json`` prints for this pull (the command-line contract's ``pull`` shape, then more)."""
        return {
            "package": self.package,
            "version": self.version,
            "path": str(self.path),
            "size": self.size,
            "sha256": self.sha256,
            "downloaded": self.downloaded,
            "from_cache": self.from_cache,
            "extracted": self.extracted,
            "checked_by": self.checked_by,
            "verified": self.verified,
            "resumes": self.resumes,
            "yanked": self.yanked,
            "yank_reason": self.yank_reason,
            "reused_bytes": self.reused,
            "fetched_bytes": self.fetched or 0,
        }


@dataclass(frozen=True)
class Resolved:
    """A selector pinned down: what a lock file records for one package."""

    package: str
    version: str
    sha256: str | None
    size: int
    localname: str
    #: Who signed it (the trusted signers' principals) and one such signature, when trust is configured.
    signer: str | None = None
    signature: str | None = None


@dataclass(frozen=True)
class PushResult:
    """What a push did: ``skipped`` when ``--skip-existing`` found the same bytes already there."""

    version: VersionInfo
    skipped: bool = False
    promoted: bool = False
    #: The fingerprint of the key that signed it (``push --sign``), if any.
    signed_by: str | None = None

    #: What a folder was packed into, when a folder was pushed.
    packed: Packed | None = None

    #: What ``latest`` is after the push (as the push last read it).
    latest: str | None = None

    def to_json(self, package: str) -> dict[str, Any]:
        """What ``--json`` prints for this push (the command-line contract's ``push`` shape, then more)."""
        v = self.version
        return {
            "package": package,
            "version": v.version,
            "size": v.size,
            "sha256": v.sha256,
            "latest": self.latest,
            "skipped": self.skipped,
            "promoted": self.promoted,
            "pushed_at": v.pushed_at,
            "pushed_by": v.pushed_by,
            "note": v.note,
            "signed_by": self.signed_by,
            "packed": None
            if self.packed is None
            else {
                "folder": str(self.packed.folder),
                "format": self.packed.format,
                "files": self.packed.files,
                "folders": self.packed.folders,
                "links": self.packed.links,
                "content_bytes": self.packed.content_bytes,
                "archive_bytes": self.packed.archive_bytes,
            },
        }


@dataclass(frozen=True)
class PackageDetails:
    """``info PKG``: the package document and its newest versions (highest first)."""

    name: str
    localname: str | None
    tags: dict[str, str]
    yanked: dict[str, str | None]
    version_count: int
    newest: list[VersionInfo]

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "localname": self.localname,
            "latest": self.tags.get("latest"),
            "tags": self.tags,
            "yanked": self.yanked,
            "version_count": self.version_count,
            "newest": [v.to_json() for v in self.newest],
        }
