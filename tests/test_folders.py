"""push PKG VERSION DIR: folders packed reproducibly, pulled back with --extract, on both backends;
what a tree may not hold; the registry and the temporary folder never packed; files that change
while they are read; restart points that let an unchanged file compress the same in two
versions. Trees are real folders; archives are checked with the system's tar, unzip and zstd."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import socket
import stat
import subprocess
import tarfile
import zipfile
from pathlib import Path

import pytest

from conftest import Workspace
from tychoreg import pack
from tychoreg.errors import OperationError, UsageError

FORMATS = {"tar.gz": "site.tar.gz", "tar.zst": "site.tar.zst", "zip": "site.zip"}
LONG = "a-rather-long-folder-name-" * 5  # past ustar's 100-character name field


def make_tree(root: Path, *, salt: bytes = b"") -> Path:
    """A tree with what builds produce: nested folders, an empty one, an executable, a link
    inside, a non-ASCII and a long name, a hard-linked pair, a larger compressible file."""
    (root / "bin").mkdir(parents=True)
    (root / "lib" / "deep" / LONG).mkdir(parents=True)
    (root / "empty").mkdir()
    (root / "README.md").write_bytes(b"# site\n" + salt)
    tool = root / "bin" / "tool"
    tool.write_bytes(b"#!/bin/sh\necho tool\n")
    tool.chmod(0o755)
    (root / "lib" / "deep" / LONG / "data.txt").write_bytes(b"".join(b"line %d\n" % i for i in range(40000)))
    (root / "lib" / "caf\u00e9.txt").write_text("caf\u00e9\n", encoding="utf-8")
    (root / "lib" / "twin-a").write_bytes(b"same inode\n")
    os.link(root / "lib" / "twin-a", root / "lib" / "twin-b")
    os.symlink("../README.md", root / "bin" / "readme")
    os.symlink("deep", root / "lib" / "alias")
    return root


def snapshot(root: Path) -> dict[str, tuple[str, object]]:
    """What a tree holds as packing defines it: per path, a file's bytes and execute bit, a
    link's target, or a folder."""
    found: dict[str, tuple[str, object]] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if rel == ".tycho-extract.json":
            continue
        if path.is_symlink():
            found[rel] = ("link", os.readlink(path))
        elif path.is_dir():
            found[rel] = ("dir", None)
        else:
            found[rel] = ("file", (path.read_bytes(), bool(path.stat().st_mode & stat.S_IXUSR)))
    return found


def stored_sha(ws: Workspace, package: str, version: str) -> str:
    return hashlib.sha256(ws.read_stored(f"{package}/tycho_{version}.pkg")).hexdigest()


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_folder_round_trip(ws: Workspace, fmt: str) -> None:
    tree = make_tree(ws.root / "build")
    ws.ok("init", "site", FORMATS[fmt])
    out = ws.ok("push", "site", "1.0", "build", "--promote-latest").out
    assert f"Packed build as {fmt}" in out
    ws.ok("pull", "site", "--extract", "unpacked")
    assert snapshot(ws.root / "unpacked") == snapshot(tree)
    unpacked = ws.root / "unpacked" / "lib"
    assert os.stat(unpacked / "twin-a").st_ino != os.stat(unpacked / "twin-b").st_ino  # packed as two files
    # Standard tools read it too (multi-frame zstd, full-flush gzip).
    archive = ws.root / "pulled.pkg"
    ws.ok("pull", "site", "--outfile", str(archive))
    other = ws.root / "by-tools"
    other.mkdir()
    if fmt == "zip":
        subprocess.run(["unzip", "-q", str(archive), "-d", str(other)], check=True)
        names = zipfile.ZipFile(archive).namelist()
    else:
        flag = "-xzf" if fmt == "tar.gz" else "--zstd"
        subprocess.run(
            ["tar", flag, *(["-xf"] if fmt == "tar.zst" else []), str(archive), "-C", str(other)], check=True
        )
        with tarfile.open(fileobj=io.BytesIO(_decompressed(archive, fmt))) as tf:
            names = [n.rstrip("/") for n in tf.getnames()]
    assert snapshot(other) == snapshot(tree)
    assert names[:3] == ["README.md", "bin", "bin/readme"] or names[:3] == ["README.md", "bin/", "bin/readme"]


