"""Every version of a package with its record, in a handful of requests however many there are.

The truth is one record per version (``PKG/.tycho/versions/V.json``); reading 5,000 of them one by
one would take thousands of requests. So readers keep a catalog, ``PKG/.tycho/index.json``: a copy
of the records, each entry stamped with the ETag its record had when copied. A listing of the
records (which carries every record's ETag) tells which entries are still exact; only records
that are new or changed since are fetched. When a reader has had to fetch many, it writes the
catalog back (compare-and-swap, best effort: a reader without write access, or one that loses a
race, simply does not). A stale or damaged catalog therefore costs requests, never correctness,
and no push or delete has to touch it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from . import layout
from .errors import IntegrityError
from .models import VersionRecord
from .names import is_valid_segment
from .store import ObjectNotFound, Store
from .store.base import ObjectInfo, same_etag

#: Records fetched one by one before a reader writes the catalog back.
REWRITE_AFTER = 16
FORMAT = 1

#: What is known of a version's record: the record, a problem (damaged), or None (no record).
Known = VersionRecord | str | None


def scan(store: Store, package: str, parallel: Callable[..., list[Any]]) -> tuple[dict[str, int], dict[str, Known]]:
    """Visible versions with their stored sizes, and what each one's record says."""
    with ThreadPoolExecutor(3) as pool:
        data = pool.submit(lambda: list(store.list(layout.data_prefix(package))))
        records = pool.submit(lambda: list(store.list(layout.records_prefix(package))))
        catalog = pool.submit(_read_catalog, store, package)
        sizes = {v: i.size for i in data.result() if (v := layout.version_of_data(package, i.key))
                 and is_valid_segment(v)}
        listed = {v: i for i in records.result() if (v := layout.version_of_record(package, i.key)) in sizes}
        entries, catalog_etag = catalog.result()
    known: dict[str, Known] = {v: None for v in sizes}
    missing: list[ObjectInfo] = []
    for version, info in listed.items():
        entry = entries.get(version)
        if isinstance(entry, dict) and same_etag(entry.get("etag"), info.etag):
            try:
                known[version] = VersionRecord.from_object(package, version, entry.get("record") or {})
                continue
            except IntegrityError:
                pass
        missing.append(info)

    def fetch(info: ObjectInfo) -> tuple[str, Known, str | None]:
        version = layout.version_of_record(package, info.key) or ""
        try:
            raw, etag = store.get(info.key)
        except ObjectNotFound:  # deleted since the listing
            return version, None, None
        try:
            return version, VersionRecord.parse(package, version, raw), etag
        except IntegrityError as exc:
            return version, str(exc), None

    fetched = parallel(fetch, missing)
    for version, record, _ in fetched:
        known[version] = record
    if len(missing) >= REWRITE_AFTER:
        stamps = {v: listed[v].etag for v in listed}
        stamps.update({v: etag for v, _, etag in fetched if etag})
        _write_catalog(store, package, known, stamps, catalog_etag)
    return sizes, known


def _read_catalog(store: Store, package: str) -> tuple[dict[str, Any], str | None]:
    """The catalog's entries and ETag; ETag ``"unknown"`` when it could not be read (keep it)."""
    try:
        raw, etag = store.get(layout.catalog(package))
    except ObjectNotFound:
        return {}, None
    except Exception:  # noqa: BLE001 - a catalog is an optimisation; the records still answer
        return {}, "unknown"
    try:
        data = json.loads(raw)
    except ValueError:
        return {}, etag  # damaged: replaced as a whole on the next rewrite
    entries = data.get("records") if isinstance(data, dict) else None
    return (entries if isinstance(entries, dict) else {}), etag


def _write_catalog(store: Store, package: str, known: dict[str, Known], stamps: dict[str, str | None],
                   etag: str | None) -> None:
    records = {v: {"etag": stamps[v], "record": r.to_object()} for v, r in sorted(known.items())
               if isinstance(r, VersionRecord) and stamps.get(v)}
    body = json.dumps({"format": FORMAT, "records": records}, separators=(",", ":")).encode()
    try:
        if etag is None:
            store.put_if_absent(layout.catalog(package), body)
        elif etag != "unknown":
            store.put_if_match(layout.catalog(package), body, etag)
    except Exception:  # noqa: BLE001 - best effort by design (read-only access, a lost race)
        pass
