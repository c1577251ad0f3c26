"""Atomic writes to the user's disk.

A pull writes to a hidden temporary file beside its destination and renames it into place only
after the caller has verified it, so the destination holds either its old content or the
complete, verified new one; never a partial file.
"""

from __future__ import annotations

import errno
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from .errors import OperationError


def _describe(exc: OSError, path: Path) -> OperationError:
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


@contextmanager
def atomic_write(path: Path) -> Iterator[BinaryIO]:
    """Yield a temporary file that replaces ``path`` when the block completes without error."""
    check_destination(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(tmp, "xb")
    except OSError as exc:
        raise _describe(exc, path) from None
    try:
        with fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        raise _describe(exc, path) from None
    finally:
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass
