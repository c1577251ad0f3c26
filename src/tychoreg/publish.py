"""Publishing one version: stage, claim, commit (docs/FORMAT.md, "Publishing a version").

The record is the claim: of concurrent pushes of one version, exactly one creates it. The data
key is what makes the version visible, so it is committed last, with create-if-absent. Because
requests are retried (by boto3, on 5xx and timeouts), a conditional write may fail *because our
own first attempt succeeded*; each step therefore recognises its own write before concluding
that someone else won. A push that fails after claiming releases its claim (only if the claim is
still its own), so retrying works at once.
"""

from __future__ import annotations

import os
import stat
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import BinaryIO

from . import layout
from .errors import AlreadyExists, IntegrityError, StorageError, UsageError
from .integrity import Digests, HashingReader
from .models import VersionRecord
from .store import ObjectNotFound, PreconditionFailed, StagedUpload, Store
from .store.base import Progress, same_etag

#: A claim (record without data) older than this belongs to a push that died; it may be taken
#: over. The window between claim and commit is one request, so an hour is generous.
STALE_CLAIM = timedelta(hours=1)
CLAIM_TIMEOUT_ENV = "TYCHOREG_CLAIM_TIMEOUT"


def _claim_timeout() -> timedelta:
    try:
        return timedelta(seconds=float(os.environ[CLAIM_TIMEOUT_ENV]))
    except (KeyError, ValueError):
        return STALE_CLAIM


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def already_exists(package: str, version: str) -> AlreadyExists:
    return AlreadyExists(f"version {version} of package {package} already exists; versions are immutable",
                         "push a new version number")


def open_source(path: Path) -> BinaryIO:
    """Open the file to push, or raise a usage error (exit 2) before any request is made."""
    try:
        source = open(path, "rb")  # noqa: SIM115 - the caller closes it
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}",
                         "name an existing, readable file to push") from None
    if not stat.S_ISREG(os.fstat(source.fileno()).st_mode):
        source.close()
        raise UsageError(f"cannot push {path}: not a regular file", "name a file to push")
    return source


def publish(store: Store, package: str, version: str, source: BinaryIO, *, identity: str,
            note: str | None = None, progress: Progress | None = None) -> VersionRecord:
    """Upload ``source`` as ``version``; raises AlreadyExists when another push has it."""
    data_key = layout.data(package, version)
    if store.head(data_key) is not None:
        raise already_exists(package, version)
    digests = Digests()
    staged = store.stage(data_key, HashingReader(source, digests), os.fstat(source.fileno()).st_size, progress)
    record = VersionRecord(version, digests.size, digests.sha256, now_iso(), identity, note)
    try:
        if staged.size != digests.size:
            raise StorageError(f"upload of {source.name} was incomplete ({staged.size} of {digests.size} bytes)")
        claim = _claim(store, package, record)
    except BaseException:
        staged.abort()
        raise
    _commit(store, package, version, staged, claim)
    return record


def _claim(store: Store, package: str, record: VersionRecord) -> str:
    """Create the version's record and return its etag, or raise if another push holds it."""
    key, body = layout.record(package, record.version), record.to_bytes()
    try:
        return store.put_if_absent(key, body)
    except PreconditionFailed:
        pass
    try:
        raw, etag = store.get(key)
    except ObjectNotFound:  # released meanwhile: one more try, and no more
        return store.put_if_absent(key, body)
    if raw == body:
        return etag  # our own write, answered 412 on a retried request
    if store.head(layout.data(package, record.version)) is not None:
        raise already_exists(package, record.version)
    if _is_stale(store, key, raw, package, record.version):
        try:
            return store.put_if_match(key, body, etag)
        except PreconditionFailed:
            pass
    raise AlreadyExists(f"version {record.version} of package {package} is being pushed by someone else",
                        f"wait, then check with: tychoreg list-versions {package}")


def _is_stale(store: Store, key: str, raw: bytes, package: str, version: str) -> bool:
    """Is this claim older than the claim timeout? By the store's clock if known, else the record's."""
    info = store.head(key)
    started = info.modified if info is not None else None
    if started is None:
        try:
            started = datetime.fromisoformat(VersionRecord.parse(package, version, raw).pushed_at.replace("Z", "+00:00"))
        except (IntegrityError, ValueError):
            return True  # a damaged claim that no push could have written
    if started.tzinfo is None:
        started = started.replace(tzinfo=timezone.utc)
    return datetime.now(timezone.utc) - started > _claim_timeout()


def _commit(store: Store, package: str, version: str, staged: StagedUpload, claim: str) -> None:
    """Make the data visible; on failure, recognise our own landed write or release the claim."""
    try:
        staged.commit()
        return
    except PreconditionFailed:
        if _landed(store, package, version, staged):
            return
        _release(store, package, version, claim)
        # A client that does not claim (tycho-station 0.4.0) created the data: theirs stands.
        raise already_exists(package, version) from None
    except BaseException:
        if _landed(store, package, version, staged):
            return
        _release(store, package, version, claim)
        raise


def _landed(store: Store, package: str, version: str, staged: StagedUpload) -> bool:
    try:
        info = store.head(layout.data(package, version))
    except StorageError:
        return False
    return info is not None and info.size == staged.size and same_etag(info.etag, staged.etag)


def _release(store: Store, package: str, version: str, claim: str) -> None:
    """Delete our claim, unless it is no longer ours; best effort."""
    try:
        store.delete_if_match(layout.record(package, version), claim)
    except StorageError:
        pass
