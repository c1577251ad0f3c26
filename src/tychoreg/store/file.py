"""A registry in a local (or mounted) folder, with exactly the bucket's layout.

Conditional writes map to what POSIX file systems make atomic. Create-if-absent is a hard link
of a fully written temporary file (``link`` fails if the name exists). Replace-if-unchanged,
delete, and a commit guarded by the push's claim are a compare followed by ``rename``,
``unlink`` or ``link`` while holding the registry's lock: an ``fcntl`` record lock on
``ROOT/.tycho-lock``, which NFS (v4, or v3 with lockd) honours between machines, unlike
``flock`` on a folder. Every change of an existing object takes that lock, deletes included, so
a delete cannot slip between another writer's compare and its rename.

A shared registry folder may be writable by other accounts, so the store never follows a
symbolic link inside it: paths are walked one folder at a time from the root with
``O_NOFOLLOW`` and every operation is made relative to the folder's descriptor. A link met on
the way is an error (exit 1) naming it; listings skip links, FIFOs and devices. Staged uploads
are hidden temporary files (``.NAME.ID.tmp``) beside their key, skipped by listings. User
metadata is kept in extended attributes (``user.tycho.NAME``) where the file system has them.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from .. import portable
from ..errors import ConfigError, IntegrityError, StorageError
from ..portable import O_BINARY, O_CLOEXEC, O_DIRECTORY, O_NOFOLLOW, O_NONBLOCK
from .base import (
    CHUNK,
    MAX_DOCUMENT,
    GuardChanged,
    Leftover,
    ObjectInfo,
    ObjectNotFound,
    Pieces,
    PreconditionFailed,
    Progress,
    Sink,
    Source,
    too_large,
)

LOCK_NAME = ".tycho-lock"
_XATTR = "user.tycho."
_DIR = os.O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC
_READ = os.O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC | O_BINARY  # a planted FIFO must not block us
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | O_NOFOLLOW | O_CLOEXEC | O_BINARY
#: POSIX record locks belong to the process: threads of one process are kept apart by these.
_THREAD_LOCKS: dict[str, threading.Lock] = {}
_THREAD_LOCKS_GUARD = threading.Lock()


def _is_temp(name: str) -> bool:
    return name.startswith(".") and name.endswith(".tmp")


def _internal(name: str) -> bool:
    """Files of the store's own that are never objects: staging files and the lock."""
    return _is_temp(name) or name == LOCK_NAME


