"""Pulling one version: what its bytes must be, whether the destination has them, the download.

The content decides: a destination is up to date when its bytes hash to the recorded SHA-256
(or, for versions pushed without a record, match the S3 ETag; or, with neither, the stored bytes
themselves). Downloads are hashed in the same pass and renamed into place only once verified.

Which record describes the data is decided here too (docs/FORMAT.md, "Reading a version"): the
data object names the push that wrote it, and a record describes it only if it names the same
push (or kept that push's claim when it took it over). A version whose data says tychoreg pushed
it, or that the package's catalog knew a record for, never silently becomes "unverified" when
its record goes missing: that is an integrity error unless the caller allows unverified bytes.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from . import layout, portable
from .catalog import known_digest
from .concurrency import backoff, executor
from .errors import IntegrityError, NotFound, RecordMissing, VersionNotFound
from .integrity import CHUNK, Digests, Discard, EtagPlan, HashingWriter, PositionalWriter, digest_stream, etag_plan
from .localfs import open_regular, resumable_write, written_prefix
from .models import PUSH_ID, CheckedBy, VersionRecord, record_for_data
from .store import ObjectNotFound, PreconditionFailed, Store
from .store.base import MultipartStore, ObjectInfo, Progress, TransferInterrupted

if TYPE_CHECKING:
    from .known import KnownDigests
    from .signatures import Signed, Trust

#: How many times one pull resumes an interrupted transfer before giving up (the part file stays).
RESUME_ATTEMPTS = 6


@dataclass(frozen=True)
class Expected:
    """What a version's bytes must be, and how we know (``checked_by``). ``pin`` is the stored
    object's ETag when it was resolved: every read is conditional on it, so bytes of an object
    replaced since (deleted and pushed again) are never mixed in."""

    key: str
    size: int
    sha256: str | None
    etag: EtagPlan | None
    pin: str | None = None
    #: What the trusted signers say of the version (None: no trust configured).
    signed: Signed | None = None

    @property
    def checked_by(self) -> CheckedBy:
        return "sha256" if self.sha256 else "etag" if self.etag else "size"

    @classmethod
    def pinned(cls, package: str, version: str, sha256: str, size: int) -> Expected:
        """What a lock file pins: enough to find the bytes locally without asking the store."""
        return cls(layout.data(package, version), size, sha256, None)

    def matches(self, digests: Digests) -> bool:
        if digests.size != self.size:
            return False
        if self.sha256:
            return digests.sha256 == self.sha256
        if self.etag:
            return digests.etag == self.etag.etag
        return True


def read_record(store: Store, package: str, version: str) -> VersionRecord | None:
    try:
        raw, _ = store.get(layout.record(package, version))
    except ObjectNotFound:
        return None
    return VersionRecord.parse(package, version, raw)


def expected_for(
    store: Store,
    package: str,
    version: str,
    *,
    allow_unverified: bool = False,
    known: KnownDigests | None = None,
    trust: Trust | None = None,
) -> Expected:
    """What ``version``'s bytes must be; NotFound unless the version is visible (its data is
    there: a record alone may be a push in progress or what a dead one left). ``known`` is what
    this machine verified before (see :mod:`tychoreg.known`). With ``trust``, the version's
    signatures are checked too (:func:`tychoreg.signatures.check`): a :class:`SignatureError`
    before anything is written, and a version without a record takes its SHA-256 from them."""
    expected = _expected(store, package, version, allow_unverified=allow_unverified, known=known)
    if trust is None:
        return expected
    from . import signatures  # noqa: PLC0415 - signatures, sshsig: only where trust is configured

    signed = signatures.check(store, package, version, expected.size, expected.sha256, trust)
    return replace(expected, signed=signed, sha256=expected.sha256 or signed.sha256)


def _expected(
    store: Store, package: str, version: str, *, allow_unverified: bool, known: KnownDigests | None
) -> Expected:
    rec, info = _read_both(store, package, version)
    if rec is None and info is not None and info.meta.get(PUSH_ID):
        # The two reads are not one snapshot: a push may have claimed and committed between
        # them (or a delete removed both). Look once more before calling the record lost.
        rec, info = _read_both(store, package, version)
    if info is None:
        raise VersionNotFound(package, version)
    if rec is not None:
        rec = record_for_data(
            package, version, rec, info.meta.get(PUSH_ID), info.etag, keeps_metadata=store.keeps_metadata
        )
        if rec.size != info.size:
            raise IntegrityError(
                f"{package} {version} is damaged: stored size {info.size} bytes, recorded {rec.size}",
                "re-push it as a new version",
                reason="damaged",
                package=package,
                version=version,
            )
        return Expected(info.key, rec.size, rec.sha256, None, info.stamp)
    if not allow_unverified:
        _refuse_lost_record(store, package, version, info, known)
    return Expected(info.key, info.size, None, _etag_plan(store, info), info.stamp)


def _read_both(store: Store, package: str, version: str) -> tuple[VersionRecord | None, ObjectInfo | None]:
    with executor(2) as pool:  # record and data head in one round trip
        record = pool.submit(read_record, store, package, version)
        info = store.head(layout.data(package, version))
        return record.result(), info


def _refuse_lost_record(store: Store, package: str, version: str, info: ObjectInfo, known: KnownDigests | None) -> None:
    """A version without a record pulls unverified (tycho-station 0.4.0 records nothing), unless
    something says it had one: its data carries a tychoreg push id, this machine verified it
    before, or the package's catalog kept a copy of its record. Then the record was lost or
    removed, and the bytes are suspect."""
    why = None
    if info.meta.get(PUSH_ID):
        why = "its data was pushed by tychoreg"
    elif known is not None and known.recall(package, version):
        why = f"this machine verified it before (sha256 {known.recall(package, version)})"
    elif known_digest(store, package, version):
        why = "the package's catalog knew its SHA-256"
    if why:
        raise RecordMissing(package, version, why)


def _etag_plan(store: Store, info: ObjectInfo) -> EtagPlan | None:
    plan = etag_plan(info.etag, info.size)
    if plan is None and info.etag and "-" in info.etag and isinstance(store, MultipartStore):
        plan = etag_plan(info.etag, info.size, store.first_part_size(info.key))
    return plan


class DigestMemo(Protocol):
    """Remembers what files hashed to while they stay unchanged (see :meth:`Cache.known_digest`)."""

    def known_digest(self, path: Path) -> str | None: ...

    def note_digest(self, path: Path, sha256: str) -> None: ...


def holds(store: Store, dest: Path, expected: Expected, memo: DigestMemo | None = None) -> bool:
    """True when ``dest`` already has exactly the version's bytes (the content decides; ``memo``
    only saves hashing a file that has not changed since it was last hashed)."""
    try:  # never follow a link, never block on a FIFO planted at the destination
        fd, st = open_regular(dest)
    except OSError:
        return False
    with os.fdopen(fd, "rb") as fh:
        if st.st_size != expected.size:
            return False
        known = memo.known_digest(dest) if memo and expected.sha256 else None
        if known is not None:  # unchanged since it hashed to ``known``: the answer, unread
            return known == expected.sha256
        try:
            local = digest_stream(fh, expected.etag)
        except OSError:
            return False
    if memo:
        memo.note_digest(dest, local.sha256)
    if expected.checked_by != "size":
        return expected.matches(local)
    # No fingerprint was recorded: compare with the stored bytes themselves (read, not written).
    stored = Digests()
    store.read(expected.key, HashingWriter(Discard(), stored), if_match=expected.pin)
    return stored.size == local.size and stored.sha256 == local.sha256


class Follow(Protocol):
    """Something that keeps up with a download's verified prefix (:class:`tychoreg.cache.Follower`)."""

    def advance(self, fd: int, hashed: int) -> None: ...


