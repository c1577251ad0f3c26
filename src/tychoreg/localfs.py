"""Atomic writes to the user's disk that stay safe in folders other accounts can write.

A pull writes to a hidden temporary file beside its destination and renames it into place only
after the caller has verified it, so the destination holds either its old content or the
complete, verified new one; never a partial file.

Outdirs, caches and extract folders on build machines are often shared by a group (umask 002, a
setgid folder), so every name we use there may have been planted by another account: a symlink to
the victim's ``~/.bashrc``, a FIFO, a hard link, a file of theirs. So temporary files are created
with ``O_CREAT | O_EXCL | O_NOFOLLOW`` under unpredictable names, mode 0600 until the rename; a
resumable part file (named after its content, so an interrupted pull continues it) is reused only
if it is a regular file of ours that nobody else can write and that has no other name; and the
rename happens only while the temporary name still refers to the file we wrote.
"""

from __future__ import annotations

import errno
import os
import secrets
import shutil
import stat
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from . import portable
from .errors import IntegrityError, OperationError
from .portable import O_BINARY, O_CLOEXEC, O_DIRECTORY, O_NOFOLLOW, O_NONBLOCK

#: Open for reading without following a final symlink, and without blocking on a FIFO.
READ_FLAGS = os.O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC | O_BINARY
#: Open a folder without following it if it is a symlink.
DIR_FLAGS = os.O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC
NEW_FLAGS = os.O_RDWR | os.O_CREAT | os.O_EXCL | O_NOFOLLOW | O_CLOEXEC | O_BINARY
_UMASK_LOCK = threading.Lock()


def describe_write_error(exc: OSError, path: Path) -> OperationError:
    if exc.errno == errno.ENOSPC:
        return OperationError(
            f"no space left on the device while writing {path}", "free some disk space and pull again"
        )
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return OperationError(
            f"cannot write {path}: permission denied",
            "choose another destination or fix the folder's permissions",
            reason="dest-permission",
        )
    return OperationError(f"cannot write {path}: {exc.strerror or exc}")


def check_destination(path: Path) -> None:
    """Refuse destinations that cannot be replaced by a file."""
    if path.is_dir():
        raise OperationError(
            f"destination {path} is a folder", "name a file path, or remove the folder", reason="dest-is-folder"
        )


def umask() -> int:
    """The process umask, read without changing it (``os.umask`` can only set it, which would
    race with other threads creating files); the set-and-restore fallback is for kernels
    without the ``Umask:`` line."""
    try:
        with open("/proc/self/status", "rb") as fh:
            for line in fh:
                if line.startswith(b"Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o077)
        os.umask(mask)
    return mask


def default_mode(mode: int = 0o666) -> int:
    """What ``open(..., O_CREAT, mode)`` would have given: files we create private at first get
    this mode once they are complete, so a finished file looks as the user's umask says."""
    return mode & ~umask() & 0o777


def is_private(st: os.stat_result) -> bool:
    """Owned by us and writable by nobody else: only our own processes can change it."""
    return st.st_uid == portable.geteuid() and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def open_regular(path: str | os.PathLike[str], *, dir_fd: int | None = None) -> tuple[int, os.stat_result]:
    """Open a regular file for reading and return it with its ``fstat``. A symlink at the final
    component is not followed and a FIFO or device does not block the open (a planted FIFO would
    hang a plain ``open`` forever); anything but a regular file raises ``OSError``."""
    fd = os.open(path, READ_FLAGS, dir_fd=dir_fd)
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, "not a regular file", str(path))
    return fd, st


def pinned(fd: int, real: Path) -> Path:
    """A path that names exactly the folder ``fd`` is open on, for APIs that take paths.

    ``/proc/self/fd/N`` resolves to the folder itself, not to whatever its old name holds now: a
    folder renamed away and replaced by a symlink cannot redirect later writes into it. Without
    ``/proc``, the real path (checked when it was opened) is the best there is."""
    proc = Path(f"/proc/self/fd/{fd}")
    return proc if os.path.isdir(proc) else real


def link_open_file(fd: int, name: str, dir_fd: int, fallback: Path) -> None:
    """Give the file open as ``fd`` the name ``name`` in folder ``dir_fd``: the very inode that
    was checked, not whatever ``fallback`` (its current name) holds by now. ``FileExistsError``
    if the name is taken; without ``/proc``, ``fallback`` is linked (never following a link)."""
    try:
        portable.link(f"/proc/self/fd/{fd}", name, dst_dir_fd=dir_fd, follow_symlinks=True)
    except FileNotFoundError:
        if os.path.isdir("/proc/self/fd"):
            raise
        portable.link(str(fallback), name, dst_dir_fd=dir_fd, follow_symlinks=False)


class NotPrivate(OSError):
    """A name we use privately holds something else: a link, a file, a folder of another
    account's, or one of ours that others may write."""


