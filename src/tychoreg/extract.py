"""Safe, atomic unpacking of untrusted archives into a folder (``pull --extract DIR``).

``tarfile``/``zipfile`` extraction trusts the archive: names with ``..`` or a leading ``/``, links
that point anywhere, device files, members written through a link planted earlier, bombs. So we
never call their ``extract*``; we read members one by one and decide ourselves:

* every name is checked against a model of the tree built so far *before* it touches disk, and
  the model refuses a second member at the same path (except a repeated folder), a member under a
  file or a symlink, and a hard link to anything but an earlier regular file of the archive;
* regular files are streamed in 1 MiB chunks with ``O_EXCL | O_NOFOLLOW`` and counted as written,
  so a lying header or a bomb stops at ``max_bytes``; set-id and sticky bits are dropped;
* symlinks are created last, after all of them were resolved together (chains included) and found
  to stay inside DIR, so no file is ever written while a link exists;
* everything lands in a hidden folder beside DIR that is swapped in by rename only when complete:
  DIR holds its old tree or the whole new one, and a failure leaves nothing behind;
* that folder is made 0700 (others must not put anything in it while we work: DIR's parent is
  often a group's folder), and every member is created relative to an open descriptor of its
  folder, each folder on the way opened with ``O_NOFOLLOW | O_DIRECTORY``: a link that appears
  in the tree anyway (put there between two of our steps) is never followed, the extraction
  fails instead. Final modes are set at the end, with the umask applied as tar does for users
  (an archive saying 0777 or 0666 does not make a world-writable tree, nor DIR itself);
* tarfile keeps every member it has read, pax headers included, so an archive of many members
  with megabytes of pax headers each would grow memory without bound: members are dropped as
  they are read, extended headers are capped per member and in total for global ones, and their
  bytes count against ``max_bytes`` like the members' data.

Also refused: device files, FIFOs, sparse members (tarfile reads their maps into memory), more
than ``MAX_MEMBERS`` members, and members at the stamp's reserved name. Folders keep ``u+rwx`` so a
later pull can replace the tree. Zip members are unpacked by zipfile, which stops at the declared
size (then fails the CRC), so a lying zip header cannot expand past its own claim either.
"""

from __future__ import annotations

import bz2
import errno
import gzip
import io
import json
import lzma
import os
import secrets
import shutil
import stat
import tarfile
import time
import zipfile
import zlib
from collections.abc import Callable, Generator
from contextlib import ExitStack, closing, contextmanager
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import IO, Any, BinaryIO, NamedTuple, Protocol, cast

from . import portable
from .concurrency import check_cancelled
from .errors import OperationError
from .integrity import CHUNK
from .localfs import DIR_FLAGS, is_private, open_regular, umask
from .portable import O_BINARY, O_CLOEXEC, O_DIRECTORY, O_NOFOLLOW
from .units import DEFAULT_EXTRACT_LIMIT

