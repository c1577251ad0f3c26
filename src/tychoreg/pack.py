"""Packing a folder into an archive reproducibly (``push PKG VERSION DIR``).

The same tree always gives the same bytes, so a rebuilt tree pushed again with ``skip_existing``
is recognised as the version already there, and two machines that build the same tree push the
same archive. What a tree is, for this purpose: the relative paths of its files, folders and
symbolic links, each file's bytes and whether it is executable, each link's target. Nothing
else goes in: members are sorted by name (byte order, each folder before what it holds), every
time is :data:`EPOCH`, owner and group are 0 with no names, modes are 0644 or 0755 (files, by
their owner's execute bit), 0755 (folders) and 0777 (links), and there are no extended
attributes, ACLs or pax time records. Compression is fixed too (zlib level 6 with a gzip header
naming no file and no time, zstd level 3 in one thread, zip deflate level 6), so the bytes are
the same wherever the compressor is the same: Python's zlib (usually the system's; its output
has not changed in years, but a Python built against zlib-ng compresses differently) or the
libzstd that the zstandard package bundles (new zstd releases sometimes compress differently).
The archive's bytes, not the tree, are what ``skip_existing`` compares.

Archives are made for delta transfers: the compressed stream restarts (``Z_FULL_FLUSH`` for
gzip, a new frame for zstd) before every member of at least 64 KiB (zstd: 1 MiB), before any
member once that much was written since the last restart, and every 1 MiB (zstd: 8 MiB) after
such a start (:data:`RESTARTS`). What follows a restart depends only on the bytes after it, so a
large file that did not change between two versions gives the same compressed bytes in both, wherever
it lies in the archive. Zip compresses each member on its own anyway. (gzip's ``--rsyncable``
finds its restart points with a rolling checksum over every byte, which Python's zlib cannot do
at a useful speed; restarts at members catch the common case of files that did not change.)

What a tree may not hold, each refused before anything is uploaded (exit 2): special files
(FIFOs, sockets, devices: reading a FIFO would hang, and no archive format carries them safely),
symbolic links that are absolute or point outside the tree (extraction refuses them, see
:mod:`tychoreg.extract`), unreadable files, and the registry itself (a file registry inside the
folder, or the folder inside it). Hard links are packed as separate files. A file that changes
while it is read (size, time or identity) fails the push (exit 1): the archive would hold a
mix. The archive is written to a private temporary folder that the walk never enters. A folder
that ``pull --extract`` filled packs without its ``.tycho-extract.json`` stamp (tychoreg's own
note, which extraction refuses as a member): what was pulled packs to the bytes it came from.
"""

from __future__ import annotations

import errno
import os
import stat
import struct
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any, BinaryIO, Literal, cast

from .errors import OperationError, UsageError
from .extract import STAMP_NAME, link_escapes
from .integrity import CHUNK
from .localfs import NEW_FLAGS, READ_FLAGS, private_dir
from .names import clip
from .portable import DIR_FDS

Format = Literal["tar.gz", "tar.zst", "zip"]
#: Each format and the file name endings that say it (the package's file name must end in one).
SUFFIXES: dict[Format, tuple[str, ...]] = {
    "tar.gz": (".tar.gz", ".tgz"),
    "tar.zst": (".tar.zst", ".tzst"),
    "zip": (".zip",),
}
DEFAULT_FORMAT: Format = "tar.gz"
#: Every member's time: 1980-01-01 00:00:00 UTC, the earliest a zip can record, so all formats agree.
EPOCH = 315532800
GZIP_LEVEL = 6
ZSTD_LEVEL = 3
#: Per compressed format: members at least this large start a fresh compressed run, as does
#: any member once this much was written since the last restart; and within a run, a restart
#: every so many bytes (see the module's docstring). zstd restarts less often: its matches reach
#: megabytes back, and each restart costs it more (measured: +2.5% on a tree of 1,290 source
#: files, where gzip's 64 KiB / 1 MiB cost +2.8%; under 1% on a tree of shared libraries).
RESTARTS: dict[Format, tuple[int, int]] = {"tar.gz": (64 << 10, 1 << 20), "tar.zst": (1 << 20, 8 << 20)}
_FILE_MODE, _EXEC_MODE, _DIR_MODE, _LINK_MODE = 0o644, 0o755, 0o755, 0o777
_MAX_LINK = 4096

