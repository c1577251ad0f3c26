"""The static catalog: machine indexes and web pages inside the registry, kept current by writes.

A registry served by any static web server (a bucket's website, a CDN, nginx over a folder,
``tychoreg serve``) is then a complete read-only registry: people browse its pages, and the
``http`` backend reads its machine indexes where a bucket would answer listings (docs/FORMAT.md,
"The static catalog"):

=================================  =============================================================
``PKG/.tycho/catalog.json``        the package: versions, tags, and what a listing and a head of
                                   each of its objects say, with its documents' bytes
``PKG/index.html``                 the package's page
``.tycho-catalog.json``            the registry: one summary per package
``index.html``                     the registry's page
=================================  =============================================================

Each is written with compare-and-swap after reading it, so concurrent writers lose nothing: a
package's index is rebuilt from a listing made *after* reading the index's ETag (a writer whose
listing missed a version that was committed meanwhile loses its swap to the writer of that
version, or runs after it and sees it); the registry's index is one entry per package, changed by
read-modify-swap from the package index read *inside* the loop, so the last swap always carries a
package index at least as new as any writer's. Pages are made from their index alone and carry its
serial: an older page never replaces a newer one.

Keeping the catalog current is best effort after a write has succeeded: a failure is reported
(:class:`CatalogNotUpdated`), never turned into a failed write, and :func:`rebuild` repairs it.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from . import catalog, layout, pages
from .ahead import both as ahead_both
from .concurrency import backoff, executor, parallel_map
from .errors import IntegrityError, OperationError, TychoError
from .models import PackageDoc
from .names import is_valid_segment
from .store import ObjectNotFound, PreconditionFailed, Store
from .store.base import ObjectInfo, same_etag
from .store.snapshot import FORMAT, Entry, Snapshot, SnapshotStore

CAS_ATTEMPTS = 12
#: Fields of an index that change with every write of it, not with the registry.
VOLATILE = frozenset({"serial", "epoch", "generated_at"})
#: Packages rebuilt at once by :func:`rebuild` and :func:`check` (each reads its objects in parallel).
PACKAGES_AT_ONCE = 4


#: What was read of an object before the loop that writes it: its bytes and ETag (None, None:
#: absent). The first attempt uses it; compare-and-swap on that ETag makes that as safe as
#: reading it inside the loop, and a lost swap reads it again.
Seen = tuple[bytes | None, str | None]


class CatalogNotUpdated(OperationError):
    """The static catalog could not be brought up to date (the write before it succeeded)."""

    reason = "catalog-not-updated"


@dataclass
class IndexReport:
    """What :func:`rebuild` wrote, or what :func:`check` found stale."""

    packages: int = 0
    written: list[str] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _iso(when: datetime | None) -> str | None:
    if when is None:
        return None
    return (when if when.tzinfo else when.replace(tzinfo=timezone.utc)).astimezone(timezone.utc).isoformat()


def _read(store: Store, key: str) -> tuple[bytes | None, str | None]:
    try:
        return store.get(key)
    except ObjectNotFound:
        return None, None


def _read_ahead(store: Store, key: str) -> Seen | None:
    """:func:`_read` before it is needed; None if it failed (it is then read where it is needed,
    and fails there if it must: e.g. the root page's name held by a package's folder)."""
    try:
        return _read(store, key)
    except TychoError:
        return None


def _put(store: Store, key: str, body: bytes, etag: str | None) -> None:
    if etag is None:
        store.put_if_absent(key, body)
    else:
        store.put_if_match(key, body, etag)


def _encode(doc: Mapping[str, Any]) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()


def _state(doc: Mapping[str, Any]) -> dict[str, Any]:
    """What an index says about the registry (its serial, epoch and time left out)."""
    plain: dict[str, Any] = json.loads(json.dumps(doc))
    return {k: v for k, v in plain.items() if k not in VOLATILE}


def _stamp(doc: Mapping[str, Any]) -> tuple[str, int]:
    epoch, serial = doc.get("epoch"), doc.get("serial")
    return (
        epoch if isinstance(epoch, str) and epoch else "0",
        serial if isinstance(serial, int) and not isinstance(serial, bool) else 0,
    )


# -- a package's index ---------------------------------------------------------------------------
def read_package_index(store: Store, package: str) -> tuple[Snapshot | None, str | None]:
    """The package's index (None if missing or damaged) and its ETag (to replace it)."""
    return _parse_package_index(store, package, _read(store, layout.package_index(package)))


