"""A shared, content-addressed cache of pulled files, keyed by SHA-256.

Two projects that need the same version download it once, and ``--offline`` pulls work from it.
An entry is named by its SHA-256, so it is never stale, only possibly damaged: :meth:`Cache.place`
hashes every entry on the way out (disks rot, people poke at folders), while :meth:`Cache.commit`
trusts the caller, who hashed the download as it arrived. The cache is an optimisation: failing
to read it means downloading again, never a failed pull. Entries are read-only and never written
in place; each appears whole, by a link or rename from a part file under ``root/tmp``.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import re
import stat
import time
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from .errors import IntegrityError, OperationError
from .integrity import CHUNK
from .localfs import check_destination, describe_write_error

CACHE_ENV = "TYCHOREG_CACHE_DIR"
RACY = 2.0  # seconds: a file changed this close to its record may have changed unseen
STALE_PART = 24 * 3600.0
EVICT_EVERY = 30.0  # seconds between two size checks of one cache  # a part file untouched for a day belongs to an abandoned pull
_FICLONE = 0x40049409  # Linux ioctl: share extents copy-on-write (btrfs, XFS, bcachefs)
_SHA = re.compile(r"[0-9a-f]{64}\Z")


def default_root() -> Path:
    """``$TYCHOREG_CACHE_DIR/files``, else ``files`` in the user's cache directory."""
    from platformdirs import user_cache_dir

    return Path(os.environ.get(CACHE_ENV) or user_cache_dir("tychoreg", appauthor=False)
                ).expanduser() / "files"


@dataclass(frozen=True)
class CacheInfo:
    """What ``tychoreg cache info`` shows."""

    root: Path
    entries: int
    total_bytes: int
    limit_bytes: int | None


def _verify(src: BinaryIO, out: BinaryIO | None, sha256: str, size: int) -> bool | None:
    """Hash ``src`` to its end, copying to ``out`` if given: does it match? None if reading failed.
    Errors writing ``out`` propagate."""
    digest, total = hashlib.sha256(), 0
    while True:
        try:
            chunk = src.read(CHUNK)
        except OSError:
            return None
        if not chunk:
            return total == size and digest.hexdigest() == sha256
        digest.update(chunk)
        total += len(chunk)
        if out is not None:
            out.write(chunk)


def _touch(path: Path) -> None:
    """Record a use as the mtime (atime is unreliable under noatime/relatime). The owner may set
    it to now even on a read-only file; in a cache shared between users it may be refused, which
    only makes eviction less accurate. An entry linked to a pulled file (see :meth:`Cache.adopt`)
    is left alone: its mtime is that file's, and a build tool would see it change."""
    with suppress(OSError):
        if os.stat(path).st_nlink == 1:
            os.utime(path)


def _unlink(path: Path) -> bool:
    try:
        path.unlink()
        return True
    except OSError:
        return False


