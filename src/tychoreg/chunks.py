"""A version's chunk index: where its bytes split by content, and a SHA-256 of each piece.

Written beside the record at push (``PKG/.tycho/chunks/VERSION.cdx``, docs/FORMAT.md, "Chunk
indexes") so that a later pull can tell which pieces of the wanted version it already has on
disk (the destination, the cache entries of the package's other versions) and fetch only the rest
(:mod:`tychoreg.delta`). Boundaries are content-defined (FastCDC 2020, by the ``pyfastcdc``
C extension, about 1 GB/s): an insertion or deletion moves only the boundaries next to it, so the
pieces after it are found again at their new offsets.

The index is a hint, never trusted for correctness: it names the SHA-256 and size of the whole
file it describes (one that does not match the record is ignored), each reused piece is hashed
again before it is used, and the assembled file is verified as every download is.

Format (version 1): one line of JSON (``{"format": 1, "chunker": "fastcdc2020", "avg": ..,
"min": .., "max": .., "hash": "sha256", "size": .., "sha256": .., "count": ..}``) and a newline,
then ``count`` entries of 36 bytes: the piece's length (4 bytes, big-endian) and its SHA-256
(32 bytes). Offsets are the running sum of lengths, which must add up to ``size``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import struct
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from . import layout, portable
from .errors import TychoError
from .integrity import digest_stream
from .names import is_valid_segment
from .store import PreconditionFailed, Store
from .store.base import RangeReader
from .store.snapshot import SnapshotStore

FORMAT = 1
CHUNKER = "fastcdc2020"
#: Target average piece: the real average is ``AVG + MIN`` (cut-point skipping), about 40 KiB,
#: so an index is 36 bytes per 40 KiB, 0.09 % of the data, and a change costs about one piece
#: on each side of it (measured on 256 MiB: 1 % changed in nine places fetches 1.15x the new
#: bytes plus the index; 64 KiB pieces would fetch 1.7x).
AVG = 32 * 1024
MIN = AVG // 4
MAX = AVG * 4
ENTRY = struct.Struct(">I32s")
#: The largest index read (it describes about 600 GiB).
MAX_INDEX = 256 * 1024 * 1024
#: Bytes read per step when chunking a file.
READ = 4 * 1024 * 1024


@dataclass(frozen=True)
class Piece:
    offset: int
    length: int
    sha256: bytes


@dataclass(frozen=True)
class Params:
    avg: int = AVG
    min: int = MIN
    max: int = MAX


@dataclass(frozen=True)
class ChunkIndex:
    size: int
    sha256: str
    pieces: tuple[Piece, ...]
    params: Params = Params()

    def to_bytes(self) -> bytes:
        head = {
            "format": FORMAT,
            "chunker": CHUNKER,
            "avg": self.params.avg,
            "min": self.params.min,
            "max": self.params.max,
            "hash": "sha256",
            "size": self.size,
            "sha256": self.sha256,
            "count": len(self.pieces),
        }
        body = b"".join(ENTRY.pack(p.length, p.sha256) for p in self.pieces)
        return json.dumps(head, separators=(",", ":")).encode() + b"\n" + body

    @classmethod
    def parse(cls, raw: bytes) -> ChunkIndex | None:
        """The index, or None when ``raw`` is not a consistent one (damaged, planted, newer)."""
        line, nl, body = raw.partition(b"\n")
        if not nl or len(line) > 4096:
            return None
        try:
            head = json.loads(line)
        except (UnicodeDecodeError, ValueError, RecursionError):
            return None
        if not isinstance(head, dict) or head.get("format") != FORMAT or head.get("chunker") != CHUNKER:
            return None
        if head.get("hash") != "sha256":
            return None
        ints = [head.get(k) for k in ("avg", "min", "max", "size", "count")]
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in ints):
            return None
        avg, lo, hi, size, count = (int(v) for v in ints)  # type: ignore[arg-type]
        sha = head.get("sha256")
        if not isinstance(sha, str) or len(sha) != 64 or not set(sha) <= set("0123456789abcdef"):
            return None
        if not (64 <= lo <= avg <= hi <= 16 * 1024 * 1024) or len(body) != count * ENTRY.size:
            return None
        pieces = []
        offset = 0
        for length, digest in ENTRY.iter_unpack(body):
            if length == 0 or length > hi:
                return None
            pieces.append(Piece(offset, length, digest))
            offset += length
        if offset != size:
            return None
        return cls(size, sha, tuple(pieces), Params(avg, lo, hi))


def _chunker(params: Params) -> Any:
    """The C extension's chunker, or None where it is missing (then no index is written and
    pulls download whole: the pure-Python fallback is far too slow to run at push)."""
    try:
        from pyfastcdc.cy import FastCDC  # noqa: PLC0415 - the C extension, only when chunking
    except ImportError:
        return None
    return FastCDC(params.avg, min_size=params.min, max_size=params.max, normalized_chunking=1)


class _PositionalReader:
    """Reads a file descriptor from an offset of its own (``pread``), leaving the file position
    to whoever else reads it (the upload); ``tap`` sees every block read, in order."""

    def __init__(
        self, fd: int, start: int = 0, end: int | None = None, tap: Callable[[bytes], None] | None = None
    ) -> None:
        self._fd, self._at, self._end, self._tap = fd, start, end, tap

    def read(self, n: int) -> bytes:
        if self._end is not None:
            n = min(n, self._end - self._at)
        if n <= 0:
            return b""
        data = portable.pread(self._fd, n, self._at)
        self._at += len(data)
        if self._tap is not None and data:
            self._tap(data)
        return data


def cut(
    fd: int,
    params: Params = Params(),
    *,
    start: int = 0,
    end: int | None = None,
    tap: Callable[[bytes], None] | None = None,
) -> Iterator[Piece] | None:
    """The pieces of the file open as ``fd`` (offsets from ``start``), hashed; None when the
    chunker is not available. ``tap`` sees the bytes as they are read (a whole-file hash in the
    same read)."""
    chunker = _chunker(params)
    if chunker is None:
        return None

    def pieces() -> Iterator[Piece]:
        for c in chunker.cut_stream(_PositionalReader(fd, start, end, tap)):
            yield Piece(start + c.offset, c.length, hashlib.sha256(c.data).digest())

    return pieces()


def build(fd: int, size: int, sha256: str, params: Params = Params()) -> ChunkIndex | None:
    """The index of the file open as ``fd``, which must hold ``size`` bytes hashing to ``sha256``
    (the caller's single pass over it said so); None without the chunker or when the file
    changed size meanwhile."""
    found = cut(fd, params, end=size)
    if found is None:
        return None
    pieces = tuple(found)
    if sum(p.length for p in pieces) != size:
        return None
    return ChunkIndex(size, sha256, pieces, params)


class Background:
    """Chunks a file in a thread while the caller uploads it (push): the chunker and SHA-256 let
    go of the interpreter lock, so on a machine with two cores a push takes no longer."""

    def __init__(self, source: BinaryIO) -> None:
        self._fd = _own_description(source)
        self._pieces: list[Piece] | None = None
        self._thread = threading.Thread(target=self._run, name="tycho-chunks", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        if self._fd is None:
            return
        try:
            found = cut(self._fd)
            self._pieces = list(found) if found is not None else None
        except Exception:  # noqa: BLE001 - best effort: a push never fails for its index
            self._pieces = None
        finally:
            os.close(self._fd)

    def result(self, size: int, sha256: str) -> ChunkIndex | None:
        """The index, once the file (as uploaded: ``size`` bytes hashing to ``sha256``) is cut;
        None when it could not be or the file changed size while it was read."""
        self._thread.join()
        if self._pieces is None or sum(p.length for p in self._pieces) != size:
            return None
        return ChunkIndex(size, sha256, tuple(self._pieces))


def _own_description(source: BinaryIO) -> int | None:
    """A descriptor for reading ``source`` beside the upload, which reads it sequentially.

    With a native ``pread`` a duplicate will do: it never touches the file position the two
    share. Without one (Windows) ``pread`` is a seek and a read, and a shared position would move
    under the upload: its bytes, and so the version pushed, would be other bytes than the
    file's. The file is then opened again by name and kept only if it is the same file; None
    (no index now; ``tychoreg index`` writes it later) when it cannot be."""
    if portable.native_pread():
        return os.dup(source.fileno())
    try:
        fd = os.open(source.name, os.O_RDONLY | portable.O_BINARY | portable.O_CLOEXEC)
    except (OSError, TypeError):
        return None
    mine, theirs = os.fstat(fd), os.fstat(source.fileno())
    if (mine.st_dev, mine.st_ino) == (theirs.st_dev, theirs.st_ino):
        return fd
    os.close(fd)
    return None


def write(store: Store, package: str, version: str, index: ChunkIndex) -> None:
    """Store the index beside the version's record; one that describes other bytes (what a
    deleted version of the same number left) is replaced. Raises the store's errors."""
    k, raw = layout.chunk_index(package, version), index.to_bytes()
    try:
        store.put_if_absent(k, raw)
    except PreconditionFailed:
        old, etag = store.get(k) if len(raw) <= 16 * 1024 * 1024 else (b"", "")
        if old != raw:
            store.put_if_match(k, raw, etag) if etag else store.delete(k)


