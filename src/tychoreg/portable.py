"""What the operating system offers, and what stands in where it does not.

tychoreg is built on Linux and uses what makes it fast and safe there: ``O_NOFOLLOW`` and
``O_NONBLOCK`` opens, ``pread``/``pwrite`` for parallel ranged downloads, ``SEEK_HOLE`` to trust
only the written prefix of a part file, ``flock`` on part files and ``lockf`` record locks on a
file registry, ``FICLONE`` and ``copy_file_range`` for cheap copies, hard links for atomic
create-if-absent, ``/proc/self/fd`` to name an open folder. Every use goes through here, so the
same code runs where some of them are missing (macOS has no ``FICLONE``, ``copy_file_range`` or
``/proc``; Windows has none of the POSIX calls):

=======================  ========================================================================
missing                  what stands in
=======================  ========================================================================
``O_NOFOLLOW`` & co.     the flag is 0 (the open follows links; callers that must not, check
                         what they opened with ``fstat``)
``pread``, ``pwrite``    a seek and a read or write under one lock, the file position restored
``SEEK_HOLE``            the whole part file counts as written (the final hash still checks it)
``flock``                ``msvcrt.locking`` on Windows; else no lock (:func:`try_lock` says so, and
                         part files are then not shared between pulls)
``FICLONE``, ``copy_file_range``  an ordinary copy
``geteuid``              0 (Windows reports every file as owned by 0; its folders are guarded by
                         ACLs, not by mode bits)
``fchmod``               left out (Windows has no such modes)
``fdatasync``            ``fsync`` (macOS, Windows)
=======================  ========================================================================

The file backend needs two of these for its guarantees (``link`` for create-if-absent, record
locks for compare-and-swap), so :func:`file_backend_problem` says when it cannot work here.
"""

from __future__ import annotations

import errno
import os
import sys
import threading
from types import ModuleType

fcntl: ModuleType | None
try:
    import fcntl
except ImportError:  # Windows
    fcntl = None
msvcrt: ModuleType | None
try:
    import msvcrt
except ImportError:  # everywhere but Windows
    msvcrt = None

#: Open without following a final symbolic link (0 where the system has no such flag).
O_NOFOLLOW: int = getattr(os, "O_NOFOLLOW", 0)
#: Fail unless a folder (0 where missing).
O_DIRECTORY: int = getattr(os, "O_DIRECTORY", 0)
#: Never block on a FIFO (0 where missing).
O_NONBLOCK: int = getattr(os, "O_NONBLOCK", 0)
#: Not inherited by child processes.
O_CLOEXEC: int = getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOINHERIT", 0)
#: Binary mode (Windows translates line ends otherwise).
O_BINARY: int = getattr(os, "O_BINARY", 0)

#: Whether ``os.open`` and friends take ``dir_fd`` (not on Windows): the download cache, safe
#: extraction and the file backend work relative to open folders, and need it.
DIR_FDS: bool = os.open in os.supports_dir_fd

_FICLONE = 0x40049409  # Linux ioctl: share extents copy-on-write (btrfs, XFS, bcachefs)
_POSITION = threading.Lock()  # the seek-then-write stand-ins share the file position


def pwrite(fd: int, data: bytes | memoryview, offset: int) -> int:
    """Write at ``offset`` without moving the file position; returns the bytes written."""
    native = getattr(os, "pwrite", None)
    if native is not None:
        return int(native(fd, data, offset))
    with _POSITION:
        here = os.lseek(fd, 0, os.SEEK_CUR)
        try:
            os.lseek(fd, offset, os.SEEK_SET)
            return os.write(fd, data)
        finally:
            os.lseek(fd, here, os.SEEK_SET)


def pread(fd: int, size: int, offset: int) -> bytes:
    """Read up to ``size`` bytes at ``offset`` without moving the file position."""
    native = getattr(os, "pread", None)
    if native is not None:
        return bytes(native(fd, size, offset))
    with _POSITION:
        here = os.lseek(fd, 0, os.SEEK_CUR)
        try:
            os.lseek(fd, offset, os.SEEK_SET)
            return os.read(fd, size)
        finally:
            os.lseek(fd, here, os.SEEK_SET)


def first_hole(fd: int) -> int | None:
    """Where the first hole of a sparse file starts (its size if it has none); None where the
    system or the file system cannot tell."""
    whence = getattr(os, "SEEK_HOLE", None)
    if whence is None:
        return None
    try:
        return os.lseek(fd, 0, whence)
    except OSError:
        return None


