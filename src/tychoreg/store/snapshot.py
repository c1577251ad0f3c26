"""A package's objects as its machine index describes them: the read side of a store, from JSON.

Every write keeps ``PKG/.tycho/catalog.json`` current (see :mod:`tychoreg.webindex` and
docs/FORMAT.md, "The static catalog"): beside what people and scripts read (the versions, tags,
latest), it holds what a listing and a head of each of the package's objects would say (size,
ETag, modification time, user metadata) and the bytes of its small documents (``tycho.json`` and
the version records). :class:`SnapshotStore` answers ``get``, ``head`` and ``list`` from it, so
the domain runs unchanged against a registry it can reach only over plain HTTP, where there is no
listing, and gets in one request what a bucket answers in several. Data is never in it: a
subclass that can read data (:class:`tychoreg.store.http.HttpStore`) says how.

Parsed defensively: whoever can write the registry can write this document too, and a damaged
one is an error about that package, never a crash.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NoReturn

from ..errors import IntegrityError, StorageError
from .base import Leftover, ObjectInfo, ObjectNotFound, Progress, Sink, Source, StagedUpload

#: The registry's machine index: which packages there are (a file at the root, never a folder:
#: tycho-station 0.4.0 takes every top-level folder for a package; a name no package can have).
ROOT_INDEX = ".tycho-catalog.json"
#: A package's machine index, among tychoreg's own keys under ``PKG/.tycho/``.
PACKAGE_INDEX = ".tycho/catalog.json"
FORMAT = 1


class ReadOnly(StorageError):
    """A write to a store that can only be read (a registry reached over HTTP)."""

    reason = "read-only"


@dataclass(frozen=True)
class Entry:
    """What a store said about one object, and a document's bytes."""

    size: int
    etag: str | None = None
    modified: str | None = None  # ISO 8601, as the store's listing gave it
    meta: Mapping[str, str] = field(default_factory=dict)
    body: bytes | None = None

    def to_object(self) -> dict[str, Any]:
        out: dict[str, Any] = {"size": self.size, "etag": self.etag, "modified": self.modified}
        if self.meta:
            out["meta"] = dict(sorted(self.meta.items()))
        if self.body is not None:
            try:
                out["body"] = self.body.decode()
            except UnicodeDecodeError:
                out["body_base64"] = base64.b64encode(self.body).decode()
        return out

    @classmethod
    def from_object(cls, obj: Any) -> Entry | None:
        """An entry, or None when ``obj`` is not one (a damaged entry is as good as absent)."""
        if not isinstance(obj, dict):
            return None
        size, etag, modified, meta = obj.get("size"), obj.get("etag"), obj.get("modified"), obj.get("meta", {})
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            return None
        if not (etag is None or isinstance(etag, str)) or not (modified is None or isinstance(modified, str)):
            return None
        if not isinstance(meta, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
            return None
        body: bytes | None = None
        if isinstance(obj.get("body"), str):
            body = obj["body"].encode()
        elif isinstance(obj.get("body_base64"), str):
            try:
                body = base64.b64decode(obj["body_base64"], validate=True)
            except (binascii.Error, ValueError):
                return None
        return cls(size, etag, modified, dict(meta), body)

    def info(self, key: str) -> ObjectInfo:
        return ObjectInfo(key, self.size, self.etag, _when(self.modified), dict(self.meta), stamp=self.stamp)

    @property
    def stamp(self) -> str:
        """This object as the index saw it, for pinning reads (see :meth:`SnapshotStore.head`)."""
        return self.etag or f"{self.size}@{self.modified}"


def _when(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


@dataclass(frozen=True)
class Snapshot:
    """One package's machine index: its objects (relative keys) and the whole document."""

    package: str
    entries: Mapping[str, Entry]
    document: Mapping[str, Any]

    @property
    def keeps_metadata(self) -> bool:
        return self.document.get("keeps_metadata") is True

    @classmethod
    def parse(cls, package: str, raw: bytes, where: str) -> Snapshot:
        try:
            doc = json.loads(raw)
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise _damaged(where, "it is not valid JSON") from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT or doc.get("package") != package:
            raise _damaged(where, f"it is not a format-{FORMAT} index of package {package}")
        objects = doc.get("objects")
        if not isinstance(objects, dict):
            raise _damaged(where, "it lists no objects")
        entries = {rel: e for rel, obj in objects.items() if isinstance(rel, str) and (e := Entry.from_object(obj))}
        return cls(package, entries, doc)

    # -- the read side of a store, for keys of this package --------------------------------
    def get(self, rel: str) -> tuple[bytes, str] | None:
        entry = self.entries.get(rel)
        if entry is None or entry.body is None:
            return None
        return entry.body, hashlib.md5(entry.body, usedforsecurity=False).hexdigest()

    def head(self, rel: str, key: str) -> ObjectInfo | None:
        entry = self.entries.get(rel)
        return None if entry is None else entry.info(key)

    def list(self, rel_prefix: str) -> Iterator[tuple[str, Entry]]:
        for rel in sorted(self.entries):
            if rel.startswith(rel_prefix):
                yield rel, self.entries[rel]


def _damaged(where: str, why: str) -> IntegrityError:
    return IntegrityError(
        f"the catalog {where} is damaged: {why}",
        "rebuild the catalog where the registry is written",
        reason="catalog-damaged",
    )


def split(key: str) -> tuple[str, str] | None:
    """``PKG/REST`` as (package, rest); None for a key at the registry's root."""
    package, sep, rest = key.partition("/")
    return (package, rest) if sep and package else None


class SnapshotStore:
    """A read-only :class:`~tychoreg.store.base.Store` whose packages are snapshots.

    ``snapshot`` gives a package's (None: no such package); subclasses fetch them. Writes raise
    :class:`ReadOnly`; reading data needs a subclass that can (this one has only metadata)."""

    atomic_guard = False
    probe_conditional_writes = False

    def __init__(self, location: str, snapshots: Mapping[str, Snapshot] | None = None) -> None:
        self.location = location
        self.identity = location
        self._snapshots: dict[str, Snapshot | None] = dict(snapshots or {})
        self._keeps_metadata = any(s.keeps_metadata for s in self._snapshots.values() if s)

    def snapshot(self, package: str) -> Snapshot | None:
        return self._snapshots.get(package)

    @property
    def keeps_metadata(self) -> bool:
        """What the store the index was made from said (every package's index says it; until one
        was read, False: then a record is taken as describing data that carries no push id, and
        the SHA-256 every pull checks still decides)."""
        return self._keeps_metadata

    def _in(self, key: str) -> tuple[Snapshot, str] | None:
        parts = split(key)
        if parts is None:
            return None
        snap = self.snapshot(parts[0])
        if snap is None:
            return None
        if snap.keeps_metadata:
            self._keeps_metadata = True
        return snap, parts[1]

    def get(self, key: str) -> tuple[bytes, str]:
        found = self._in(key)
        got = found[0].get(found[1]) if found else None
        if got is None:
            raise ObjectNotFound(f"{self.location}/{key} not found")
        return got

    def head(self, key: str) -> ObjectInfo | None:
        found = self._in(key)
        return found[0].head(found[1], key) if found else None

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        found = self._in(prefix)
        if found is None:
            return
        snap, rel_prefix = found
        for rel, entry in snap.list(rel_prefix):
            yield entry.info(f"{snap.package}/{rel}")

    def list_folders(self, prefix: str) -> Iterator[str]:
        if prefix:
            return
        yield from sorted(name for name, snap in self._snapshots.items() if snap is not None)

    def now(self) -> datetime | None:
        return None

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
        raise StorageError(f"{self.location}/{key}: a catalog holds no data")

    def leftovers(self) -> Iterator[Leftover]:
        return iter(())

    # -- writes: refused ---------------------------------------------------------------------
    def _refuse(self) -> NoReturn:
        raise ReadOnly(
            f"this registry is read-only over HTTP ({self.location})",
            "write to it through a config that names its bucket or folder",
        )

    def put_if_absent(self, key: str, data: bytes) -> str:
        self._refuse()

    def put_if_match(self, key: str, data: bytes, etag: str) -> str:
        self._refuse()

    def delete(self, key: str) -> None:
        self._refuse()

    def delete_if_match(self, key: str, etag: str, *, unless: str | None = None) -> None:
        self._refuse()

    def stage(
        self,
        key: str,
        source: Source,
        size_hint: int | None = None,
        progress: Progress | None = None,
        meta: Mapping[str, str] | None = None,
    ) -> StagedUpload:
        self._refuse()

    def remove_leftover(self, leftover: Leftover) -> None:
        self._refuse()
