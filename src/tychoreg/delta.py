"""Delta pulls: build the wanted version from the pieces this machine already has, and fetch only
the rest (docs/FORMAT.md, "Chunk indexes"; the design of zsync and casync).

The version's chunk index (:mod:`tychoreg.chunks`) lists its pieces by SHA-256. Local files that
may share them (the destination, which usually holds the version pulled before, and the cache's
copies of the package's other versions) are cut with the same parameters and hashed; every piece
found is copied from there, the others are read from the store in byte ranges (adjacent pieces
coalesced, ranges fetched in parallel). The result is written to a fresh temporary file beside the
destination and renamed into place only once the whole file hashes to the version's SHA-256 (or
ETag), as every download is.

The index is a hint and local files may change under us, so any doubt means "download whole":
no index, one that does not describe these bytes, a store that serves no ranges, a failed range,
a result that does not verify. :func:`assemble` then returns None, having left nothing behind.
"""

from __future__ import annotations

import os
import stat
import threading
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from . import chunks, portable
from .concurrency import CANCELLED, check_cancelled, executor
from .errors import IntegrityError, TychoError
from .fetch import DigestMemo, Expected, resumable_part
from .integrity import Digests
from .localfs import open_regular, resumable_write
from .store import Store
from .store.base import Progress, RangeReader

#: Local files cut and searched for pieces, at most (the destination first).
MAX_SOURCES = 4
#: The largest range read at once: longer runs of missing pieces are split, to fetch in parallel.
MAX_RANGE = 8 * 1024 * 1024
#: Ranges fetched at the same time.
PARALLEL = 8
#: Below this share of the file found locally, a delta is not worth its requests.
MIN_REUSE = 0.05
#: Runs read and waiting to be hashed, at most (each up to MAX_RANGE bytes).
HASH_AHEAD = 3


@dataclass(frozen=True)
class Outcome:
    """What a delta pull took from where: bytes ``reused`` from local files, ``fetched`` from the
    store (ranges) and the index's own size."""

    reused: int
    fetched: int
    index: int


class _Doubt(IntegrityError):
    """The assembled file does not verify: discarded, and the version downloaded whole."""


@dataclass(frozen=True)
class _Found:
    fd: int
    offset: int


class Prescan:
    """One read of the destination for both the pull's skip check and a delta that may follow:
    each block read is hashed whole (the skip check's SHA-256) and cut into pieces (by the usual
    parameters), instead of a pass to hash it and, when it differs, another to cut it. The read
    runs in a thread (the caller waits for it in :meth:`holds`). Started (:meth:`start`) only
    where the skip check would read the file and a delta could follow; stopped by :meth:`close`.
    Its pieces are found as any source's: each one's SHA-256 must be the index's, and the
    assembled file is verified whole."""

    def __init__(self, path: Path, fd: int, expected: Expected) -> None:
        self.path = path
        self._fd: int | None = fd
        self._expected = expected
        self._digests: Digests | None = None
        self._pieces: list[chunks.Piece] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tycho-prescan", daemon=True)
        self._thread.start()

    @classmethod
    def start(cls, store: Store, dest: Path, expected: Expected, known: str | None) -> Prescan | None:
        """A prescan of ``dest`` where the skip check would hash it (a regular file of the
        version's size whose digest is not remembered, ``known`` None) and a delta could
        follow; None elsewhere."""
        if expected.checked_by == "size" or not isinstance(store, RangeReader) or resumable_part(dest, expected):
            return None
        if known is not None:
            return None  # the skip check will not read it: the memo answers
        try:
            fd, st = open_regular(dest)
        except OSError:
            return None
        if st.st_size != expected.size or st.st_size == 0 or chunks.cut(fd) is None:
            os.close(fd)
            return None
        return cls(dest, fd, expected)

    def _run(self) -> None:
        assert self._fd is not None
        digests = Digests(self._expected.etag)
        pieces = []
        try:
            # in this thread, block by block as the chunker reads: a hashing thread fed ~150 KiB
            # blocks cost more in hand-offs than it saved on two busy cores (benchmarks/RESULTS.md)
            for piece in chunks.cut(self._fd, chunks.Params(), tap=digests.update) or ():
                if self._stop.is_set() or CANCELLED.is_set():
                    return
                pieces.append(piece)
        except (OSError, ValueError):
            return
        if digests.size == self._expected.size and sum(p.length for p in pieces) == digests.size:
            self._digests, self._pieces = digests, pieces

    def holds(self, memo: DigestMemo | None) -> bool | None:
        """The skip check: whether the file held the version's bytes (noted in ``memo`` as
        :func:`tychoreg.fetch.holds` does); None when the read did not finish (then ask that)."""
        self._thread.join()
        if self._digests is None:
            return None
        if memo:
            memo.note_digest(self.path, self._digests.sha256)
        return self._expected.matches(self._digests)

    @property
    def sha256(self) -> str | None:
        """The file's SHA-256 as read (None when the read did not finish)."""
        self._thread.join()
        return self._digests.sha256 if self._digests is not None else None

    def take(self, params: chunks.Params, stack: ExitStack) -> tuple[int, list[chunks.Piece]] | None:
        """The descriptor (now ``stack``'s to close) and the pieces; None when they could not
        be cut, or the index asks for other parameters (then the file is cut again)."""
        self._thread.join()
        if self._pieces is None or self._fd is None or params != chunks.Params():
            return None
        fd, self._fd = self._fd, None
        stack.callback(os.close, fd)
        return fd, self._pieces

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _note(fd: int, pieces: Iterable[chunks.Piece], wanted: set[bytes], found: dict[bytes, _Found]) -> None:
    for piece in pieces:
        check_cancelled()
        if piece.sha256 in wanted and piece.sha256 not in found:
            found[piece.sha256] = _Found(fd, piece.offset)


