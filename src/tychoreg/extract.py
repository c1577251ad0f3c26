"""Safe, atomic unpacking of untrusted archives for ``tychoreg pull --extract DIR``.

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
  DIR holds its old tree or the whole new one, and a failure leaves nothing behind.

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
from contextlib import closing
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import IO, Any, NamedTuple

from .errors import OperationError

DEFAULT_MAX_BYTES = 4 << 30
MAX_MEMBERS = 1_000_000  # each member costs an inode and memory for the checks
STAMP_NAME = ".tycho-extract.json"
_CHUNK = 1 << 20
_HEADER_CAP = 16 << 20  # tarfile reads pax headers and long names whole into memory
_MAGIC = ((b"\x1f\x8b", "gz"), (b"BZh", "bz2"), (b"\xfd7zXZ\x00", "xz"),
          (b"\x28\xb5\x2f\xfd", "zst"), (b"PK\x03\x04", "zip"), (b"PK\x05\x06", "zip"))
_UNSAFE_HINT = "nothing was extracted; do not trust this archive, or ask its publisher to repack it"
_ZIP_KINDS = {0: "file", stat.S_IFREG: "file", stat.S_IFDIR: "dir", stat.S_IFLNK: "symlink",
              stat.S_IFCHR: "device file", stat.S_IFBLK: "device file", stat.S_IFIFO: "FIFO"}
_CORRUPT = (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, lzma.LZMAError,
            ValueError, NotImplementedError)


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


class _Entry(NamedTuple):
    name: str
    kind: str  # file, dir, symlink, hardlink, or a refused kind (device, FIFO, ...)
    mode: int
    mtime: float | None
    link: str  # symlink target, or the archive path a hard link repeats
    size: int  # as declared by the header
    open: Callable[[], IO[bytes] | None]


def read_stamp(dest: Path) -> Stamp | None:
    """The stamp in ``dest``, or None when it has none or it is unreadable."""
    try:
        data = json.loads((dest / STAMP_NAME).read_text("utf-8"))
        found = Stamp(data["package"], data["version"], data["sha256"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    ok = isinstance(found.package, str) and isinstance(found.version, str)
    return found if ok and isinstance(found.sha256, (str, type(None))) else None


def check_target(dest: Path) -> None:
    """Refuse a ``dest`` that is not a folder, or a non-empty folder tychoreg did not extract."""
    if dest.is_symlink() or (dest.exists() and not dest.is_dir()):
        raise OperationError(f"cannot extract into {dest}: it exists and is not a folder",
                             "choose another folder for --extract, or remove that one")
    if dest.is_dir() and not (dest / STAMP_NAME).exists() and any(dest.iterdir()):
        raise OperationError(f"cannot extract into {dest}: it holds files that tychoreg did not put there",
                             "choose a new or empty folder; tychoreg replaces the whole folder on each change")


def extract(archive: Path, dest: Path, stamp: Stamp, *, max_bytes: int = DEFAULT_MAX_BYTES,
            force: bool = False) -> bool:
    """Unpack ``archive`` into ``dest`` atomically; False if ``dest`` already holds ``stamp``
    (unless ``force``). A folder that holds files but no stamp was not made by us and is
    refused: replacing it would delete someone's work (think ``--extract ~``)."""
    dest = Path(os.path.abspath(dest))
    check_target(dest)
    if not force and read_stamp(dest) == stamp:
        return False
    entries = _open(archive)  # a format error is raised before anything is created
    missing = []
    for parent in dest.parents:
        if parent.exists():
            break
        missing.append(parent)
    tmp = dest.with_name(f".{dest.name}.{secrets.token_hex(6)}.extract")
    try:
        for folder in reversed(missing):
            folder.mkdir()
        tmp.mkdir()
        with closing(entries):
            _unpack(entries, tmp, max_bytes)
        (tmp / STAMP_NAME).write_text(json.dumps(asdict(stamp)), "utf-8")
        _swap(tmp, dest)
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
    return True


def _describe(exc: BaseException, archive: Path, dest: Path) -> BaseException:
    """The user-facing error for a failure inside ``extract``; bugs pass through unchanged."""
    errno_ = exc.errno if isinstance(exc, OSError) else None
    if isinstance(exc, _Refused):
        return UnsafeArchive(f"refusing to extract {archive}: {exc}", exc.hint)
    if errno_ in (errno.ENOSPC, errno.EDQUOT):
        return OperationError(f"no space left on the device while extracting into {dest}",
                              "free some disk space and pull again")
    if errno_ in (errno.EACCES, errno.EPERM, errno.EROFS):
        return OperationError(f"cannot extract into {dest}: permission denied",
                              "choose another folder or fix its permissions")
    if isinstance(exc, (OSError, *_CORRUPT)) or type(exc).__name__ == "ZstdError":
        return OperationError(f"cannot extract {archive}: {exc}",
                              "the archive is damaged or incomplete; pull it again")
    return exc


