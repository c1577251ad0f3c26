"""Looking after a registry: ``verify`` (scrub stored versions) and ``gc`` (remove debris).

Debris is what a push that died leaves: staged data never committed (an unfinished multipart
upload, a hidden temporary file) and claims without data (a record whose ``.pkg`` never came).
Neither is visible, so nothing depends on it; ``gc`` only touches what is older than a threshold
so that pushes still running are left alone, and removes a claim only if it is unchanged.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from . import fetch, layout
from .errors import TychoError, UsageError
from .integrity import Digests, Discard, HashingWriter
from .store import PreconditionFailed, Store
from .store.base import Leftover, same_etag

DEFAULT_GC_AGE = timedelta(hours=24)
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd]?)\Z")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "": 3600}


def parse_age(text: str) -> timedelta:
    """``30m``, ``24h``, ``7d``, ``90s`` (a bare number is hours). Ages beyond what a date can
    hold (``99999999999d``) are usage errors, not arithmetic overflows."""
    from .names import shown

    match = _DURATION.match(text.strip().lower())
    if not match:
        raise UsageError(f"invalid age {shown(text)}", "use a number with s, m, h or d, e.g. 24h or 7d")
    try:
        return timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])
    except OverflowError:
        raise UsageError(f"age {shown(text)} is too large", "use at most 999999999 days, e.g. 3650d") from None


@dataclass(frozen=True)
class Debris:
    kind: str  # "unfinished upload" or "orphaned claim"
    key: str
    size: int | None
    since: datetime | None
    leftover: Leftover | None = None
    #: The age it must still have, by the store's clock, when it is removed.
    age: timedelta | None = None


@dataclass(frozen=True)
class Verified:
    package: str
    version: str
    ok: bool
    checked_by: str
    problem: str | None = None


def verify_one(store: Store, package: str, version: str) -> Verified:
    """Re-read one stored version and check it against its record (or its ETag and size)."""
    try:
        expected = fetch.expected_for(store, package, version)
        digests = Digests(expected.etag)
        store.read(expected.key, HashingWriter(Discard(), digests), size=expected.size,  # type: ignore[arg-type]
                   if_match=expected.pin)
    except TychoError as exc:
        return Verified(package, version, False, "-", str(exc))
    if expected.matches(digests):
        return Verified(package, version, True, expected.checked_by)
    return Verified(package, version, False, expected.checked_by,
                    f"{package} {version} does not match its {expected.checked_by}: stored {digests.size} bytes, "
                    f"sha256 {digests.sha256}; recorded {expected.size} bytes"
                    + (f", sha256 {expected.sha256}" if expected.sha256 else ""))


def find_debris(store: Store, packages: list[str], older_than: timedelta) -> list[Debris]:
    now = datetime.now(timezone.utc)

    def old(since: datetime | None) -> bool:
        if since is None:
            return True
        if since.tzinfo is None:
            since = since.replace(tzinfo=timezone.utc)
        return now - since > older_than

    found = [Debris("unfinished upload", lo.key, lo.size, lo.started, lo)
             for lo in store.leftovers() if old(lo.started)]
    for package in packages:
        visible = {layout.version_of_data(package, i.key) for i in store.list(layout.data_prefix(package))}
        for info in store.list(layout.records_prefix(package)):
            version = layout.version_of_record(package, info.key)
            if version and version not in visible and old(info.modified):
                found.append(Debris("orphaned claim", info.key, info.size, info.modified, age=older_than))
    return found


def remove_debris(store: Store, item: Debris) -> bool:
    """Remove one piece of debris; False when it changed meanwhile (then it is left alone).

    An orphaned claim is read first (its ETag pins what we may delete), then asked for again to
    check its age by the store's clock *after* the read: a push that took the claim over between
    our listing and our read has made it young again, and one that takes it over after the check
    changes its ETag, so our conditional delete fails. Only then is the data checked (a claim
    whose data arrived is a real version now)."""
    if item.leftover is not None:
        store.remove_leftover(item.leftover)
        return True
    package = item.key.split("/", 1)[0]
    version = layout.version_of_record(package, item.key)
    if version is None:
        return False
    try:
        _, etag = store.get(item.key)
        info = store.head(item.key)
        if info is None or (info.etag and not same_etag(info.etag, etag)):
            return False
        age = info.age_seconds()
        if age is not None and item.age is not None and age <= item.age.total_seconds():
            return False
        if store.head(layout.data(package, version)) is not None:
            return False  # its data arrived: a real version now
        store.delete_if_match(item.key, etag)
        return True
    except PreconditionFailed:
        return False
    except TychoError:
        return False