def _decompressed(archive: Path, fmt: str) -> bytes:
    if fmt == "tar.gz":
        import gzip

        return gzip.decompress(archive.read_bytes())
    import zstandard

    return zstandard.ZstdDecompressor().stream_reader(io.BytesIO(archive.read_bytes()), read_across_frames=True).read()


def test_same_tree_gives_the_same_bytes_and_skip_existing_works(ws: Workspace) -> None:
    """A rebuilt tree (other times, owners, modes beyond the execute bit, creation order, extended
    attributes, umask) is the same archive, so --skip-existing recognises it."""
    ws.ok("init", "site", "site.tar.gz")
    make_tree(ws.root / "one")
    ws.ok("push", "site", "1.0", "one")
    first = stored_sha(ws, "site", "1.0")
    old = os.umask(0o002)
    try:
        two = make_tree(ws.root / "two")
    finally:
        os.umask(old)
    for path in [two, *two.rglob("*")]:
        if not path.is_symlink():
            os.utime(path, (1_234_567_890, 1_234_567_890))
            os.chown(path, 4321, 8765)
            path.chmod(path.stat().st_mode | 0o070)
            try:
                os.setxattr(path, "user.build", b"ci-run-42")
            except OSError:
                pass
    result = ws.ok("push", "site", "1.0", "two", "--skip-existing")
    assert "Already there" in result.out
    assert stored_sha(ws, "site", "1.0") == first
    # One byte different: another archive, and --skip-existing says so (exit 1).
    (two / "lib" / "twin-a").write_bytes(b"same inode?\n")
    assert ws.run("push", "site", "1.0", "two", "--skip-existing").code == 1
    # Packing twice in-process gives identical bytes for every format.
    for fmt in FORMATS:
        a, b = io.BytesIO(), io.BytesIO()
        pack.pack(ws.root / "one", a, fmt)  # type: ignore[arg-type]
        pack.pack(ws.root / "one", b, fmt)  # type: ignore[arg-type]
        assert a.getvalue() == b.getvalue()


def test_archive_headers_carry_nothing_of_the_machine(ws: Workspace) -> None:
    ws.ok("init", "site", "site.tar.gz")
    tree = make_tree(ws.root / "build")
    os.chown(tree / "README.md", 4321, 8765)
    ws.ok("push", "site", "1.0", "build")
    raw = ws.read_stored("site/tycho_1.0.pkg")
    assert raw[:10] == b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"  # no name, time 0, OS unknown
    with tarfile.open(fileobj=io.BytesIO(raw)) as tf:
        for m in tf.getmembers():
            assert (m.uid, m.gid, m.uname, m.gname, m.mtime) == (0, 0, "", "", pack.EPOCH), m.name
            assert m.mode in (0o644, 0o755, 0o777), (m.name, oct(m.mode))
            assert set(m.pax_headers) <= {"path", "linkpath"}, m.pax_headers


def test_format_follows_the_package_file_name_or_is_refused_before_any_upload(ws: Workspace) -> None:
    make_tree(ws.root / "build")
    ws.ok("init", "web", "web.zip")
    ws.ok("push", "web", "1.0", "build")  # no --format: the file name says zip
    assert ws.read_stored("web/tycho_1.0.pkg")[:4] == b"PK\x03\x04"
    ws.ok("init", "raw", "raw.bin")
    ws.ok("init", "gz", "gz.tgz")
    before = ws.stored_keys()
    for args in (
        ("raw", "1.0", "build"),
        ("gz", "1.0", "build", "--format", "zip"),
        ("web", "2.0", "build", "--format", "tar.gz"),
    ):
        result = ws.run("push", *args)
        assert result.code == 2, result.all
        assert "does not end in" in result.err and "hint:" in result.err
    result = ws.run("push", "web", "3.0", "build/README.md", "--format", "zip")
    assert result.code == 2 and "only to a folder" in result.err
    assert ws.run("push", "web", "3.0", "build", "--format", "rar").code == 2
    assert ws.stored_keys() == before
    ws.ok("push", "gz", "1.0", "build")  # .tgz says tar.gz
    assert ws.read_stored("gz/tycho_1.0.pkg")[:2] == b"\x1f\x8b"


