"""Getting a version's verified bytes onto the user's disk, as a file or as an extracted tree.

Three sources, cheapest first: the destination itself (already holds the bytes: nothing to do),
the shared cache (:mod:`tychoreg.cache`, verified on the way out), the store (verified on the way
in, then kept in the cache for the next project). The cache is an optimisation: when it cannot be
written, the download goes straight to the destination as it always did. Offline, the store is
never asked and a cache miss says what is missing.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from . import fetch
from .cache import Cache
from .errors import NotFound, OperationError
from .fetch import Expected
from .localfs import check_destination
from .store import Store
from .store.base import Progress


class NotCached(NotFound):
    """Offline, and the bytes are neither at the destination nor in the cache."""


@dataclass(frozen=True)
class Delivered:
    downloaded: bool
    from_cache: bool = False
    resumes: int = 0


@dataclass(frozen=True)
class Source:
    """Where a version's bytes can come from."""

    store: Store
    package: str
    version: str
    expected: Expected
    cache: Cache | None = None
    offline: bool = False


def to_file(src: Source, dest: Path, *, force: bool = False, progress: Progress | None = None) -> Delivered:
    """Make ``dest`` hold exactly the version's bytes."""
    check_destination(dest)
    exp = src.expected
    if not force and fetch.holds(src.store, dest, exp, src.cache):
        return Delivered(downloaded=False)
    if src.cache and exp.sha256 and src.cache.place(exp.sha256, exp.size, dest):
        src.cache.note_digest(dest, exp.sha256)
        return Delivered(downloaded=False, from_cache=True)
    _online(src)
    resumes = fetch.download(src.store, src.package, src.version, exp, dest, progress)
    if src.cache and exp.sha256:
        src.cache.adopt(exp.sha256, exp.size, dest)  # a link, not a copy; best effort
        src.cache.note_digest(dest, exp.sha256)
    return Delivered(downloaded=True, resumes=resumes)


def to_folder(src: Source, dest: Path, *, limit: int, force: bool = False,
              progress: Progress | None = None) -> Delivered:
    """Make ``dest`` hold the version's archive unpacked (atomically; see :mod:`tychoreg.extract`)."""
    from . import extract as unpack

    stamp = unpack.Stamp(src.package, src.version, src.expected.sha256)
    unpack.check_target(dest)
    if not force and unpack.read_stamp(dest) == stamp:
        return Delivered(downloaded=False)
    with _archive(src, dest, progress) as (archive, delivered):
        unpack.extract(archive, dest, stamp, max_bytes=limit, force=force)
    return delivered


@contextmanager
def _archive(src: Source, dest: Path, progress: Progress | None) -> Iterator[tuple[Path, Delivered]]:
    """A verified copy of the archive to read: the cache entry itself, or a temporary file."""
    exp = src.expected
    if src.cache and exp.sha256:
        entry = src.cache.verified(exp.sha256, exp.size)
        if entry is not None:
            yield entry, Delivered(downloaded=False, from_cache=True)
            return
        _online(src)
        try:
            resumes = _into_cache(src, progress)
            entry = src.cache.verified(exp.sha256, exp.size)
        except OperationError:
            entry = None
        if entry is not None:
            yield entry, Delivered(downloaded=True, resumes=resumes)
            return
    _online(src)
    tmp = dest.parent / f".{dest.name}.{os.urandom(6).hex()}.archive"
    try:
        resumes = fetch.download(src.store, src.package, src.version, exp, tmp, progress)
        yield tmp, Delivered(downloaded=True, resumes=resumes)
    finally:
        tmp.unlink(missing_ok=True)


def _into_cache(src: Source, progress: Progress | None) -> int:
    """Download into the cache's part file (resumable, verified) and commit it; returns resumes."""
    assert src.cache and src.expected.sha256
    exp = src.expected
    target = src.cache.part_path(exp.sha256)
    resumes = fetch.download(src.store, src.package, src.version, exp, target, progress)
    try:
        src.cache.commit(exp.sha256, exp.size, target)
    except OperationError:
        if not src.cache.has(exp.sha256, exp.size):  # else a concurrent pull committed the twin
            raise
    return resumes


def _online(src: Source) -> None:
    if src.offline:
        raise NotCached(f"{src.package} {src.version} is not in the cache and --offline forbids downloading it",
                       "run once without --offline to fill the cache")
