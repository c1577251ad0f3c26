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
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from . import fetch, localfs
from .cache import Cache
from .errors import NotFound, OperationError, TychoError
from .fetch import Expected
from .localfs import check_destination
from .store import Store
from .store.base import Progress

if TYPE_CHECKING:
    from . import delta


class NotCached(NotFound):
    """Offline, and the bytes are neither at the destination nor in the cache."""


@dataclass(frozen=True)
class Delivered:
    downloaded: bool
    from_cache: bool = False
    resumes: int = 0
    #: Delta pulls: bytes taken from local files, and bytes read from the store (None: not known,
    #: e.g. nothing was downloaded).
    reused: int = 0
    fetched: int | None = None


@dataclass(frozen=True)
class Source:
    """Where a version's bytes can come from."""

    store: Store
    package: str
    version: str
    expected: Expected
    cache: Cache | None = None
    offline: bool = False
    #: Delta pulls: try to reuse local pieces (see :mod:`tychoreg.delta`), and the SHA-256s of the
    #: package's other versions whose cache entries may hold some.
    delta: bool = True
    siblings: tuple[str, ...] = ()


def _delta_sources(src: Source, dest: Path | None, held: str | None) -> list[Path]:
    """Local files that may share pieces with the wanted version: the destination (usually the
    version pulled before), then the cache's copies of the package's other versions, but for
    the one with the bytes the destination is known to hold (``held``: the same pieces, which
    would be cut and hashed a second time for nothing)."""
    out = [dest] if dest is not None else []
    if src.cache:
        out += [src.cache.path(sha) for sha in src.siblings if sha not in (src.expected.sha256, held)]
    return out


def _try_delta(
    src: Source, dest: Path | None, target: Path, progress: Progress | None, scan: delta.Prescan | None = None
) -> delta.Outcome | None:
    if not src.delta:
        return None
    from . import delta  # noqa: PLC0415 - chunker, pieces: ~8 ms, only when a download is due

    def sources() -> list[Path]:
        held = scan.sha256 if scan is not None else None
        if held is None and src.cache and dest is not None:
            held = src.cache.known_digest(dest)
        return _delta_sources(src, dest, held)

    return delta.assemble(src.store, src.package, src.version, src.expected, target, sources, progress, scan)


def _holds(src: Source, dest: Path, scan: delta.Prescan | None) -> bool:
    """The skip check, answered by the prescan's read where there is one."""
    found = scan.holds(src.cache) if scan is not None else None
    return fetch.holds(src.store, dest, src.expected, src.cache) if found is None else found


@contextmanager
def _prescan(src: Source, dest: Path, force: bool) -> Iterator[delta.Prescan | None]:
    """One read of the destination for the skip check and a delta (see
    :class:`tychoreg.delta.Prescan`): only where the check will read it, and neither the cache
    nor an offline install makes the delta moot."""
    exp = src.expected
    scan = None
    if (
        src.delta
        and not force
        and not src.offline
        and not (src.cache and exp.sha256 and src.cache.has(exp.sha256, exp.size))
    ):
        from . import delta  # noqa: PLC0415 - chunker, pieces: ~8 ms, only when the destination is read

        known = src.cache.known_digest(dest) if src.cache and exp.sha256 else None
        scan = delta.Prescan.start(src.store, dest, exp, known)
    try:
        yield scan
    finally:
        if scan is not None:
            scan.close()


def to_file(src: Source, dest: Path, *, force: bool = False, progress: Progress | None = None) -> Delivered:
    """Make ``dest`` hold exactly the version's bytes."""
    check_destination(dest)
    exp = src.expected
    with _prescan(src, dest, force) as scan:
        if not force and _holds(src, dest, scan):
            return Delivered(downloaded=False)
        if src.cache and exp.sha256 and src.cache.place(exp.sha256, exp.size, dest):
            src.cache.note_digest(dest, exp.sha256)
            return Delivered(downloaded=False, from_cache=True)
        _online(src)
        outcome = _try_delta(src, dest, dest, progress, scan)
    resumes, fetched, cached = 0, exp.size, False
    if not outcome:
        # the cache's copy is made while the download runs (best effort; else adopted below)
        follower = src.cache.follow(exp.sha256, exp.size) if src.cache and exp.sha256 else None
        try:
            resumes, fetched = fetch.download(src.store, src.package, src.version, exp, dest, progress, follow=follower)
        except BaseException:
            if follower:
                follower.abandon()
            raise
        cached = follower.finish() if follower else False
    if src.cache and exp.sha256:
        if not cached:
            src.cache.adopt(exp.sha256, exp.size, dest)  # a clone or copy, never a link; best effort
        src.cache.note_digest(dest, exp.sha256)
    if outcome:
        return Delivered(downloaded=True, reused=outcome.reused, fetched=outcome.fetched)
    return Delivered(downloaded=True, resumes=resumes, fetched=fetched)


