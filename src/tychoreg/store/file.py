"""A registry in a local (or mounted) folder, with exactly the bucket's layout.

Conditional writes map to what POSIX file systems make atomic: create-if-absent is a hard link
of a fully written temporary file (``link`` fails if the name exists), replace-if-unchanged is
a compare and ``rename`` done while holding an exclusive ``flock`` on the object's folder. Staged
uploads are hidden temporary files (``.NAME.ID.tmp``) beside their key, skipped by listings.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import BinaryIO

from ..errors import StorageError
from .base import MAX_DOCUMENT, Leftover, ObjectInfo, ObjectNotFound, PreconditionFailed, Progress, too_large

CHUNK = 1024 * 1024


def _is_temp(name: str) -> bool:
    return name.startswith(".") and name.endswith(".tmp")


def _etag(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


class _StagedFile:
    etag = None  # a local link() is never retried, so there is no own write to recognise

    def __init__(self, tmp: Path, final: Path, size: int) -> None:
        self._tmp, self._final, self.size = tmp, final, size

    def commit(self) -> None:
        try:
            os.link(self._tmp, self._final)
        except FileExistsError:
            raise PreconditionFailed(f"{self._final} already exists") from None
        except OSError as exc:
            raise StorageError(f"cannot write {self._final}: {exc.strerror}") from None
        finally:
            self.abort()
        _fsync_dir(self._final.parent)

    def abort(self) -> None:
        try:
            self._tmp.unlink()
        except FileNotFoundError:
            pass


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class FileStore:
    """Keys are relative paths under ``root``; each key segment is a file or folder name."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.root = Path(path)
        self.location = str(self.root)

    # -- helpers -------------------------------------------------------------------------
    def _path(self, key: str) -> Path:
        parts = key.split("/")
        if not key or any(p in ("", ".", "..") for p in parts):
            raise StorageError(f"refusing unsafe key {key!r}")
        return self.root.joinpath(*parts)

    def _tmp_beside(self, final: Path) -> Path:
        return final.with_name(f".{final.name}.{os.urandom(6).hex()}.tmp")

    @contextmanager
    def _storage_errors(self, key: str) -> Iterator[None]:
        try:
            yield
        except (ObjectNotFound, PreconditionFailed, StorageError):
            raise
        except FileNotFoundError:
            raise ObjectNotFound(f"{key} not found in {self.location}") from None
        except PermissionError:
            raise StorageError(f"permission denied on {self.location}/{key}",
                               "check the permissions of the registry folder") from None
        except OSError as exc:
            raise StorageError(f"cannot access {self.location}/{key}: {exc.strerror or exc}") from None

    def _write_tmp(self, final: Path, data: bytes) -> Path:
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._tmp_beside(final)
        with open(tmp, "xb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        return tmp

    @contextmanager
    def _locked(self, folder: Path) -> Iterator[None]:
        fd = os.open(folder, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    # -- Store interface -----------------------------------------------------------------
    def get(self, key: str) -> tuple[bytes, str]:
        with self._storage_errors(key):
            path = self._path(key)
            if path.is_dir():
                raise ObjectNotFound(f"{key} not found in {self.location}")
            with open(path, "rb") as fh:
                data = fh.read(MAX_DOCUMENT + 1)
            if len(data) > MAX_DOCUMENT:
                raise too_large(self.location, key, path.stat().st_size)
        return data, _etag(data)

    def head(self, key: str) -> ObjectInfo | None:
        with self._storage_errors(key):
            try:
                st = self._path(key).stat()
            except (FileNotFoundError, NotADirectoryError):
                return None
        if not stat.S_ISREG(st.st_mode):
            return None
        return ObjectInfo(key, st.st_size, None, datetime.fromtimestamp(st.st_mtime, timezone.utc))

    def first_part_size(self, key: str) -> int | None:
        return None  # files have no parts, and no ETag to recompute

    def put_if_absent(self, key: str, data: bytes) -> str:
        with self._storage_errors(key):
            final = self._path(key)
            _StagedFile(self._write_tmp(final, data), final, len(data)).commit()
        return _etag(data)

    @contextmanager
    def _unchanged(self, key: str, final: Path, etag: str) -> Iterator[None]:
        """Hold the folder's lock while ``final`` still has ``etag``: the file compare-and-swap."""
        with self._locked(final.parent):
            try:
                current = _etag(final.read_bytes())
            except FileNotFoundError:
                raise PreconditionFailed(f"{key} no longer exists") from None
            if current != etag:
                raise PreconditionFailed(f"{key} changed meanwhile")
            yield

    def put_if_match(self, key: str, data: bytes, etag: str) -> str:
        with self._storage_errors(key):
            final = self._path(key)
            tmp = self._write_tmp(final, data)
            try:
                with self._unchanged(key, final, etag):
                    os.replace(tmp, final)
                _fsync_dir(final.parent)
            finally:
                if tmp.exists():
                    tmp.unlink()
        return _etag(data)

    def delete_if_match(self, key: str, etag: str) -> None:
        with self._storage_errors(key):
            final = self._path(key)
            with self._unchanged(key, final, etag):
                final.unlink()

    def delete(self, key: str) -> None:
        with self._storage_errors(key):
            try:
                self._path(key).unlink()
            except FileNotFoundError:
                pass

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        folder = prefix.rpartition("/")[0]
        start = self._path(folder) if folder else self.root
        with self._storage_errors(prefix):
            if not start.is_dir():
                return
            for dirpath, dirnames, filenames in os.walk(start):
                dirnames.sort()
                rel = Path(dirpath).relative_to(self.root).as_posix()
                base = "" if rel == "." else rel + "/"
                for name in sorted(filenames):
                    key = base + name
                    if _is_temp(name) or not key.startswith(prefix):
                        continue
                    try:
                        st = os.stat(os.path.join(dirpath, name))
                    except FileNotFoundError:
                        continue
                    yield ObjectInfo(key, st.st_size, None,
                                     datetime.fromtimestamp(st.st_mtime, timezone.utc))

    def list_folders(self, prefix: str) -> Iterator[str]:
        start = self._path(prefix.rstrip("/")) if prefix else self.root
        with self._storage_errors(prefix):
            if not start.is_dir():
                return
            for entry in sorted(os.scandir(start), key=lambda e: e.name):
                if entry.is_dir():
                    yield entry.name

    def stage(self, key: str, source: BinaryIO, size_hint: int | None = None,
              progress: Progress | None = None) -> _StagedFile:
        with self._storage_errors(key):
            final = self._path(key)
            final.parent.mkdir(parents=True, exist_ok=True)
            tmp = self._tmp_beside(final)
            size = 0
            try:
                with open(tmp, "xb") as out:
                    while chunk := source.read(CHUNK):
                        out.write(chunk)
                        size += len(chunk)
                        if progress:
                            progress(len(chunk))
                    out.flush()
                    os.fsync(out.fileno())
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
        return _StagedFile(tmp, final, size)

    def read(self, key: str, sink: BinaryIO, *, start: int = 0, size: int | None = None,
             progress: Progress | None = None) -> ObjectInfo:
        with self._storage_errors(key):
            fh = open(self._path(key), "rb")
        with fh:  # errors writing to the sink are the sink's, not the registry's
            st = os.fstat(fh.fileno())
            fh.seek(start)
            while chunk := fh.read(CHUNK):
                sink.write(chunk)
                if progress:
                    progress(len(chunk))
        return ObjectInfo(key, st.st_size, None, datetime.fromtimestamp(st.st_mtime, timezone.utc))

    def leftovers(self) -> Iterator[Leftover]:
        if not self.root.is_dir():
            return
        for dirpath, _dirs, filenames in os.walk(self.root):
            for name in filenames:
                if not _is_temp(name):
                    continue
                path = Path(dirpath) / name
                try:
                    st = path.stat()
                except FileNotFoundError:
                    continue
                key = path.relative_to(self.root).as_posix()
                yield Leftover(key, str(path), st.st_size, datetime.fromtimestamp(st.st_mtime, timezone.utc))

    def remove_leftover(self, leftover: Leftover) -> None:
        with self._storage_errors(leftover.key):
            Path(leftover.ref).unlink(missing_ok=True)