def _cut_source(
    path: Path,
    params: chunks.Params,
    wanted: set[bytes],
    found: dict[bytes, _Found],
    stack: ExitStack,
    prescan: Prescan | None,
) -> None:
    """Cut the file at ``path`` (or take the prescan's pieces of it) and note where it holds
    pieces still wanted (its descriptor stays open until the pull ends, so a file renamed
    meanwhile is still the one that was hashed)."""
    taken = prescan.take(params, stack) if prescan is not None and prescan.path == path else None
    if taken is not None:
        _note(*taken, wanted, found)
        return
    try:
        fd, _ = open_regular(path)
    except OSError:
        return
    stack.callback(os.close, fd)
    pieces = chunks.cut(fd, params)
    if pieces is None:
        return
    try:
        _note(fd, pieces, wanted, found)
    except (OSError, ValueError):
        return


def _has_bytes(path: Path) -> bool:
    """Whether ``path`` may hold pieces: a regular file with bytes (it is opened without following
    links, and cut, only once an index says what to look for)."""
    try:
        st = os.stat(path, follow_symlinks=False)
    except (OSError, ValueError):
        return False
    return stat.S_ISREG(st.st_mode) and st.st_size > 0


def _ranges(missing: Iterable[chunks.Piece]) -> list[tuple[int, int]]:
    """Adjacent missing pieces as one range (first, last inclusive), at most MAX_RANGE each."""
    out: list[tuple[int, int]] = []
    for piece in missing:
        end = piece.offset + piece.length
        if out and out[-1][1] + 1 == piece.offset and end - out[-1][0] <= MAX_RANGE:
            out[-1] = (out[-1][0], end - 1)
        else:
            out.append((piece.offset, end - 1))
    return out