def open_private_dir(name: str, dir_fd: int, *, create: bool, tighten: bool = False) -> int:
    """Open (with ``create``, first make, mode 0700) the folder ``name`` in ``dir_fd``, which must
    be ours and writable by nobody else; return its fd. Anything else raises
    :class:`NotPrivate`; with ``tighten``, a folder of ours that was left writable by others is
    made private again instead (for callers that check each file in it anyway)."""
    if create:
        with suppress(FileExistsError):
            os.mkdir(name, 0o700, dir_fd=dir_fd)
    try:
        fd = os.open(name, DIR_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise NotPrivate(exc.errno, "not a folder", name) from None
        raise
    st = os.fstat(fd)
    if st.st_uid != portable.geteuid():
        os.close(fd)
        raise NotPrivate(errno.EPERM, f"it belongs to uid {st.st_uid}", name)
    if not is_private(st):
        if not tighten:
            os.close(fd)
            raise NotPrivate(errno.EPERM, "others can write to it", name)
        portable.fchmod(fd, stat.S_IMODE(st.st_mode) & ~0o077)
    return fd


@dataclass
class PrivateDir:
    """A fresh folder of ours (mode 0700, unpredictable name), held open for its whole use."""

    fd: int
    real: Path  # for messages

    @property
    def path(self) -> Path:
        return pinned(self.fd, self.real)


@contextmanager
def private_dir(parent: Path, prefix: str, suffix: str) -> Iterator[PrivateDir]:
    """A fresh private folder in ``parent``, removed with everything in it afterwards. What is
    written there cannot be swapped or read by other accounts even when ``parent`` is shared."""
    parent.mkdir(parents=True, exist_ok=True)
    pfd = os.open(parent, os.O_RDONLY | O_DIRECTORY | O_CLOEXEC)
    try:
        while True:
            name = f"{prefix}{secrets.token_hex(6)}{suffix}"
            try:
                os.mkdir(name, 0o700, dir_fd=pfd)
                break
            except FileExistsError:
                continue
        try:
            fd = open_private_dir(name, pfd, create=False)
        except OSError:
            with suppress(OSError):
                os.rmdir(name, dir_fd=pfd)
            raise
        try:
            yield PrivateDir(fd, parent / name)
        finally:
            for entry in list(os.scandir(fd)):
                with suppress(OSError):
                    if entry.is_dir(follow_symlinks=False):
                        shutil.rmtree(parent / name / entry.name, ignore_errors=True)
                    else:
                        os.unlink(entry.name, dir_fd=fd)
            os.close(fd)
            with suppress(OSError):
                os.rmdir(name, dir_fd=pfd)
    finally:
        os.close(pfd)


def written_prefix(fd: int, unit: int) -> int:
    """How much of a part file can be trusted: up to its first hole, in whole ``unit``s.

    Parallel downloads write ranges at their offsets, so a pull killed mid-way leaves data with
    holes; the prefix before the first hole was written. (Where the filesystem cannot tell holes
    apart, the whole file counts; the final hash check catches the rare miss.)"""
    size = os.fstat(fd).st_size
    hole = portable.first_hole(fd)
    if hole is None:
        hole = size
    return size if hole >= size else hole - hole % unit


def _same(path: Path, st: os.stat_result) -> bool:
    """Does ``path`` (not following a link) still name the file ``st`` describes?"""
    try:
        now = os.lstat(path)
    except OSError:
        return False
    return (now.st_dev, now.st_ino) == (st.st_dev, st.st_ino)


def _usable_part(st: os.stat_result) -> bool:
    """A part file we may continue: a regular file of ours, writable by nobody else (else they
    could change bytes after we hashed them) and with no other name (else writing it would
    write some other file, e.g. one hard-linked there by someone else)."""
    return stat.S_ISREG(st.st_mode) and is_private(st) and st.st_nlink == 1


def _locked_part(part: Path) -> BinaryIO | None:
    """Open and lock the resumable ``part``; None if another pull holds it, or if what is there
    cannot be trusted and is not ours to remove (a symlink, a FIFO, someone else's file): that
    pull then writes a fresh private file instead, and nothing planted is followed or written.

    A part file of ours that others could have written, or that has a second name, is removed
    and started afresh. A lock taken on a file that was renamed into place meanwhile (the other
    pull finished) would be a lock on the destination itself, so the name is checked to still be
    that file after locking."""
    for _ in range(16):
        try:
            found = os.lstat(part)
        except FileNotFoundError:
            try:
                fd = os.open(part, NEW_FLAGS, 0o600)
            except FileExistsError:
                continue
        else:
            if not (stat.S_ISREG(found.st_mode) and found.st_uid == portable.geteuid()):
                return None
            if not _usable_part(found):
                with suppress(FileNotFoundError):
                    os.unlink(part)
                continue
            try:
                fd = os.open(part, (os.O_RDWR | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC | O_BINARY))
            except FileNotFoundError:
                continue
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENXIO, errno.EACCES, errno.EPERM, errno.EISDIR):
                    return None
                raise
        st = os.fstat(fd)
        if not _usable_part(st):  # replaced between the lstat and the open
            os.close(fd)
            return None
        fh = os.fdopen(fd, "r+b")
        if not portable.try_lock(fh.fileno()):  # held by another pull, or no locks here: not shared
            fh.close()
            return None
        if _same(part, st):
            return fh
        fh.close()
    return None