Kind = Literal["file", "dir", "symlink"]


@dataclass(frozen=True)
class Packed:
    """What a folder was packed into: the format, how many members of each kind, the bytes of
    the files (uncompressed) and of the archive."""

    folder: Path
    format: Format
    files: int
    folders: int
    links: int
    content_bytes: int
    archive_bytes: int


@dataclass(frozen=True)
class _Member:
    name: str  # relative, "/"-separated
    path: Path
    kind: Kind
    mode: int
    size: int
    link: str = ""
    stat: os.stat_result | None = None


def format_for(localname: str, requested: str | None, package: str) -> Format:
    """The format to pack for a package whose pulls are saved as ``localname``: the one asked
    for, else the one its name ends in, else :data:`DEFAULT_FORMAT`; the name must end in the
    format's suffix, so that what a pull saves is what it says it is. :class:`UsageError`
    otherwise."""
    named = suffix_format(localname)
    if requested is not None and requested not in SUFFIXES:
        raise UsageError(
            f"unknown archive format {requested!r}",
            f"use one of: {', '.join(SUFFIXES)}",
            reason="bad-format",
            formats=list(SUFFIXES),
        )
    fmt: Format = requested if requested is not None else named or DEFAULT_FORMAT
    if named != fmt:
        raise UsageError(
            f"package {package} saves its pulls as {localname}, which does not end in "
            f"{' or '.join(SUFFIXES[fmt])}: a folder packed as {fmt} would be saved under a name "
            "that says otherwise",
            "pack it in the format its file name says, or push it to a package whose file name "
            f"ends in {SUFFIXES[fmt][0]}",
            reason="folder-format",
            package=package,
            localname=localname,
            format=fmt,
            named=named,
        )
    return fmt


def suffix_format(name: str) -> Format | None:
    """The archive format a file name ends in, if any (case does not matter)."""
    lower = name.lower()
    return next((fmt for fmt, ends in SUFFIXES.items() if lower.endswith(ends)), None)


def check_folder(folder: Path, registry_root: Path | None) -> Path:
    """The folder to pack, resolved; :class:`UsageError` if it holds the registry or lies in it."""
    real = Path(os.path.realpath(folder))
    if registry_root is not None:
        root = Path(os.path.realpath(registry_root))
        if real == root or root.is_relative_to(real) or real.is_relative_to(root):
            where = "is" if real == root else "holds" if root.is_relative_to(real) else "lies inside"
            raise UsageError(
                f"cannot pack {clip(folder)}: it {where} the registry folder {clip(registry_root)}",
                "push a folder outside the registry",
                reason="cannot-pack",
            )
    return real


@contextmanager
def packed(folder: Path, fmt: Format, registry_root: Path | None = None) -> Iterator[tuple[Path, Packed]]:
    """Pack ``folder`` into a private temporary file (in a fresh 0700 folder of the system's
    temporary folder, removed afterwards) and yield its path with what went in. The registry
    folder (``registry_root``) may neither be nor hold nor lie inside ``folder``."""
    real = check_folder(folder, registry_root)
    name = f"archive.{fmt}"
    if not DIR_FDS:  # Windows: a folder of the user's own temporary folder, private by its ACL
        with tempfile.TemporaryDirectory(prefix=".tychoreg-pack.") as plain:
            here = os.stat(plain)
            with open(Path(plain) / name, "w+b") as out:
                done = pack(real, out, fmt, skip=(here.st_dev, here.st_ino))
            yield Path(plain) / name, replace(done, folder=folder)
        return
    with private_dir(Path(tempfile.gettempdir()), ".tychoreg-pack.", "") as tmp:
        here = os.fstat(tmp.fd)
        with os.fdopen(os.open(name, NEW_FLAGS, 0o600, dir_fd=tmp.fd), "w+b") as out:
            done = pack(real, out, fmt, skip=(here.st_dev, here.st_ino))
        yield tmp.path / name, replace(done, folder=folder)