class Cache:
    """Entries live at ``root/sha256/ab/abcdef...``; ``limit_bytes`` caps their total size."""

    def __init__(self, root: Path, limit_bytes: int | None = None, *, evict_every: float = EVICT_EVERY) -> None:
        self.root, self.limit_bytes, self.evict_every = Path(root), limit_bytes, evict_every

    def path(self, sha256: str) -> Path:
        """Where the entry for ``sha256`` (64 lowercase hex digits) lives."""
        if not isinstance(sha256, str) or not _SHA.match(sha256):
            raise ValueError(f"not a SHA-256 hex digest: {sha256!r}")
        return self.root / "sha256" / sha256[:2] / sha256

    def part_path(self, sha256: str) -> Path:
        """A resumable download target on the entries' filesystem, so committing is a link.
        Concurrent pulls of one SHA share this name: lock it as ``localfs.resumable_write`` does."""
        self.path(sha256)
        try:
            (self.root / "tmp").mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise self._cannot(exc) from None
        return self.root / "tmp" / f"{sha256}.part"

    def commit(self, sha256: str, size: int, part: Path) -> Path:
        """Move the verified download ``part`` into the cache and return the entry's path.

        Only the size is checked: the caller hashed the bytes as they arrived. The entry appears
        by a hard link, which never overwrites, so when a concurrent pull got there first its
        entry is kept and ``part`` removed. If the cache cannot be written (read-only, disk full)
        :class:`OperationError` is raised and ``part`` left as it was, for the caller to use.
        Then entries used least recently are evicted until the total fits ``limit_bytes``; the
        new entry stays even if it alone is larger, since the caller is about to place it."""
        entry = self.path(sha256)
        try:
            with open(part, "rb") as fh:
                st = os.fstat(fh.fileno())
                if st.st_size != size:
                    part.unlink(missing_ok=True)
                    raise IntegrityError(f"downloaded file for {sha256[:12]} has {st.st_size} "
                                         f"bytes, expected {size}", "pull again")
                os.fsync(fh.fileno())
            os.chmod(part, 0o444)  # before it has the entry's name: no entry is ever writable
            try:
                entry.parent.mkdir(parents=True, exist_ok=True)
                try:
                    os.link(part, entry)
                except FileExistsError:
                    if not self.has(sha256, size):  # damaged or just evicted: ours is good
                        os.replace(part, entry)
                except OSError as exc:
                    if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EMLINK):
                        raise
                    os.replace(part, entry)  # no hard links here; a concurrent twin is identical
            except OSError:
                with suppress(OSError):
                    os.chmod(part, stat.S_IMODE(st.st_mode))
                raise
            part.unlink(missing_ok=True)
        except OSError as exc:
            raise self._cannot(exc) from None
        _touch(entry)  # no folder fsync: after a crash an entry may be missing, never partial
        self._evict(keep=entry)
        return entry

    def _evict(self, keep: Path) -> None:
        """Remove the least recently used entries until the total fits the limit (not ``keep``).

        Counting means scanning every entry, so it is done at most once every ``EVICT_EVERY``
        seconds per cache (a stamp file's mtime says when): a burst of pulls may pass the limit
        for that long, but a pull-list of hundreds does not scan the cache hundreds of times."""
        if self.limit_bytes is None:
            return
        stamp = self.root / ".evicted"
        try:
            if time.time() - os.stat(stamp).st_mtime < self.evict_every:
                return
        except OSError:
            pass
        with suppress(OSError):
            stamp.touch()
        entries = self._entries()
        total = sum(e[2] for e in entries)
        for _, path, size in entries:
            if total > self.limit_bytes and path != keep and _unlink(path):
                total -= size

    def adopt(self, sha256: str, size: int, source: Path) -> bool:
        """Take a file just downloaded and verified elsewhere (a pull's destination) into the
        cache, by a hard link: no copy, no second read. The entry then shares the file's inode,
        so if someone changes that file in place the entry changes too; :meth:`place` hashes
        every entry on the way out, so such an entry is dropped, never handed out (and other
        projects always get copies, never this inode). Across filesystems it is copied instead.
        False when the cache could not take it (the pull is done anyway)."""
        entry = self.path(sha256)
        try:
            entry.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(source, entry)
            except FileExistsError:
                return True
            except OSError as exc:
                if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EOPNOTSUPP, errno.EMLINK):
                    raise
                part = self.root / "tmp" / f"{sha256}.{os.urandom(4).hex()}.adopt"
                part.parent.mkdir(parents=True, exist_ok=True)
                try:
                    with open(source, "rb") as src, open(part, "xb") as out:
                        while chunk := src.read(CHUNK):
                            out.write(chunk)
                    self.commit(sha256, size, part)
                finally:
                    part.unlink(missing_ok=True)
        except (OSError, OperationError):
            return False
        _touch(entry)
        self._evict(keep=entry)
        return True

    def place(self, sha256: str, size: int, dest: Path, *, _strategy: str = "auto") -> bool:
        """Write the entry's bytes to ``dest`` atomically, verified; False means download again.

        Never a hard link: it would share the entry's inode, so the placed file would be
        read-only, and a user who made it writable would silently damage the cache for every
        project. A copy-on-write clone (FICLONE) is tried instead, which costs no space or
        copying where the filesystem supports it, and the clone is hashed; otherwise the entry is
        copied and hashed in the same pass. A damaged entry is deleted and ``dest`` left as it
        was. Errors reading the cache give False; errors writing ``dest`` raise
        :class:`OperationError`. ``_strategy="copy"`` skips the clone (for tests)."""
        entry = self.path(sha256)
        check_destination(dest)
        try:
            src = open(entry, "rb")  # once open, an eviction (unlink) cannot change what we read
        except OSError:
            return False
        with src:
            st = os.fstat(src.fileno())
            tmp: Path | None = dest.with_name(f".{dest.name}.{os.urandom(6).hex()}.tmp")
            try:
                ok: bool | None = st.st_size == size
                if ok:
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    with open(tmp, "xb+") as out:
                        if _strategy == "auto" and self._clone(src, out):
                            ok = _verify(out, None, sha256, size)  # read what dest will hold
                        else:
                            ok = _verify(src, out, sha256, size)
                        if ok:
                            out.flush()
                            os.fsync(out.fileno())
                if ok:
                    os.replace(tmp, dest)
                    tmp = None
            except OSError as exc:
                raise describe_write_error(exc, dest) from None
            finally:
                if tmp is not None:
                    with suppress(OSError):
                        tmp.unlink()
        if ok is False:  # damaged; unless a concurrent commit has already replaced it, delete it
            with suppress(OSError):
                if os.stat(entry).st_ino == st.st_ino:
                    entry.unlink()
        elif ok:
            _touch(entry)
        return bool(ok)

    def verified(self, sha256: str, size: int) -> Path | None:
        """The entry's path after hashing it (for reading in place, e.g. to extract); a damaged
        entry is deleted and None returned, as is a missing one."""
        entry = self.path(sha256)
        try:
            with open(entry, "rb") as src:
                ok = _verify(src, None, sha256, size)
                ino = os.fstat(src.fileno()).st_ino
        except OSError:
            return None
        if ok is False:
            with suppress(OSError):
                if os.stat(entry).st_ino == ino:
                    entry.unlink()
        if not ok:
            return None
        _touch(entry)
        return entry

    # -- what pulled files hold, so an unchanged destination is not hashed on every pull --------
    def note_digest(self, path: Path, sha256: str) -> None:
        """Remember that ``path``, as it is now (device, inode, size, mtime, ctime), hashed to
        ``sha256``. Best effort."""
        with suppress(OSError, ValueError):
            st = os.stat(path)
            self.path(sha256)
            record = {"path": str(Path(path).resolve()), "sha256": sha256, "at": time.time_ns(),
                      "stat": [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]}
            target = self._digest_record(path)
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.{os.urandom(4).hex()}")
            tmp.write_text(json.dumps(record))
            os.replace(tmp, target)

    def known_digest(self, path: Path) -> str | None:
        """The SHA-256 ``path`` had when last noted, if nothing about it changed since.

        Any write changes the file's ctime, which no user can set back, so an unchanged stat
        means unchanged bytes; as in git's index, a record made within ``RACY`` seconds of the
        file's last change proves nothing (timestamps may be coarse) and is not trusted."""
        try:
            st = os.stat(path)
            record = json.loads(self._digest_record(path).read_text())
            same = (record["path"] == str(Path(path).resolve()) and record["stat"] ==
                    [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns])
            settled = record["at"] - st.st_ctime_ns > RACY * 1e9
            return record["sha256"] if same and settled and _SHA.match(record["sha256"]) else None
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _digest_record(self, path: Path) -> Path:
        name = hashlib.sha256(str(Path(path).resolve()).encode()).hexdigest()
        return self.root.parent / "verified" / name[:2] / name

    def has(self, sha256: str, size: int) -> bool:
        """The entry exists with that size (no hashing: :meth:`place` verifies)."""
        try:
            return os.stat(self.path(sha256)).st_size == size
        except OSError:
            return False

    def info(self) -> CacheInfo:
        """Count the entries and their bytes (part files are not counted)."""
        entries = self._entries()
        return CacheInfo(self.root, len(entries), sum(e[2] for e in entries), self.limit_bytes)

    def prune(self, older_than: float | None = None) -> tuple[int, int]:
        """Remove entries unused for ``older_than`` seconds (None: all) and part files untouched
        for a day; return (entries removed, bytes freed including part files)."""
        now, removed, freed = time.time(), 0, 0
        for used, path, size in self._entries():
            if (older_than is None or used < now - older_than) and _unlink(path):
                removed, freed = removed + 1, freed + size
        parts: list[os.DirEntry[str]] = []
        with suppress(OSError):
            parts = list(os.scandir(self.root / "tmp"))
        for part in parts:
            with suppress(OSError):
                st = part.stat()
                if st.st_mtime < now - STALE_PART and _unlink(Path(part.path)):
                    freed += st.st_size
        return removed, freed

    def _entries(self) -> list[tuple[float, Path, int]]:
        """(last use, path, size) of every entry, least recently used first."""
        names, found = [], []
        with suppress(OSError):
            for shard in list(os.scandir(self.root / "sha256")):
                with suppress(OSError):
                    names += [item.path for item in os.scandir(shard.path) if _SHA.match(item.name)]
        for name in names:
            with suppress(OSError):  # it vanished under a concurrent prune
                st = os.stat(name)
                found.append((st.st_mtime, Path(name), st.st_size))
        return sorted(found, key=lambda e: e[0])

    @staticmethod
    def _clone(src: BinaryIO, out: BinaryIO) -> bool:
        try:
            fcntl.ioctl(out.fileno(), _FICLONE, src.fileno())
            return True
        except OSError:  # EOPNOTSUPP, EXDEV, EINVAL...: copy instead
            return False

    def _cannot(self, exc: OSError) -> OperationError:
        why = "no space left on the device" if exc.errno == errno.ENOSPC else (exc.strerror or exc)
        return OperationError(f"cannot write to the download cache {self.root}: {why}",
                              f"fix or free that folder, or point ${CACHE_ENV} elsewhere")