def _parse_package_index(store: Store, package: str, seen: Seen) -> tuple[Snapshot | None, str | None]:
    raw, etag = seen
    if raw is None:
        return None, None
    try:
        return Snapshot.parse(package, raw, f"{store.location}/{layout.package_index(package)}"), etag
    except IntegrityError:
        return None, etag  # damaged: rebuilt and swapped in


def _wanted(package: str, key: str) -> bool:
    """The package's own objects: its document, its versions' data and records."""
    if key == layout.package_doc(package):
        return True
    version = layout.version_of_data(package, key) or layout.version_of_record(package, key)
    return is_valid_segment(version)


def build(store: Store, package: str, previous: Snapshot | None, fresh: Sequence[str] = ()) -> dict[str, Any] | None:
    """The package's index as the store says it is now (None: there is no such package).
    What ``previous`` already holds of an object that is unchanged (same size, ETag and time)
    is reused: only new records are read and only new data is headed. The document, the listing
    and the ``fresh`` keys (what the write just made: a pushed version's data and record) are
    read at once, so a push's new version costs no round trip of its own."""

    def read_doc() -> bytes | None:
        return _read(store, layout.package_doc(package))[0]

    def listing() -> list[ObjectInfo]:
        return [info for info in store.list(f"{package}/") if _wanted(package, info.key)]

    def ahead(key: str) -> Seen | ObjectInfo | None:
        try:
            return _read(store, key) if layout.version_of_record(package, key) else store.head(key)
        except TychoError:
            return None  # a hint only: read again below if listed

    prefetch = [k for k in fresh if _wanted(package, k) and k != layout.package_doc(package)]
    with executor(2 + len(prefetch)) as pool:
        doc_read, list_read = pool.submit(read_doc), pool.submit(listing)
        early_reads = {k: pool.submit(ahead, k) for k in prefetch}
    raw, listed = doc_read.result(), list_read.result()
    early = {k: f.result() for k, f in early_reads.items()}
    if raw is None:
        return None
    doc_raw = raw
    old = previous.entries if previous else {}

    def entry(info: ObjectInfo) -> tuple[str, Entry] | None:
        rel = info.key[len(package) + 1 :]
        modified = _iso(info.modified)
        if rel == layout.PACKAGE_DOC:  # the bytes read above; the listing's fingerprint if it is of them
            fits = info.size == len(doc_raw) and (
                info.etag is None or same_etag(info.etag, hashlib.md5(doc_raw, usedforsecurity=False).hexdigest())
            )
            return rel, Entry(len(doc_raw), info.etag if fits else None, modified if fits else None, body=doc_raw)
        before = old.get(rel)
        if before and (before.size, before.etag, before.modified) == (info.size, info.etag, modified):
            return rel, Entry(info.size, info.etag, modified, before.meta, before.body)
        known = early.get(info.key)
        if layout.version_of_record(package, info.key):
            if isinstance(known, tuple) and known[0] is not None and same_etag(known[1], info.etag):
                return rel, Entry(info.size, info.etag, modified, body=known[0])
            try:
                body, _ = store.get(info.key)
            except ObjectNotFound:
                return None  # deleted since the listing
            return rel, Entry(info.size, info.etag, modified, body=body)
        if isinstance(known, ObjectInfo) and known.size == info.size and same_etag(known.etag, info.etag):
            return rel, Entry(info.size, info.etag, modified, dict(known.meta))
        head = store.head(info.key)
        if head is None:
            return None
        return rel, Entry(info.size, info.etag, modified, dict(head.meta))

    found = [e for e in parallel_map(entry, listed) if e is not None]
    entries = dict(sorted(found))
    if layout.PACKAGE_DOC not in entries:
        entries[layout.PACKAGE_DOC] = Entry(len(doc_raw), body=doc_raw)
    keeps_metadata = store.keeps_metadata
    view = SnapshotStore(
        store.location,
        {package: Snapshot(package, entries, {"format": FORMAT, "package": package, "keeps_metadata": keeps_metadata})},
    )
    doc: PackageDoc | None = None
    problem: str | None = None
    listed_versions: list[dict[str, Any]] = []
    try:
        doc = PackageDoc.parse(package, doc_raw)
        listed_versions = [{**v.to_json(), "problem": v.problem} for v in catalog.versions(view, package, doc)]
    except IntegrityError as exc:
        problem = str(exc)
    changed = [e.modified for rel, e in entries.items() if e.modified and not rel.startswith(".")]
    yanked = {
        v: {k: e.get(k) for k in ("reason", "at", "by") if isinstance(e.get(k), str)}
        for v, e in (doc.yanked if doc else {}).items()
    }
    return {
        "format": FORMAT,
        "package": package,
        "keeps_metadata": keeps_metadata,
        "localname": doc.localname if doc and is_valid_segment(doc.localname) else None,
        "latest": doc.latest if doc and is_valid_segment(doc.latest) else None,
        "tags": doc.tags if doc else {},
        "yanked": yanked,
        "updated": max(changed, default=None),
        "problem": problem,
        "versions": listed_versions,
        "objects": {rel: e.to_object() for rel, e in entries.items()},
    }


