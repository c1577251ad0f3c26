"""A shared, content-addressed cache of pulled files, keyed by SHA-256.

Two projects that need the same version download it once, and ``--offline`` pulls work from it.
An entry is named by its SHA-256, so it is never stale, only possibly damaged: :meth:`Cache.place`
and :meth:`Cache.open_verified` hash every entry on the way out (disks rot, people poke at
folders), while :meth:`Cache.commit` trusts the caller, who hashed the download as it arrived. The
cache is an optimisation: failing to read it means downloading again, never a failed pull.
Entries are read-only and never written in place; each appears whole, by a link or rename.

The cache may be shared by several accounts (``$TYCHOREG_CACHE_DIR`` on a build server, its
folders group-writable), so nothing in it is trusted for its name alone:

* entries are opened without following links or blocking on FIFOs and must be regular files;
  what is handed out for reading is an open file that was verified, never a path to open again,
  and a private copy whenever anyone but us could change the entry's bytes in place;
* downloads and copies in progress live in ``tmp/uid-N``, a folder of ours (0700, checked by
  owner and mode) that is held open while it is used, so nothing can be planted where we write;
* an entry is never the inode of a user's file (see :meth:`Cache.adopt`);
* folders are walked without following links, so a folder swapped for a link into someone's home
  never receives our files, and pruning never deletes anything outside the cache;
* the memos of what pulled files hashed to are believed only when we wrote them, in folders only
  we can write (see :meth:`Cache.known_digest`).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import secrets
import stat
import tempfile
import threading
import time
import weakref
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from . import portable
from .errors import IntegrityError, OperationError
from .integrity import CHUNK
from .localfs import (
    DIR_FLAGS,
    NEW_FLAGS,
    NotPrivate,
    check_destination,
    fresh_temp,
    is_private,
    link_open_file,
    open_private_dir,
    open_regular,
    pinned,
    resumable_write,
)

CACHE_ENV = "TYCHOREG_CACHE_DIR"
RACY = 2.0  # seconds: a file changed this close to its record may have changed unseen
STALE_PART = 24 * 3600.0  # a part file untouched for a day belongs to an abandoned pull
EVICT_EVERY = 30.0  # seconds between two size checks of one cache
_SHA = re.compile(r"[0-9a-f]{64}\Z")
_MEMO_MAX = 64 << 10  # a memo is a few hundred bytes; a bigger one was not written by us


def default_root() -> Path:
    """``$TYCHOREG_CACHE_DIR/files``, else ``files`` in the user's cache directory."""
    from platformdirs import user_cache_dir  # noqa: PLC0415 - platformdirs: ~3 ms, only to find the folder

    return Path(os.environ.get(CACHE_ENV) or user_cache_dir("tychoreg", appauthor=False)).expanduser() / "files"


@dataclass(frozen=True)
class CacheInfo:
    """What ``tychoreg cache info`` shows."""

    root: Path
    entries: int
    total_bytes: int
    limit_bytes: int | None


class _Unusable(Exception):
    """The entry did not verify: abandon the copy being written."""


def _private_name() -> str:
    """Our own folder in a shared one: one per account, so accounts never share a part file."""
    return f"uid-{portable.geteuid()}"


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


def _clone(src: BinaryIO, out: BinaryIO) -> bool:
    return portable.clone(src.fileno(), out.fileno())


def _copy(src: BinaryIO, out: BinaryIO) -> None:
    """Copy ``src`` to ``out``: a clone where the filesystem can share extents, else a copy in the
    kernel (no bytes through Python), else an ordinary one."""
    if _clone(src, out) or portable.copy_range(src.fileno(), out.fileno()):
        return
    while chunk := src.read(CHUNK):
        out.write(chunk)


