"""Every version of a package with its record, in a handful of requests however many there are.

The truth is one record per version (``PKG/.tycho/versions/V.json``); reading 5,000 of them one by
one would take thousands of requests. So readers keep a catalog, ``PKG/.tycho/index.json``: a copy
of each record's exact bytes, stamped with the ETag its record had when copied. A listing of the
records carries every record's ETag, and S3 makes the ETag of a single-PUT object from its bytes
(MD5), so an entry counts only when the listed ETag is the MD5 of the bytes the catalog holds:
whoever writes the catalog cannot make a reader believe anything a record does not say. Only
records that are new or changed since are fetched; a reader that had to fetch many writes the
catalog back (compare-and-swap, best effort: a reader without write access, or one that loses a
race, simply does not). A stale, damaged or planted catalog costs requests, never correctness,
and no push or delete has to touch it. Stores whose listings carry no ETag (a folder) have no
use for it: their records are read directly.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from . import layout
from .concurrency import executor, parallel_map
from .errors import IntegrityError, StorageError
from .models import PUSH_ID, PackageDoc, VersionInfo, VersionRecord, record_for_data
from .names import is_valid_segment
from .store import ObjectNotFound, Store
from .store.base import ObjectInfo, same_etag

#: Records fetched one by one before a reader writes the catalog back.
REWRITE_AFTER = 16
FORMAT = 2

#: What is known of a version's record: the record, a problem (damaged), or None (no record).
Known = VersionRecord | str | None


def _md5_etag(raw: bytes, etag: str | None) -> bool:
    """Is ``etag`` the MD5 of ``raw``, as S3 makes it for an object written in one PUT?"""
    return bool(etag and etag.strip('"').lower() == hashlib.md5(raw, usedforsecurity=False).hexdigest())


def scan(store: Store, package: str) -> tuple[dict[str, int], dict[str, Known]]:
    """Visible versions with their stored sizes, and what each one's record says."""
    with executor(3) as pool:
        data = pool.submit(lambda: list(store.list(layout.data_prefix(package))))
        records = pool.submit(lambda: list(store.list(layout.records_prefix(package))))
        catalog = pool.submit(_read_catalog, store, package)
        sizes = {
            v: i.size for i in data.result() if (v := layout.version_of_data(package, i.key)) and is_valid_segment(v)
        }
        listed = {v: i for i in records.result() if (v := layout.version_of_record(package, i.key)) in sizes}
        entries, catalog_etag = catalog.result()
    known: dict[str, Known] = dict.fromkeys(sizes)
    raws: dict[str, bytes] = {}
    missing: list[ObjectInfo] = []
    for version, info in listed.items():
        raw = entries.get(version)
        if raw is not None and _md5_etag(raw, info.etag):
            try:
                known[version] = VersionRecord.parse(package, version, raw)
                raws[version] = raw
                continue
            except IntegrityError:
                pass
        missing.append(info)

    def fetch(info: ObjectInfo) -> tuple[str, Known, bytes | None]:
        version = layout.version_of_record(package, info.key) or ""
        try:
            raw, _ = store.get(info.key)
        except ObjectNotFound:  # deleted since the listing
            return version, None, None
        try:
            return version, VersionRecord.parse(package, version, raw), raw
        except IntegrityError as exc:
            return version, str(exc), None

    for version, record, raw in parallel_map(fetch, missing):
        known[version] = record
        if raw is not None and _md5_etag(raw, listed[version].etag):
            raws[version] = raw
    data_etags = {v: i.etag for i in data.result() if (v := layout.version_of_data(package, i.key))}
    _settle(store, package, known, data_etags)
    if len(missing) >= REWRITE_AFTER and any(i.etag for i in listed.values()):
        _write_catalog(store, package, raws, catalog_etag)
    return sizes, known


