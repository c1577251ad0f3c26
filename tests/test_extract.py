"""tychoreg.extract: round trips for every format, a corpus of hostile archives that must be
refused with nothing written anywhere, the atomic swap, and the stamp that skips re-extraction.
Archives are built here with tarfile/zipfile/zstandard; nothing is mocked."""

from __future__ import annotations

import bz2
import contextlib
import gzip
import io
import lzma
import os
import stat
import struct
import tarfile
import tracemalloc
import zipfile
import zlib
from pathlib import Path

import pytest
import zstandard

from tychoreg.errors import OperationError
from tychoreg.extract import STAMP_NAME, Stamp, UnsafeArchive, extract, read_stamp

V1 = Stamp("tools", "1.0.0", "ab" * 32)
V2 = Stamp("tools", "2.0.0", None)
MiB = 1 << 20


class Zeros(io.RawIOBase):
    """An endless source of zero bytes, so bombs are built without holding them in memory."""

    def readinto(self, b):  # type: ignore[no-untyped-def]
        b[:] = bytes(len(b))
        return len(b)

    def readable(self) -> bool:
        return True


def member(
    name: str,
    data: bytes = b"",
    *,
    mode: int = 0o644,
    type: bytes = tarfile.REGTYPE,
    link: str = "",
    size: int | None = None,
) -> tuple[tarfile.TarInfo, object]:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.linkname, info.mtime = type, mode, link, 1_600_000_000
    if type == tarfile.DIRTYPE and mode == 0o644:
        info.mode = 0o755
    info.size = len(data) if size is None else size
    return info, (Zeros() if size is not None else io.BytesIO(data))


def d(name: str, mode: int = 0o755) -> tuple[tarfile.TarInfo, object]:
    return member(name, type=tarfile.DIRTYPE, mode=mode)


def sym(name: str, target: str) -> tuple[tarfile.TarInfo, object]:
    return member(name, type=tarfile.SYMTYPE, link=target, mode=0o777)


def hard(name: str, target: str) -> tuple[tarfile.TarInfo, object]:
    return member(name, type=tarfile.LNKTYPE, link=target)