def pack(folder: Path, out: BinaryIO, fmt: Format, *, skip: tuple[int, int] | None = None) -> Packed:
    """Write ``folder``'s tree to ``out`` as ``fmt``; ``skip`` is a folder (device, inode) the
    walk never enters (the one the archive is written in)."""
    members = list(_walk(folder, skip))
    _check_links(members, folder)
    if fmt == "zip":
        _zip(members, out)
    else:
        with _Compressor(out, fmt) as stream:
            _tar(members, stream)
    return Packed(
        folder,
        fmt,
        files=sum(m.kind == "file" for m in members),
        folders=sum(m.kind == "dir" for m in members),
        links=sum(m.kind == "symlink" for m in members),
        content_bytes=sum(m.size for m in members if m.kind == "file"),
        archive_bytes=out.tell(),
    )


# -- the walk ------------------------------------------------------------------------------------
def _walk(root: Path, skip: tuple[int, int] | None) -> Iterator[_Member]:
    """Every member under ``root`` depth-first, each folder's entries sorted by their names'
    bytes, each folder right before what it holds (as ``tar --sort=name`` lists a tree)."""
    stack = list(reversed(_children(root, "", skip)))
    while stack:
        path, name, st = stack.pop()
        if stat.S_ISDIR(st.st_mode):
            yield _Member(name, path, "dir", _DIR_MODE, 0)
            stack.extend(reversed(_children(path, f"{name}/", skip)))
        elif stat.S_ISREG(st.st_mode):
            mode = _EXEC_MODE if st.st_mode & stat.S_IXUSR else _FILE_MODE
            yield _Member(name, path, "file", mode, st.st_size, stat=st)
        elif stat.S_ISLNK(st.st_mode):
            try:
                target = os.readlink(path)
            except FileNotFoundError:
                raise _changed(path) from None
            except OSError as exc:
                raise _unreadable(path, exc) from None
            yield _Member(name, path, "symlink", _LINK_MODE, 0, link=target)
        else:
            raise UsageError(
                f"cannot pack {clip(path)}: it is a {_special(st.st_mode)}; only files, folders "
                "and symbolic links go into an archive",
                "remove it from the folder, or push a folder without it",
                reason="cannot-pack",
            )


def _children(folder: Path, prefix: str, skip: tuple[int, int] | None) -> list[tuple[Path, str, os.stat_result]]:
    """A folder's entries (path, member name, lstat), sorted by name bytes; ``skip`` left out."""
    found = []
    try:
        with os.scandir(folder) as it:
            entries = sorted(it, key=lambda e: os.fsencode(e.name))
    except FileNotFoundError:
        raise _changed(folder) from None
    except OSError as exc:
        raise _unreadable(folder, exc) from None
    for entry in entries:
        path = Path(entry.path)
        try:
            st = entry.stat(follow_symlinks=False)
        except FileNotFoundError:
            raise _changed(path) from None
        except OSError as exc:
            raise _unreadable(path, exc) from None
        if skip is not None and stat.S_ISDIR(st.st_mode) and (st.st_dev, st.st_ino) == skip:
            continue
        if not prefix and entry.name == STAMP_NAME:
            continue  # tychoreg's note of what it extracted here, not part of the tree
        found.append((path, f"{prefix}{entry.name}", st))
    return found


