"""Atomic writes to the user's disk.

A pull writes to a hidden temporary file beside its destination and renames it into place only
after the caller has verified it, so the destination holds either its old content or the
complete, verified new one; never a partial file. The temporary file is named after the content
it will hold, so an interrupted pull resumes it instead of starting over.
"""

from __future__ import annotations

import errno
import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from .errors import IntegrityError, OperationError


def describe_write_error(exc: OSError, path: Path) -> OperationError:
    if exc.errno == errno.ENOSPC:
        return OperationError(f"no space left on the device while writing {path}",
                              "free some disk space and pull again")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return OperationError(f"cannot write {path}: permission denied",
                              "choose another --outfile or fix the folder's permissions")
    return OperationError(f"cannot write {path}: {exc.strerror or exc}")


def check_destination(path: Path) -> None:
    """Refuse destinations that cannot be replaced by a file."""
    if path.is_dir():
        raise OperationError(f"destination {path} is a folder",
                             "name a file path with --outfile, or remove the folder")


def written_prefix(fd: int, unit: int) -> int:
    """How much of a part file can be trusted: up to its first hole, in whole ``unit``s.

    Parallel downloads write ranges at their offsets, so a pull killed mid-way leaves data with
    holes; the prefix before the first hole was written. (Where the filesystem cannot tell holes
    apart, the whole file counts; the final hash check catches the rare miss.)"""
    size = os.fstat(fd).st_size
    try:
        hole = os.lseek(fd, 0, os.SEEK_HOLE)
    except OSError:
        hole = size
    return size if hole >= size else hole - hole % unit


def _locked_part(part: Path) -> BinaryIO | None:
    """Open and lock ``part``; None if another pull holds it. A lock taken on a file that was
    renamed into place meanwhile (the other pull finished) would be a lock on the destination
    itself, so the name is checked to still be that file after locking."""
    while True:
        fh = os.fdopen(os.open(part, os.O_RDWR | os.O_CREAT, 0o666), "r+b")
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.close()
            return None
        try:
            if os.stat(part).st_ino == os.fstat(fh.fileno()).st_ino:
                return fh
        except FileNotFoundError:
            pass
        fh.close()


@contextmanager
def resumable_write(path: Path, tag: str | None) -> Iterator[BinaryIO]:
    """Yield a temporary file that replaces ``path`` when the block completes without error.

    The temporary file ``.NAME.TAG.part`` sits beside ``path`` and survives an interruption so
    the next attempt can continue it. It is opened for reading and writing at any position (the
    caller reads what is there first, see :func:`written_prefix`) and locked; if another pull
    holds it, a private file is used. An :class:`IntegrityError` discards it: bad bytes are never
    resumed."""
    check_destination(path)
    part = path.with_name(f".{path.name}.{tag}.part")
    keep = True
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fh = _locked_part(part) if tag is not None else None
        if fh is None:  # not resumable, or a concurrent pull of the same version to the same place holds it
            part, keep = path.with_name(f".{path.name}.{os.urandom(6).hex()}.tmp"), False
            fh = open(part, "w+b")
    except OSError as exc:
        raise describe_write_error(exc, path) from None
    with fh:  # the part file is removed (when it must be) while still locked: no one can take it
        try:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
            os.replace(part, path)
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