def _with_stamp(fresh: Mapping[str, Any], previous: Snapshot | None) -> dict[str, Any]:
    before = previous.document if previous else {}
    epoch, serial = _stamp(before)
    if not before.get("epoch"):
        epoch = secrets.token_hex(8)
    head = {"format": FORMAT, "package": fresh["package"], "serial": serial + 1, "epoch": epoch, "generated_at": _now()}
    return {**head, **{k: v for k, v in fresh.items() if k not in head}}


def refresh_package(store: Store, package: str, written: list[str] | None = None) -> dict[str, Any] | None:
    """Bring the package's index and page up to date; returns its index (None: no such
    package, and whatever catalog it had is withdrawn). Keys written go to ``written``."""
    current = _refresh_index(store, package, written)
    if current is not None:
        _write_package_page(store, package, current, written)
        if store.head(layout.package_doc(package)) is not None:
            return current
    _withdraw(store, package, written)  # no package, or deleted meanwhile: leave nothing behind
    return None


def _refresh_index(
    store: Store, package: str, written: list[str] | None, seen: Seen | None = None, fresh: Sequence[str] = ()
) -> dict[str, Any] | None:
    """Bring the package's index up to date (compare-and-swap, see the module docstring); returns
    it, or None when there is no such package (nothing is withdrawn here)."""
    key = layout.package_index(package)
    for attempt in range(CAS_ATTEMPTS):
        previous, etag = _parse_package_index(store, package, seen) if seen else read_package_index(store, package)
        seen = None
        fresh_now, fresh = fresh, ()
        current = build(store, package, previous, fresh_now)
        if current is None:
            return None
        if previous is not None and _state(previous.document) == _state(current):
            return dict(previous.document)
        current = _with_stamp(current, previous)
        try:
            _put(store, key, _encode(current), etag)
        except PreconditionFailed:
            backoff(attempt, 0.02, 1.0)
            continue  # another writer swapped first: rebuild from what it wrote
        if written is not None:
            written.append(key)
        return current
    raise CatalogNotUpdated(
        f"the catalog of package {package} kept changing under us", package=package, key=layout.package_index(package)
    )


def _write_package_page(
    store: Store, package: str, current: Mapping[str, Any], written: list[str] | None, seen: Seen | None = None
) -> None:
    stamp = _stamp(current)
    page = layout.package_page(package)
    if _write_page(store, page, pages.package_page(current, stamp), stamp, seen) and written is not None:
        written.append(page)