def tar_bytes(members: list[tuple[tarfile.TarInfo, object]], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        for info, data in members:
            tf.addfile(info, data if info.isreg() else None)  # type: ignore[arg-type]
    return buf.getvalue()


def compress(raw: bytes, codec: str) -> bytes:
    return {
        "tar": lambda b: b,
        "gz": gzip.compress,
        "bz2": bz2.compress,
        "xz": lzma.compress,
        "zst": lambda b: zstandard.ZstdCompressor().compress(b),
    }[codec](raw)


def write_tar(path: Path, members: list, codec: str = "tar", fmt: int = tarfile.PAX_FORMAT) -> Path:
    """Stream a (compressed) tar to ``path``; bombs never sit in memory."""
    with open(path, "wb") as fh:
        if codec == "zst":
            with (
                zstandard.ZstdCompressor().stream_writer(fh, closefd=False) as z,
                tarfile.open(fileobj=z, mode="w|", format=fmt) as tf,
            ):
                for info, data in members:
                    tf.addfile(info, data if info.isreg() else None)
        else:
            mode = "w|" if codec == "tar" else f"w|{codec}"
            with tarfile.open(fileobj=fh, mode=mode, format=fmt) as tf:  # type: ignore[call-overload]
                for info, data in members:
                    tf.addfile(info, data if info.isreg() else None)
    return path


def zinfo(name: str, mode: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, (2020, 1, 2, 3, 4, 6))
    info.create_system, info.external_attr = 3, mode << 16
    if not mode:  # as a DOS tool writes it: no Unix mode at all, just the archive bit
        info.create_system, info.external_attr = 0, 0x20
    info.compress_type = zipfile.ZIP_DEFLATED
    return info


def write_zip(path: Path, entries: list[tuple[str, int, bytes]]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, mode, data in entries:
            zf.writestr(zinfo(name, mode), data)
    return path


def snapshot(root: Path) -> dict[str, tuple]:
    """Everything under ``root``: kind, mode, bytes or link target; links are not followed."""
    out: dict[str, tuple] = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        key = str(path.relative_to(root))
        if stat.S_ISLNK(st.st_mode):
            out[key] = ("link", os.readlink(path))
        elif stat.S_ISDIR(st.st_mode):
            out[key] = ("dir", stat.S_IMODE(st.st_mode))
        else:
            out[key] = ("file", stat.S_IMODE(st.st_mode), path.read_bytes())
    return out


@pytest.fixture
def work(tmp_path: Path) -> Path:
    """A parent folder with a sibling that must never change; archives live elsewhere."""
    (tmp_path / "work" / "sibling").mkdir(parents=True)
    (tmp_path / "work" / "sibling" / "keep.txt").write_bytes(b"keep me\n")
    (tmp_path / "in").mkdir()
    return tmp_path / "work"


# -- round trips -----------------------------------------------------------------------------

TOOL = b"#!/bin/sh\necho tool\n"
README = b"read me\n" * 1000


def good_members() -> list:
    return [
        d("pkg"),
        d("pkg/bin"),
        member("pkg/bin/tool", TOOL, mode=0o4755),
        member("pkg/share/doc/readme.txt", README, mode=0o640),
        d("pkg/empty", mode=0o750),
        member("pkg/a/b/c/deep.txt", b"deep"),
        sym("pkg/bin/latest", "tool"),
        sym("pkg/docs", "share/doc"),
        hard("pkg/bin/tool2", "pkg/bin/tool"),
    ]


EXPECTED = {
    "pkg": ("dir", 0o755),
    "pkg/a": None,
    "pkg/a/b": None,
    "pkg/a/b/c": None,
    "pkg/a/b/c/deep.txt": ("file", 0o644, b"deep"),
    "pkg/bin": ("dir", 0o755),
    "pkg/bin/latest": ("link", "tool"),
    "pkg/bin/tool": ("file", 0o755, TOOL),
    "pkg/docs": ("link", "share/doc"),
    "pkg/empty": ("dir", 0o750),
    "pkg/share": None,
    "pkg/share/doc": None,
    "pkg/share/doc/readme.txt": ("file", 0o640, README),
}


@pytest.mark.parametrize("codec", ["tar", "gz", "bz2", "xz", "zst"])
def test_tar_round_trip(work: Path, codec: str) -> None:
    archive = work.parent / "in" / "artifact.bin"  # the name says nothing: content decides
    archive.write_bytes(compress(tar_bytes(good_members()), codec))
    dest = work / "out"
    assert extract(archive, dest, V1) is True
    got = snapshot(dest)
    assert got.pop(STAMP_NAME)[0] == "file"
    assert got.pop("pkg/bin/tool2") == ("file", 0o755, TOOL)
    assert os.stat(dest / "pkg/bin/tool2").st_ino == os.stat(dest / "pkg/bin/tool").st_ino
    assert {k: v for k, v in got.items() if EXPECTED[k] is not None} == {
        k: v for k, v in EXPECTED.items() if v is not None
    }
    assert set(got) == set(EXPECTED)
    assert os.stat(dest / "pkg/bin/tool").st_mtime == 1_600_000_000
    assert os.access(dest / "pkg/bin/tool", os.X_OK)
    assert read_stamp(dest) == V1
    assert sorted(p.name for p in work.iterdir()) == ["out", "sibling"]


def test_zip_round_trip(work: Path) -> None:
    archive = write_zip(
        work.parent / "in" / "artifact",
        [
            ("pkg/", stat.S_IFDIR | 0o755, b""),
            ("pkg/bin/tool", stat.S_IFREG | 0o4755, TOOL),
            ("pkg/bin/", stat.S_IFDIR | 0o755, b""),  # a folder entry after its contents
            ("pkg/share/doc/readme.txt", stat.S_IFREG | 0o640, README),
            ("pkg/empty/", stat.S_IFDIR | 0o750, b""),
            ("pkg/a/b/c/deep.txt", 0, b"deep"),
            ("pkg/bin/latest", stat.S_IFLNK | 0o777, b"tool"),
            ("pkg/docs", stat.S_IFLNK | 0o777, b"share/doc"),
        ],
    )
    dest = work / "out"
    assert extract(archive, dest, V2) is True
    got = snapshot(dest)
    assert got.pop(STAMP_NAME)[0] == "file"
    assert set(got) == set(EXPECTED)
    assert {k: v for k, v in got.items() if EXPECTED[k] is not None} == {
        k: v for k, v in EXPECTED.items() if v is not None
    }
    assert read_stamp(dest) == V2


def test_empty_tar_and_zip(work: Path) -> None:
    empty_tar = work.parent / "in" / "e.tar"
    empty_tar.write_bytes(tar_bytes([]))
    assert extract(empty_tar, work / "t", V1) is True
    assert sorted(p.name for p in (work / "t").iterdir()) == [STAMP_NAME]
    empty_zip = write_zip(work.parent / "in" / "e.zip", [])
    assert extract(empty_zip, work / "z", V1) is True
    assert sorted(p.name for p in (work / "z").iterdir()) == [STAMP_NAME]


def test_missing_parents_are_created(work: Path) -> None:
    archive = write_tar(work.parent / "in" / "a.tar", [member("f", b"x")])
    assert extract(archive, work / "x" / "y" / "out", V1) is True
    assert (work / "x" / "y" / "out" / "f").read_bytes() == b"x"


def test_gnu_format_long_names_and_dot_prefix(work: Path) -> None:
    long = "d" * 150 + "/" + "f" * 120
    archive = write_tar(
        work.parent / "in" / "a.tar",
        [d("./"), member("./" + long, b"long"), member("./x/../y", b"y")],
        fmt=tarfile.GNU_FORMAT,
    )
    assert extract(archive, work / "out", V1) is True
    assert (work / "out" / long).read_bytes() == b"long"
    assert (work / "out" / "y").read_bytes() == b"y"


def test_memory_stays_flat(work: Path) -> None:
    size = 48 * MiB
    tgz = write_tar(work.parent / "in" / "big.tgz", [member("big", size=size)], "gz")
    zst = write_tar(work.parent / "in" / "big.tzst", [member("big", size=size)], "zst")
    big_zip = work.parent / "in" / "big.zip"
    with zipfile.ZipFile(big_zip, "w") as zf, zf.open(zinfo("big", 0o644), "w") as out:
        for _ in range(size // MiB):
            out.write(bytes(MiB))
    for i, archive in enumerate([tgz, zst, big_zip]):
        tracemalloc.start()
        try:
            assert extract(archive, work / f"out{i}", V1) is True
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert (work / f"out{i}" / "big").stat().st_size == size
        assert peak < 8 * MiB, (archive.name, peak)


# -- refusals --------------------------------------------------------------------------------


def assert_refused(
    work: Path, archive: Path, needle: str, max_bytes: int | None = None, exc_type: type = UnsafeArchive
) -> OperationError:
    """The archive is refused with ``exc_type`` and nothing changed anywhere under tmp_path."""
    outside = work.parent
    before = snapshot(outside)
    kwargs: dict[str, int] = {} if max_bytes is None else {"max_bytes": max_bytes}
    with pytest.raises(OperationError) as info:
        extract(archive, work / "out", V2, **kwargs)
    assert type(info.value) is exc_type
    assert needle in str(info.value), str(info.value)
    assert "\n" not in str(info.value) and info.value.hint
    assert snapshot(outside) == before
    return info.value


def hostile_tars(tmp_path: Path) -> dict[str, tuple[list, str]]:
    abs_target = str(tmp_path / "abs-evil")
    return {
        "dotdot": ([member("../evil", b"x")], "'../evil' climbs out"),
        "abs": ([member(abs_target, b"x")], f"'{abs_target}' has an absolute path"),
        "abs-etc": ([member("/abs/evil", b"x")], "'/abs/evil' has an absolute path"),
        "inner-dotdot": ([member("a/../../evil", b"x")], "'a/../../evil' climbs out"),
        "symlink-etc": ([sym("etc", "/etc")], "'etc' points outside"),
        "symlink-up": ([sym("up", "../..")], "'up' points outside"),
        "symlink-abs-tmp": ([sym("t", str(tmp_path))], "'t' points outside"),
        "write-through-inner-symlink": (
            [d("sub"), sym("link", "sub"), member("link/evil", b"x")],
            "through the symlink 'link'",
        ),
        "write-through-escaping-symlink": (
            [sym("link", ".."), member("link/evil", b"x")],
            "through the symlink 'link'",
        ),
        "symlink-after-its-contents": ([member("link/evil", b"x"), sym("link", "..")], "clashes"),
        "chain-dot-first": ([sym("d", "."), sym("x", "d/../escape")], "'x' points outside"),
        "chain-dot-last": ([sym("x", "d/../escape"), sym("d", ".")], "'x' points outside"),
        "chain-three": ([d("sub"), sym("l1", "l2/.."), sym("l2", "l3/.."), sym("l3", "sub/..")], "'l1' points outside"),
        "symlink-loop": ([sym("a", "b/x"), sym("b", "a/y")], "loop"),
        "hardlink-etc-passwd": ([hard("pw", "/etc/passwd")], "hard link 'pw'"),
        "hardlink-up": ([hard("x", "../x")], "hard link 'x'"),
        "hardlink-missing": ([hard("x", "nothere")], "hard link 'x'"),
        "hardlink-to-dir": ([d("dir"), hard("x", "dir")], "hard link 'x'"),
        "hardlink-to-symlink": ([sym("s", "f"), member("f", b"f"), hard("x", "s")], "hard link 'x'"),
        "chardev": ([member("null", type=tarfile.CHRTYPE)], "'null' is a device file"),
        "blockdev": ([member("sda", type=tarfile.BLKTYPE)], "'sda' is a device file"),
        "fifo": ([member("pipe", type=tarfile.FIFOTYPE)], "'pipe' is a FIFO"),
        "duplicate-file": ([member("f", b"1"), member("f", b"2")], "clashes"),
        "file-then-dir": ([member("f", b"1"), d("f")], "clashes"),
        "file-as-parent": ([member("f", b"1"), member("f/g", b"2")], "through the file 'f'"),
        "stamp-name": ([member(STAMP_NAME, b"{}")], "reserved"),
        "root-as-file": ([member("./", b"x")], "destination folder itself"),
    }


@pytest.mark.parametrize("case", sorted(hostile_tars(Path("/x"))))
@pytest.mark.parametrize("codec", ["tar", "gz"])
def test_hostile_tar_refused(work: Path, case: str, codec: str) -> None:
    members, needle = hostile_tars(work.parent)[case]
    # a good member first: refusal must come before *anything* reaches the destination
    archive = write_tar(work.parent / "in" / "a", [member("good", b"g"), *members], codec)
    assert_refused(work, archive, needle)
    assert not (work.parent / "abs-evil").exists() and not Path("/abs/evil").exists()


def hostile_zips(tmp_path: Path) -> dict[str, tuple[list, str]]:
    link, reg = stat.S_IFLNK | 0o777, stat.S_IFREG | 0o644
    return {
        "dotdot": ([("../evil", reg, b"x")], "'../evil' climbs out"),
        "abs": ([(str(tmp_path / "abs-evil"), reg, b"x")], "abs-evil' has an absolute path"),
        "inner-dotdot": ([("a/../../evil", reg, b"x")], "'a/../../evil' climbs out"),
        "symlink-etc": ([("etc", link, b"/etc")], "'etc' points outside"),
        "symlink-up": ([("up", link, b"../..")], "'up' points outside"),
        "write-through-symlink": ([("l", link, b"."), ("l/evil", reg, b"x")], "symlink 'l'"),
        "chardev": ([("null", stat.S_IFCHR | 0o666, b"")], "device file"),
        "fifo": ([("p", stat.S_IFIFO | 0o666, b"")], "FIFO"),
        "duplicate": ([("f", reg, b"1"), ("f", reg, b"2")], "clashes"),
    }


@pytest.mark.parametrize("case", sorted(hostile_zips(Path("/x"))))
def test_hostile_zip_refused(work: Path, case: str) -> None:
    entries, needle = hostile_zips(work.parent)[case]
    with pytest.warns(UserWarning) if case == "duplicate" else contextlib.nullcontext():
        archive = write_zip(work.parent / "in" / "a.zip", [("good", 0o644, b"g"), *entries])
    assert_refused(work, archive, needle)
    assert not (work.parent / "abs-evil").exists()


def test_sparse_members_refused(work: Path) -> None:
    pax_sparse = member("sparse", b"")
    pax_sparse[0].pax_headers = {
        "GNU.sparse.major": "1",
        "GNU.sparse.minor": "0",
        "GNU.sparse.name": "sparse",
        "GNU.sparse.realsize": "1000000",
    }
    archive = write_tar(work.parent / "in" / "pax.tar", [pax_sparse])
    assert_refused(work, archive, "sparse file")
    gnu = write_tar(
        work.parent / "in" / "gnu.tar", [member("s", b"", type=tarfile.GNUTYPE_SPARSE)], fmt=tarfile.GNU_FORMAT
    )
    assert_refused(work, gnu, "sparse file")


def test_huge_tar_header_refused(work: Path) -> None:
    info, data = member("f", b"x")
    info.pax_headers = {"comment": "c" * (20 * MiB)}
    archive = write_tar(work.parent / "in" / "hdr.tgz", [(info, data)], "gz")
    assert_refused(work, archive, "header of")


# -- bombs -----------------------------------------------------------------------------------


@pytest.mark.parametrize("codec", ["gz", "zst", "bz2"])
def test_tar_bomb_refused(work: Path, codec: str) -> None:
    archive = write_tar(work.parent / "in" / "bomb", [member("zeros", size=64 * MiB)], codec)
    assert archive.stat().st_size < 256 * 1024
    assert_refused(work, archive, "limit of 1048576 bytes (at member 'zeros')", max_bytes=MiB)


def test_many_members_add_up_to_the_limit(work: Path) -> None:
    members = [member(f"f{i}", bytes(256 * 1024)) for i in range(4)]
    exact = write_tar(work.parent / "in" / "exact.tar", members)
    assert extract(exact, work / "ok", V1, max_bytes=MiB) is True
    assert_refused(work, exact, "at member 'f3'", max_bytes=MiB - 1)


def test_zip_bomb_honest_header_refused(work: Path) -> None:
    archive = work.parent / "in" / "bomb.zip"
    with zipfile.ZipFile(archive, "w") as zf, zf.open(zinfo("zeros", 0o644), "w") as out:
        for _ in range(64):
            out.write(bytes(MiB))
    assert archive.stat().st_size < 256 * 1024
    assert_refused(work, archive, "limit of 1048576 bytes (at member 'zeros')", max_bytes=MiB)


def lying_zip(path: Path, declared: int, forge_crc: bool) -> Path:
    """A zip whose headers say ``declared`` bytes while its data inflates to 64 MiB."""
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    data = comp.compress(bytes(64 * MiB)) + comp.flush()
    crc = zlib.crc32(bytes(declared)) if forge_crc else zlib.crc32(bytes(64 * MiB))
    name = b"zeros"
    local = (
        struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", 20, 0, 8, 0, 0x21, crc, len(data), declared, len(name), 0) + name
    )
    central = (
        struct.pack(
            "<4sHHHHHHIIIHHHHHII",
            b"PK\x01\x02",
            0x314,
            20,
            0,
            8,
            0,
            0x21,
            crc,
            len(data),
            declared,
            len(name),
            0,
            0,
            0,
            0,
            0o644 << 16,
            0,
        )
        + name
    )
    end = struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, 1, 1, len(central), len(local) + len(data), 0)
    path.write_bytes(local + data + central + end)
    return path


def test_zip_under_declared_size_is_corrupt(work: Path) -> None:
    archive = lying_zip(work.parent / "in" / "liar.zip", 1000, forge_crc=False)
    assert_refused(work, archive, "cannot extract", max_bytes=MiB, exc_type=OperationError)


def test_zip_under_declared_size_never_expands_past_its_claim(work: Path) -> None:
    archive = lying_zip(work.parent / "in" / "liar.zip", 1000, forge_crc=True)
    assert extract(archive, work / "out", V1, max_bytes=MiB) is True
    assert (work / "out" / "zeros").read_bytes() == bytes(1000)


def test_zip_over_declared_size_refused_before_reading(work: Path) -> None:
    archive = lying_zip(work.parent / "in" / "liar.zip", 3 << 30, forge_crc=False)
    assert_refused(work, archive, "at member 'zeros'", max_bytes=MiB)


# -- corrupt, not archives, bad destinations --------------------------------------------------


def test_not_an_archive(work: Path) -> None:
    for name, data in {"notes.tar.gz": b"just some text\n" * 100, "empty.zip": b""}.items():
        path = work.parent / "in" / name
        path.write_bytes(data)
        err = assert_refused(work, path, f"{path} is not a tar or zip archive", exc_type=OperationError)
        assert err.reason == "not-an-archive"  # the command line says what --extract unpacks


def test_compressed_non_tar_is_an_error(work: Path) -> None:
    path = work.parent / "in" / "blob.gz"
    path.write_bytes(gzip.compress(b"not a tar at all " * 100))
    assert_refused(work, path, f"cannot extract {path}", exc_type=OperationError)


@pytest.mark.parametrize("codec", ["tar", "gz", "xz", "zst"])
def test_truncated_tar_leaves_old_tree(work: Path, codec: str) -> None:
    good = write_tar(work.parent / "in" / "good.tar", [member("old.txt", b"old")])
    extract(good, work / "out", V1)
    raw = tar_bytes([member("a", os.urandom(5000)), member("b", os.urandom(5000))])
    # inside b's data, right before b's header, inside b's header, right before the end marker
    for cut in (512 * 20, 512 * 11, 512 * 11 + 100, 512 * 22):
        path = work.parent / "in" / f"cut{cut}"
        data = compress(raw[:cut], codec) if codec == "tar" else compress(raw, codec)[: cut // 4]
        path.write_bytes(data)
        assert_refused(work, path, f"cannot extract {path}", exc_type=OperationError)
    assert read_stamp(work / "out") == V1


def test_truncated_zip(work: Path) -> None:
    path = write_zip(work.parent / "in" / "a.zip", [("f", 0o644, os.urandom(5000))])
    path.write_bytes(path.read_bytes()[:3000])
    assert_refused(work, path, f"cannot extract {path}", exc_type=OperationError)


def test_dest_is_a_file(work: Path) -> None:
    archive = write_tar(work.parent / "in" / "a.tar", [member("f", b"x")])
    (work / "out").write_bytes(b"precious")
    assert_refused(work, archive, "is not a folder", exc_type=OperationError)
    assert (work / "out").read_bytes() == b"precious"


def test_dest_is_a_symlink(work: Path) -> None:
    archive = write_tar(work.parent / "in" / "a.tar", [member("f", b"x")])
    os.symlink("sibling", work / "out")
    assert_refused(work, archive, "is not a folder", exc_type=OperationError)


def test_failed_extraction_removes_created_parents(work: Path) -> None:
    archive = write_tar(work.parent / "in" / "a.tar", [member("../evil", b"x")])
    with pytest.raises(UnsafeArchive):
        extract(archive, work / "x" / "y" / "out", V1)
    assert sorted(p.name for p in work.iterdir()) == ["sibling"]


# -- atomic swap and stamps ------------------------------------------------------------------


def old_tree(work: Path) -> Path:
    archive = write_tar(
        work.parent / "in" / "v1.tgz",
        [member("old.txt", b"old"), member("bin/tool", TOOL, mode=0o755), sym("bin/latest", "tool"), d("empty")],
        "gz",
    )
    assert extract(archive, work / "out", V1) is True
    return archive


@pytest.mark.parametrize("bad", ["unsafe", "bomb", "corrupt"])
def test_bad_archive_over_existing_tree_keeps_it(work: Path, bad: str) -> None:
    old_tree(work)
    path = work.parent / "in" / "bad"
    if bad == "unsafe":
        write_tar(path, [member("new.txt", b"new"), sym("bin2", "/etc")], "gz")
    elif bad == "bomb":
        write_tar(path, [member("new.txt", b"new"), member("zeros", size=8 * MiB)], "gz")
    else:
        path.write_bytes(gzip.compress(tar_bytes([member("new.txt", b"new" * 9999)]))[:-40])
    before = snapshot(work)
    with pytest.raises(OperationError) as info:
        extract(path, work / "out", V2, max_bytes=MiB)
    assert type(info.value) is (OperationError if bad == "corrupt" else UnsafeArchive)
    assert snapshot(work) == before
    assert read_stamp(work / "out") == V1


def test_same_stamp_skips_and_touches_nothing(work: Path) -> None:
    archive = old_tree(work)
    (work / "out" / "local-change").write_bytes(b"mine")
    before = snapshot(work)
    other = write_tar(work.parent / "in" / "other.tar", [member("x", b"x")])
    assert extract(other, work / "out", V1) is False
    assert extract(archive, work / "out", V1) is False
    assert snapshot(work) == before


def test_new_version_replaces_the_whole_tree(work: Path) -> None:
    old_tree(work)
    (work / "out" / "local-change").write_bytes(b"mine")
    v2 = write_zip(work.parent / "in" / "v2.zip", [("bin/tool", 0o755, b"v2")])
    assert extract(v2, work / "out", V2) is True
    got = snapshot(work / "out")
    assert got.pop(STAMP_NAME)[0] == "file"
    assert got == {"bin": ("dir", got["bin"][1]), "bin/tool": ("file", 0o755, b"v2")}
    assert read_stamp(work / "out") == V2
    assert sorted(p.name for p in work.iterdir()) == ["out", "sibling"]


def test_same_version_other_sha_is_re_extracted(work: Path) -> None:
    old_tree(work)
    archive = write_tar(work.parent / "in" / "v1b.tar", [member("x", b"x")])
    assert extract(archive, work / "out", Stamp("tools", "1.0.0", "cd" * 32)) is True
    assert (work / "out" / "x").read_bytes() == b"x" and not (work / "out" / "old.txt").exists()


@pytest.mark.parametrize(
    "content", [b"{not json", b"[1, 2]", b'{"package": "tools"}', b'{"package": 1, "version": "1.0.0", "sha256": null}']
)
def test_corrupt_stamp_counts_as_none(work: Path, content: bytes) -> None:
    archive = old_tree(work)
    (work / "out" / STAMP_NAME).write_bytes(content)
    assert read_stamp(work / "out") is None
    assert extract(archive, work / "out", V1) is True
    assert read_stamp(work / "out") == V1


def test_read_stamp_of_missing_folder(work: Path) -> None:
    assert read_stamp(work / "nope") is None


# -- a shared parent folder: the staging folder, modes, header memory -------------------------


def test_staging_folder_is_private_and_links_in_it_are_never_followed(
    work: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Right after the staging folder is made, a racing writer plants ``a -> ~/.ssh`` in it; the
    archive then writes ``a/authorized_keys``. Nothing may land in the link's target."""
    ssh = work.parent / "home" / ".ssh"
    ssh.mkdir(parents=True, mode=0o700)
    key = b"ssh-ed25519 AAAA attacker\n"
    archive = write_tar(work.parent / "in" / "a.tgz", [d("a"), member("a/authorized_keys", key)], "gz")
    real_mkdir, seen = os.mkdir, {}

    def mkdir(path, mode=0o777, *, dir_fd=None):  # type: ignore[no-untyped-def]
        real_mkdir(path, mode, dir_fd=dir_fd)
        full = Path(os.readlink(f"/proc/self/fd/{dir_fd}"), path) if dir_fd is not None else Path(path)
        if full.name.endswith(".extract") and not seen:
            seen["mode"] = stat.S_IMODE(full.lstat().st_mode)
            os.symlink(ssh, full / "a")  # the attacker wins the race

    monkeypatch.setattr(os, "mkdir", mkdir)
    with pytest.raises(OperationError) as info:
        extract(archive, work / "out", V1)
    monkeypatch.undo()
    assert list(ssh.iterdir()) == []
    assert seen["mode"] == 0o700  # others could not have planted it: only a racing process of ours
    assert "changed it while extracting" in str(info.value) and info.value.hint
    assert sorted(p.name for p in work.iterdir()) == ["sibling"]  # nothing left behind


def test_a_link_swapped_in_for_a_made_folder_is_not_followed(work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same, later: a folder the extraction made is replaced by a link before its files."""
    ssh = work.parent / "home" / ".ssh"
    ssh.mkdir(parents=True, mode=0o700)
    archive = write_tar(
        work.parent / "in" / "a.tar", [d("a"), member("b", b"b"), member("a/authorized_keys", b"key\n")]
    )
    real_open = os.open

    def open_(path, flags, mode=0o777, *, dir_fd=None):  # type: ignore[no-untyped-def]
        if path == "b" and dir_fd is not None:  # between making a/ and writing into it
            staging = Path(os.readlink(f"/proc/self/fd/{dir_fd}"))
            os.rename(staging / "a", staging / "a.moved")
            os.symlink(ssh, staging / "a")
        return real_open(path, flags, mode, dir_fd=dir_fd)

    monkeypatch.setattr(os, "open", open_)
    with pytest.raises(OperationError):
        extract(archive, work / "out", V1)
    monkeypatch.undo()
    assert list(ssh.iterdir()) == []
    assert sorted(p.name for p in work.iterdir()) == ["sibling"]


@pytest.fixture
def umask_of():
    """Run with a given umask, restored afterwards."""
    old = os.umask(0o022)
    yield os.umask
    os.umask(old)


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o077])
@pytest.mark.parametrize("fmt", ["tar", "zip"])
def test_modes_from_the_archive_get_the_umask(work: Path, umask_of, mask: int, fmt: str) -> None:
    """0666 and 0777 in an archive, and a ``./`` entry of 0777, make nothing writable by others
    beyond what the umask allows (tar does the same for users)."""
    if fmt == "tar":
        archive = write_tar(
            work.parent / "in" / "a.tar",
            [
                d("./", 0o777),
                member("open.txt", b"x", mode=0o666),
                member("tool", b"#!", mode=0o777),
                d("shared", 0o777),
                member("shared/f", b"f", mode=0o646),
                member("implicit/f", b"i"),
                d("sticky", 0o1777),
            ],
        )
    else:
        archive = write_zip(
            work.parent / "in" / "a.zip",
            [
                ("./", stat.S_IFDIR | 0o777, b""),
                ("open.txt", stat.S_IFREG | 0o666, b"x"),
                ("tool", stat.S_IFREG | 0o777, b"#!"),
                ("shared/", stat.S_IFDIR | 0o777, b""),
                ("shared/f", stat.S_IFREG | 0o646, b"f"),
                ("implicit/f", stat.S_IFREG | 0o644, b"i"),
                ("sticky/", stat.S_IFDIR | 0o1777, b""),
            ],
        )
    umask_of(mask)
    assert extract(archive, work / "out", V1) is True
    out = work / "out"

    def mode(p: Path) -> int:
        return stat.S_IMODE(p.lstat().st_mode)

    assert mode(out) == 0o777 & ~mask | 0o700
    assert mode(out / "open.txt") == 0o666 & ~mask
    assert mode(out / "tool") == 0o777 & ~mask
    assert mode(out / "shared") == 0o777 & ~mask | 0o700
    assert mode(out / "shared" / "f") == 0o646 & ~mask
    assert mode(out / "implicit") == 0o777 & ~mask | 0o700
    assert mode(out / "sticky") == 0o777 & ~mask | 0o700
    assert mode(out / "implicit" / "f") == 0o644 & ~mask
    assert mode(out / STAMP_NAME) == 0o644 & ~mask
    assert read_stamp(out) == V1


def pax_bomb(path: Path, members: int, header: int) -> Path:
    out = []
    for i in range(members):
        info, data = member(f"f{i}", b"x")
        info.pax_headers = {"comment": "c" * header}
        out.append((info, data))
    return write_tar(path, out, "gz")


def test_pax_headers_do_not_pile_up_in_memory(work: Path) -> None:
    """12 members with 8 MiB pax comments: one member's headers in memory at a time, not all."""
    archive = pax_bomb(work.parent / "in" / "pax.tgz", 12, 8 * MiB)
    assert archive.stat().st_size < 256 * 1024
    tracemalloc.start()
    try:
        assert extract(archive, work / "out", V1) is True
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert (work / "out" / "f11").read_bytes() == b"x"
    assert peak < 48 * MiB, peak


def test_pax_headers_count_against_the_limit(work: Path) -> None:
    archive = pax_bomb(work.parent / "in" / "pax.tgz", 8, MiB)
    assert_refused(work, archive, "limit of 4194304 bytes (at member 'f3')", max_bytes=4 * MiB)
    assert extract(archive, work / "out", V1, max_bytes=16 * MiB) is True


def raw_tar(*blocks: bytes) -> bytes:
    return b"".join(blocks) + bytes(2 * tarfile.BLOCKSIZE)


def pax_header(headers: dict[str, str], kind: bytes) -> bytes:
    return tarfile.TarInfo._create_pax_generic_header(headers, kind, "utf-8")  # type: ignore[attr-defined]


def test_global_pax_headers_are_capped(work: Path) -> None:
    """Global headers stay in memory to the end: three of 512 KiB with distinct keys is over."""
    small = tarfile.TarInfo("f")
    small.size = 0
    blocks = []
    for i in range(3):
        blocks += [pax_header({f"k{i}": "v" * (512 * 1024)}, tarfile.XGLTYPE), small.tobuf(tarfile.USTAR_FORMAT)]
        small = tarfile.TarInfo(f"f{i}")
        small.size = 0
    path = work.parent / "in" / "g.tar"
    path.write_bytes(raw_tar(*blocks))
    assert_refused(work, path, "global pax headers")


def test_chained_extended_headers_for_one_member_are_capped(work: Path) -> None:
    """Several pax headers in a row all stay in memory until their member is read."""
    info = tarfile.TarInfo("f")
    info.size = 0
    blocks = [pax_header({f"k{i}": "v" * (6 * MiB)}, tarfile.XHDTYPE) for i in range(3)]
    path = work.parent / "in" / "x.tar"
    path.write_bytes(raw_tar(*blocks, info.tobuf(tarfile.USTAR_FORMAT)))
    assert_refused(work, path, "header of")


def test_fifo_as_archive_or_stamp_does_not_hang(work: Path) -> None:
    fifo = work.parent / "in" / "fifo"
    os.mkfifo(fifo)

    def refused() -> str:
        try:
            extract(fifo, work / "out", V1)
        except OperationError as exc:
            return str(exc)
        return "extracted"

    assert without_hanging(refused, [fifo]).startswith(f"cannot read {fifo}")
    assert sorted(p.name for p in work.iterdir()) == ["sibling"]
    old_tree(work)
    (work / "out" / STAMP_NAME).unlink()
    os.mkfifo(work / "out" / STAMP_NAME)
    assert without_hanging(lambda: read_stamp(work / "out"), [work / "out" / STAMP_NAME]) is None


def test_stamp_that_others_can_write_is_not_believed(work: Path) -> None:
    archive = old_tree(work)
    assert extract(archive, work / "out", V1) is False
    (work / "out" / STAMP_NAME).chmod(0o666)
    assert read_stamp(work / "out") is None
    assert extract(archive, work / "out", V1) is True  # extracted again, with a stamp of ours
    assert read_stamp(work / "out") == V1


def test_extracting_from_an_open_file(work: Path) -> None:
    """The caller's verified file is read, whatever its name holds by then."""
    good = write_tar(work.parent / "in" / "good.tar", [member("genuine", b"yes")])
    with open(good, "rb") as fh:
        write_tar(work.parent / "in" / "good.tar.new", [member("evil", b"no")]).replace(good)
        assert extract(good, work / "out", V1, source=fh) is True
    assert (work / "out" / "genuine").read_bytes() == b"yes" and not (work / "out" / "evil").exists()


def without_hanging(call, fifos, seconds: float = 10.0):  # type: ignore[no-untyped-def]
    """``call()``'s result, failing (instead of hanging the suite) if it blocks on one of
    ``fifos``: after ``seconds`` their write ends are opened, which releases a blocked reader."""
    import threading

    outcome: list = []
    worker = threading.Thread(target=lambda: outcome.append(call()), daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        for fifo in fifos:
            with contextlib.suppress(OSError):
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        worker.join(seconds)
        pytest.fail(f"blocked on a FIFO for {seconds} s")
    assert outcome, "the call raised"
    return outcome[0]