def assemble(
    store: Store,
    package: str,
    version: str,
    expected: Expected,
    dest: Path,
    sources: Callable[[], list[Path]],
    progress: Progress | None = None,
    prescan: Prescan | None = None,
) -> Outcome | None:
    """Make ``dest`` hold the version from local pieces and fetched ranges, verified; None when
    a delta cannot be done or was not worth it (the caller downloads whole; nothing was left
    behind). ``sources`` names local files that may share pieces; with none that holds bytes, the
    index is not even read (a fresh pull pays no round trip for it). An interrupted download of
    the version beside ``dest`` is resumed instead: it is cheaper than anything else. A
    ``prescan`` of one of the sources saves cutting it again."""
    if expected.checked_by == "size" or not isinstance(store, RangeReader) or resumable_part(dest, expected):
        return None
    paths = [p for p in sources()[:MAX_SOURCES] if _has_bytes(p)]
    if not paths:  # nothing local to reuse: not even the index is worth a round trip
        return None
    index = chunks.read(store, package, version, expected.size, expected.sha256)
    if index is None or not index.pieces:
        return None
    index_size = len(index.to_bytes())
    wanted = {p.sha256 for p in index.pieces}
    found: dict[bytes, _Found] = {}
    with ExitStack() as stack:
        for path in paths:
            _cut_source(path, index.params, wanted, found, stack, prescan)
            if len(found) == len(wanted):
                break
        reusable = [p for p in index.pieces if p.sha256 in found]
        reused = sum(p.length for p in reusable)
        if reused < MIN_REUSE * expected.size:
            return None
        missing = [p for p in index.pieces if p.sha256 not in found]
        ranges = _ranges(missing)
        try:
            with resumable_write(dest, None) as fh:
                fd = fh.fileno()
                os.ftruncate(fd, expected.size)
                _fetch(store, expected, ranges, fd, progress)
                _copy_and_verify(index, found, fd, expected, dest, progress)
        except TychoError:  # a doubt, a failed range, a local error: the whole download decides
            return None
    return Outcome(reused, sum(last + 1 - first for first, last in ranges), index_size)


def _fetch(
    store: RangeReader, expected: Expected, ranges: list[tuple[int, int]], fd: int, progress: Progress | None
) -> None:
    def one(span: tuple[int, int]) -> None:
        first, last = span
        at = first
        for data in store.read_range(expected.key, first, last, size=expected.size, if_match=expected.pin):
            check_cancelled()
            _write_all(fd, data, at)
            at += len(data)
            if progress:
                progress(len(data))
        if at != last + 1:
            raise _Doubt(f"{expected.key}: a range came back short")

    if not ranges:
        return
    with executor(min(PARALLEL, len(ranges))) as pool:
        for future in [pool.submit(one, span) for span in ranges]:
            future.result()


def _write_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        done = portable.pwrite(fd, view, offset)
        view, offset = view[done:], offset + done


def _runs(index: chunks.ChunkIndex, found: dict[bytes, _Found]) -> list[tuple[int | None, int, int, int]]:
    """The pieces in order as runs ``(source fd or None for fetched, source offset, offset,
    length)``: neighbours that follow each other in the same source are one run (fewer, larger
    reads and writes)."""
    runs: list[tuple[int | None, int, int, int]] = []
    for piece in index.pieces:
        src = found.get(piece.sha256)
        fd, at = (src.fd, src.offset) if src is not None else (None, piece.offset)
        if runs:
            rfd, rat, roff, rlen = runs[-1]
            if rfd == fd and rat + rlen == at and roff + rlen == piece.offset and rlen < MAX_RANGE:
                runs[-1] = (rfd, rat, roff, rlen + piece.length)
                continue
        runs.append((fd, at, piece.offset, piece.length))
    return runs


def _copy_and_verify(
    index: chunks.ChunkIndex,
    found: dict[bytes, _Found],
    fd: int,
    expected: Expected,
    dest: Path,
    progress: Progress | None,
) -> None:
    """One pass in order over the version's pieces: copy each local one into place, and hash
    every piece (copied or fetched) into the whole file's digests, which must be the version's.
    The hashing runs in a second thread, in order, while the next pieces are read and written
    (SHA-256 lets go of the interpreter lock); a few runs at most wait for it."""
    digests = Digests(expected.etag)
    with executor(1) as hasher:  # one worker: the runs are hashed in the order they are queued
        pending: deque[Future[None]] = deque()
        for src, at, offset, length in _runs(index, found):
            check_cancelled()
            data = portable.pread(fd if src is None else src, length, offset if src is None else at)
            if len(data) != length:
                raise _Doubt(f"{dest}: a local piece changed while it was read")
            if src is not None:
                _write_all(fd, data, offset)
                if progress:
                    progress(length)
            pending.append(hasher.submit(digests.update, data))
            while len(pending) > HASH_AHEAD:
                pending.popleft().result()
        while pending:
            pending.popleft().result()
    if not expected.matches(digests):
        raise _Doubt(f"{dest}: the assembled file does not verify")
