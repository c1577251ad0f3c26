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
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from . import chunks, portable
from .concurrency import check_cancelled, executor
from .errors import IntegrityError, TychoError
from .fetch import Expected, resumable_part
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


def _cut_source(
    path: Path, params: chunks.Params, wanted: set[bytes], found: dict[bytes, _Found], stack: ExitStack
) -> None:
    """Cut the file at ``path`` and note where it holds pieces still wanted (its descriptor stays
    open until the pull ends, so a file renamed meanwhile is still the one that was hashed)."""
    try:
        fd, _ = open_regular(path)
    except OSError:
        return
    stack.callback(os.close, fd)
    pieces = chunks.cut(fd, params)
    if pieces is None:
        return
    try:
        for piece in pieces:
            check_cancelled()
            if piece.sha256 in wanted and piece.sha256 not in found:
                found[piece.sha256] = _Found(fd, piece.offset)
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
) -> Outcome | None:
    """Make ``dest`` hold the version from local pieces and fetched ranges, verified; None when
    a delta cannot be done or was not worth it (the caller downloads whole; nothing was left
    behind). ``sources`` names local files that may share pieces; with none that holds bytes, the
    index is not even read (a fresh pull pays no round trip for it). An interrupted download of
    the version beside ``dest`` is resumed instead: it is cheaper than anything else."""
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
            _cut_source(path, index.params, wanted, found, stack)
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
    every piece (copied or fetched) into the whole file's digests, which must be the version's."""
    digests = Digests(expected.etag)
    for src, at, offset, length in _runs(index, found):
        check_cancelled()
        data = portable.pread(fd if src is None else src, length, offset if src is None else at)
        if len(data) != length:
            raise _Doubt(f"{dest}: a local piece changed while it was read")
        if src is not None:
            _write_all(fd, data, offset)
            if progress:
                progress(length)
        digests.update(data)
    if not expected.matches(digests):
        raise _Doubt(f"{dest}: the assembled file does not verify")
