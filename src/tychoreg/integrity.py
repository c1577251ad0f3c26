"""Hashing in the same pass as the transfer, and checking what a store says about its objects.

Every byte is hashed as it moves (reader on push, writer on pull), so a file is never read twice.
Versions pushed by tycho-station 0.4.0 have no recorded SHA-256; for those the S3 ETag is the
only fingerprint, so we recompute it (MD5, or MD5 of part MD5s for multipart uploads).
"""

from __future__ import annotations

import hashlib
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from . import portable
from .concurrency import Cancelled, check_cancelled
from .store.base import CHUNK as CHUNK
from .store.base import Sink, Source

MiB = 1024 * 1024
#: boto3's (and so tycho-station 0.4.0's and the aws CLI's) default multipart part size.
DEFAULT_PART_SIZE = 8 * MiB
_SINGLE = re.compile(r"[0-9a-f]{32}\Z")
_MULTI = re.compile(r"([0-9a-f]{32})-([0-9]+)\Z")


@dataclass(frozen=True)
class EtagPlan:
    """How to recompute an ETag: ``part_size`` None means a plain MD5 of the content."""

    etag: str
    part_size: int | None


def etag_plan(etag: str | None, size: int, part_size: int | None = None) -> EtagPlan | None:
    """Work out how ``etag`` was made, or None when it is not an MD5-based ETag we can check.

    For a multipart ETag (``MD5-N``) the part size is ``part_size`` when the store could tell it,
    else boto3's default of 8 MiB if that gives N parts; anything else cannot be recomputed.
    """
    if not etag:
        return None
    bare = etag.strip('"').lower()
    if _SINGLE.match(bare):
        return EtagPlan(bare, None)
    match = _MULTI.match(bare)
    if not match:
        return None
    parts = int(match.group(2))
    for candidate in (part_size, DEFAULT_PART_SIZE):
        if candidate and parts >= 1 and -(-size // candidate) == parts:
            return EtagPlan(bare, candidate)
    return None


class _EtagHasher:
    def __init__(self, part_size: int | None) -> None:
        self._part_size = part_size
        self._whole = hashlib.md5(usedforsecurity=False)
        self._part = hashlib.md5(usedforsecurity=False)
        self._in_part = 0
        self._digests: list[bytes] = []

    def update(self, data: bytes | memoryview) -> None:
        if self._part_size is None:
            self._whole.update(data)
            return
        view = memoryview(data)
        while view:
            take = min(len(view), self._part_size - self._in_part)
            self._part.update(view[:take])
            self._in_part += take
            view = view[take:]
            if self._in_part == self._part_size:
                self._digests.append(self._part.digest())
                self._part, self._in_part = hashlib.md5(usedforsecurity=False), 0

    def hexdigest(self) -> str:
        if self._part_size is None:
            return self._whole.hexdigest()
        digests = self._digests + ([self._part.digest()] if self._in_part else [])
        return f"{hashlib.md5(b''.join(digests), usedforsecurity=False).hexdigest()}-{len(digests)}"


class Digests:
    """SHA-256 and size (always), plus an ETag recomputation when asked for."""

    def __init__(self, etag: EtagPlan | None = None) -> None:
        self.size = 0
        self._sha = hashlib.sha256()
        self._etag = _EtagHasher(etag.part_size) if etag else None

    def update(self, data: bytes | memoryview) -> None:
        self.size += len(data)
        self._sha.update(data)
        if self._etag:
            self._etag.update(data)

    @property
    def sha256(self) -> str:
        return self._sha.hexdigest()

    @property
    def etag(self) -> str | None:
        return self._etag.hexdigest() if self._etag else None


class HashingReader:
    """Wraps a file opened for reading; every byte read is hashed."""

    def __init__(self, raw: Source, digests: Digests) -> None:
        self._raw, self.digests = raw, digests

    def read(self, n: int = -1) -> bytes:
        data = self._raw.read(n)
        self.digests.update(data)
        return data


class HashingWriter:
    """Wraps a file opened for writing; every byte written is hashed."""

    def __init__(self, raw: Sink, digests: Digests) -> None:
        self._raw, self.digests = raw, digests

    def write(self, data: bytes) -> object:
        self.digests.update(data)
        return self._raw.write(data)


class PositionalWriter:
    """A part file that parallel ranged reads fill at their offsets (``write_at``, any thread),
    while the bytes are hashed in order (``account``, one thread): writes do not wait for the
    hash, and the hash never reads the file back. ``write`` does both, for sequential reads."""

    def __init__(self, fd: int, digests: Digests) -> None:
        self._fd, self.digests = fd, digests
        self._state = threading.Condition()
        self._writing = 0
        self._closed = False

    def write_at(self, data: bytes, offset: int) -> None:
        check_cancelled()
        with self._state:
            if self._closed:  # the download gave up (or was interrupted): its file is not ours now
                raise Cancelled
            self._writing += 1
        try:
            view = memoryview(data)
            while view:
                written = portable.pwrite(self._fd, view, offset)
                view, offset = view[written:], offset + written
        finally:
            with self._state:
                self._writing -= 1
                self._state.notify_all()

    def close(self) -> None:
        """Refuse further writes and wait for those under way: after this, no worker that is still
        fetching a range can write into the file descriptor (closed, or reused, by then)."""
        with self._state:
            self._closed = True
            while self._writing:
                self._state.wait()

    def account(self, data: bytes) -> None:
        self.digests.update(data)

    def account_written(self, offset: int, size: int) -> None:
        """Hash, in order, bytes ``offset .. offset + size`` that ``write_at`` put in the file (read
        back from the page cache: the range's pieces were not kept in memory)."""
        end = offset + size
        buffer = bytearray(min(CHUNK, size))
        view = memoryview(buffer)
        while offset < end:
            got = portable.pread_into(self._fd, view[: min(CHUNK, end - offset)], offset)
            if not got:
                raise OSError(f"the part file ends at {offset} bytes, before {end}")
            self.digests.update(view[:got])
            offset += got

    def write(self, data: bytes) -> int:
        self.write_at(data, self.digests.size)
        self.digests.update(data)
        return len(data)


class Discard:
    """A sink that keeps nothing: with :class:`HashingWriter`, hashes a stored object in passing."""

    def write(self, data: bytes) -> int:
        return len(data)


def digest_file(path: Path, etag: EtagPlan | None = None) -> Digests:
    """Hash a local file (used to decide whether a pull can be skipped)."""
    with open(path, "rb") as fh:
        return digest_stream(fh, etag)


def digest_stream(fh: BinaryIO, etag: EtagPlan | None = None) -> Digests:
    """Hash what an open file holds from where it stands to its end."""
    digests = Digests(etag)
    while chunk := fh.read(CHUNK):
        digests.update(chunk)
    return digests