def _special(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "FIFO"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device file"
    return "special file"


def _check_links(members: list[_Member], root: Path) -> None:
    """Every link must stay inside the tree as extraction sees it (relative, never climbing out,
    also through the tree's other links); else extraction of the archive would be refused."""
    links = {tuple(m.name.split("/")): m.link for m in members if m.kind == "symlink"}
    if not links:
        return
    for m in members:
        if m.kind != "symlink":
            continue
        if len(m.link) > _MAX_LINK or "\0" in m.link:
            raise _bad_link(m, "its target is not a usable path")
        if m.link.startswith("/") or os.path.isabs(m.link):
            raise _bad_link(m, "it is absolute (make it relative to where it lies)")
    bad = link_escapes(links)
    if bad is not None:
        member = next(m for m in members if tuple(m.name.split("/")) == bad)
        raise _bad_link(member, f"it points outside {clip(root)}")


def _bad_link(m: _Member, why: str) -> UsageError:
    return UsageError(
        f"cannot pack the symbolic link {clip(m.path)} -> {clip(m.link, 100)}: {why}",
        "extraction refuses links that leave the folder; replace it with the file it points to, or remove it",
        reason="cannot-pack",
    )


def _unreadable(path: Path, exc: OSError) -> UsageError:
    return UsageError(
        f"cannot pack {clip(path)}: {exc.strerror or exc}",
        "make it readable, or push a folder without it",
        reason="cannot-pack",
    )


def _changed(path: Path) -> OperationError:
    return OperationError(
        f"{clip(path)} changed while it was being packed; nothing was pushed",
        "push again once whatever writes to the folder has finished",
        reason="changed-while-packing",
    )


class _Content:
    """One file's bytes, read from a descriptor opened without following a link or blocking,
    that must be the file the walk saw, and must not change while it is read."""

    def __init__(self, member: _Member) -> None:
        self.member = member
        seen = member.stat
        assert seen is not None
        try:
            self.fd = os.open(member.path, READ_FLAGS)
        except FileNotFoundError:
            raise _changed(member.path) from None
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENXIO):  # swapped for a link or a FIFO meanwhile
                raise _changed(member.path) from None
            raise _unreadable(member.path, exc) from None
        st = os.fstat(self.fd)
        if not stat.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino, st.st_size) != (
            seen.st_dev,
            seen.st_ino,
            seen.st_size,
        ):
            os.close(self.fd)
            raise _changed(member.path)
        self.before = (st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        self.left = member.size

    def read(self, n: int = -1) -> bytes:
        n = self.left if n < 0 else min(n, self.left)
        if n <= 0:
            return b""
        try:
            data = os.read(self.fd, min(n, CHUNK))
        except OSError as exc:
            raise _unreadable(self.member.path, exc) from None
        if not data:
            raise _changed(self.member.path)  # shorter than it was: someone is writing it
        self.left -= len(data)
        return data

    def close(self) -> None:
        try:
            st = os.fstat(self.fd)
            if self.left or (st.st_size, st.st_mtime_ns, st.st_ctime_ns) != self.before:
                raise _changed(self.member.path)
        finally:
            os.close(self.fd)

    def __enter__(self) -> _Content:
        return self

    def __exit__(self, kind: object, *rest: object) -> None:
        if kind is None:
            self.close()
        else:
            os.close(self.fd)


# -- compression -------------------------------------------------------------------------------
class _Compressor:
    """What tarfile writes into: the compressed stream, with restart points (see the module's
    docstring). ``tell`` is the uncompressed offset, as tarfile expects of its file."""

    def __init__(self, out: BinaryIO, fmt: Format) -> None:
        self.out, self.fmt = out, fmt
        self.offset = 0  # uncompressed bytes so far
        self._last_restart = 0
        self._next_cut: int | None = None
        self._crc = 0
        self._zstd: Any = None
        self._member_size, self._every = RESTARTS[fmt]
        if fmt == "tar.gz":
            # gzip header: deflate, no flags (no name, no comment), time 0, no extra flags, OS unknown.
            out.write(b"\x1f\x8b\x08\x00" + struct.pack("<I", 0) + b"\x00\xff")
            self._deflate = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, -zlib.MAX_WBITS, 8, zlib.Z_DEFAULT_STRATEGY)
        else:
            self._zstd = zstd_compressor()
            self._frame = self._zstd.compressobj()

    def __enter__(self) -> _Compressor:
        return self

    def __exit__(self, kind: object, *rest: object) -> None:
        if kind is None:
            self._finish()

    def tell(self) -> int:
        return self.offset

    def member(self, size: int) -> None:
        """A member of ``size`` bytes starts: restart here if it is large, or if enough was
        written since the last restart; then cut at regular distances from here."""
        if size >= self._member_size or self.offset - self._last_restart >= self._member_size:
            self._restart()
            self._next_cut = self.offset + self._every

    def write(self, data: bytes) -> int:
        view = memoryview(data)
        while view:
            if self._next_cut is not None and self.offset + len(view) > self._next_cut:
                head = self._next_cut - self.offset
                self._feed(view[:head])
                view = view[head:]
                self._restart()
                self._next_cut = self.offset + self._every
            else:
                self._feed(view)
                break
        return len(data)

    def _feed(self, data: memoryview) -> None:
        if not data:
            return
        self.offset += len(data)
        if self._zstd is None:
            self._crc = zlib.crc32(data, self._crc)
            self.out.write(self._deflate.compress(data))
        else:
            self.out.write(self._frame.compress(data))

    def _restart(self) -> None:
        if self.offset == self._last_restart:
            return
        self._last_restart = self.offset
        if self._zstd is None:
            self.out.write(self._deflate.flush(zlib.Z_FULL_FLUSH))
        else:
            import zstandard  # noqa: PLC0415 - present: zstd_compressor() imported it

            self.out.write(self._frame.flush(zstandard.COMPRESSOBJ_FLUSH_FINISH))
            self._frame = self._zstd.compressobj()

    def _finish(self) -> None:
        if self._zstd is None:
            self.out.write(self._deflate.flush(zlib.Z_FINISH))
            self.out.write(struct.pack("<II", self._crc, self.offset & 0xFFFFFFFF))
        else:
            import zstandard  # noqa: PLC0415 - present: zstd_compressor() imported it

            self.out.write(self._frame.flush(zstandard.COMPRESSOBJ_FLUSH_FINISH))