def _swap(tmp: Path, dest: Path) -> None:
    """Rename ``tmp`` to ``dest``; an old ``dest`` is moved aside first and removed after."""
    if not os.path.lexists(dest):
        os.rename(tmp, dest)
        return
    old = dest.with_name(f".{dest.name}.{secrets.token_hex(6)}.old")
    os.rename(dest, old)
    try:
        os.rename(tmp, dest)
    except BaseException:
        os.rename(old, dest)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _open(archive: Path) -> Generator[_Entry, None, None]:
    """Sniff the format from the first bytes (names lie) and return a lazy member reader."""
    try:
        with open(archive, "rb") as fh:
            head = fh.read(tarfile.BLOCKSIZE)
    except OSError as exc:
        raise OperationError(f"cannot read {archive}: {exc.strerror or exc}") from None
    kind = next((k for magic, k in _MAGIC if head.startswith(magic)), "")
    kind = kind or ("tar" if _is_tar(head) else "")
    if not kind:
        raise OperationError(f"{archive} is not a tar or zip archive",
                             "--extract unpacks tar (plain, gzip, bzip2, xz, zstd) and zip; "
                             "pull without --extract to keep the file as it is")
    if kind == "zst":
        try:
            import zstandard  # noqa: F401
        except ImportError:
            raise OperationError(f"{archive} is zstd-compressed and the zstandard package is "
                                 "missing", "pip install 'zstandard>=0.22'") from None
    return _zip_entries(archive) if kind == "zip" else _tar_entries(archive, kind)


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
    memory without bound, and artifacts have no use for them."""

    def _refuse_sparse(self, *args: Any) -> Any:
        raise _Refused(f"member {self.name!r} is a sparse file")

    _proc_sparse = _proc_gnusparse_00 = _proc_gnusparse_01 = _proc_gnusparse_10 = _refuse_sparse


class _Guard:
    """What tarfile reads through: refuses single reads past a cap (only headers are read whole),
    fills short reads, and keeps the last read, so a clean end (a zero block) is told from a
    truncated or damaged header, which tarfile silently takes for the end of the archive."""

    def __init__(self, stream: Any) -> None:
        self._f, self.last = stream, b""

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


def _decompress(kind: str, raw: IO[bytes]) -> Any:
    """A streaming reader of the tar inside ``raw``; zstandard is imported only when needed."""
    if kind == "zst":
        import zstandard
        return zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)
    openers: dict[str, Callable[[IO[bytes]], Any]] = {"gz": gzip.open, "bz2": bz2.open,
                                                      "xz": lzma.open}
    return openers[kind](raw) if kind in openers else raw


def _tar_entries(archive: Path, kind: str) -> Generator[_Entry, None, None]:
    with open(archive, "rb") as raw, _decompress(kind, raw) as stream:
        guard = _Guard(stream)
        tf: tarfile.TarFile = tarfile.open(  # type: ignore[call-overload]
            fileobj=guard, mode="r:", tarinfo=_TarInfo)
        with tf:
            for m in tf:
                what = ("file" if m.isreg() else "dir" if m.isdir() else "symlink" if m.issym()
                        else "hardlink" if m.islnk() else "device file" if m.ischr() or m.isblk()
                        else "FIFO" if m.isfifo() else f"tar entry of type {m.type!r}")
                yield _Entry(m.name, what, m.mode, m.mtime, m.linkname, m.size,
                             partial(tf.extractfile, m))
        if guard.last != bytes(tarfile.BLOCKSIZE):
            raise tarfile.ReadError("unexpected end of data (truncated archive)")


def _zip_entries(archive: Path) -> Generator[_Entry, None, None]:
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            if info.flag_bits & 0x1:
                raise OperationError(f"cannot extract {archive}: member {info.filename!r} is "
                                     "encrypted", "repack it without a password")
            mode, link = info.external_attr >> 16, ""
            fmt = stat.S_IFMT(mode)
            kind = "dir" if info.is_dir() else _ZIP_KINDS.get(fmt, "socket")
            if kind == "symlink":
                with zf.open(info) as fh:
                    link = fh.read(4097).decode("utf-8", "surrogateescape")
                if len(link) > 4096:
                    raise _Refused(f"symlink {info.filename!r} has an overlong target")
            try:
                mtime: float | None = time.mktime(info.date_time + (0, 0, -1))
            except (OverflowError, ValueError):
                mtime = None
            mode = mode & 0o7777 or (0o755 if kind == "dir" else 0o644)
            yield _Entry(info.filename, kind, mode, mtime, link, info.file_size,
                         partial(zf.open, info))


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


def _unpack(entries: Generator[_Entry, None, None], root: Path, max_bytes: int) -> None:
    """Check each member against the tree so far, then write it; symlinks and folder modes last."""
    kinds: dict[tuple[str, ...], str] = {(): "dir"}
    links: dict[tuple[str, ...], str] = {}
    dirs: dict[tuple[str, ...], tuple[int, float | None]] = {}
    written = 0
    for count, e in enumerate(entries, 1):
        member = f"member {e.name!r}"
        if count > MAX_MEMBERS:
            raise _Refused(f"it has more than {MAX_MEMBERS} members")
        if e.kind not in ("file", "dir", "symlink", "hardlink"):
            raise _Refused(f"{member} is a {e.kind}; only files, folders and links are extracted")
        parts = _norm(e.name)
        if parts is None:
            raise _Refused(f"{member} has an absolute path" if e.name.startswith("/")
                           else f"{member} climbs out of the folder with '..'")
        if parts[:1] == (STAMP_NAME,):
            raise _Refused(f"{member} uses the name reserved for tychoreg's extraction stamp")
        if not parts and e.kind != "dir":
            raise _Refused(f"{member} names the destination folder itself")
        for i in range(1, len(parts)):
            above = kinds.setdefault(parts[:i], "dir")
            if above != "dir":
                raise _Refused(f"{member} would be written through the {above} "
                               f"{'/'.join(parts[:i])!r}")
        if parts in kinds and not (kinds[parts] == e.kind == "dir"):
            raise _Refused(f"{member} clashes with an earlier member at the same path")
        path = root.joinpath(*parts)
        if e.kind == "hardlink":
            source = _norm(e.link)
            if source is None or kinds.get(source) != "file":
                raise _Refused(f"hard link {e.name!r} points at {e.link!r}, which is not an "
                               "earlier file in the archive")
            path.parent.mkdir(parents=True, exist_ok=True)
            os.link(root.joinpath(*source), path, follow_symlinks=False)
        elif e.kind == "file":
            if written + e.size > max_bytes:
                raise _too_big(member, max_bytes)
            path.parent.mkdir(parents=True, exist_ok=True)
            written = _write(e, path, written, max_bytes)
        elif e.kind == "dir":
            path.mkdir(parents=True, exist_ok=True)
            dirs[parts] = (e.mode, e.mtime)
        else:
            links[parts] = e.link
        kinds[parts] = "file" if e.kind == "hardlink" else e.kind
    done: dict[tuple[str, ...], Any] = {}  # resolutions shared, so chains cost linear time
    for parts, target in links.items():
        if _resolve(links, done, parts[:-1], target, 0) is None:
            raise _Refused(f"symlink {'/'.join(parts)!r} points outside the folder ({target!r})")
    for parts, target in links.items():
        root.joinpath(*parts).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(target, root.joinpath(*parts))
    for parts, (mode, mtime) in sorted(dirs.items(), key=lambda d: -len(d[0])):
        os.chmod(root.joinpath(*parts), mode & 0o777 | 0o700)  # we must be able to replace it
        _set_mtime(root.joinpath(*parts), mtime)


def _resolve(links: dict[tuple[str, ...], str], done: dict[tuple[str, ...], Any],
             at: tuple[str, ...], target: str, depth: int) -> tuple[str, ...] | None:
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
                        raise _Refused(f"symlink {'/'.join(key)!r} is part of a loop or a "
                                       "chain of more than 40 links")
                    done[key] = _resolve(links, done, key[:-1], links[key], depth + 1)
                if done[key] is None:
                    return None
                parts = list(done[key])
    return tuple(parts)


def _write(e: _Entry, path: Path, written: int, max_bytes: int) -> int:
    """Stream one member to a new file, counting bytes as written; the new running total."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "wb") as out, (e.open() or io.BytesIO()) as src:
        while chunk := src.read(_CHUNK):
            written += len(chunk)
            if written > max_bytes:
                raise _too_big(f"member {e.name!r}", max_bytes)
            out.write(chunk)
        out.flush()
        os.fchmod(fd, e.mode & 0o777)  # no setuid, setgid or sticky bit
        _set_mtime(fd, e.mtime)
    return written


def _set_mtime(target: int | Path, mtime: float | None) -> None:
    if mtime is not None:
        try:
            os.utime(target, (mtime, mtime))
        except (OverflowError, ValueError, OSError):
            pass  # an absurd timestamp is not worth failing the extraction for


def _too_big(member: str, max_bytes: int) -> _Refused:
    return _Refused(f"it expands past the limit of {max_bytes} bytes (at {member})",
                    "nothing was extracted; if you trust this archive, raise the size limit")