MAX_MEMBERS = 1_000_000  # each member costs an inode and memory for the checks
STAMP_NAME = ".tycho-extract.json"
_HEADER_CAP = 16 << 20  # tarfile reads pax headers and long names whole into memory: per member
_GLOBAL_CAP = 1 << 20  # global pax headers stay in memory for the rest of the archive
_STAMP_MAX = 64 << 10
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | O_NOFOLLOW | O_CLOEXEC | O_BINARY
_MAGIC = (
    (b"\x1f\x8b", "gz"),
    (b"BZh", "bz2"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x28\xb5\x2f\xfd", "zst"),
    (b"PK\x03\x04", "zip"),
    (b"PK\x05\x06", "zip"),
)
_UNSAFE_HINT = "nothing was extracted; do not trust this archive, or ask its publisher to repack it"
_ZIP_KINDS = {
    0: "file",
    stat.S_IFREG: "file",
    stat.S_IFDIR: "dir",
    stat.S_IFLNK: "symlink",
    stat.S_IFCHR: "device file",
    stat.S_IFBLK: "device file",
    stat.S_IFIFO: "FIFO",
}
_CORRUPT = (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, lzma.LZMAError, ValueError, NotImplementedError)


class UnsafeArchive(OperationError):
    """The archive would write outside DIR, through a link, a special file, or too many bytes."""


@dataclass(frozen=True)
class Stamp:
    """What was extracted into a folder; an equal stamp means there is nothing to do."""

    package: str
    version: str
    sha256: str | None


class _Refused(Exception):
    """Raised deep inside; ``extract`` turns it into an UnsafeArchive naming the archive."""

    def __init__(self, what: str, hint: str = _UNSAFE_HINT) -> None:
        super().__init__(what)
        self.hint = hint


class _Tampered(Exception):
    """Something in the staging folder is not what we made there: someone else wrote to it."""

    def __init__(self, parts: tuple[str, ...]) -> None:
        super().__init__("/".join(parts))


class _Entry(NamedTuple):
    name: str
    kind: str  # file, dir, symlink, hardlink, or a refused kind (device, FIFO, ...)
    mode: int
    mtime: float | None
    link: str  # symlink target, or the archive path a hard link repeats
    size: int  # as declared by the header
    open: Callable[[], IO[bytes] | None]
    overhead: int = 0  # bytes of extended headers read for it, counted against the limit


def read_stamp(dest: Path) -> Stamp | None:
    """The stamp in ``dest``, or None when it has none, it is unreadable, or it may not be ours.

    A stamp says "already extracted" without looking at the tree, so only a regular file of ours
    that nobody else can write is believed: in a folder others can write they could plant one
    naming a version that was never extracted. A FIFO planted there does not hang us."""
    try:
        fd, st = open_regular(dest / STAMP_NAME)
        with os.fdopen(fd, "rb") as fh:
            raw = fh.read(_STAMP_MAX + 1)
        if not is_private(st) or len(raw) > _STAMP_MAX:
            return None
        data = json.loads(raw.decode("utf-8"))
        found = Stamp(data["package"], data["version"], data["sha256"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    ok = isinstance(found.package, str) and isinstance(found.version, str)
    return found if ok and isinstance(found.sha256, (str, type(None))) else None


def check_target(dest: Path) -> None:
    """Refuse a ``dest`` that is not a folder, or a non-empty folder tychoreg did not extract;
    and refuse everything where folders cannot be opened (Windows): see :mod:`tychoreg.portable`."""
    if not portable.DIR_FDS:
        raise OperationError(
            f"cannot extract into {dest}: this system cannot open folders to work relative to them, "
            "which safe extraction needs",
            "pull the archive as a file and unpack it with a tool you trust",
        )
    if dest.is_symlink() or (dest.exists() and not dest.is_dir()):
        raise OperationError(
            f"cannot extract into {dest}: it exists and is not a folder",
            "choose another folder, or remove that one",
            reason="extract-target",
        )
    if dest.is_dir() and not os.path.lexists(dest / STAMP_NAME) and any(dest.iterdir()):
        raise OperationError(
            f"cannot extract into {dest}: it holds files that tychoreg did not put there",
            "choose a new or empty folder; tychoreg replaces the whole folder on each change",
        )


def extract(
    archive: Path,
    dest: Path,
    stamp: Stamp,
    *,
    max_bytes: int = DEFAULT_EXTRACT_LIMIT,
    force: bool = False,
    source: BinaryIO | None = None,
) -> bool:
    """Unpack ``archive`` into ``dest`` atomically; False if ``dest`` already holds ``stamp``
    (unless ``force``). A folder that holds files but no stamp was not made by us and is
    refused: replacing it would delete someone's work (think ``--extract ~``).

    ``source``, when given, is the archive already open (and verified: the caller hands over the
    very file it checked, see :mod:`tychoreg.deliver`); ``archive`` then only names it."""
    dest = Path(os.path.abspath(dest))
    check_target(dest)
    if not force and read_stamp(dest) == stamp:
        return False
    with ExitStack() as stack:
        if source is None:
            source = stack.enter_context(_open_file(archive))
        entries = _open(archive, source)  # a format error is raised before anything is created
        _extract(entries, archive, dest, stamp, max_bytes)
    return True


def _extract(entries: Generator[_Entry, None, None], archive: Path, dest: Path, stamp: Stamp, max_bytes: int) -> None:
    missing = []
    for parent in dest.parents:
        if parent.exists():
            break
        missing.append(parent)
    name = f".{dest.name}.{secrets.token_hex(6)}.extract"
    tmp = dest.with_name(name)
    parent_fd = -1
    try:
        for folder in reversed(missing):
            folder.mkdir()
        parent_fd = os.open(dest.parent, os.O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        os.mkdir(name, 0o700, dir_fd=parent_fd)
        with closing(entries), _Tree(parent_fd, name) as tree:
            _unpack(entries, tree, max_bytes)
            tree.write_stamp(stamp)
            tree.finish()
        _swap(parent_fd, name, dest)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        for folder in missing:
            try:
                folder.rmdir()
            except OSError:
                break
        error = _describe(exc, archive, dest)
        if error is exc:
            raise
        raise error from None
    finally:
        if parent_fd >= 0:
            os.close(parent_fd)


@contextmanager
def _open_file(archive: Path) -> Generator[BinaryIO, None, None]:
    try:
        fd, _ = open_regular(archive)
    except OSError as exc:
        raise OperationError(f"cannot read {archive}: {exc.strerror or exc}") from None
    with os.fdopen(fd, "rb") as fh:
        yield fh


def _describe(exc: BaseException, archive: Path, dest: Path) -> BaseException:
    """The user-facing error for a failure inside ``extract``; bugs pass through unchanged."""
    errno_ = exc.errno if isinstance(exc, OSError) else None
    if isinstance(exc, _Refused):
        return UnsafeArchive(f"refusing to extract {archive}: {exc}", exc.hint)
    if isinstance(exc, _Tampered):
        return OperationError(
            f"cannot extract into {dest}: {exc} in its staging folder is not what "
            "tychoreg made there; something else changed it while extracting",
            "nothing was extracted; extract into a folder only you can write, then try again",
        )
    if errno_ in (errno.ENOSPC, errno.EDQUOT):
        return OperationError(
            f"no space left on the device while extracting into {dest}", "free some disk space and pull again"
        )
    if errno_ in (errno.EACCES, errno.EPERM, errno.EROFS):
        return OperationError(
            f"cannot extract into {dest}: permission denied", "choose another folder or fix its permissions"
        )
    if isinstance(exc, (OSError, *_CORRUPT)) or type(exc).__name__ == "ZstdError":
        return OperationError(f"cannot extract {archive}: {exc}", "the archive is damaged or incomplete; pull it again")
    return exc


def _swap(parent: int, tmp: str, dest: Path) -> None:
    """Rename ``tmp`` to ``dest`` (both in the open folder ``parent``); an old ``dest`` is moved
    aside first and removed after."""
    try:
        os.stat(dest.name, dir_fd=parent, follow_symlinks=False)
    except FileNotFoundError:
        os.rename(tmp, dest.name, src_dir_fd=parent, dst_dir_fd=parent)
        return
    old = f".{dest.name}.{secrets.token_hex(6)}.old"
    os.rename(dest.name, old, src_dir_fd=parent, dst_dir_fd=parent)
    try:
        os.rename(tmp, dest.name, src_dir_fd=parent, dst_dir_fd=parent)
    except BaseException:
        os.rename(old, dest.name, src_dir_fd=parent, dst_dir_fd=parent)
        raise
    shutil.rmtree(dest.with_name(old), ignore_errors=True)


def _open(archive: Path, source: BinaryIO) -> Generator[_Entry, None, None]:
    """Sniff the format from the first bytes (names lie) and return a lazy member reader."""
    try:
        source.seek(0)
        head = source.read(tarfile.BLOCKSIZE)
        source.seek(0)
    except OSError as exc:
        raise OperationError(f"cannot read {archive}: {exc.strerror or exc}") from None
    kind = next((k for magic, k in _MAGIC if head.startswith(magic)), "")
    kind = kind or ("tar" if _is_tar(head) else "")
    if not kind:
        raise OperationError(
            f"{archive} is not a tar or zip archive",
            "only tar (plain, gzip, bzip2, xz, zstd) and zip archives are unpacked",
            reason="not-an-archive",
        )
    if kind == "zst":
        try:
            import zstandard  # noqa: F401, PLC0415 - is it installed? (only for .zst archives)
        except ImportError:
            raise OperationError(
                f"{archive} is zstd-compressed and the zstandard package is missing",
                "install tycho-station with its zstd extra",
                reason="zstd-missing",
                pulling=True,
            ) from None
    return _zip_entries(source, archive) if kind == "zip" else _tar_entries(source, kind)


def _is_tar(head: bytes) -> bool:
    """A plain tar has no magic of its own (old ones lack "ustar"): check the header checksum."""
    if head == bytes(tarfile.BLOCKSIZE):  # a zero block: an empty archive
        return True
    try:
        tarfile.TarInfo.frombuf(head, "utf-8", "surrogateescape")
    except tarfile.HeaderError:
        return False
    return True


class _TarInfo(tarfile.TarInfo):
    """Refuses sparse members while headers are parsed: tarfile would read their maps into
    memory without bound, and artifacts have no use for them. Reports every extended header
    (pax, GNU long names) to the :class:`_Guard` before it is read, which caps them.

    These are tarfile's private hooks, which typeshed does not describe: typed loosely, and the
    calls to the originals marked for mypy."""

    def _refuse_sparse(self, *args: Any) -> Any:
        raise _Refused(f"member {self.name!r} is a sparse file")

    _proc_sparse = _proc_gnusparse_00 = _proc_gnusparse_01 = _proc_gnusparse_10 = _refuse_sparse

    def _proc_pax(self, tarfile: Any) -> Any:
        tarfile.fileobj.extended(self)
        return super()._proc_pax(tarfile)  # type: ignore[misc]

    def _proc_gnulong(self, tarfile: Any) -> Any:
        tarfile.fileobj.extended(self)
        return super()._proc_gnulong(tarfile)  # type: ignore[misc]


class _Guard:
    """What tarfile reads through: refuses single reads past a cap (only headers are read whole),
    fills short reads, and keeps the last read, so a clean end (a zero block) is told from a
    truncated or damaged header, which tarfile silently takes for the end of the archive."""

    def __init__(self, stream: _Stream) -> None:
        self._f, self.last = stream, b""
        self.pending = 0  # extended header bytes read since the last member
        self.global_bytes = 0

    def extended(self, info: tarfile.TarInfo) -> None:
        """Count an extended header about to be read: tarfile holds all of one member's in
        memory at once, and global ones for the rest of the archive."""
        self.pending += info.size
        if info.type == tarfile.XGLTYPE:
            self.global_bytes += info.size
            if self.global_bytes > _GLOBAL_CAP:
                raise _Refused(f"its global pax headers pass {_GLOBAL_CAP} bytes")
        if self.pending > _HEADER_CAP:
            raise _Refused(f"it has a header of {self.pending} bytes for one member (at most {_HEADER_CAP} are read)")

    def take(self) -> int:
        """Extended header bytes read for the member just read."""
        taken, self.pending = self.pending, 0
        return taken

    def read(self, n: int = -1) -> bytes:
        if n < 0 or n > _HEADER_CAP:
            raise _Refused(f"it has a header of {n} bytes")
        parts = []
        while n > 0 and (part := self._f.read(n)):
            parts.append(part)
            n -= len(part)
        self.last = b"".join(parts)  # the final read is always an attempt at a header
        return self.last

    def seek(self, pos: int, whence: int = 0) -> int:
        return int(self._f.seek(pos, whence))

    def tell(self) -> int:
        return int(self._f.tell())


class _Stream(Protocol):
    """What a tar is read from: the archive itself, or a decompressing reader over it."""

    def read(self, size: int = -1, /) -> bytes: ...

    def seek(self, offset: int, whence: int = 0, /) -> int: ...

    def tell(self) -> int: ...

    def close(self) -> object: ...


def _decompress(kind: str, raw: IO[bytes]) -> _Stream:
    """A streaming reader of the tar inside ``raw``; zstandard is imported only when needed."""
    if kind == "zst":
        import zstandard  # noqa: PLC0415 - zstandard: ~1 ms, only for .zst archives

        return zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True, closefd=False)
    openers: dict[str, Callable[[IO[bytes]], _Stream]] = {"gz": gzip.open, "bz2": bz2.open, "xz": lzma.open}
    return openers[kind](raw) if kind in openers else raw


def _tar_kind(m: tarfile.TarInfo) -> str:
    if m.isreg():
        return "file"
    if m.isdir():
        return "dir"
    if m.issym():
        return "symlink"
    if m.islnk():
        return "hardlink"
    if m.ischr() or m.isblk():
        return "device file"
    if m.isfifo():
        return "FIFO"
    return f"tar entry of type {m.type!r}"


def _tar_entries(raw: BinaryIO, kind: str) -> Generator[_Entry, None, None]:
    stream = _decompress(kind, raw)  # closing it leaves ``raw`` open: it is the caller's
    try:
        guard = _Guard(stream)
        # cast: reading ("r:") only reads, seeks and tells, which the guard does; typeshed's file
        # protocol for tarfile also asks for the write and close that only writing uses.
        with tarfile.open(fileobj=cast("IO[bytes]", guard), mode="r:", tarinfo=_TarInfo) as tf:
            for m in tf:
                # tarfile would keep every member read, pax headers and all (an attribute
                # typeshed does not list)
                tf.members.clear()  # type: ignore[attr-defined]
                yield _Entry(
                    m.name, _tar_kind(m), m.mode, m.mtime, m.linkname, m.size, partial(tf.extractfile, m), guard.take()
                )
                m.pax_headers = {}
        if guard.last != bytes(tarfile.BLOCKSIZE):
            raise tarfile.ReadError("unexpected end of data (truncated archive)")
    finally:
        if stream is not raw:
            stream.close()


def _zip_entries(raw: BinaryIO, archive: Path) -> Generator[_Entry, None, None]:
    with zipfile.ZipFile(raw) as zf:
        for info in zf.infolist():
            if info.flag_bits & 0x1:
                raise OperationError(
                    f"cannot extract {archive}: member {info.filename!r} is encrypted", "repack it without a password"
                )
            mode, link = info.external_attr >> 16, ""
            fmt = stat.S_IFMT(mode)
            kind = "dir" if info.is_dir() else _ZIP_KINDS.get(fmt, "socket")
            if kind == "symlink":
                with zf.open(info) as fh:
                    link = fh.read(4097).decode("utf-8", "surrogateescape")
                if len(link) > 4096:
                    raise _Refused(f"symlink {info.filename!r} has an overlong target")
            try:
                mtime: float | None = time.mktime((*info.date_time, 0, 0, -1))
            except (OverflowError, ValueError):
                mtime = None
            mode = mode & 0o7777 or (0o755 if kind == "dir" else 0o644)
            yield _Entry(info.filename, kind, mode, mtime, link, info.file_size, partial(zf.open, info))


def _norm(name: str) -> tuple[str, ...] | None:
    """Components of an archive path, ``..`` applied; None if absolute or climbing out."""
    if name.startswith("/"):
        return None
    parts: list[str] = []
    for part in name.split("/"):
        if part == "..":
            if not parts:
                return None
            parts.pop()
        elif part not in ("", "."):
            parts.append(part)
    return tuple(parts)


class _Tree:
    """The staging folder, written only through descriptors.

    Every member is created relative to an open descriptor of its folder, and every folder on the
    way is opened with ``O_NOFOLLOW | O_DIRECTORY``: a path is never resolved again from DIR's
    parent, so a link that appears in the tree (it can only have been put there by someone else:
    the model in :func:`_unpack` creates links last) is never followed; meeting one, or a file
    where a folder was made, raises :class:`_Tampered`. Folders are made 0700 and files 0600, and
    get their final modes (the archive's, less the umask) once everything is written. The
    descriptors of the current folder's chain are kept, so members of one folder cost one
    ``openat`` each."""

    def __init__(self, parent: int, name: str) -> None:
        self.fd = os.open(name, DIR_FLAGS, dir_fd=parent)
        st = os.fstat(self.fd)
        if not is_private(st) or st.st_mode & 0o077:
            os.close(self.fd)
            raise _Tampered((name,))
        self.mask = umask()
        self.made: set[tuple[str, ...]] = set()
        self.dirs: dict[tuple[str, ...], tuple[int, float | None]] = {}
        self._chain: list[tuple[str, int]] = []  # (name, fd) of the current folder's components

    def __enter__(self) -> _Tree:
        return self

    def __exit__(self, *exc: object) -> None:
        for _, fd in self._chain:
            os.close(fd)
        self._chain.clear()
        os.close(self.fd)

    def folder(self, parts: tuple[str, ...]) -> int:
        """The open folder ``parts``, made where missing; the descriptor stays the tree's."""
        keep = 0
        while keep < min(len(self._chain), len(parts)) and self._chain[keep][0] == parts[keep]:
            keep += 1
        for _, fd in self._chain[keep:]:
            os.close(fd)
        del self._chain[keep:]
        fd = self._chain[-1][1] if self._chain else self.fd
        for i in range(keep, len(parts)):
            try:
                os.mkdir(parts[i], 0o700, dir_fd=fd)
                self.made.add(parts[: i + 1])
            except FileExistsError:
                pass
            fd = self._open(parts[: i + 1], fd, DIR_FLAGS)
            self._chain.append((parts[i], fd))
        return fd

    def _open(self, parts: tuple[str, ...], folder: int, flags: int, mode: int = 0o600) -> int:
        try:
            return os.open(parts[-1], flags, mode, dir_fd=folder)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.EEXIST):
                raise _Tampered(parts) from None
            raise

    def file(self, parts: tuple[str, ...]) -> int:
        """A new, empty file at ``parts``, open for writing (mode 0600 until it is complete)."""
        return self._open(parts, self.folder(parts[:-1]), _NEW_FILE)

    def hardlink(self, parts: tuple[str, ...], source: tuple[str, ...]) -> None:
        src = os.dup(self.folder(source[:-1]))
        try:
            portable.link(
                source[-1], parts[-1], src_dir_fd=src, dst_dir_fd=self.folder(parts[:-1]), follow_symlinks=False
            )
        except (FileExistsError, FileNotFoundError):
            raise _Tampered(parts) from None
        finally:
            os.close(src)

    def symlink(self, parts: tuple[str, ...], target: str) -> None:
        try:
            os.symlink(target, parts[-1], dir_fd=self.folder(parts[:-1]))
        except FileExistsError:
            raise _Tampered(parts) from None

    def mode(self, archived: int) -> int:
        """A member's final mode: the archive's permission bits (never set-id or sticky) less
        the umask, as tar applies it for users: 0666 in an archive does not make a file others
        can write."""
        return archived & 0o777 & ~self.mask

    def write_stamp(self, stamp: Stamp) -> None:
        """The stamp, 0644 at most whatever the umask (it is believed only while nobody else
        can write it, see :func:`read_stamp`)."""
        fd = self._open((STAMP_NAME,), self.fd, _NEW_FILE, 0o644)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(json.dumps(asdict(stamp)))

    def finish(self) -> None:
        """Give every folder its final mode and time, deepest first; DIR itself last (an entry
        ``./`` gives its mode, else what ``mkdir`` would). Folders keep ``u+rwx``: a later pull
        must be able to replace the tree."""
        for parts in sorted(self.made | set(self.dirs), key=lambda p: (-len(p), p)):
            if parts:
                self._settle(self.folder(parts), parts)
        self._settle(self.fd, ())

    def _settle(self, fd: int, parts: tuple[str, ...]) -> None:
        mode, mtime = self.dirs.get(parts, (0o777, None))
        portable.fchmod(fd, self.mode(mode) | 0o700)
        _set_mtime(fd, mtime)


def _unpack(entries: Generator[_Entry, None, None], tree: _Tree, max_bytes: int) -> None:
    """Check each member against the tree so far, then write it; symlinks and folder modes last."""
    kinds: dict[tuple[str, ...], str] = {(): "dir"}
    links: dict[tuple[str, ...], str] = {}
    written = 0
    for count, e in enumerate(entries, 1):
        check_cancelled()  # interrupted: stop here, and the staging folder goes
        member = f"member {e.name!r}"
        if count > MAX_MEMBERS:
            raise _Refused(f"it has more than {MAX_MEMBERS} members")
        written += e.overhead
        if written > max_bytes:
            raise _too_big(member, max_bytes)
        if e.kind not in ("file", "dir", "symlink", "hardlink"):
            raise _Refused(f"{member} is a {e.kind}; only files, folders and links are extracted")
        parts = _norm(e.name)
        if parts is None:
            raise _Refused(
                f"{member} has an absolute path"
                if e.name.startswith("/")
                else f"{member} climbs out of the folder with '..'"
            )
        if parts[:1] == (STAMP_NAME,):
            raise _Refused(f"{member} uses the name reserved for tychoreg's extraction stamp")
        if not parts and e.kind != "dir":
            raise _Refused(f"{member} names the destination folder itself")
        for i in range(1, len(parts)):
            above = kinds.setdefault(parts[:i], "dir")
            if above != "dir":
                raise _Refused(f"{member} would be written through the {above} {'/'.join(parts[:i])!r}")
        if parts in kinds and not (kinds[parts] == e.kind == "dir"):
            raise _Refused(f"{member} clashes with an earlier member at the same path")
        if e.kind == "hardlink":
            source = _norm(e.link)
            if source is None or kinds.get(source) != "file":
                raise _Refused(
                    f"hard link {e.name!r} points at {e.link!r}, which is not an earlier file in the archive"
                )
            tree.hardlink(parts, source)
        elif e.kind == "file":
            if written + e.size > max_bytes:
                raise _too_big(member, max_bytes)
            written = _write(e, tree, parts, written, max_bytes)
        elif e.kind == "dir":
            if parts:
                tree.folder(parts)
            tree.dirs[parts] = (e.mode, e.mtime)
        else:
            links[parts] = e.link
        kinds[parts] = "file" if e.kind == "hardlink" else e.kind
    done: dict[tuple[str, ...], tuple[str, ...] | None] = {}  # resolutions shared: chains cost linear time
    for parts, target in links.items():
        if _resolve(links, done, parts[:-1], target, 0) is None:
            raise _Refused(f"symlink {'/'.join(parts)!r} points outside the folder ({target!r})")
    for parts, target in links.items():
        tree.symlink(parts, target)


def _resolve(
    links: dict[tuple[str, ...], str],
    done: dict[tuple[str, ...], tuple[str, ...] | None],
    at: tuple[str, ...],
    target: str,
    depth: int,
) -> tuple[str, ...] | None:
    """Where ``target``, read from folder ``at``, lands inside the archive tree, following the
    archive's own symlinks like the kernel would; None if it leaves the tree."""
    if target.startswith("/"):
        return None
    parts = list(at)
    for part in target.split("/"):
        if part == "..":
            if not parts:
                return None
            parts.pop()
        elif part not in ("", "."):
            parts.append(part)
            key = tuple(parts)
            if key in links:
                if key not in done:
                    if depth > 40:
                        raise _Refused(f"symlink {'/'.join(key)!r} is part of a loop or a chain of more than 40 links")
                    done[key] = _resolve(links, done, key[:-1], links[key], depth + 1)
                resolved = done[key]
                if resolved is None:
                    return None
                parts = list(resolved)
    return tuple(parts)


def _write(e: _Entry, tree: _Tree, parts: tuple[str, ...], written: int, max_bytes: int) -> int:
    """Stream one member to a new file, counting bytes as written; the new running total."""
    fd = tree.file(parts)
    with os.fdopen(fd, "wb") as out, e.open() or io.BytesIO() as src:
        while chunk := src.read(CHUNK):
            check_cancelled()
            written += len(chunk)
            if written > max_bytes:
                raise _too_big(f"member {e.name!r}", max_bytes)
            out.write(chunk)
        out.flush()
        portable.fchmod(fd, tree.mode(e.mode))
        _set_mtime(fd, e.mtime)
    return written


def _set_mtime(target: int | Path, mtime: float | None) -> None:
    if mtime is not None:
        try:
            os.utime(target, (mtime, mtime))
        except (OverflowError, ValueError, OSError):
            pass  # an absurd timestamp is not worth failing the extraction for


def _too_big(member: str, max_bytes: int) -> _Refused:
    return _Refused(
        f"it expands past the limit of {max_bytes} bytes (at {member})",
        "nothing was extracted; if you trust this archive, raise the size limit",
    )


def link_escapes(links: dict[tuple[str, ...], str]) -> tuple[str, ...] | None:
    """The first of a tree's symbolic links (path parts -> target) that extraction would refuse
    because it leads outside the tree (through the tree's other links too), else None: what
    :mod:`tychoreg.pack` checks before it packs a folder, by the same rule."""
    done: dict[tuple[str, ...], tuple[str, ...] | None] = {}
    for parts, target in links.items():
        try:
            if _resolve(links, done, parts[:-1], target, 0) is None:
                return parts
        except _Refused:  # a loop, or a chain too long to follow
            return parts
    return None