def download(
    store: Store,
    package: str,
    version: str,
    expected: Expected,
    dest: Path,
    progress: Progress | None = None,
    attempts: int = RESUME_ATTEMPTS,
    follow: Follow | None = None,
) -> tuple[int, int]:
    """Stream the version into ``.DEST.TAG.part`` and rename it into place only once verified.

    An interrupted transfer resumes with a ranged read from where it stopped, in this run (up to
    ``attempts`` times) or the next one (the part file is kept), only for content we can name
    (see :func:`_fingerprint`). Returns how often it resumed and how many bytes it read from the
    store (a part file's prefix is not read again). ``follow`` is told, as the bytes are hashed
    in order, how many of them the part file holds (the cache copies them meanwhile).
    """
    with resumable_write(dest, _fingerprint(expected)) as fh:
        fd = fh.fileno()

        def hashed(amount: int) -> None:
            if progress:
                progress(amount)
            if follow:
                follow.advance(fd, digests.size)

        told = hashed if follow else progress
        digests = _resume(fd, expected)
        kept = digests.size
        if follow:
            follow.advance(fd, digests.size)
        resumes = _transfer(store, expected, fd, digests, told, attempts)
        fetched = digests.size - kept
        if kept and not expected.matches(digests):
            # what an earlier run left was not a prefix of these bytes: once more, from the start
            digests = _resume(fd, expected, restart=True)
            if follow:
                follow.advance(fd, 0)
            resumes += _transfer(store, expected, fd, digests, told, attempts)
            fetched += digests.size
        if not expected.matches(digests):
            got = digests.sha256 if expected.sha256 else digests.etag
            hint = f"{dest} was left untouched; the stored copy is damaged: re-push it as a new version"
            if expected.checked_by == "etag":
                hint += " (or, if the bucket encrypts with SSE-KMS/SSE-C, its ETags are not MD5s)"
            raise IntegrityError(
                f"{package} {version} failed verification: got {digests.size} bytes"
                + (f" with {expected.checked_by} {got}" if got and expected.checked_by != "size" else "")
                + f", expected {expected.size} bytes"
                + (f" with sha256 {expected.sha256}" if expected.sha256 else ""),
                hint,
                reason="failed-verification",
                package=package,
                version=version,
            )
    return resumes, fetched