def _touch(path: Path) -> None:
    """Record a use as the mtime (atime is unreliable under noatime/relatime). The owner may set
    it to now even on a read-only file; in a cache shared between users it may be refused, which
    only makes eviction less accurate. An entry with a second name (a pulled file linked in by an
    earlier version) is left alone: its mtime is that file's, and a build tool would see it
    change. A link found at the name is never followed."""
    with suppress(OSError):
        st = os.lstat(path)
        if stat.S_ISREG(st.st_mode) and st.st_nlink == 1:
            os.utime(path, follow_symlinks=False)


def _memo_name(real: str) -> str:
    return hashlib.sha256(real.encode()).hexdigest()


class Follower:
    """The cache's copy of a download, made while the download is still running.

    :meth:`Cache.adopt` copies a pulled file after it is complete: for 512 MiB that is a quarter
    of a second on the critical path, after the download and its hash. A follower makes the same
    copy (in the kernel, from the page cache) in a thread of its own, of the bytes the download
    has hashed in order so far (:meth:`advance`; never bytes not yet hashed), and :meth:`finish`
    copies what is left and commits the entry once the download is verified. Its own duplicate
    of the file descriptor keeps the source open until then. Best effort, like ``adopt``: a
    failed copy leaves no entry, and the caller adopts the file the usual way."""

    def __init__(self, cache: Cache, sha256: str, size: int, out: BinaryIO, part: Path) -> None:
        self._cache, self._sha256, self._size, self._out, self._part = cache, sha256, size, out, part
        self._state = threading.Lock()
        self._wake = threading.Event()
        self._src: int | None = None  # ours: a duplicate of the download's descriptor
        self._target = 0
        self._restart = False
        self._stop = False
        self._broken = False
        self._copied = 0
        self._thread = threading.Thread(target=self._run, name="tychoreg-cache-copy", daemon=True)
        self._thread.start()

    def advance(self, fd: int, hashed: int) -> None:
        """The download's file ``fd`` holds ``hashed`` bytes, hashed in order, at its start. Less
        than before means it started again from scratch: what was copied is copied again."""
        with self._state:
            if self._src is None:
                try:
                    self._src = os.dup(fd)
                except OSError:
                    self._broken = True
            if hashed < self._target:
                self._restart = True
            self._target = hashed
        self._wake.set()

    def _run(self) -> None:
        while True:
            with self._state:
                src, target, restart, stop = self._src, self._target, self._restart, self._stop
                self._restart = False
            try:
                if restart:
                    os.ftruncate(self._out.fileno(), 0)
                    self._copied = 0
                if src is not None and not self._broken and self._copied < target:
                    got = portable.copy_span(
                        src, self._out.fileno(), self._copied, min(CHUNK * 8, target - self._copied)
                    )
                    self._broken = got == 0
                    self._copied += got
                    continue
            except OSError:
                self._broken = True
            if stop:
                return
            self._wake.wait()
            self._wake.clear()

    def _end(self) -> None:
        with self._state:
            self._stop = True
        self._wake.set()
        self._thread.join()
        with self._state:
            if self._src is not None:
                os.close(self._src)
                self._src = None
        self._out.close()

    def finish(self) -> bool:
        """After the download was verified: copy the rest and commit the entry. False when the
        cache did not take it (the caller then adopts the file as usual)."""
        with self._state:
            if self._target < self._size:
                self._target = self._size  # verified: every byte is hashed now
        try:
            self._end()
            if self._broken or self._copied != self._size:
                return False
            self._cache.commit(
                self._sha256, self._size, self._part, durable=False
            )  # the pulled file is the durable copy
            return True
        except (OSError, OperationError):
            return False
        finally:
            self._part.unlink(missing_ok=True)

    def abandon(self) -> None:
        """The download failed: no entry."""
        self._end()
        self._part.unlink(missing_ok=True)


