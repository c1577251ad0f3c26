"""A full disk and a read-only folder at the destination: clear errors, nothing left behind.

These need a small or read-only file system, made here with a tmpfs mount (the suite runs as
root, for whom permission bits do not apply). Where mounting is not permitted they cannot run."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from conftest import Workspace


@pytest.fixture
def small_fs(tmp_path: Path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_full_disk(ws: Workspace, small_fs: Path) -> None:
    ws.ok("init", "narf", "narf.bin")
    data = os.urandom(1024 * 1024)
    ws.ok("push", "narf", "1.0", str(ws.file("a.bin", data)), "--promote-latest")
    result = ws.run("pull", "narf", "--outfile", str(small_fs / "narf.bin"))
    assert result.code == 1
    assert "no space left" in result.err
    assert list(small_fs.iterdir()) == []  # no destination, no part file filling the disk


def test_read_only_folder(ws: Workspace, small_fs: Path) -> None:
    ws.ok("init", "narf", "narf.bin")
    ws.ok("push", "narf", "1.0", str(ws.file("a.bin", b"data")), "--promote-latest")
    (small_fs / "keep.txt").write_bytes(b"old")
    subprocess.run(["mount", "-o", "remount,ro", str(small_fs)], check=True)
    result = ws.run("pull", "narf", "--outfile", str(small_fs / "keep.txt"))
    assert result.code == 1
    assert "permission denied" in result.err
    assert (small_fs / "keep.txt").read_bytes() == b"old"
    assert sorted(p.name for p in small_fs.iterdir()) == ["keep.txt"]
