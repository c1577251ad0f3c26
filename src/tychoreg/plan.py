"""Dry runs: what ``sync`` and ``delete`` would do, found by the checks the real commands make,
with nothing written, moved or deleted.

A plan reads what the command would read (the registry's documents, the lock file, the
destination and the shared cache) and stops where the command would start changing things. It
fails where the command would fail before changing anything (no such version, a tagged version
without ``force``, a stale lock with ``locked``), with the same errors.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from . import fetch, layout, refs, sync
from .cache import Cache
from .concurrency import each_package
from .config import Project
from .delete import refuse_tagged_package
from .deliver import NotCached
from .errors import TychoError, VersionNotFound
from .known import KnownDigests
from .lockfile import Locked
from .selector import Selector
from .store import Store
from .versions import sort_versions

#: What installing a package would take: nothing (the destination holds it), a copy from the
#: shared cache, or a download.
Action = Literal["up-to-date", "from-cache", "download"]


@dataclass(frozen=True)
class Planned:
    """One package a sync would install: which version, where, and what it would take."""

    package: str
    version: str
    path: Path
    size: int
    sha256: str | None
    action: Action
    extract: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "package": self.package,
            "version": self.version,
            "path": str(self.path),
            "size": self.size,
            "sha256": self.sha256,
            "action": self.action,
            "extracted": self.extract,
        }


@dataclass(frozen=True)
class SyncPlan:
    """What a sync would do: whether it would (re)write the lock file, and each package."""

    lockfile: Path
    lock_changes: bool
    packages: list[tuple[str, Planned | TychoError]]


@dataclass(frozen=True)
class DeletePlan:
    """What a delete would remove: one version (``version``) or the whole package (``versions``),
    and the tags that would go with it."""

    package: str
    version: str | None
    tags: list[str]
    versions: list[str]

    def to_json(self) -> dict[str, Any]:
        return {"package": self.package, "version": self.version, "tags": self.tags, "versions": self.versions}


def sync_plan(
    reg: sync.Registry,
    project: Project | None,
    *,
    store: Store,
    cache: Cache | None,
    known: KnownDigests | None,
    locked: bool = False,
    offline: bool = False,
    force: bool = False,
) -> SyncPlan:
    """What :func:`tychoreg.sync.sync` would do with the same options."""
    entries, changes = sync.to_install(reg, project, locked=locked, offline=offline, write=False)
    assert project is not None
    sync.check_destinations(reg, entries, project.folder)

    def one(name: str) -> Planned:
        entry = entries[name]
        dest = sync.destination(reg, entry, project.folder)
        action = _action(store, cache, known, entry, dest, offline=offline, force=force)
        return Planned(entry.package, entry.version, dest, entry.size, entry.sha256, action, entry.extract is not None)

    return SyncPlan(project.lockfile, changes, each_package(sorted(entries), one))


def _action(
    store: Store,
    cache: Cache | None,
    known: KnownDigests | None,
    entry: Locked,
    dest: Path,
    *,
    offline: bool,
    force: bool,
) -> Action:
    """As :meth:`tychoreg.Registry.install` decides: the destination, then the cache, then the store."""
    if entry.sha256 is None:
        if offline:
            raise NotCached(
                f"{entry.package} {entry.version} has no recorded SHA-256, so it cannot be installed without "
                "the registry",
                reason="offline-no-digest",
                package=entry.package,
                version=entry.version,
            )
        expected = fetch.expected_for(store, entry.package, entry.version, known=known)
    else:
        expected = fetch.Expected.pinned(entry.package, entry.version, entry.sha256, entry.size)
    if not force and _in_place(store, cache, entry, expected, dest):
        return "up-to-date"
    if cache is not None and expected.sha256 and cache.has(expected.sha256, expected.size):
        return "from-cache"
    if offline:
        raise NotCached(
            f"{entry.package} {entry.version} is not in the cache, and this install may not download",
            reason="offline-miss",
            package=entry.package,
            version=entry.version,
        )
    return "download"


def _in_place(store: Store, cache: Cache | None, entry: Locked, expected: fetch.Expected, dest: Path) -> bool:
    if entry.extract is None:
        return fetch.holds(store, dest, expected, cache)
    from . import extract  # noqa: PLC0415 - tarfile, zipfile, compressors: ~4 ms, only for extract folders

    return extract.read_stamp(dest) == extract.Stamp(entry.package, entry.version, expected.sha256)


def delete_plan(store: Store, package: str, selector: Selector | None, *, force: bool = False) -> DeletePlan:
    """What :func:`tychoreg.delete.delete_version` (or, with no ``selector``,
    :func:`~tychoreg.delete.delete_package`) would remove, refused as they refuse it."""
    doc, _ = refs.read(store, package)
    if selector is None:
        tags = sorted(doc.tags)
        if not force:
            refuse_tagged_package(package, tags)
        return DeletePlan(package, None, tags, sort_versions(refs.visible(store, package)))
    version = refs.exact(store, package, doc, selector)
    if store.head(layout.data(package, version)) is None:
        raise VersionNotFound(package, version)
    tags = sorted(t for t, v in doc.tags.items() if v == version)
    if not force:
        refs.refuse_tagged_version(package, version, tags)
    return DeletePlan(package, version, tags, [version])