class Cache:
    """Entries live at ``root/sha256/ab/abcdef...``; ``limit_bytes`` caps their total size."""

    def __init__(self, root: Path, limit_bytes: int | None = None, *, evict_every: float = EVICT_EVERY) -> None:
        self.root, self.limit_bytes, self.evict_every = Path(root), limit_bytes, evict_every
        self._tmp_fd: int | None = None
        self._lock = threading.Lock()

    def path(self, sha256: str) -> Path:
        """Where the entry for ``sha256`` (64 lowercase hex digits) lives."""
        if not isinstance(sha256, str) or not _SHA.match(sha256):
            raise ValueError(f"not a SHA-256 hex digest: {sha256!r}")
        return self.root / "sha256" / sha256[:2] / sha256

    # -- filling -----------------------------------------------------------------------------
    def part_path(self, sha256: str) -> Path:
        """A resumable download target on the entries' filesystem, so committing is a link.

        It lies in our private folder ``tmp/uid-N`` (see :meth:`_private`), where no other
        account can plant a link or a file of theirs. Concurrent pulls of one SHA by this account
        share the name: lock it as ``localfs.resumable_write`` does. :class:`OperationError` if
        there is no such folder to be had (the caller then does without the cache)."""
        self.path(sha256)
        return self._private() / f"{sha256}.part"

    def commit(self, sha256: str, size: int, part: Path, *, durable: bool = True) -> Path:
        """Move the verified download ``part`` into the cache and return the entry's path.

        Only the size is checked: the caller hashed the bytes as they arrived. ``part`` must be a
        regular file of ours with no other name (it is made read-only, and a hard link planted
        by someone else would make that, and the entry, someone else's file). The entry is that
        very inode, linked by its open descriptor, so a name swapped meanwhile cannot slip in.
        A link never overwrites, so when a concurrent pull got there first its entry is kept and
        ``part`` removed. If the cache cannot be written (read-only, disk full)
        :class:`OperationError` is raised and ``part`` left as it was, for the caller to use.
        Then entries used least recently are evicted until the total fits ``limit_bytes``; the
        new entry stays even if it alone is larger, since the caller is about to place it.

        ``durable=False`` skips the fsync: for a copy of bytes the caller has safely elsewhere (a
        pull's destination, fsynced), where flushing the copy too would double the disk writes of
        every pull. After a crash such an entry may hold other bytes than its name says; every use
        hashes it, so it is then deleted and downloaded again, never handed out."""
        entry = self.path(sha256)
        try:
            fd, st = open_regular(part)
        except OSError as exc:
            raise self._cannot(exc) from None
        try:
            if st.st_uid != portable.geteuid() or st.st_nlink != 1:
                raise OperationError(
                    f"refusing to put {part} into the download cache: it is not a file of yours alone", "pull again"
                )
            if st.st_size != size:
                part.unlink(missing_ok=True)
                raise IntegrityError(
                    f"downloaded file for {sha256[:12]} has {st.st_size} bytes, expected {size}", "pull again"
                )
            try:
                if durable:
                    os.fsync(fd)
                portable.fchmod(fd, 0o444)  # before it has the entry's name: no entry is ever writable
                try:
                    self._link(fd, part, sha256, size)
                except OSError:
                    with suppress(OSError):
                        portable.fchmod(fd, stat.S_IMODE(st.st_mode))
                    raise
                part.unlink(missing_ok=True)
            except OSError as exc:
                raise self._cannot(exc) from None
        finally:
            os.close(fd)
        # No folder fsync: after a crash an entry may be missing (or, if not durable, damaged:
        # every use hashes it), never used partial.
        _touch(entry)
        self._evict(keep=sha256)
        return entry

    def _link(self, fd: int, part: Path, sha256: str, size: int) -> None:
        shard = self._shard(sha256, create=True)
        try:
            try:
                link_open_file(fd, sha256, shard, part)
            except FileExistsError:
                if not self.has(sha256, size):  # damaged, planted, or just evicted: ours is good
                    os.replace(part, sha256, dst_dir_fd=shard)
            except OSError as exc:
                if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EMLINK):
                    raise
                os.replace(part, sha256, dst_dir_fd=shard)  # no hard links here; a twin is identical
        finally:
            os.close(shard)

    def adopt(self, sha256: str, size: int, source: Path) -> bool:
        """Take a file just downloaded and verified elsewhere (a pull's destination) into the
        cache: a copy-on-write clone where the filesystem can share extents (no space, no
        copying), else a copy made in the kernel while the file is still in the page cache.

        Never a hard link, although that would cost nothing: the entry would be the user's own
        inode, so an edit of the pulled file in place (by the user, or by anyone the umask lets
        write it: 0664 in a group's folder) would change the entry behind the cache's back, even
        between a check of the entry and its use. Making the pulled file read-only instead would
        break every tool that writes to its outputs, and its owner could make it writable again.
        The copy is not hashed: every use of an entry hashes it. False when the cache could not
        take it (the pull is done anyway)."""
        if self.has(sha256, size):
            _touch(self.path(sha256))
            return True
        part: Path | None = None
        try:
            fd, st = open_regular(source)
            with os.fdopen(fd, "rb") as src:
                if st.st_size != size:
                    return False
                out, part = fresh_temp(self._private() / sha256, ".adopt")
                with out:
                    _copy(src, out)
            self.commit(sha256, size, part, durable=False)  # the pulled file is the durable copy
        except (OSError, OperationError):
            return False
        finally:
            if part is not None:
                part.unlink(missing_ok=True)
        return True

    def follow(self, sha256: str, size: int) -> Follower | None:
        """A copy into the cache that keeps up with a download while it is verified (see
        :class:`Follower`); None when the cache has the entry already or cannot take one."""
        if self.has(sha256, size):
            return None
        try:
            out, part = fresh_temp(self._private() / sha256, ".adopt")
        except (OSError, OperationError):
            return None
        return Follower(self, sha256, size, out, part)

    # -- using -------------------------------------------------------------------------------
    def place(self, sha256: str, size: int, dest: Path, *, _strategy: str = "auto") -> bool:
        """Write the entry's bytes to ``dest`` atomically, verified; False means download again.

        Never a hard link: it would share the entry's inode, so the placed file would be
        read-only, and a user who made it writable would silently damage the cache for every
        project. A copy-on-write clone (FICLONE) is tried instead, which costs no space or
        copying where the filesystem supports it, and the clone is hashed; otherwise the entry is
        copied and hashed in the same pass. Either way what is hashed is what ``dest`` gets. A
        damaged entry is deleted and ``dest`` left as it was. Errors reading the cache give
        False; errors writing ``dest`` raise :class:`OperationError`. ``_strategy="copy"`` skips
        the clone (for tests)."""
        check_destination(dest)
        found = self._open_entry(sha256)
        if found is None:
            return False
        src, st = found
        ok: bool | None = st.st_size == size
        with src:
            if ok:
                try:
                    with resumable_write(dest, None) as out:
                        if _strategy == "auto" and _clone(src, out):
                            ok = _verify(out, None, sha256, size)  # read what dest will hold
                        else:
                            ok = _verify(src, out, sha256, size)
                        if not ok:
                            raise _Unusable
                except _Unusable:
                    pass
        if ok is False:  # damaged; unless a concurrent commit has already replaced it, delete it
            self._drop(sha256, st)
        elif ok:
            _touch(self.path(sha256))
        return bool(ok)

    def open_verified(self, sha256: str, size: int) -> BinaryIO | None:
        """The entry's bytes, verified, as a file open for reading at its start (to extract it,
        say); None if it is missing or damaged (a damaged entry is deleted).

        An open file, not a path: a path would be opened again after the check, and whoever can
        write to the cache could rename another file over the entry in between. It is the entry
        itself only when nobody but us can change its bytes (ours, read-only, no other name);
        otherwise a private copy, made and hashed in one pass, so what was hashed is what is
        read."""
        found = self._open_entry(sha256)
        if found is None:
            return None
        src, st = found
        out: BinaryIO | None = None
        ok: bool | None = False
        try:
            if st.st_size != size:
                ok = False
            elif st.st_uid == portable.geteuid() and st.st_nlink == 1 and not st.st_mode & 0o222:
                ok = _verify(src, None, sha256, size)
                out, src = src, None  # type: ignore[assignment]
            else:
                out = self._scratch()
                try:
                    ok = _verify(src, out, sha256, size)
                except OSError:  # no room for the copy: do without the cache
                    ok = None
        finally:
            if src is not None:
                src.close()
        if not ok or out is None:
            if out is not None:
                out.close()
            if ok is False:
                self._drop(sha256, st)
            return None
        out.seek(0)
        _touch(self.path(sha256))
        return out

    def has(self, sha256: str, size: int) -> bool:
        """A regular file of that size is at the entry's name (no hashing: every use verifies)."""
        entry = self.path(sha256)
        try:
            st = os.lstat(entry)
        except OSError:
            return False
        return stat.S_ISREG(st.st_mode) and st.st_size == size

    # -- what pulled files hold, so an unchanged destination is not hashed on every pull --------
    def note_digest(self, path: Path, sha256: str) -> None:
        """Remember that ``path``, as it is now (device, inode, size, mtime, ctime), hashed to
        ``sha256``. Best effort; only files of ours are noted (one of someone else's may have
        been swapped in after it was hashed)."""
        with suppress(OSError, ValueError):
            st = os.stat(path)
            self.path(sha256)
            if st.st_uid != portable.geteuid():
                return
            real = str(Path(path).resolve())
            record = {
                "path": real,
                "sha256": sha256,
                "at": time.time_ns(),
                "stat": [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns],
            }
            name = _memo_name(real)
            folder = self._memo_folder(name, create=True)
            try:
                tmp = f".{name}.{secrets.token_hex(4)}"
                fd = os.open(tmp, NEW_FLAGS, 0o600, dir_fd=folder)
                try:
                    with os.fdopen(fd, "w") as fh:
                        fh.write(json.dumps(record))
                    os.replace(tmp, name, src_dir_fd=folder, dst_dir_fd=folder)
                except BaseException:
                    with suppress(OSError):
                        os.unlink(tmp, dir_fd=folder)
                    raise
            finally:
                os.close(folder)

    def known_digest(self, path: Path) -> str | None:
        """The SHA-256 ``path`` had when last noted, if nothing about it changed since.

        Any write changes the file's ctime, which no user can set back, so an unchanged stat
        means unchanged bytes; as in git's index, a record made within ``RACY`` seconds of the
        file's last change proves nothing (timestamps may be coarse) and is not trusted. A memo
        says "up to date" without looking at the bytes, so it is believed only if we wrote it:
        a regular file of ours that nobody else can write, in folders of ours that nobody else
        can write (``verified/uid-N/ab``, walked without following links), about a file of
        ours. Anything else (another account's memo, a forged one in a shared cache, a FIFO) is
        ignored and the file hashed."""
        try:
            st = os.stat(path)
            if st.st_uid != portable.geteuid():
                return None
            real = str(Path(path).resolve())
            name = _memo_name(real)
            folder = self._memo_folder(name, create=False)
            try:
                fd, mst = open_regular(name, dir_fd=folder)
            finally:
                os.close(folder)
            with os.fdopen(fd, "rb") as fh:
                raw = fh.read(_MEMO_MAX + 1)
            if not is_private(mst) or len(raw) > _MEMO_MAX:
                return None
            record = json.loads(raw)
            same = record["path"] == real and record["stat"] == [
                st.st_dev,
                st.st_ino,
                st.st_size,
                st.st_mtime_ns,
                st.st_ctime_ns,
            ]
            settled = record["at"] - st.st_ctime_ns > RACY * 1e9
            return record["sha256"] if same and settled and _SHA.match(record["sha256"]) else None
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _digest_record(self, path: Path) -> Path:
        """Where the memo about ``path`` lives."""
        name = _memo_name(str(Path(path).resolve()))
        return self.root.parent / "verified" / _private_name() / name[:2] / name

    def _memo_folder(self, name: str, *, create: bool) -> int:
        base = self.root.parent / "verified"
        if create:
            base.mkdir(parents=True, exist_ok=True)
        top = os.open(base, DIR_FLAGS)
        try:
            mine = open_private_dir(_private_name(), top, create=create)
        finally:
            os.close(top)
        try:
            return open_private_dir(name[:2], mine, create=create)
        finally:
            os.close(mine)

    # -- size, pruning -------------------------------------------------------------------------
    def info(self) -> CacheInfo:
        """Count the entries and their bytes (part files are not counted)."""
        entries = self._entries()
        return CacheInfo(self.root, len(entries), sum(e[2] for e in entries), self.limit_bytes)

    def prune(self, older_than: float | None = None, *, dry_run: bool = False) -> tuple[int, int]:
        """Remove entries unused for ``older_than`` seconds (None: all) and part files untouched
        for a day; return (entries removed, bytes freed including part files). With
        ``dry_run``, remove nothing and return what would be removed and freed."""
        now, removed, freed = time.time(), 0, 0
        for used, sha256, size in self._entries():
            if (older_than is None or used < now - older_than) and (dry_run or self._unlink_entry(sha256)):
                removed, freed = removed + 1, freed + size
        folders: list[int] = []
        with suppress(OSError):  # our own part files, and any that earlier versions left in tmp/
            folders.append(self._open_private(create=False))
        with suppress(OSError):
            folders.append(os.open(self.root / "tmp", DIR_FLAGS))
        for folder in folders:
            try:
                for part in list(os.scandir(folder)):
                    with suppress(OSError):
                        st = part.stat(follow_symlinks=False)
                        if not stat.S_ISDIR(st.st_mode) and st.st_mtime < now - STALE_PART:
                            if not dry_run:
                                os.unlink(part.name, dir_fd=folder)
                            freed += st.st_size
            finally:
                os.close(folder)
        return removed, freed

    def _evict(self, keep: str) -> None:
        """Remove the least recently used entries until the total fits the limit (not ``keep``).

        Counting means scanning every entry, so it is done at most once every ``EVICT_EVERY``
        seconds per cache (a stamp file's mtime says when): a burst of pulls may pass the limit
        for that long, but a pull-list of hundreds does not scan the cache hundreds of times.
        The stamp is never followed if it is a link (touching or creating through a planted one
        would change, or create, any file the link names)."""
        if self.limit_bytes is None:
            return
        stamp = self.root / ".evicted"
        try:
            if time.time() - os.stat(stamp, follow_symlinks=False).st_mtime < self.evict_every:
                return
            with suppress(OSError):
                os.utime(stamp, follow_symlinks=False)
        except FileNotFoundError:
            with suppress(OSError):
                os.close(os.open(stamp, NEW_FLAGS, 0o644))
        except OSError:
            pass
        entries = self._entries()
        total = sum(e[2] for e in entries)
        for _, sha256, size in entries:
            if total > self.limit_bytes and sha256 != keep and self._unlink_entry(sha256):
                total -= size

    def _entries(self) -> list[tuple[float, str, int]]:
        """(last use, SHA-256, size) of every entry, least recently used first."""
        found: list[tuple[float, str, int]] = []
        try:
            top = os.open(self.root / "sha256", DIR_FLAGS)
        except OSError:
            return found
        try:
            for shard in list(os.scandir(top)):
                try:
                    folder = os.open(shard.name, DIR_FLAGS, dir_fd=top)
                except OSError:  # not a folder, or a link: not ours to look into
                    continue
                try:
                    for item in list(os.scandir(folder)):
                        if _SHA.match(item.name) and item.name[:2] == shard.name:
                            with suppress(OSError):  # it vanished under a concurrent prune
                                st = item.stat(follow_symlinks=False)
                                if stat.S_ISREG(st.st_mode):
                                    found.append((st.st_mtime, item.name, st.st_size))
                finally:
                    os.close(folder)
        finally:
            os.close(top)
        return sorted(found)

    # -- helpers -------------------------------------------------------------------------------
    def _open_entry(self, sha256: str) -> tuple[BinaryIO, os.stat_result] | None:
        """The entry open for reading, if it is a regular file: a link planted at its name is
        not followed, and a FIFO does not hang us (it would block a plain open forever)."""
        try:
            fd, st = open_regular(self.path(sha256))
        except OSError:
            return None
        return os.fdopen(fd, "rb"), st

    def _shard(self, sha256: str, *, create: bool) -> int:
        """The folder of ``sha256``'s entry, open; no component below the root is followed if it
        is a link (in a shared cache, a folder swapped for a link into someone's home would
        otherwise receive our entries)."""
        if create:
            self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root, os.O_RDONLY | portable.O_DIRECTORY | portable.O_CLOEXEC)
        try:
            for name in ("sha256", sha256[:2]):
                if create:
                    with suppress(FileExistsError):
                        os.mkdir(name, dir_fd=fd)
                sub = os.open(name, DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = sub
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _unlink_entry(self, sha256: str) -> bool:
        try:
            folder = self._shard(sha256, create=False)
        except OSError:
            return False
        try:
            os.unlink(sha256, dir_fd=folder)
            return True
        except OSError:
            return False
        finally:
            os.close(folder)

    def _drop(self, sha256: str, st: os.stat_result) -> None:
        """Delete a damaged entry, unless a concurrent commit has already replaced it."""
        with suppress(OSError):
            folder = self._shard(sha256, create=False)
            try:
                now = os.stat(sha256, dir_fd=folder, follow_symlinks=False)
                if (now.st_dev, now.st_ino) == (st.st_dev, st.st_ino):
                    os.unlink(sha256, dir_fd=folder)
            finally:
                os.close(folder)

    def _private(self) -> Path:
        """Our folder for files in progress, ``tmp/uid-N``: made 0700, checked to be ours and
        private, and held open so that a path through it (``/proc/self/fd/N/...``) cannot be
        redirected by renaming it and planting a link in its place."""
        with self._lock:
            if self._tmp_fd is None:
                try:
                    self._tmp_fd = self._open_private(create=True)
                except NotPrivate as exc:
                    folder = self.root / "tmp" / _private_name()
                    raise OperationError(
                        f"cannot use the download cache {self.root}: {folder} is not a "
                        f"private folder of yours ({exc.strerror})",
                        "remove it, or point $TYCHOREG_CACHE_DIR elsewhere",
                    ) from None
                except OSError as exc:
                    raise self._cannot(exc) from None
                weakref.finalize(self, os.close, self._tmp_fd)
            return pinned(self._tmp_fd, self.root / "tmp" / _private_name())

    def _open_private(self, *, create: bool) -> int:
        tmp = self.root / "tmp"
        if create:
            tmp.mkdir(parents=True, exist_ok=True)
        top = os.open(tmp, os.O_RDONLY | portable.O_DIRECTORY | portable.O_CLOEXEC)
        try:
            return open_private_dir(_private_name(), top, create=create, tighten=True)
        finally:
            os.close(top)

    def _scratch(self) -> BinaryIO:
        """An unnamed private file for a copy: in our folder on the cache's filesystem, else in
        the system's temporary folder."""
        try:
            folder: Path | None = self._private()
        except OperationError:
            folder = None
        return tempfile.TemporaryFile(dir=folder)

    def _cannot(self, exc: OSError) -> OperationError:
        why = "no space left on the device" if exc.errno == errno.ENOSPC else (exc.strerror or exc)
        return OperationError(
            f"cannot write to the download cache {self.root}: {why}",
            f"fix or free that folder, or point ${CACHE_ENV} elsewhere",
        )