def fresh_temp(path: Path, suffix: str = ".tmp") -> tuple[BinaryIO, Path]:
    """A new, empty file ``.NAME.RANDOM.tmp`` beside ``path``, mode 0600, opened for reading and
    writing. The name cannot be guessed ahead and ``O_EXCL | O_NOFOLLOW`` refuses anything that
    is already there, so nothing planted is ever written through."""
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}{suffix}")
        try:
            return os.fdopen(os.open(tmp, NEW_FLAGS, 0o600), "w+b"), tmp
        except FileExistsError:
            continue


def _replace_checked(tmp: Path, path: Path, fd: int) -> None:
    """Rename ``tmp`` over ``path``, but only while ``tmp`` is still the file open as ``fd``: in
    a folder others can write, they may have swapped it for a link or a file of theirs."""
    if not _same(tmp, os.fstat(fd)):
        raise OperationError(
            f"cannot write {path}: its temporary file {tmp.name} was replaced by someone else while pulling",
            f"pull into a folder that only you can write, not {path.parent}",
        )
    os.replace(tmp, path)


#: Bytes written since the last flush that start the next early flush (see :class:`_EarlyFlush`).
FLUSH_EVERY = 32 * 1024 * 1024


class _EarlyFlush:
    """Flushes a file being written to disk in the background, a little at a time.

    A pull must fsync its file before the rename, and on Linux nothing is written back until
    then (dirty pages may reach a tenth of memory), so the fsync of a large download would wait
    for all of it at the end: about a quarter of a second per 512 MiB here, after the download
    and its hash are done. Flushing in a thread of its own whenever the file has grown by
    :data:`FLUSH_EVERY` overlaps the disk with the network and the hash, and leaves the final
    fsync only the last part. Best effort: a failed early flush is the final fsync's to report."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tychoreg-flush", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        flushed = 0
        while not self._stop.wait(0.1):
            try:
                size = os.fstat(self._fd).st_size
                if size - flushed >= FLUSH_EVERY:
                    portable.fdatasync(self._fd)
                    flushed = size
            except OSError:
                return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


@contextmanager
def resumable_write(path: Path, tag: str | None) -> Iterator[BinaryIO]:
    """Yield a temporary file that replaces ``path`` when the block completes without error.

    With a ``tag`` (what identifies the content), the temporary file ``.NAME.TAG.part`` sits
    beside ``path`` and survives an interruption so the next attempt can continue it; it is
    locked, and if another pull holds it or it cannot be trusted (see :func:`_locked_part`) a
    fresh private file is used. Without a ``tag`` the caller cannot identify the content, so
    nothing is resumable: the file is a fresh one with an unpredictable name, removed on any
    failure. Either way the file is opened for reading and writing at any position (the caller
    reads what is there first, see :func:`written_prefix`), is mode 0600 until it is renamed, and
    then gets the mode the umask gives. An :class:`IntegrityError` discards it: bad bytes are
    never resumed."""
    check_destination(path)
    keep = tag is not None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fh = _locked_part(path.with_name(f".{path.name}.{tag}.part")) if keep else None
        if fh is None:  # not resumable, held by a concurrent pull, or not trustworthy
            fh, part, keep = *fresh_temp(path), False
        else:
            part = path.with_name(f".{path.name}.{tag}.part")
    except OSError as exc:
        raise describe_write_error(exc, path) from None
    with fh:  # the part file is removed (when it must be) while still locked: no one can take it
        try:
            flusher = _EarlyFlush(fh.fileno())
            try:
                yield fh
            finally:
                flusher.stop()  # before the file is closed: its descriptor must stay ours
            fh.flush()
            os.fsync(fh.fileno())
            _replace_checked(part, path, fh.fileno())
            portable.fchmod(fh.fileno(), default_mode())
        except IntegrityError:
            part.unlink(missing_ok=True)
            raise
        except OSError as exc:
            if not keep or exc.errno == errno.ENOSPC:  # a part file must not keep a disk full
                part.unlink(missing_ok=True)
            raise describe_write_error(exc, path) from None
        except BaseException:
            if not keep:
                part.unlink(missing_ok=True)
            raise