def _etag(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def _when(st: os.stat_result) -> datetime:
    return datetime.fromtimestamp(st.st_mtime, timezone.utc)


def _stamp(st: os.stat_result) -> str:
    """This exact file: a rename puts another inode there, a write changes the size or mtime."""
    return f"{st.st_dev:x}-{st.st_ino:x}-{st.st_size:x}-{st.st_mtime_ns:x}"


class LinkRefused(IntegrityError):
    """A symbolic link inside the registry, where only files and folders belong: planted or
    damaged, and refused like any other damaged object."""


class _StagedFile:
    etag = None  # a local link() is never retried, so there is no own write to recognise

    def __init__(self, store: FileStore, folder: int, tmp: str, name: str, key: str, size: int) -> None:
        self._store, self._folder, self._tmp, self._name, self._key = store, folder, tmp, name, key
        self.size = size
        self._open = True

    def commit(self, guard: tuple[str, str] | None = None) -> None:
        try:
            with self._store._storage_errors(self._key):
                if guard is None:
                    self._link()
                else:
                    with self._store._lock():
                        try:
                            self._store._check(guard[0], guard[1])
                        except PreconditionFailed as exc:
                            raise GuardChanged(str(exc)) from None
                        self._link()
                _fsync(self._folder)
        except GuardChanged:
            raise  # kept for another attempt
        except BaseException:
            self.abort()
            raise
        self.abort()

    def _link(self) -> None:
        try:
            os.link(self._tmp, self._name, src_dir_fd=self._folder, dst_dir_fd=self._folder, follow_symlinks=False)
        except FileExistsError:
            raise PreconditionFailed(f"{self._key} already exists") from None

    def abort(self) -> None:
        if not self._open:
            return
        self._open = False
        try:
            os.unlink(self._tmp, dir_fd=self._folder)
        except OSError:
            pass
        os.close(self._folder)


def _fsync(folder: int) -> None:
    try:
        os.fsync(folder)
    except OSError:
        pass


class FileStore:
    """Keys are relative paths under ``root``; each key segment is a file or folder name."""

    atomic_guard = True
    probe_conditional_writes = False  # link() and rename() under our lock: nothing to ignore them

    def __init__(self, path: str | os.PathLike[str]) -> None:
        problem = portable.file_backend_problem()
        if problem is not None:
            raise ConfigError(f"a file registry cannot be used here: {problem}", "use an s3 registry on this system")
        self.root = Path(path)
        self.location = str(self.root)
        self.identity = self.location
        self._keeps_metadata: bool | None = None

    @property
    def keeps_metadata(self) -> bool:
        """Whether this file system keeps user extended attributes (asked once, with a file of
        our own in the registry folder)."""
        if self._keeps_metadata is None:
            found = False  # set only once known: threads asking meanwhile probe too, never read a guess
            if not hasattr(os, "setxattr"):  # macOS and Windows: no such calls in Python
                self._keeps_metadata = False
                return False
            try:
                with self._folder(()) as root:
                    name = f".xattr.{os.urandom(6).hex()}.tmp"
                    fd = os.open(name, _CREATE, 0o600, dir_fd=root)
                    try:
                        os.setxattr(fd, _XATTR + "probe", b"1")
                        found = os.getxattr(fd, _XATTR + "probe") == b"1"
                    finally:
                        os.close(fd)
                        os.unlink(name, dir_fd=root)
            except OSError:
                pass
            self._keeps_metadata = found
        return self._keeps_metadata

    # -- paths, walked without following links ---------------------------------------------
    def _parts(self, key: str) -> list[str]:
        parts = key.split("/")
        if not key or any(p in ("", ".", "..") for p in parts):
            raise StorageError(f"refusing unsafe key {key!r}")
        return parts

    def _link_error(self, rel: Sequence[str]) -> LinkRefused:
        return LinkRefused(
            f"{self.location}/{'/'.join(rel)} is a symbolic link; the file backend never "
            "follows links inside the registry",
            "remove the link (whoever can write to the registry folder made it) and put the real file or folder there",
        )

    @contextmanager
    def _folder(self, parts: Sequence[str], *, create: bool = False) -> Iterator[int]:
        """A descriptor of the folder ``parts`` (relative to the root), reached without following
        any link; missing folders are made with ``create``. A file where a folder should be
        means the key does not exist (FileNotFoundError)."""
        if create:
            self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root, os.O_RDONLY | O_DIRECTORY | O_CLOEXEC)  # the root may be a link
        try:
            for i, part in enumerate(parts):
                try:
                    step = os.open(part, _DIR, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        raise
                    try:
                        os.mkdir(part, 0o777, dir_fd=fd)
                    except FileExistsError:
                        pass
                    step = self._step(fd, part, parts[: i + 1])
                except OSError as exc:
                    if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                        raise
                    step = self._step(fd, part, parts[: i + 1])
                os.close(fd)
                fd = step
            yield fd
        finally:
            os.close(fd)

    def _step(self, fd: int, part: str, rel: Sequence[str]) -> int:
        try:
            return os.open(part, _DIR, dir_fd=fd)
        except OSError as exc:
            if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                raise
        # Linux says ELOOP or ENOTDIR for a link opened with O_NOFOLLOW | O_DIRECTORY: ask.
        if stat.S_ISLNK(os.stat(part, dir_fd=fd, follow_symlinks=False).st_mode):
            raise self._link_error(rel)
        raise FileNotFoundError(errno.ENOENT, "not a folder")

    def _open(self, folder: int, name: str, rel: Sequence[str]) -> tuple[int, os.stat_result]:
        """Open an object for reading; a link is refused, anything but a regular file is absent
        (a folder) or refused (a FIFO, a device)."""
        try:
            fd = os.open(name, _READ, dir_fd=folder)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise self._link_error(rel) from None
            raise
        st = os.fstat(fd)
        if stat.S_ISREG(st.st_mode):
            return fd, st
        os.close(fd)
        if stat.S_ISDIR(st.st_mode):
            raise FileNotFoundError(errno.ENOENT, "a folder")
        raise StorageError(f"{self.location}/{'/'.join(rel)} is not a regular file", "remove it")

    @contextmanager
    def _storage_errors(self, key: str) -> Iterator[None]:
        try:
            yield
        except StorageError:
            raise
        except FileNotFoundError:
            raise ObjectNotFound(f"{key} not found in {self.location}") from None
        except PermissionError:
            raise StorageError(
                f"permission denied on {self.location}/{key}", "check the permissions of the registry folder"
            ) from None
        except OSError as exc:
            raise StorageError(f"cannot access {self.location}/{key}: {exc.strerror or exc}") from None

    def _write_tmp(self, folder: int, name: str, data: bytes) -> str:
        tmp = f".{name}.{os.urandom(6).hex()}.tmp"
        fd = os.open(tmp, _CREATE, 0o666, dir_fd=folder)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        return tmp

    def _read_all(self, parts: Sequence[str]) -> bytes:
        with self._folder(parts[:-1]) as folder:
            fd, st = self._open(folder, parts[-1], parts)
        with os.fdopen(fd, "rb") as fh:
            data = fh.read(MAX_DOCUMENT + 1)
        if len(data) > MAX_DOCUMENT:
            raise too_large(self.location, "/".join(parts), st.st_size)
        return data

    # -- the lock ------------------------------------------------------------------------
    @contextmanager
    def _lock(self) -> Iterator[None]:
        """Exclusive use of the registry for one compare-and-change (a few milliseconds)."""
        with _THREAD_LOCKS_GUARD:
            in_process = _THREAD_LOCKS.setdefault(os.path.abspath(self.root), threading.Lock())
        with in_process, self._folder(()) as root:
            try:
                fd = os.open(LOCK_NAME, os.O_RDWR | os.O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0o666, dir_fd=root)
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    raise self._link_error([LOCK_NAME]) from None
                raise
            try:
                _share_with_group(fd, root)
                portable.record_lock(fd)
                yield
            finally:
                os.close(fd)  # releases the lock

    def _check(self, key: str, etag: str) -> None:
        """Under the lock: does ``key`` still have ``etag``? Else PreconditionFailed."""
        try:
            current = _etag(self._read_all(self._parts(key)))
        except FileNotFoundError:
            raise PreconditionFailed(f"{key} no longer exists") from None
        if current != etag:
            raise PreconditionFailed(f"{key} changed meanwhile")

    # -- Store interface -----------------------------------------------------------------
    def get(self, key: str) -> tuple[bytes, str]:
        with self._storage_errors(key):
            data = self._read_all(self._parts(key))
        return data, _etag(data)

    def head(self, key: str) -> ObjectInfo | None:
        parts = self._parts(key)
        with self._storage_errors(key):
            try:
                with self._folder(parts[:-1]) as folder:
                    fd, st = self._open(folder, parts[-1], parts)
            except FileNotFoundError:
                return None
            except StorageError:
                return None  # a FIFO or device is no object (a link raises LinkRefused)
            try:
                meta = _read_meta(fd)
            finally:
                os.close(fd)
        return ObjectInfo(key, st.st_size, None, _when(st), meta, stamp=_stamp(st))

    def put_if_absent(self, key: str, data: bytes) -> str:
        parts = self._parts(key)
        with self._storage_errors(key), self._folder(parts[:-1], create=True) as folder:
            _StagedFile(
                self, os.dup(folder), self._write_tmp(folder, parts[-1], data), parts[-1], key, len(data)
            ).commit()
        return _etag(data)

    def put_if_match(self, key: str, data: bytes, etag: str) -> str:
        parts = self._parts(key)
        with self._storage_errors(key), self._folder(parts[:-1], create=True) as folder:
            tmp = self._write_tmp(folder, parts[-1], data)
            renamed = False
            try:
                with self._lock():
                    self._check(key, etag)
                    os.rename(tmp, parts[-1], src_dir_fd=folder, dst_dir_fd=folder)
                    renamed = True
                _fsync(folder)
            finally:
                if not renamed:
                    os.unlink(tmp, dir_fd=folder)
        return _etag(data)

    def delete_if_match(self, key: str, etag: str, *, unless: str | None = None) -> None:
        parts = self._parts(key)
        with self._storage_errors(key), self._lock():
            self._check(key, etag)
            if unless is not None and self.head(unless) is not None:
                raise PreconditionFailed(f"{unless} exists")
            with self._folder(parts[:-1]) as folder:
                os.unlink(parts[-1], dir_fd=folder)

    def now(self) -> datetime | None:
        """The file system's clock (a file server's, on NFS), read off the lock file just
        touched: claim ages then compare two times of one clock, whatever ours says."""
        with self._storage_errors(LOCK_NAME), self._folder((), create=True) as root:
            try:
                fd = os.open(LOCK_NAME, os.O_RDWR | os.O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0o666, dir_fd=root)
            except OSError:
                return None  # cannot write here: then our own clock it is
            try:
                os.utime(fd)
                return _when(os.fstat(fd))
            except OSError:
                return None
            finally:
                os.close(fd)

    def delete(self, key: str) -> None:
        parts = self._parts(key)
        with self._storage_errors(key), self._lock():
            try:
                with self._folder(parts[:-1]) as folder:
                    os.unlink(parts[-1], dir_fd=folder)
            except FileNotFoundError:
                pass

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        folder = prefix.rpartition("/")[0]
        with self._storage_errors(prefix):
            try:
                for key, st in self._walk(folder.split("/") if folder else [], prefix):
                    yield ObjectInfo(key, st.st_size, None, _when(st))
            except FileNotFoundError:
                return

    def _walk(self, parts: Sequence[str], prefix: str) -> Iterator[tuple[str, os.stat_result]]:
        """Regular files under ``parts`` whose keys start with ``prefix``, sorted; folders that
        cannot hold such keys are not entered, links are neither entered nor listed."""
        top = "/".join(parts)
        with self._folder(parts) as start:
            for dirpath, dirnames, filenames, dirfd in os.fwalk(".", dir_fd=start, follow_symlinks=False):
                rel = os.path.normpath(dirpath)
                base = "/".join(p for p in (top, "" if rel == "." else rel) if p)
                base = base + "/" if base else ""
                dirnames[:] = sorted(
                    n for n in dirnames if (base + n + "/").startswith(prefix) or prefix.startswith(base + n + "/")
                )
                for name in sorted(filenames):
                    key = base + name
                    if _internal(name) or not key.startswith(prefix):
                        continue
                    try:
                        st = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
                    except FileNotFoundError:
                        continue
                    if stat.S_ISREG(st.st_mode):
                        yield key, st

    def list_folders(self, prefix: str) -> Iterator[str]:
        parts = prefix.rstrip("/").split("/") if prefix else []
        with self._storage_errors(prefix):
            try:
                with self._folder(parts) as folder, os.scandir(folder) as entries:
                    names = sorted(e.name for e in entries if e.is_dir(follow_symlinks=False))
            except FileNotFoundError:
                return
        yield from names

    def stage(
        self,
        key: str,
        source: Source,
        size_hint: int | None = None,
        progress: Progress | None = None,
        meta: Mapping[str, str] | None = None,
    ) -> _StagedFile:
        parts = self._parts(key)
        with self._storage_errors(key), self._folder(parts[:-1], create=True) as folder:
            tmp = f".{parts[-1]}.{os.urandom(6).hex()}.tmp"
            size = 0
            try:
                with os.fdopen(os.open(tmp, _CREATE, 0o666, dir_fd=folder), "wb") as out:
                    while chunk := source.read(CHUNK):
                        out.write(chunk)
                        size += len(chunk)
                        if progress:
                            progress(len(chunk))
                    out.flush()
                    _write_meta(out.fileno(), meta or {})
                    os.fsync(out.fileno())
            except BaseException:
                try:
                    os.unlink(tmp, dir_fd=folder)
                except OSError:
                    pass
                raise
            return _StagedFile(self, os.dup(folder), tmp, parts[-1], key, size)

    def read(
        self,
        key: str,
        sink: Sink,
        *,
        start: int = 0,
        size: int | None = None,
        progress: Progress | None = None,
        if_match: str | None = None,
    ) -> ObjectInfo:
        # A file opened once is read whole even if its name is replaced meanwhile; ``if_match``
        # checks that what was opened is still the file the caller resolved.
        parts = self._parts(key)
        with self._storage_errors(key), self._folder(parts[:-1]) as folder:
            fd, st = self._open(folder, parts[-1], parts)
        if if_match is not None and _stamp(st) != if_match:
            os.close(fd)
            raise PreconditionFailed(f"{key} was replaced since it was resolved")
        with os.fdopen(fd, "rb") as fh:  # errors writing to the sink are the sink's, not the registry's
            fh.seek(start)
            while chunk := fh.read(CHUNK):
                sink.write(chunk)
                if progress:
                    progress(len(chunk))
        return ObjectInfo(key, st.st_size, None, _when(st))

    def leftovers(self) -> Iterator[Leftover]:
        if not self.root.is_dir():
            return
        with self._folder(()) as root:
            for dirpath, _dirs, filenames, dirfd in os.fwalk(".", dir_fd=root, follow_symlinks=False):
                rel = os.path.normpath(dirpath)
                for name in filenames:
                    if not _is_temp(name):
                        continue
                    try:
                        st = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
                    except FileNotFoundError:
                        continue
                    key = name if rel == "." else f"{rel}/{name}"
                    yield Leftover(key, key, st.st_size, _when(st))

    def remove_leftover(self, leftover: Leftover) -> None:
        parts = self._parts(leftover.ref)
        if not _is_temp(parts[-1]):
            raise StorageError(f"refusing to remove {leftover.ref!r}: not a staging file")
        with self._storage_errors(leftover.key):
            try:
                with self._folder(parts[:-1]) as folder:
                    os.unlink(parts[-1], dir_fd=folder)
            except FileNotFoundError:
                pass

    # -- delta pulls: one byte range ---------------------------------------------------------
    def read_range(self, key: str, first: int, last: int, *, size: int, if_match: str | None = None) -> Pieces:
        parts = self._parts(key)
        with self._storage_errors(key), self._folder(parts[:-1]) as folder:
            fd, st = self._open(folder, parts[-1], parts)
        try:
            if if_match is not None and _stamp(st) != if_match:
                raise PreconditionFailed(f"{key} was replaced since it was resolved")
            if st.st_size != size:
                raise StorageError(f"{self.location}/{key} is {st.st_size} bytes, not the {size} expected")
            out: Pieces = []
            at = first
            with self._storage_errors(key):
                while at <= last:
                    data = portable.pread(fd, min(CHUNK, last + 1 - at), at)
                    if not data:
                        raise StorageError(f"{self.location}/{key} ended before byte {last}")
                    out.append(data)
                    at += len(data)
            return out
        finally:
            os.close(fd)


def _share_with_group(fd: int, root: int) -> None:
    """A registry folder that its group may write gets a lock file its group may lock (a record
    lock needs the file open for writing); best effort."""
    try:
        if os.fstat(root).st_mode & stat.S_IWGRP and os.fstat(fd).st_uid == portable.geteuid():
            portable.fchmod(fd, os.fstat(fd).st_mode & 0o777 | stat.S_IRGRP | stat.S_IWGRP)
    except OSError:
        pass


def _write_meta(fd: int, meta: Mapping[str, str]) -> None:
    if not hasattr(os, "setxattr"):
        return
    for name, value in meta.items():
        try:
            os.setxattr(fd, _XATTR + name, value.encode())
        except OSError:
            return  # no user extended attributes here (some file systems): metadata is optional


def _read_meta(fd: int) -> dict[str, str]:
    if not hasattr(os, "listxattr"):
        return {}
    try:
        names = [n for n in os.listxattr(fd) if n.startswith(_XATTR)]
        return {n[len(_XATTR) :]: os.getxattr(fd, n).decode("ascii", "replace") for n in names}
    except OSError:
        return {}