def test_what_a_tree_may_not_hold_is_refused_before_any_upload(ws: Workspace, tmp_path: Path) -> None:
    ws.ok("init", "site", "site.tar.gz")
    before = ws.stored_keys()
    tmp = tmp_path / "tmp"
    tmp.mkdir()

    def refused(tree: Path, *words: str) -> None:
        result = ws.run("push", "site", "1.0", str(tree), timeout=60, env={"TMPDIR": str(tmp)})
        assert result.code == 2, result.all
        assert all(w in result.err for w in words), result.err
        assert ws.stored_keys() == before

    fifo = make_tree(ws.root / "fifo")
    os.mkfifo(fifo / "lib" / "pipe")
    refused(fifo, "FIFO")  # and no hang: reading it would block forever
    sock = make_tree(ws.root / "sock")
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(sock / "bin" / "s"))
        refused(sock, "socket")
    absolute = make_tree(ws.root / "absolute")
    os.symlink(str(absolute / "README.md"), absolute / "bin" / "abs")
    refused(absolute, "absolute")
    outside = make_tree(ws.root / "outside")
    os.symlink("../../secret", outside / "bin" / "out")
    refused(outside, "outside")
    chain = make_tree(ws.root / "chain")  # each link stays inside, but together they lead out
    os.symlink("..", chain / "lib" / "up")
    os.symlink("up/../..", chain / "lib" / "upup")
    refused(chain, "outside")
    assert list(tmp.iterdir()) == []  # no archive or folder left behind


def test_the_registry_and_the_temporary_folder_are_never_packed(ws: Workspace, tmp_path: Path) -> None:
    ws.ok("init", "site", "site.tar.gz")
    if ws.backend == "file":
        registry = Path(ws.config["file"]["path"])
        for folder in (registry.parent, registry, registry / "site"):
            result = ws.run("push", "site", "1.0", str(folder))
            assert result.code == 2 and "registry" in result.err, result.all
    # TMPDIR inside the folder being packed: the private folder the archive is written in is
    # skipped, and nothing is left behind afterwards.
    tree = make_tree(ws.root / "build")
    tmp = tree / "tmp"
    tmp.mkdir()
    ws.ok("push", "site", "1.0", "build", env={"TMPDIR": str(tmp)})
    assert list(tmp.iterdir()) == []
    ws.ok("pull", "site", "--version", "1.0", "--extract", "out")
    assert snapshot(ws.root / "out") == snapshot(tree)
    os.mkfifo(tree / "pipe")  # a failed pack leaves nothing either
    assert ws.run("push", "site", "2.0", "build", env={"TMPDIR": str(tmp)}).code == 2
    assert list(tmp.iterdir()) == []


@pytest.mark.parametrize("change", ["grow", "shrink", "rewrite", "replace"])
def test_a_file_changing_while_it_is_packed_fails_the_push(tmp_path: Path, monkeypatch, change: str) -> None:
    """Another process writes the file between two reads of the packer (the real file changes;
    only the moment is chosen by the test): the pack fails instead of archiving a mix."""
    tree = tmp_path / "tree"
    tree.mkdir()
    victim = tree / "big.bin"
    victim.write_bytes(os.urandom(3 << 20))
    real_read = pack._Content.read
    done = []

    def read(self, n=-1):  # type: ignore[no-untyped-def]
        data = real_read(self, n)
        if not done:
            done.append(1)
            if change == "grow":
                with open(victim, "ab") as fh:
                    fh.write(b"more")
            elif change == "shrink":
                os.truncate(victim, 1 << 20)
            elif change == "rewrite":
                with open(victim, "r+b") as fh:
                    fh.seek(2 << 20)
                    fh.write(b"X")
            else:
                victim.rename(tree / "old.bin")
                victim.write_bytes(b"new")
        return data

    monkeypatch.setattr(pack._Content, "read", read)
    for fmt in FORMATS:
        done.clear()
        victim.unlink(missing_ok=True)
        (tree / "old.bin").unlink(missing_ok=True)
        victim.write_bytes(os.urandom(3 << 20))
        with pytest.raises(OperationError) as info:
            pack.pack(tree, io.BytesIO(), fmt)  # type: ignore[arg-type]
        assert info.value.reason == "changed-while-packing", fmt