def try_lock(fd: int) -> bool | None:
    """Take an exclusive lock on the open file without waiting: True if taken, False if another
    process holds it, None where this system has no such lock. Released when ``fd`` is closed."""
    if fcntl is not None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        except OSError as exc:
            if exc.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                return None
            raise
        return True
    if msvcrt is not None:
        with _POSITION:
            here = os.lseek(fd, 0, os.SEEK_CUR)
            try:
                os.lseek(fd, 0, os.SEEK_SET)
                msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            except OSError:
                return False
            finally:
                os.lseek(fd, here, os.SEEK_SET)
        return True
    return None


def record_lock(fd: int) -> None:
    """Wait for an exclusive POSIX record lock on the open file (the file registry's lock,
    which NFS honours between machines). :class:`OSError` ``ENOLCK`` where there is none."""
    if fcntl is None:
        raise OSError(errno.ENOLCK, "no record locks on this system")
    fcntl.lockf(fd, fcntl.LOCK_EX)


def clone(src: int, dst: int) -> bool:
    """Make ``dst`` share ``src``'s extents copy-on-write (btrfs, XFS); False where it cannot."""
    if fcntl is None or not sys.platform.startswith("linux"):
        return False
    try:
        fcntl.ioctl(dst, _FICLONE, src)
        return True
    except OSError:  # EOPNOTSUPP, EXDEV, EINVAL...: copy instead
        return False


def copy_range(src: int, dst: int) -> bool:
    """Copy the rest of ``src`` to ``dst`` inside the kernel; False where it cannot (then the
    caller copies from where both files stand, which this leaves consistent)."""
    native = getattr(os, "copy_file_range", None)
    if native is None:
        return False
    try:
        while native(src, dst, 1 << 30):
            pass
        return True
    except OSError:  # not across these file systems
        return False


def fdatasync(fd: int) -> None:
    """Write the file's data to disk (``fsync`` where there is no lighter call)."""
    getattr(os, "fdatasync", os.fsync)(fd)


def copy_span(src: int, dst: int, offset: int, length: int) -> int:
    """Copy up to ``length`` bytes at ``offset`` of ``src`` to the same offset of ``dst`` (in the
    kernel where it can); how many were copied, 0 at the end of ``src``. File positions are left
    alone."""
    native = getattr(os, "copy_file_range", None)
    if native is not None:
        try:
            return int(native(src, dst, length, offset, offset))
        except OSError as exc:  # not across these file systems, or not on this kernel: by hand
            if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL):
                raise
    data = pread(src, length, offset)
    view = memoryview(data)
    while view:
        written = pwrite(dst, view, offset)
        view, offset = view[written:], offset + written
    return len(data)


def geteuid() -> int:
    """The effective user id; 0 where there is none (Windows, where files report owner 0)."""
    native = getattr(os, "geteuid", None)
    return int(native()) if native is not None else 0


def fchmod(fd: int, mode: int) -> None:
    """Set an open file's mode; nothing where modes do not exist (Windows before Python 3.13)."""
    native = getattr(os, "fchmod", None)
    if native is not None:
        native(fd, mode)


def link(src: str, dst: str, **kwargs: object) -> None:
    """``os.link``; :class:`OSError` ``EPERM`` where the system has no hard links (callers fall
    back as they do for a file system that refuses them)."""
    native = getattr(os, "link", None)
    if native is None:
        raise OSError(errno.EPERM, "no hard links on this system")
    native(src, dst, **kwargs)


def file_backend_problem() -> str | None:
    """Why a file registry cannot keep its promises on this system, or None if it can."""
    missing = [
        what
        for what, present in (
            ("hard links", hasattr(os, "link")),
            ("POSIX record locks (fcntl)", fcntl is not None),
            ("folder descriptors", DIR_FDS),
        )
        if not present
    ]
    if not missing:
        return None
    return f"this system lacks {' and '.join(missing)}, which it needs to stay consistent under concurrent use"


# -- performance on a real network (issue 16) ------------------------------------------------
def pread_into(fd: int, buffer: memoryview, offset: int) -> int:
    """Read into ``buffer`` at ``offset`` without moving the file position; returns the bytes read."""
    native = getattr(os, "preadv", None)
    if native is not None:
        return int(native(fd, [buffer], offset))
    data = pread(fd, len(buffer), offset)
    buffer[: len(data)] = data
    return len(data)