def _withdraw(store: Store, package: str, written: list[str] | None) -> None:
    """A package that is gone keeps no index or page of ours (tycho-station 0.4.0 would list its
    folder as a package). Only what is still ours and while the package is still gone."""
    for key in (layout.package_index(package), layout.package_page(package)):
        raw, etag = _read(store, key)
        if raw is None or etag is None or (key.endswith(".html") and pages.stamp_of(raw) is None):
            continue
        if store.head(layout.package_doc(package)) is not None:
            return  # created again meanwhile: its writer brings its catalog up to date
        try:
            store.delete_if_match(key, etag)
        except (PreconditionFailed, ObjectNotFound):
            continue
        if written is not None:
            written.append(key)


def _write_page(store: Store, key: str, page: bytes, stamp: tuple[str, int], seen: Seen | None = None) -> bool:
    """Put ``page`` at ``key`` unless it is there already, a newer one of ours is, or the key holds
    a page that is not ours (a bucket's own website: never overwritten). True if written."""
    blocked = False
    for attempt in range(CAS_ATTEMPTS):
        raw, etag = seen or _read(store, key)
        seen = None
        if raw is None and blocked:
            return False  # the name is taken by what is no object (on a folder: a package's folder)
        if raw is not None:
            if raw == page:
                return False
            theirs = pages.stamp_of(raw)
            if theirs is None:
                raise CatalogNotUpdated(
                    f"{store.location}/{key} is not a page tychoreg made; it was left as it is", key=key
                )
            if theirs[0] == stamp[0] and theirs[1] > stamp[1]:
                return False
        try:
            _put(store, key, page, etag)
            return True
        except PreconditionFailed:
            blocked = raw is None
            backoff(attempt, 0.02, 1.0)
    raise CatalogNotUpdated(f"{store.location}/{key} kept changing under us", key=key)


# -- the registry's index --------------------------------------------------------------------------
def summary(doc: Mapping[str, Any]) -> dict[str, Any]:
    """A package's entry in the registry's index, from its package index."""
    versions = doc.get("versions")
    return {
        "latest": doc.get("latest"),
        "localname": doc.get("localname"),
        "tags": doc.get("tags") if isinstance(doc.get("tags"), dict) else {},
        "versions": len(versions) if isinstance(versions, list) else 0,
        "updated": doc.get("updated"),
        "problem": doc.get("problem"),
        "epoch": doc.get("epoch"),
        "serial": doc.get("serial"),
    }


