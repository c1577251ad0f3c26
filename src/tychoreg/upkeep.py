"""Looking after a registry: ``verify`` (scrub stored versions) and ``gc`` (remove debris).

Debris is what a push that died leaves: staged data never committed (an unfinished multipart
upload, a hidden temporary file) and claims without data (a record whose ``.pkg`` never came);
and what a delete that stopped half-way leaves: the chunk index of a version that is gone (no
data, no record). None of it is visible, so nothing depends on it; ``gc`` only touches what is
older than a threshold so that pushes still running are left alone, and removes a claim or an
index only if it is unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Literal

from . import fetch, layout
from .errors import TychoError
from .integrity import Digests, Discard, HashingWriter
from .models import PUSH_ID, CheckedBy, VersionRecord
from .store import PreconditionFailed, Store
from .store.base import Leftover, same_etag

if TYPE_CHECKING:
    from .signatures import Trust

DEFAULT_GC_AGE = timedelta(hours=24)


@dataclass(frozen=True)
class Debris:
    kind: Literal["unfinished upload", "orphaned claim", "orphaned chunk index"]
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
    #: What the bytes were checked against; ``-`` when they could not be read to be checked.
    checked_by: CheckedBy | Literal["-"]
    problem: str | None = None
    #: Who signed it, as the trusted signers name them (None: no trust configured; empty: unsigned).
    signers: tuple[str, ...] | None = None


def verify_one(store: Store, package: str, version: str, *, trust: Trust | None = None) -> Verified:
    """Re-read one stored version and check it against its record (or its ETag and size), and
    with ``trust`` its signatures."""
    try:
        expected = fetch.expected_for(store, package, version, trust=trust)
        digests = Digests(expected.etag)
        store.read(expected.key, HashingWriter(Discard(), digests), size=expected.size, if_match=expected.pin)
    except TychoError as exc:
        # A record that belongs to another push was checked, by its push id and ETag, and failed.
        return Verified(package, version, False, "sha256" if exc.reason == "foreign-record" else "-", str(exc))
    signers = expected.signed.signers if expected.signed else None
    if expected.matches(digests):
        return Verified(package, version, True, expected.checked_by, signers=signers)
    return Verified(
        package,
        version,
        False,
        expected.checked_by,
        f"{package} {version} does not match its {expected.checked_by}: stored {digests.size} bytes, "
        f"sha256 {digests.sha256}; recorded {expected.size} bytes"
        + (f", sha256 {expected.sha256}" if expected.sha256 else ""),
    )


def find_debris(store: Store, packages: list[str], older_than: timedelta) -> list[Debris]:
    now = datetime.now(timezone.utc)

    def old(since: datetime | None) -> bool:
        if since is None:
            return True
        if since.tzinfo is None:
            since = since.replace(tzinfo=timezone.utc)
        return now - since > older_than

    found = [
        Debris("unfinished upload", lo.key, lo.size, lo.started, lo) for lo in store.leftovers() if old(lo.started)
    ]
    indexes: list[Debris] = []
    for package in packages:
        visible = {layout.version_of_data(package, i.key) for i in store.list(layout.data_prefix(package))}
        claimed: set[str] = set()
        for info in store.list(layout.records_prefix(package)):
            version = layout.version_of_record(package, info.key)
            if version and version not in visible:
                if old(info.modified):
                    found.append(Debris("orphaned claim", info.key, info.size, info.modified, age=older_than))
                else:
                    claimed.add(version)  # a push may be under way: its version's index stays
        for info in store.list(layout.chunks_prefix(package)):
            version = layout.version_of_chunk_index(package, info.key)
            if version and version not in visible and version not in claimed and old(info.modified):
                indexes.append(Debris("orphaned chunk index", info.key, info.size, info.modified, age=older_than))
    return found + indexes  # claims first: an index whose claim goes too is removed after it


def remove_debris(store: Store, item: Debris) -> bool:
    """Remove one piece of debris; False when it changed meanwhile (then it is left alone).

    An orphaned claim is read first (its ETag pins what we may delete), then asked for again to
    check its age *after* the read, by the store's clock: a push that took the claim over between
    our listing and our read has made it young again, and one that takes it over after the check
    changes its ETag, so our conditional delete fails. The data is checked last, atomically with
    the delete where the store can (a folder, under its lock); elsewhere it is checked again
    after the delete, and if the claim's push committed meanwhile its record is put back."""
    if item.leftover is not None:
        store.remove_leftover(item.leftover)
        return True
    package = item.key.split("/", 1)[0]
    index = item.kind == "orphaned chunk index"
    version = (layout.version_of_chunk_index if index else layout.version_of_record)(package, item.key)
    if version is None:
        return False
    data = layout.data(package, version)
    try:
        raw, etag = store.get(item.key)
        info = store.head(item.key)
        if info is None or (info.etag and not same_etag(info.etag, etag)):
            return False
        age = info.age_seconds(None if info.answered else store.now())
        if age is not None and item.age is not None and age <= item.age.total_seconds():
            return False
        if store.head(data) is not None:
            return False  # its data arrived: a real version now
        if index and store.head(layout.record(package, version)) is not None:
            return False  # claimed again: a push of the version may be under way
        store.delete_if_match(item.key, etag, unless=data)
    except PreconditionFailed:
        return False
    except TychoError:
        return False
    if not store.atomic_guard:
        (_put_index_back_if_committed if index else _put_back_if_committed)(store, package, version, raw)
    return True


def _put_index_back_if_committed(store: Store, package: str, version: str, raw: bytes) -> None:
    """After removing an index: if a push of its version (of the bytes it describes) committed
    between our look at the data and our delete, put the index back (else that version would
    pull whole until ``tychoreg index`` wrote it again)."""
    from . import chunks  # noqa: PLC0415 - only when an index was removed

    try:
        info = store.head(layout.data(package, version))
        parsed = chunks.ChunkIndex.parse(raw)
        if info is None or parsed is None or parsed.size != info.size:
            return
        record = VersionRecord.parse(package, version, store.get(layout.record(package, version))[0])
        if record.sha256 == parsed.sha256:
            store.put_if_absent(layout.chunk_index(package, version), raw)
    except (TychoError, PreconditionFailed):
        pass  # no record to vouch for it, someone wrote an index meanwhile, or no answer


def _put_back_if_committed(store: Store, package: str, version: str, raw: bytes) -> None:
    """After removing a claim: if its push committed between our look at the data and our
    delete, the record we removed is the one that describes that data; put it back."""
    try:
        info = store.head(layout.data(package, version))
        if info is None:
            return
        record = VersionRecord.parse(package, version, raw)
        found = record.describing(info.meta.get(PUSH_ID), info.etag, keeps_metadata=store.keeps_metadata)
        if found is record and record.size == info.size:
            store.put_if_absent(layout.record(package, version), raw)
    except (TychoError, PreconditionFailed):
        pass  # someone else's record is there now, or the store is unreachable: nothing to undo
