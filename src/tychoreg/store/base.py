"""The store interface: the only thing the domain knows about where bytes live.

A store maps keys (``narf/tycho.json``) to immutable-or-compare-and-swapped objects. It offers
exactly what a registry needs to be safe under concurrency: create-if-absent, replace-if-unchanged
(an opaque ``etag`` from :meth:`Store.get`), and staged uploads whose data becomes visible in one
atomic step. Backends raise :class:`ObjectNotFound` and :class:`PreconditionFailed` for the two
outcomes the domain acts on, and :class:`~tychoreg.errors.StorageError` for everything else.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Protocol, runtime_checkable

from ..errors import IntegrityError, StorageError

#: Bytes moved per step of a streamed transfer (and hashed per step on the way).
CHUNK = 1024 * 1024

#: The largest metadata document (tycho.json, a record) a store will read into memory.
MAX_DOCUMENT = 16 * 1024 * 1024

#: Called with the number of bytes just moved; used for progress display.
Progress = Callable[[int], None]

#: Called when a transfer starts, with a label (``narf 1.2``) and its size in bytes; returns the
#: :data:`Progress` callback for that transfer. How (or whether) it is shown is the caller's affair.
ProgressFactory = Callable[[str, int], Progress]


class ObjectNotFound(StorageError):
    """The key does not exist."""


class TransferInterrupted(StorageError):
    """A read stopped part way (reset, timeout, truncated body); it may resume where it stopped."""


class PreconditionFailed(StorageError):
    """A conditional write lost: the key exists (create) or changed (replace)."""


class GuardChanged(PreconditionFailed):
    """A guarded commit found its guard changed; the staged data is kept for another attempt."""


@dataclass(frozen=True)
class ObjectInfo:
    """What a listing or a head request tells about one object."""

    key: str
    size: int
    etag: str | None = None
    modified: datetime | None = None
    #: User metadata written with the object (S3 ``x-amz-meta-*``; file: extended attributes).
    #: Only :meth:`Store.head` fills it; listings do not carry it.
    meta: Mapping[str, str] = field(default_factory=dict, hash=False)
    #: The store's own clock when it answered (S3: the ``Date`` header), so ages are measured
    #: by one clock (the one that set ``modified``) and a client whose clock is off cannot
    #: mistake a fresh object for an old one.
    answered: datetime | None = None
    #: This exact object, for :meth:`Store.read`'s ``if_match`` (S3: its ETag; a file: device,
    #: inode, size and modification time). Only :meth:`Store.head` fills it.
    stamp: str | None = None

    def age_seconds(self, now: datetime | None = None) -> float | None:
        """How old the object is by the store's clock (``answered``, else ``now`` from
        :meth:`Store.now`, else ours); None if unknown."""
        if self.modified is None:
            return None
        now = self.answered or now or datetime.now(timezone.utc)
        modified = self.modified if self.modified.tzinfo else self.modified.replace(tzinfo=timezone.utc)
        now = now if now.tzinfo else now.replace(tzinfo=timezone.utc)
        return (now - modified).total_seconds()


@dataclass(frozen=True)
class Leftover:
    """Staged data that was never committed or aborted (a push that died): for ``gc``."""

    key: str
    ref: str  # what the store needs to remove it: an upload id, a temporary file's path
    size: int | None
    started: datetime | None


class Source(Protocol):
    """What :meth:`Store.stage` uploads: read once, in order (a file, or a reader that hashes
    what passes through it)."""

    def read(self, size: int, /) -> bytes: ...


class Sink(Protocol):
    """What :meth:`Store.read` writes into, in order (a file, or a writer that hashes what passes
    through it)."""

    def write(self, data: bytes, /) -> object: ...


@runtime_checkable
class RangeSink(Sink, Protocol):
    """A sink that parallel ranged reads fill at their offsets (``write_at``, any thread) while
    the bytes are handed over in order (``account``, one thread): see
    :class:`tychoreg.integrity.PositionalWriter`. Reads that are not split write in order."""

    def write_at(self, data: bytes, offset: int) -> None: ...

    def account(self, data: bytes) -> None: ...


class StagedUpload(Protocol):
    """Data uploaded but not yet visible under its key."""

    @property
    def size(self) -> int: ...

    @property
    def etag(self) -> str | None:
        """The ETag the object will have once committed, when the store can tell it in advance
        (lets a client recognise its own write after a retried request); None otherwise."""

    def commit(self, guard: tuple[str, str] | None = None) -> None:
        """Make the data visible under the key if the key does not exist yet.

        ``guard`` is ``(key, etag)``: commit only while that other object still has that etag
        (the push's claim). Stores that can check this atomically with the commit do so
        (:attr:`Store.atomic_guard`); others ignore it, and the caller confirms its claim after
        committing (docs/FORMAT.md, "Publishing a version").

        Raises :class:`PreconditionFailed` when the key exists (the staged data is then
        discarded), :class:`GuardChanged` when the guard no longer holds (the staged data is kept:
        commit again with a new guard, or abort).
        """

    def abort(self) -> None:
        """Discard the staged data; safe to call more than once."""


class Store(Protocol):
    """A flat namespace of keys, with the conditional writes a registry needs."""

    # Read-only for the domain: a store sets them itself (a class attribute, an attribute set
    # when it is made, or a property asked on first use).
    @property
    def location(self) -> str:
        """Where the store is, for messages (never holds a secret)."""

    @property
    def identity(self) -> str:
        """Which store this is, for what is remembered per store on this machine: the location
        plus whatever tells two stores of one location apart (an S3 endpoint)."""

    @property
    def atomic_guard(self) -> bool:
        """True when :meth:`StagedUpload.commit` checks its ``guard`` atomically with the commit."""

    @property
    def probe_conditional_writes(self) -> bool:
        """True when the store may accept conditional requests and ignore them (S3-compatible
        servers): then pushes check it once (see :mod:`tychoreg.probe`)."""

    @property
    def keeps_metadata(self) -> bool:
        """True when the store keeps the metadata written with an object (S3 and S3-compatible
        stores; a folder where its file system keeps user extended attributes), so data without
        a push id was not written by a tychoreg push."""

    def get(self, key: str) -> tuple[bytes, str]:
        """Return a small object's bytes and an etag for :meth:`put_if_match`.

        Only documents are read this way; one larger than :data:`MAX_DOCUMENT` is refused with
        a :class:`StorageError` rather than read into memory (a planted huge ``tycho.json``)."""

    def head(self, key: str) -> ObjectInfo | None:
        """Return size and etag, or None when the key does not exist."""

    def put_if_absent(self, key: str, data: bytes) -> str:
        """Create the object and return its etag; :class:`PreconditionFailed` when the key exists."""

    def put_if_match(self, key: str, data: bytes, etag: str) -> str:
        """Replace the object only if it still has ``etag``; else :class:`PreconditionFailed`."""

    def delete(self, key: str) -> None:
        """Remove the object; removing a missing key is not an error."""

    def delete_if_match(self, key: str, etag: str, *, unless: str | None = None) -> None:
        """Remove the object only if it still has ``etag``; else :class:`PreconditionFailed`.

        ``unless`` names another key: where the store can check it atomically with the delete
        (:attr:`atomic_guard`), the delete happens only while that key does not exist (gc
        removing a claim whose data may be committed right now); other stores ignore it, and the
        caller checks afterwards."""

    def now(self) -> datetime | None:
        """The store's clock, where it has one apart from its answers (a shared folder: its file
        system's); None when ages come with :attr:`ObjectInfo.answered` (S3) or not at all."""

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        """Every object whose key starts with ``prefix``, complete (all pages)."""

    def list_folders(self, prefix: str) -> Iterator[str]:
        """Names of the immediate sub-folders of ``prefix`` (``prefix`` ends with ``/`` or is empty)."""

    def stage(
        self,
        key: str,
        source: Source,
        size_hint: int | None = None,
        progress: Progress | None = None,
        meta: Mapping[str, str] | None = None,
    ) -> StagedUpload:
        """Upload everything ``source`` yields without making it visible; read it once, in order.

        ``meta`` (short ASCII names and values) is kept with the object and returned by
        :meth:`head`, where the store can keep it."""

    def read(
        self,
        key: str,
        sink: Sink,
        *,
        start: int = 0,
        size: int | None = None,
        progress: Progress | None = None,
        if_match: str | None = None,
    ) -> ObjectInfo:
        """Stream the object (from byte ``start``) into ``sink``, in order.

        ``size``, when the caller knows it, lets a store split the read into parallel ranges.
        ``if_match`` (a :attr:`ObjectInfo.stamp` from :meth:`head`) makes every request of the
        read conditional: an object replaced since raises :class:`PreconditionFailed` instead
        of mixing bytes."""

    def leftovers(self) -> Iterator[Leftover]:
        """Staged uploads never committed nor aborted, anywhere in the registry."""

    def remove_leftover(self, leftover: Leftover) -> None:
        """Discard one; removing one already gone is not an error."""


@runtime_checkable
class MultipartStore(Protocol):
    """A store whose objects may be multipart uploads (S3): their ETag is recomputed from the
    bytes only when the part size is known."""

    def first_part_size(self, key: str) -> int | None:
        """Size of part 1 of a multipart-uploaded object, or None."""


def same_etag(a: str | None, b: str | None) -> bool:
    """ETags compare without their quotes; an unknown one never matches."""
    return bool(a and b and a.strip('"').lower() == b.strip('"').lower())


def too_large(location: str, key: str, size: int) -> IntegrityError:
    """A planted or damaged document: refused, and treated like any other damaged one."""
    return IntegrityError(
        f"{location}/{key} is {size} bytes, too large for a metadata document "
        f"(limit {MAX_DOCUMENT}); it is damaged or planted",
        "repair or remove it",
    )


@runtime_checkable
class LocalStore(Protocol):
    """A store whose objects are files under a folder on this machine (the file backend): a
    folder being packed must neither hold it nor lie inside it."""

    @property
    def root(self) -> Path: ...


# -- performance on a real network (issue 16) ------------------------------------------------
@runtime_checkable
class FileRangeSink(RangeSink, Protocol):
    """A :class:`RangeSink` backed by a file, whose ranges can be handed over in order from what
    was written (``account_written``) instead of from pieces held in memory: then a ranged read
    keeps nothing in memory, and can have many more ranges in flight on a slow, far link."""

    def account_written(self, offset: int, size: int) -> None: ...


# -- delta pulls: reading one byte range (docs/FORMAT.md, "Chunk indexes") ---------------------
#: A range's bytes, in the pieces they arrived in (joining them would briefly double the memory).
Pieces = list[bytes]


class RangesUnsupported(StorageError):
    """The store (a web server) does not serve byte ranges: read objects whole."""


@runtime_checkable
class RangeReader(Protocol):
    """A store that reads any byte range of an object (S3, a folder, a web server that serves
    ranges): what a delta pull fetches its missing pieces with."""

    def read_range(self, key: str, first: int, last: int, *, size: int, if_match: str | None = None) -> list[bytes]:
        """Bytes ``first..last`` (inclusive) of the object of ``size`` bytes, in pieces;
        ``if_match`` as for :meth:`Store.read`. Raises :class:`RangesUnsupported` when the store
        cannot, and the errors of :meth:`Store.read`."""
        ...