def _parse_root(raw: bytes | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or not isinstance(doc.get("packages"), dict):
        return None
    return doc


def _current_entry(store: Store, package: str) -> dict[str, Any] | None:
    snap, _ = read_package_index(store, package)
    return summary(snap.document) if snap else None


def _newer_or_same(old: Any, new: Mapping[str, Any]) -> bool:
    """Does the registry's entry ``old`` already say what ``new`` says, or something newer?"""
    if old == new:
        return True
    return (
        isinstance(old, dict)
        and old.get("epoch") == new.get("epoch")
        and isinstance(old.get("serial"), int)
        and isinstance(new.get("serial"), int)
        and old["serial"] > new["serial"]
    )


def _update_root(
    store: Store,
    change: Callable[[dict[str, Any]], bool],
    written: list[str] | None,
    seen: Seen | None = None,
    seen_page: Seen | None = None,
) -> dict[str, Any]:
    """Read-modify-swap the registry's index (``change`` edits its packages, says whether it
    did, and is called again on every attempt), then bring its page up to date."""
    for attempt in range(CAS_ATTEMPTS):
        raw, etag = seen or _read(store, layout.ROOT_INDEX)
        seen = None
        root = _parse_root(raw)
        packages = dict(root["packages"]) if root else {}
        if not change(packages) and root is not None:
            current = root
        else:
            epoch, serial = _stamp(root or {})
            current = {
                "format": FORMAT,
                "serial": serial + 1,
                "epoch": epoch if root and root.get("epoch") else secrets.token_hex(8),
                "generated_at": _now(),
                "packages": dict(sorted(packages.items())),
            }
            try:
                _put(store, layout.ROOT_INDEX, _encode(current), etag)
            except PreconditionFailed:
                backoff(attempt, 0.02, 1.0)
                continue
            if written is not None:
                written.append(layout.ROOT_INDEX)
        # A package named like the page owns that name (on a folder, its folder): no root page then.
        if layout.ROOT_PAGE not in current["packages"]:
            stamp = _stamp(current)
            page = pages.root_page(current, stamp)
            if _write_page(store, layout.ROOT_PAGE, page, stamp, seen_page) and written is not None:
                written.append(layout.ROOT_PAGE)
        return current
    raise CatalogNotUpdated(f"the catalog of {store.location} kept changing under us", key=layout.ROOT_INDEX)


def refresh_root_entry(store: Store, package: str, written: list[str] | None = None) -> dict[str, Any]:
    """Bring the registry's entry for ``package`` up to date with its package index."""
    return _update_root(store, _entry_from_index(store, package), written)


def _entry_from_index(store: Store, package: str) -> Callable[[dict[str, Any]], bool]:
    """The registry's entry for ``package`` from its package index, read inside the loop."""

    def change(packages: dict[str, Any]) -> bool:
        entry = _current_entry(store, package)
        old = packages.get(package)
        if entry is None:
            if old is None or store.head(layout.package_doc(package)) is not None:
                return False  # absent already, or there again (its writer adds it)
            del packages[package]
            return True
        if _newer_or_same(old, entry):
            return False
        packages[package] = entry
        return True

    return change


def _entry_from(current: Mapping[str, Any], store: Store, package: str) -> Callable[[dict[str, Any]], bool]:
    """The registry's entry from ``current``, the package index this writer just wrote (or found
    current), without reading it again: safe where the registry holds an entry of the same epoch,
    since an entry is only replaced by one with a higher serial (so a swap that comes last with
    an older entry changes nothing). Another epoch (a package deleted and created again), or no
    entry yet, reads the package index inside the loop as :func:`refresh_root_entry` does."""
    entry = summary(current)
    by_reading = _entry_from_index(store, package)

    def change(packages: dict[str, Any]) -> bool:
        old = packages.get(package)
        if not (isinstance(old, dict) and old.get("epoch") == entry["epoch"]):
            return by_reading(packages)
        if _newer_or_same(old, entry):
            return False
        packages[package] = entry
        return True

    return change


def keep_current(store: Store, package: str, fresh: Sequence[str] = ()) -> list[str]:
    """After a write to ``package``: its index and page, and the registry's. Returns the keys
    written; raises :class:`CatalogNotUpdated` when any could not be brought up to date.

    ``fresh`` names keys the write just made (a pushed version's data and record): they are read
    alongside the listing instead of after it.

    On a server 20-80 ms away each request waited for costs a round trip, so what does not
    depend on another answer goes at once: the four catalog objects are read together (each is
    written by compare-and-swap on the ETag read, so reading it before the loop that writes it
    is as safe as inside: a lost swap reads again); then the package's document, its listing and
    the fresh keys (after the package index's ETag, as the protocol requires); then the package
    index is written; then its page, the registry's index and the check that the package still
    exists go together; then the registry's page. Five round trips, where reading and writing
    each object in turn took about fourteen."""
    written: list[str] = []
    failed: list[TychoError] = []
    keys = (layout.package_index(package), layout.package_page(package), layout.ROOT_INDEX, layout.ROOT_PAGE)
    current: dict[str, Any] | None = None
    try:
        index, page, root, root_page = parallel_map(lambda key: _read_ahead(store, key), keys)
        current = _refresh_index(store, package, written, index, fresh)
        gone = current is None
    except TychoError as exc:
        failed.append(exc)
        gone = False
    if current is not None:
        now = current

        def page_and_presence() -> bool:
            with executor(1) as pool:
                present = pool.submit(store.head, layout.package_doc(package))
                _write_package_page(store, package, now, written, page)
                return present.result() is not None

        try:
            present, _ = ahead_both(
                page_and_presence,
                lambda: _update_root(store, _entry_from(now, store, package), written, root, root_page),
            )
            gone = not present
        except TychoError as exc:
            failed.append(exc)
    if gone:  # no package, or deleted meanwhile: leave nothing behind
        try:
            _withdraw(store, package, written)
        except TychoError as exc:
            failed.append(exc)
    if current is None or gone:  # the registry's entry, by reading the package index
        try:
            refresh_root_entry(store, package, written)
        except TychoError as exc:
            failed.append(exc)
    if failed:
        raise CatalogNotUpdated(
            f"the web catalog was not brought up to date after the change to {package} "
            f"(the change itself is done): {failed[0]}",
            package=package,
        )
    return written


def make_room(store: Store, package: str) -> None:
    """Before creating a package named like the root page: on a folder a file and a folder cannot
    share a name, and a package wins over a page of ours (best effort)."""
    if package != layout.ROOT_PAGE:
        return
    raw, etag = _read(store, layout.ROOT_PAGE)
    if raw is not None and etag is not None and pages.stamp_of(raw) is not None:
        try:
            store.delete_if_match(layout.ROOT_PAGE, etag)
        except (PreconditionFailed, ObjectNotFound):
            pass


# -- the whole catalog ---------------------------------------------------------------------------
def _packages(store: Store) -> list[str]:
    store.keeps_metadata  # noqa: B018 - asked once before the threads (a folder's answer is probed)
    return sorted(n for n in store.list_folders("") if is_valid_segment(n))


def rebuild(store: Store) -> IndexReport:
    """Write every package's index and page and the registry's (for registries written by
    tycho-station 0.4.0 or an older tychoreg, or after a warning that an update failed)."""
    report = IndexReport()
    names = _packages(store)

    def one(name: str) -> tuple[str, dict[str, Any] | None, list[str], str | None]:
        written: list[str] = []
        try:
            return name, refresh_package(store, name, written), written, None
        except TychoError as exc:
            return name, None, written, str(exc)

    entries: dict[str, dict[str, Any]] = {}
    for name, doc, written, problem in parallel_map(one, names, workers=PACKAGES_AT_ONCE):
        report.written += written
        if problem:
            report.problems.append(problem)
        if doc is not None:
            entries[name] = summary(doc)
    report.packages = len(entries)

    def change(packages: dict[str, Any]) -> bool:
        before = dict(packages)
        for name in list(packages):
            if name not in entries and store.head(layout.package_doc(name)) is None:
                del packages[name]
        for name, entry in entries.items():
            if not _newer_or_same(packages.get(name), entry):
                packages[name] = entry
        return packages != before

    try:
        _update_root(store, change, report.written)
    except TychoError as exc:
        report.problems.append(str(exc))
    return report


def check(store: Store) -> IndexReport:
    """What of the catalog is stale or missing (nothing is written)."""
    report = IndexReport()
    names = _packages(store)

    def one(name: str) -> tuple[str, dict[str, Any] | None, list[str]]:
        stale: list[str] = []
        previous, _ = read_package_index(store, name)
        fresh = build(store, name, previous)
        if fresh is None:  # not a package (any more)
            if previous is not None:
                stale.append(layout.package_index(name))
            return name, None, stale
        if previous is None or _state(previous.document) != _state(fresh):
            stale += [layout.package_index(name), layout.package_page(name)]
            return name, fresh, stale
        stamp = _stamp(previous.document)
        page, _ = _read(store, layout.package_page(name))
        if page != pages.package_page(previous.document, stamp):
            stale.append(layout.package_page(name))
        return name, dict(previous.document), stale

    wanted: dict[str, dict[str, Any]] = {}
    for name, doc, stale in parallel_map(one, names, workers=PACKAGES_AT_ONCE):
        report.stale += stale
        if doc is not None:
            wanted[name] = {k: v for k, v in summary(doc).items() if k not in VOLATILE}
    report.packages = len(wanted)
    raw, _ = _read(store, layout.ROOT_INDEX)
    root = _parse_root(raw)
    listed = None
    if root is not None:
        entries = {n: e for n, e in root["packages"].items() if isinstance(e, dict)}
        listed = {n: {k: v for k, v in e.items() if k not in VOLATILE} for n, e in entries.items()}
    if listed != wanted:
        report.stale.append(layout.ROOT_INDEX)
    if root is None or (
        layout.ROOT_PAGE not in root["packages"]
        and _read(store, layout.ROOT_PAGE)[0] != pages.root_page(root, _stamp(root))
    ):
        report.stale.append(layout.ROOT_PAGE)
    return report