class _Collect:
    def __init__(self, limit: int) -> None:
        self.parts: list[bytes] = []
        self.size = 0
        self.limit = limit

    def write(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self.limit:
            raise _TooLarge
        self.parts.append(bytes(data))


class _TooLarge(Exception):
    pass


def read(store: Store, package: str, version: str, size: int, sha256: str | None) -> ChunkIndex | None:
    """The version's index if it has one that describes ``size`` bytes (hashing to ``sha256``
    when that is known); None otherwise (none, damaged, about other bytes, unreadable)."""
    k = layout.chunk_index(package, version)
    sink = _Collect(min(MAX_INDEX, 4096 + (size // 64 + 1) * ENTRY.size))
    try:
        info = store.head(k)  # None over HTTP too: the catalog does not list indexes
        if info is None and not isinstance(store, SnapshotStore):
            return None  # a bucket or folder: no index
        if info is not None and (info.size == 0 or info.size > sink.limit):
            return None
        if info is not None and isinstance(store, RangeReader):
            # one ranged GET: the lean S3 client (no boto3 to load), the file store's pread
            for piece in store.read_range(k, 0, info.size - 1, size=info.size, if_match=info.stamp):
                sink.write(piece)
        else:
            store.read(k, sink)
    except (_TooLarge, TychoError, OSError):
        return None
    index = ChunkIndex.parse(b"".join(sink.parts))
    if index is None or index.size != size or (sha256 is not None and index.sha256 != sha256):
        return None
    return index


def forget(store: Store, package: str, version: str, sha256: str | None) -> None:
    """Remove the index of a deleted version if it describes the bytes deleted (``sha256``; an
    index a new push of the same version wrote meanwhile stays). Best effort."""
    k = layout.chunk_index(package, version)
    try:
        raw, etag = store.get(k)
    except TychoError:
        return
    index = ChunkIndex.parse(raw)
    if index is None or sha256 is None or index.sha256 == sha256:
        with contextlib.suppress(TychoError):
            store.delete_if_match(k, etag)


def backfill(store: Store, package: str) -> tuple[list[str], list[str]]:
    """Write an index for each version of ``package`` that has none (pushed by tycho-station
    0.4.0, or before indexes were written): each is downloaded once, verified as a pull verifies
    it, and cut. Returns the keys written and the problems met (one line each)."""
    from . import fetch  # noqa: PLC0415 - fetch imports this module's users; only the index command

    versions = {v for i in store.list(layout.data_prefix(package)) if (v := layout.version_of_data(package, i.key))}
    indexed = {
        v for i in store.list(layout.chunks_prefix(package)) if (v := layout.version_of_chunk_index(package, i.key))
    }
    written: list[str] = []
    problems: list[str] = []
    for version in sorted(versions - indexed):
        if not is_valid_segment(version) or _chunker(Params()) is None:
            continue
        try:
            expected = fetch.expected_for(store, package, version, allow_unverified=True)
            if expected.checked_by == "size":
                continue  # nothing says what the bytes should be: no index to vouch for them
            with tempfile.TemporaryDirectory(prefix="tychoreg-chunks-") as tmp:
                local = Path(tmp) / "data"
                fetch.download(store, package, version, expected, local)
                with open(local, "rb") as fh:
                    sha = expected.sha256 or digest_stream(fh, None).sha256
                    index = build(fh.fileno(), expected.size, sha)
            if index is not None:
                write(store, package, version, index)
                written.append(layout.chunk_index(package, version))
        except TychoError as exc:
            problems.append(f"{package} {version}: no chunk index written: {exc}")
    return written, problems