def zstd_compressor() -> Any:
    """A zstd compressor at :data:`ZSTD_LEVEL` with checksums, one thread (the same bytes on
    every machine); :class:`OperationError` naming the extra when zstandard is not installed."""
    try:
        import zstandard  # noqa: PLC0415 - zstandard: ~1 ms, and an optional extra; only for .tar.zst
    except ImportError:
        raise OperationError(
            "packing .tar.zst needs the zstandard package, which is not installed",
            "install tycho-station with its zstd extra, or pack as tar.gz or zip",
            reason="zstd-missing",
        ) from None
    return zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_checksum=True, threads=0)


def _tar(members: list[_Member], stream: _Compressor) -> None:
    # cast: tarfile writes, tells and reads its file's name; typeshed's protocol asks for more.
    with tarfile.open(fileobj=cast("IO[bytes]", stream), mode="w", format=tarfile.PAX_FORMAT) as tf:
        for m in members:
            info = tarfile.TarInfo(m.name)
            info.mtime, info.mode, info.uid, info.gid, info.uname, info.gname = EPOCH, m.mode, 0, 0, "", ""
            stream.member(m.size)
            if m.kind == "dir":
                info.type = tarfile.DIRTYPE
                tf.addfile(info)
            elif m.kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, m.link
                tf.addfile(info)
            else:
                info.size = m.size
                with _Content(m) as content:
                    tf.addfile(info, cast("IO[bytes]", content))


def _zip(members: list[_Member], out: BinaryIO) -> None:
    with zipfile.ZipFile(out, "w", allowZip64=True) as zf:
        for m in members:
            info = zipfile.ZipInfo(m.name + ("/" if m.kind == "dir" else ""), date_time=(1980, 1, 1, 0, 0, 0))
            info.create_system = 3  # unix: the modes below are read from external_attr
            if m.kind == "dir":
                info.external_attr = (stat.S_IFDIR | m.mode) << 16 | 0x10
                zf.writestr(info, b"")
            elif m.kind == "symlink":
                info.external_attr = (stat.S_IFLNK | m.mode) << 16
                zf.writestr(info, os.fsencode(m.link))
            else:
                info.external_attr = (stat.S_IFREG | m.mode) << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                info.file_size = m.size
                with _Content(m) as content, zf.open(info, "w", force_zip64=m.size >= 1 << 31) as dest:
                    while chunk := content.read(CHUNK):
                        dest.write(chunk)