def test_a_file_swapped_for_a_fifo_after_the_walk_is_not_read(tmp_path: Path, monkeypatch) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "a").write_bytes(b"a")
    real = pack._children

    def children(folder, prefix, skip):  # type: ignore[no-untyped-def]
        found = real(folder, prefix, skip)
        (tree / "a").unlink()
        os.mkfifo(tree / "a")
        return found

    monkeypatch.setattr(pack, "_children", children)
    with pytest.raises(OperationError) as info:
        pack.pack(tree, io.BytesIO(), "tar.gz")
    assert info.value.reason == "changed-while-packing"


@pytest.mark.parametrize("fmt", ["tar.gz", "tar.zst"])
def test_an_unchanged_large_file_compresses_the_same_in_two_versions(tmp_path: Path, monkeypatch, fmt: str) -> None:
    """Restart points: whatever precedes it, a large member's compressed bytes are the same, so
    a delta transfer finds them. Without the restarts they differ (the test can fail)."""
    text = b"".join(b"row %d of a log that compresses\n" % i for i in range(400_000))  # ~13 MiB

    def archive(prefix: bytes) -> bytes:
        tree = tmp_path / hashlib.sha256(prefix).hexdigest()[:12]
        tree.mkdir(exist_ok=True)
        (tree / "a-small.txt").write_bytes(prefix)
        (tree / "b-large.log").write_bytes(text)
        out = io.BytesIO()
        pack.pack(tree, out, fmt)  # type: ignore[arg-type]
        return out.getvalue()

    def shared(a: bytes, b: bytes) -> bool:
        middle = a[len(a) // 2 : len(a) // 2 + 4096]
        return b.find(middle) >= 0

    v1, v2 = archive(b"version one\n"), archive(b"the second version, longer\n" * 50)
    assert shared(v1, v2)
    monkeypatch.setitem(pack.RESTARTS, fmt, (1 << 60, 1 << 60))
    v1, v2 = archive(b"version one\n"), archive(b"the second version, longer\n" * 50)
    assert not shared(v1, v2)


def test_large_folders_warn_about_the_extract_limit(ws: Workspace) -> None:
    ws.config["tycho"]["extract_limit"] = "100KB"
    ws.write_config()
    ws.ok("init", "site", "site.tar.gz")
    result = ws.ok("push", "site", "1.0", str(make_tree(ws.root / "build")))
    assert "warning:" in result.err and "refuse to extract" in result.err


def test_pack_refusals_in_process_carry_their_reason(tmp_path: Path) -> None:
    with pytest.raises(UsageError) as info:
        pack.format_for("x.tar.gz", "zip", "x")
    assert info.value.reason == "folder-format" and info.value.details["named"] == "tar.gz"
    assert pack.format_for("X.TGZ", None, "x") == "tar.gz"
    assert pack.format_for("x.tzst", None, "x") == "tar.zst"
    with pytest.raises(UsageError):
        pack.format_for("x.bin", None, "x")
    reg = tmp_path / "reg"
    reg.mkdir()
    with pytest.raises(UsageError) as info:
        pack.check_folder(tmp_path, reg)
    assert info.value.reason == "cannot-pack"
    link = tmp_path / "link-to-reg"
    link.symlink_to(reg)
    with pytest.raises(UsageError):
        pack.check_folder(link, reg)
    shutil.rmtree(reg)


def test_a_pulled_folder_packs_to_the_archive_it_came_from(ws: Workspace) -> None:
    """pull --extract leaves its stamp in the folder; pushing that folder leaves it out (an
    archive with it would be refused on extraction), so the bytes are the original's."""
    ws.ok("init", "site", "site.tar.gz")
    ws.ok("push", "site", "1.0", str(make_tree(ws.root / "build")), "--promote-latest")
    ws.ok("pull", "site", "--extract", "pulled")
    assert (ws.root / "pulled" / ".tycho-extract.json").exists()
    ws.ok("push", "site", "1.0", "pulled", "--skip-existing")
    ws.ok("push", "site", "2.0", "pulled")
    assert stored_sha(ws, "site", "2.0") == stored_sha(ws, "site", "1.0")
    ws.ok("pull", "site", "--version", "2.0", "--extract", "again")
    assert snapshot(ws.root / "again") == snapshot(ws.root / "build")