def to_folder(
    src: Source, dest: Path, *, limit: int, force: bool = False, progress: Progress | None = None
) -> Delivered:
    """Make ``dest`` hold the version's archive unpacked (atomically; see :mod:`tychoreg.extract`)."""
    from . import extract as unpack  # noqa: PLC0415 - tarfile, zipfile, compressors: ~4 ms, only --extract

    stamp = unpack.Stamp(src.package, src.version, src.expected.sha256)
    unpack.check_target(dest)
    if not force and unpack.read_stamp(dest) == stamp:
        return Delivered(downloaded=False)
    with _archive(src, dest, progress) as (archive, name, delivered):
        unpack.extract(name, dest, stamp, max_bytes=limit, force=force, source=archive)
    return delivered


@contextmanager
def _archive(src: Source, dest: Path, progress: Progress | None) -> Iterator[tuple[BinaryIO, Path, Delivered]]:
    """The verified archive, open for reading, with a name for messages.

    An open file, never a path to open again: between a check and a second open, anyone who can
    write where the file lies (a shared cache, a group's folder) could rename other bytes over
    it, which would then be extracted and stamped with the genuine SHA-256. From the cache it is
    the verified entry or a private copy of it (see :meth:`Cache.open_verified`); otherwise it is
    downloaded into a private folder of ours beside ``dest`` and opened there."""
    exp = src.expected
    if src.cache and exp.sha256:
        found = src.cache.open_verified(exp.sha256, exp.size)
        if found is not None:
            with found:
                yield found, src.cache.path(exp.sha256), Delivered(downloaded=False, from_cache=True)
            return
        _online(src)
        try:
            resumes, fetched = _into_cache(src, progress)
            found = src.cache.open_verified(exp.sha256, exp.size)
        except OperationError:
            found = None
        if found is not None:
            with found:
                yield found, src.cache.path(exp.sha256), Delivered(downloaded=True, resumes=resumes, fetched=fetched)
            return
    _online(src)
    with ExitStack() as stack:
        try:
            folder = stack.enter_context(localfs.private_dir(dest.parent, f".{dest.name}.", ".archive"))
        except OSError as exc:
            raise localfs.describe_write_error(exc, dest) from None
        try:
            resumes, fetched = fetch.download(
                src.store, src.package, src.version, exp, folder.path / "archive", progress
            )
        except TychoError as exc:  # name the folder as the user sees it, not by our handle on it
            exc.args = (str(exc).replace(str(folder.path), str(folder.real)),)
            exc.hint = exc.hint and exc.hint.replace(str(folder.path), str(folder.real))
            raise exc from None
        try:
            fd, _ = localfs.open_regular("archive", dir_fd=folder.fd)
        except OSError as exc:
            raise OperationError(
                f"cannot read the downloaded archive {folder.real / 'archive'}: {exc.strerror or exc}"
            ) from None
        with os.fdopen(fd, "rb") as fh:
            yield fh, folder.real / "archive", Delivered(downloaded=True, resumes=resumes, fetched=fetched)


def _into_cache(src: Source, progress: Progress | None) -> tuple[int, int]:
    """Download into the cache's part file (resumable, verified, in our private folder there)
    and commit it; returns resumes and the bytes read from the store."""
    exp = src.expected
    assert src.cache and exp.sha256
    target = src.cache.part_path(exp.sha256)
    outcome = _try_delta(src, None, target, progress)
    if outcome:
        resumes, fetched = 0, outcome.fetched
    else:
        resumes, fetched = fetch.download(src.store, src.package, src.version, exp, target, progress)
    try:
        src.cache.commit(exp.sha256, exp.size, target)
    except OperationError:
        if not src.cache.has(exp.sha256, exp.size):  # else a concurrent pull committed the twin
            raise
    return resumes, fetched


def _online(src: Source) -> None:
    if src.offline:
        raise NotCached(
            f"{src.package} {src.version} is not in the cache, and this install may not download",
            reason="offline-miss",
            package=src.package,
            version=src.version,
        )