def _settle(store: Store, package: str, known: dict[str, Known], data_etags: dict[str, str | None]) -> None:
    """Records that may not describe their data are checked against it (a head each): those
    that took over stale claims (the old push may have committed after all), and those whose
    expected ETag is not the one the data listing shows (another client wrote the data, or a
    push committed after its claim was removed). The data's push id says which record does."""

    def settle(version: str) -> tuple[str, Known]:
        record = known[version]
        assert isinstance(record, VersionRecord)
        try:
            info = store.head(layout.data(package, version))
            if info is None:
                return version, record
            return version, record_for_data(
                package, version, record, info.meta.get(PUSH_ID), info.etag, keeps_metadata=store.keeps_metadata
            )
        except (IntegrityError, StorageError) as exc:
            return version, str(exc)

    def doubtful(version: str, record: Known) -> bool:
        if not isinstance(record, VersionRecord):
            return False
        listed = data_etags.get(version)
        return bool(record.replaced) or bool(record.etag and listed and not same_etag(record.etag, listed))

    known.update(parallel_map(settle, [v for v, r in known.items() if doubtful(v, r)]))


def known_digest(store: Store, package: str, version: str) -> str | None:
    """The SHA-256 the package's catalog holds for ``version``, if any (best effort). The catalog
    is only a cache, but a copy of a record is evidence that the record existed."""
    entries, _ = _read_catalog(store, package)
    raw = entries.get(version)
    if raw is None:
        return None
    try:
        return VersionRecord.parse(package, version, raw).sha256
    except IntegrityError:
        return None


def _read_catalog(store: Store, package: str) -> tuple[dict[str, bytes], str | None]:
    """The catalog's record copies and its ETag; ETag ``"unknown"`` when it could not be read
    (then it is kept as it is)."""
    try:
        raw, etag = store.get(layout.catalog(package))
    except ObjectNotFound:
        return {}, None
    except Exception:  # noqa: BLE001 - a catalog is an optimisation; the records still answer
        return {}, "unknown"
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        return {}, etag  # damaged: replaced as a whole on the next rewrite
    entries = data.get("records") if isinstance(data, dict) and data.get("format") == FORMAT else None
    if not isinstance(entries, dict):
        return {}, etag  # another format (an older tychoreg's): replaced on the next rewrite
    return {v: e.encode() for v, e in entries.items() if isinstance(v, str) and isinstance(e, str)}, etag


def _write_catalog(store: Store, package: str, raws: dict[str, bytes], etag: str | None) -> None:
    records = {}
    for version, raw in sorted(raws.items()):
        try:
            records[version] = raw.decode()
        except UnicodeDecodeError:
            continue
    body = json.dumps({"format": FORMAT, "records": records}, separators=(",", ":")).encode()
    try:
        if etag is None:
            store.put_if_absent(layout.catalog(package), body)
        elif etag != "unknown":
            store.put_if_match(layout.catalog(package), body, etag)
    except Exception:  # noqa: BLE001 - best effort by design (read-only access, a lost race)
        pass


def versions(
    store: Store, package: str, doc: PackageDoc, scanned: tuple[dict[str, int], dict[str, Known]] | None = None
) -> list[VersionInfo]:
    """Every visible version of ``package`` as listings show it, ascending by precedence
    (``scanned``: what :func:`scan` answered, when the caller ran it alongside reading ``doc``)."""
    from .versions import version_sort_key  # noqa: PLC0415 - semver, packaging: ~6 ms, only to sort

    sizes, known = scanned if scanned is not None else scan(store, package)
    key = version_sort_key(sizes)
    return sorted((describe(doc, v, sizes[v], known[v]) for v in sizes), key=lambda v: key(v.version))


def describe(doc: PackageDoc, version: str, size: int, record: Known) -> VersionInfo:
    """A version as listings show it: its record (or why it has none usable), the tags that
    point to it, its yank state."""
    tags = tuple(t for t, v in doc.tags.items() if v == version)
    yank = doc.yanked.get(version)
    marks: dict[str, Any] = {
        "tags": tags,
        "yanked": yank is not None,
        "yank_reason": yank.get("reason") if yank else None,
    }
    if record is None:
        return VersionInfo(version, size, **marks)
    if isinstance(record, str):
        return VersionInfo(version, size, problem=record, **marks)
    if record.size != size:
        return VersionInfo(
            version,
            size,
            problem=f"{doc.package} {version} is damaged: stored size {size} bytes, recorded {record.size}",
            **marks,
        )
    return VersionInfo(
        version, record.size, record.sha256, record.pushed_at or None, record.pushed_by, record.note, **marks
    )