def _resume(fd: int, expected: Expected, restart: bool = False) -> Digests:
    """Hash what a part file already holds (its trusted prefix; nothing if ``restart``)."""
    digests = Digests(expected.etag)
    trusted = 0 if restart else min(written_prefix(fd, CHUNK), expected.size)
    os.ftruncate(fd, trusted)
    for offset in range(0, trusted, CHUNK):
        digests.update(portable.pread(fd, min(CHUNK, trusted - offset), offset))
    return digests


def _transfer(
    store: Store, expected: Expected, fd: int, digests: Digests, progress: Progress | None, attempts: int
) -> int:
    """Read the rest of the object into the part file, resuming after interruptions; returns
    how often it resumed. Whatever happens, the file ends at the hashed prefix or beyond it
    with only hashed bytes, so the next run can trust it."""
    writer = PositionalWriter(fd, digests)
    try:
        return _read_into(store, expected, fd, digests, writer, progress, attempts)
    finally:
        writer.close()  # ranges still being fetched (an interruption) write nothing after this


def _read_into(
    store: Store,
    expected: Expected,
    fd: int,
    digests: Digests,
    writer: PositionalWriter,
    progress: Progress | None,
    attempts: int,
) -> int:
    for attempt in range(attempts):
        try:
            if digests.size < expected.size or (expected.size == 0 and attempt == 0):
                store.read(
                    expected.key,
                    writer,
                    start=digests.size,
                    size=expected.size,
                    progress=progress,
                    if_match=expected.pin,
                )
            return attempt
        except ObjectNotFound:
            os.ftruncate(fd, digests.size)
            raise NotFound(
                f"{expected.key} was deleted while it was being downloaded",
                "pull again",
                reason="deleted-during-download",
            ) from None
        except PreconditionFailed:
            os.ftruncate(fd, digests.size)
            raise NotFound(
                f"{expected.key} was replaced while it was being downloaded (deleted and pushed again)",
                "pull again",
                reason="replaced-during-download",
            ) from None
        except TransferInterrupted:
            os.ftruncate(fd, digests.size)  # ranges written beyond the hashed prefix go
            if attempt == attempts - 1:
                raise
            backoff(attempt, 0.2, 2.0)
        except BaseException:  # interrupted: ranges still being fetched must not write after the cut
            writer.close()
            os.ftruncate(fd, digests.size)
            raise
    return attempts


def _fingerprint(expected: Expected) -> str | None:
    """Names the part file after the content it will hold, so only the same bytes are resumed:
    the SHA-256, else the ETag we recompute (MD5), else the stored object's ETag, which every
    resumed read is conditional on. None when nothing names the content (a version without a
    record on a store without ETags): such a download is never resumed."""
    if expected.sha256:
        source = expected.sha256
    elif expected.etag:
        source = expected.etag.etag
    elif expected.pin:
        source = hashlib.sha256(expected.pin.strip('"').encode()).hexdigest()
    else:
        return None
    return "".join(c for c in source if c in "0123456789abcdef")[:16] + f"-{expected.size}"


def resumable_part(dest: Path, expected: Expected) -> bool:
    """True when an interrupted download of these bytes left a part file beside ``dest`` (see
    :func:`download`): resuming it is cheaper than anything else (a delta pull then steps aside)."""
    tag = _fingerprint(expected)
    return tag is not None and os.path.lexists(dest.with_name(f".{dest.name}.{tag}.part"))
