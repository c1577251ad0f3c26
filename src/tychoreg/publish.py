"""Publishing one version: stage, claim, commit, confirm (docs/FORMAT.md, "Publishing a version").

The record is the claim: of concurrent pushes of one version, exactly one holds it at a time.
The data key is what makes the version visible, so it is committed last, with create-if-absent.
Every push has a random id, written both into its record and into its data object's metadata,
so whoever reads the two can tell whether the record describes the data.

A claim whose push seems dead (older than the claim timeout) may be taken over, but the old push
may be alive after all (suspended, or its clock is off): it then commits data that the current
record does not describe. So a commit is only ever followed by a *confirm*: the pusher re-reads
the record and, if it is no longer its own, puts its own back (compare-and-swap). The taker
keeps the claims it replaced inside its record, so even if the old push dies between commit and
confirm, readers find the record that describes the data. A push that loses never deletes a
record once data exists; it deletes its claim only while no data is there, or when the data
came from a client that does not claim at all (tycho-station 0.4.0).

Because requests are retried (by boto3, on 5xx and timeouts), a conditional write may fail
*because our own first attempt succeeded*; each step recognises its own write (the same bytes
for a claim, our push id on the data) before concluding that someone else won.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import secrets
import socket
import stat
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from . import ahead, chunks, fetch, layout, refs
from .concurrency import backoff, executor
from .errors import (
    AlreadyExists,
    BeingPushed,
    IntegrityError,
    NotFound,
    OperationError,
    StorageError,
    TychoError,
    UsageError,
    VersionExists,
)
from .integrity import Digests, HashingReader
from .models import PUSH_ID, PushResult, VersionInfo, VersionRecord
from .names import is_valid_segment
from .probe import WEAKER, enforces_conditional_writes
from .store import GuardChanged, ObjectNotFound, PreconditionFailed, StagedUpload, Store
from .store.base import ObjectInfo, Progress, ProgressFactory, same_etag

if TYPE_CHECKING:
    from .known import KnownDigests

#: A claim (record without data) older than this belongs to a push that died; it may be taken
#: over. The window between claim and commit is one request, so an hour is generous.
STALE_CLAIM = timedelta(hours=1)
CLAIM_TIMEOUT_ENV = "TYCHOREG_CLAIM_TIMEOUT"
#: Rounds of compare-and-swap when confirming a record against concurrent takers.
CONFIRM_ATTEMPTS = 8
#: Connections opened ahead at the start of a push: its first reads take two, and the catalog
#: upkeep after it reads four objects at once (see :func:`tychoreg.webindex.keep_current`).
CATALOG_READS = 4


def _claim_timeout() -> timedelta:
    try:
        return timedelta(seconds=float(os.environ[CLAIM_TIMEOUT_ENV]))
    except (KeyError, ValueError):
        return STALE_CLAIM


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def default_identity() -> str:
    """``user@host``, the default for who pushed a version."""
    try:
        user = getpass.getuser()
    except Exception:  # noqa: BLE001 - no login name in some containers
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def push(
    store: Store,
    package: str,
    version: str,
    path: Path,
    *,
    identity: str | None = None,
    note: str | None = None,
    promote_latest: bool = False,
    skip_existing: bool = False,
    progress: ProgressFactory | None = None,
    known: KnownDigests | None = None,
    warn: Callable[[str], None] | None = None,
) -> PushResult:
    """Upload the file at ``path`` as ``version`` of ``package`` (see :meth:`Registry.push`)."""
    skipped = False
    gone: list[bool] = []  # was the package deleted while we pushed? (asked beside the confirm)
    with open_source(path) as source:
        prepare = getattr(store, "prepare_writes", None)
        if prepare is not None:  # the write client's set-up overlaps the reads below
            prepare()
        ahead.warm(store, CATALOG_READS)
        # Two independent reads at once (one round trip, not two): the package, and whether the
        # version exists already (then nothing is uploaded).
        (doc, _), existing = ahead.both(
            lambda: refs.read(store, package), lambda: store.head(layout.data(package, version))
        )
        if warn and not enforces_conditional_writes(store):
            warn(WEAKER.format(location=store.location))
        if version in doc.tags:
            raise UsageError(
                f"{version} is a tag of package {package}; a version cannot share its name",
                "push under another version number",
                reason="version-is-tag",
                package=package,
                version=version,
            )
        try:
            if existing is not None:
                raise VersionExists(package, version)
            size = os.fstat(source.fileno()).st_size
            record = publish(
                store,
                package,
                version,
                source,
                identity=identity or default_identity(),
                note=note,
                progress=progress(f"{package} {version}", size) if progress else None,
                absent=True,
                alongside=lambda: gone.append(store.head(layout.package_doc(package)) is None),
            )
            info = VersionInfo(version, record.size, record.sha256, record.pushed_at, record.pushed_by, record.note)
            if known:
                known.remember(package, version, record.sha256)
        except AlreadyExists:
            if not skip_existing:
                raise
            info = _same_bytes(store, package, version, path)
            skipped = True
    if not skipped and any(gone):
        # The package was deleted while we pushed: do not leave a version behind without it.
        withdraw(store, package, record)
        raise NotFound(
            f"package {package} was deleted while {version} was being pushed; nothing was kept",
            reason="deleted-while-pushing",
            package=package,
            version=version,
        )
    if promote_latest:
        try:
            refs.point(store, package, "latest", version)
        except TychoError as exc:
            raise OperationError(
                f"pushed {package} {version}, but could not make it latest: {exc}",
                reason="not-promoted",
                package=package,
                version=version,
            ) from None
    latest = version if promote_latest else doc.latest if is_valid_segment(doc.latest) else None
    return PushResult(info, skipped=skipped, promoted=promote_latest, latest=latest)


def _same_bytes(store: Store, package: str, version: str, path: Path) -> VersionInfo:
    """The existing version if it holds exactly ``path``'s bytes (an idempotent push), else
    :class:`AlreadyExists`."""
    try:
        expected = fetch.expected_for(store, package, version)
    except NotFound:
        raise BeingPushed(package, version) from None
    if not fetch.holds(store, path, expected):
        raise VersionExists(package, version, other_bytes=True)
    return VersionInfo(version, expected.size, expected.sha256)


def open_source(path: Path) -> BinaryIO:
    """Open the file to push, or raise a usage error (exit 2) before any request is made."""
    try:
        source = open(path, "rb")  # noqa: SIM115 - the caller closes it
    except OSError as exc:
        raise UsageError(
            f"cannot read {path}: {exc.strerror or exc}", "name an existing, readable file to push"
        ) from None
    if not stat.S_ISREG(os.fstat(source.fileno()).st_mode):
        source.close()
        raise UsageError(f"cannot push {path}: not a regular file", "name a file to push")
    return source


def publish(
    store: Store,
    package: str,
    version: str,
    source: BinaryIO,
    *,
    identity: str | None,
    note: str | None = None,
    progress: Progress | None = None,
    push_id: str | None = None,
    pushed_at: str | None = None,
    absent: bool = False,
    alongside: Callable[[], object] | None = None,
) -> VersionRecord:
    """Upload ``source`` as ``version``; raises AlreadyExists when another push has it.

    ``push_id`` and ``pushed_at`` are for a copy of a version from another registry (a mirror):
    the same copy made again writes the very same record, so a copy that was killed after its
    claim is recognised as its own when it runs again (see :mod:`tychoreg.mirror`).

    ``absent``: the caller has just seen no data under the version's key (so it is not asked
    again). ``alongside`` runs once the data is committed, at the same time as the confirm and
    the chunk index (independent requests: one round trip instead of three); its error is
    raised after them."""
    data_key = layout.data(package, version)
    if not absent and store.head(data_key) is not None:
        raise VersionExists(package, version)
    push_id = push_id or secrets.token_hex(16)
    digests = Digests()
    chunking = chunks.Background(source)  # in the same time as the upload (docs/FORMAT.md)
    staged = store.stage(
        data_key, HashingReader(source, digests), os.fstat(source.fileno()).st_size, progress, meta={PUSH_ID: push_id}
    )
    record = VersionRecord(
        version,
        digests.size,
        digests.sha256,
        now_iso() if pushed_at is None else pushed_at,
        identity,
        note,
        push_id,
        etag=staged.etag,
    )
    try:
        if staged.size != digests.size:
            raise StorageError(f"upload of {source.name} was incomplete ({staged.size} of {digests.size} bytes)")
        record, claim = _claim(store, package, record)
    except BaseException:
        staged.abort()
        raise
    pushing = _Push(store, package, record, staged)
    pushing.commit(claim)
    with executor(2) as pool:
        index = pool.submit(
            lambda: _write_chunk_index(store, package, version, chunking.result(record.size, record.sha256))
        )
        also = pool.submit(alongside) if alongside is not None else None
        pushing.confirm()
        index.result()
        if also is not None:
            also.result()
    return record


def _write_chunk_index(store: Store, package: str, version: str, index: chunks.ChunkIndex | None) -> None:
    """Best effort: a version without an index pulls whole, as before (docs/FORMAT.md, "Chunk
    indexes"); the push itself has succeeded."""
    if index is None:
        return
    with contextlib.suppress(TychoError, OSError):
        chunks.write(store, package, version, index)


def _claim(store: Store, package: str, record: VersionRecord) -> tuple[VersionRecord, str]:
    """Create the version's record (or take over a stale one); return it and its etag, or raise
    if another push holds it or the version exists."""
    key = layout.record(package, record.version)
    written = {record.to_bytes()}  # what we may have written, to recognise a retried request
    try:
        return record, store.put_if_absent(key, record.to_bytes())
    except PreconditionFailed:
        pass
    for _ in range(3):
        try:
            raw, etag = store.get(key)
        except ObjectNotFound:  # released meanwhile: take it
            try:
                return record, store.put_if_absent(key, record.to_bytes())
            except PreconditionFailed:
                continue
        if raw in written:
            return _own(record, raw, package), etag  # our own write, answered 412 on a retried request
        if store.head(layout.data(package, record.version)) is not None:
            raise VersionExists(package, record.version)
        if not _is_stale(store, key, raw, package, record.version):
            raise BeingPushed(package, record.version)
        taker = _taking_over(record, raw, package)
        written.add(taker.to_bytes())
        try:
            return taker, store.put_if_match(key, taker.to_bytes(), etag)
        except PreconditionFailed:
            continue  # changed meanwhile (or our own retried write landed): look again
    raise BeingPushed(package, record.version)


def _own(record: VersionRecord, raw: bytes, package: str) -> VersionRecord:
    return VersionRecord.parse(package, record.version, raw)


def _taking_over(record: VersionRecord, raw: bytes, package: str) -> VersionRecord:
    """Our record, remembering the stale claim it replaces (a damaged one is not remembered)."""
    try:
        return record.replacing(VersionRecord.parse(package, record.version, raw))
    except IntegrityError:
        return record


def _is_stale(store: Store, key: str, raw: bytes, package: str, version: str) -> bool:
    """Is this claim older than the claim timeout? Measured by the store's clock when it tells
    both the claim's time and its own (so a client whose clock is off cannot mistake a fresh
    claim for a dead one), else by the record's own time."""
    info = store.head(key)
    age = info.age_seconds(None if info.answered else store.now()) if info is not None else None
    if age is None:
        try:
            started = datetime.fromisoformat(
                VersionRecord.parse(package, version, raw).pushed_at.replace("Z", "+00:00")
            )
        except (IntegrityError, ValueError):
            return True  # a damaged claim that no push could have written
        if started.tzinfo is None:
            started = started.replace(tzinfo=timezone.utc)
        age = (datetime.now(timezone.utc) - started).total_seconds()
    return age >= _claim_timeout().total_seconds()  # (a timeout of 0 means: every claim)


class _Push:
    """The steps after claiming: commit the data, then confirm that the record describes it.

    Nothing destructive is ever done on a guess: when a look at the data fails (the store did
    not answer), the claim is kept (gc checks the data before it removes a claim) and the error
    is raised."""

    def __init__(self, store: Store, package: str, record: VersionRecord, staged: StagedUpload) -> None:
        self.store, self.package, self.record, self.staged = store, package, record, staged
        self.version = record.version
        self.key = layout.record(package, record.version)

    def commit(self, claim: str) -> None:
        """Commit the data; then the caller must :meth:`confirm`."""
        for attempt in range(3):
            try:
                self.staged.commit(guard=(self.key, claim))
            except GuardChanged:
                # File backend: our claim changed before the data went in (taken over as stale,
                # or removed by gc), so nothing was committed. Claim again; if someone else
                # holds the version now, they win.
                try:
                    if attempt == 2:
                        raise BeingPushed(self.package, self.version) from None
                    self.record, claim = _claim(self.store, self.package, self.record)
                except BaseException:
                    self.staged.abort()
                    raise
                continue
            except PreconditionFailed:
                info = self._data()  # raises if the store does not answer: the claim stays
                if info is None or not self._ours(info):
                    self._lost(info, claim)
                    raise VersionExists(self.package, self.version) from None
            except BaseException as exc:
                try:
                    info = self._data()
                except StorageError:
                    raise exc from None  # whether it landed is unknown: keep the claim
                if info is None or not self._ours(info):
                    self._lost(info, claim)
                    if isinstance(exc, ObjectNotFound):  # the staged data went (gc of a stalled push)
                        raise StorageError(
                            f"the upload of {self.package} {self.version} was removed before it "
                            "could be committed (by gc?)",
                            "push it again",
                            reason="upload-removed",
                            package=self.package,
                            version=self.version,
                        ) from None
                    raise
            break  # committed (or our commit landed and only its answer was lost)

    def _data(self) -> ObjectInfo | None:
        return self.store.head(layout.data(self.package, self.version))

    def _ours(self, info: ObjectInfo) -> bool:
        """Is the stored data our own write? By our push id where the store keeps metadata,
        else by size and ETag (which SSE-KMS and SSE-C buckets do not make from the content)."""
        if PUSH_ID in info.meta:
            return info.meta[PUSH_ID] == self.record.push_id
        return info.size == self.staged.size and same_etag(info.etag, self.staged.etag)

    def _owner(self, info: ObjectInfo) -> VersionRecord | None:
        """Which claim we took over describes data that is not ours: by its push id, or where
        the store keeps no metadata by its ETag (else its size)."""
        push_id = info.meta.get(PUSH_ID)
        if push_id is not None:
            return next((r for r in self.record.replaced if r.push_id == push_id), None)
        for replaced in self.record.replaced:
            if replaced.etag and info.etag:
                if same_etag(replaced.etag, info.etag):
                    return replaced
            elif replaced.size == info.size:
                return replaced
        return None

    def _lost(self, info: ObjectInfo | None, claim: str) -> None:
        """We did not commit. With no data there, release our claim. If the data is that of a
        push whose claim we took over (alive after all), put its record back. If it came from
        a client that does not claim (0.4.0: no push id), release ours. Never delete a record
        that may describe the data."""
        try:
            if info is None:
                self.store.delete_if_match(self.key, claim)
                return
            owner = self._owner(info)
            if owner is not None:
                self.store.put_if_match(self.key, owner.to_bytes(), claim)
            elif PUSH_ID not in info.meta:
                self.store.delete_if_match(self.key, claim)
        except StorageError:
            pass  # best effort: no longer ours (someone confirmed or took it), or unreachable

    def confirm(self) -> None:
        """Make the record ours again if a taker replaced (or gc removed) it while we committed;
        unless the data is no longer ours (deleted, and maybe pushed again by someone else)."""
        for attempt in range(CONFIRM_ATTEMPTS):
            try:
                raw, etag = self.store.get(self.key)
            except ObjectNotFound:
                raw, etag = b"", ""
            try:
                current = VersionRecord.parse(self.package, self.version, raw) if raw else None
            except IntegrityError:
                current = None
            if current is not None and current.push_id == self.record.push_id:
                return
            try:
                info = self._data()
            except StorageError:
                backoff(attempt, 0.1, 2.0)
                continue  # not known whether the data is still ours: look again
            if info is None or not self._ours(info):
                return  # deleted meanwhile: nothing of ours to describe
            try:
                if raw:
                    self.store.put_if_match(self.key, self.record.to_bytes(), etag)
                else:
                    self.store.put_if_absent(self.key, self.record.to_bytes())
                return
            except PreconditionFailed:
                continue
        raise StorageError(
            f"{self.package} {self.version} was committed, but its record could not be confirmed",
            reason="record-unsettled",
            package=self.package,
            version=self.version,
        )


def withdraw(store: Store, package: str, record: VersionRecord) -> None:
    """Remove a version we just pushed (its package was deleted meanwhile), but only what is
    still ours: after a delete, someone may already have pushed that version number again."""
    data = layout.data(package, record.version)
    key = layout.record(package, record.version)
    try:
        info = store.head(data)
        if info is not None and info.meta.get(PUSH_ID, record.push_id) == record.push_id:
            if info.etag:
                store.delete_if_match(data, info.etag)
            else:
                store.delete(data)
        raw, etag = store.get(key)
        if VersionRecord.parse(package, record.version, raw).push_id == record.push_id:
            store.delete_if_match(key, etag)
    except (StorageError, IntegrityError):
        pass  # gone already, or no longer ours
