"""Platforms without Linux's calls, simulated: the real CLI runs with a ``sitecustomize`` that
takes away what macOS or Windows lack before tychoreg is imported, against the real SeaweedFS.

* ``posix``: no ``fcntl`` (no flock, lockf, FICLONE), no ``os.pwrite``/``os.pread``, no
  ``SEEK_HOLE``/``SEEK_DATA``, no hard links, no ``copy_file_range``, no extended attributes, and
  no ``/proc`` (every path under it is missing). The whole read path must work: parallel ranged
  downloads, a resumed transfer, the cache (commit, place, adopt, open), extraction, pull-list,
  sync, cache info and prune; the file backend must refuse at start with one line.
* ``windows``: all that, and no ``O_NOFOLLOW``/``O_DIRECTORY``/``O_NONBLOCK``, no ``geteuid``, no
  ``fchmod``, and no folder descriptors (every ``dir_fd`` call raises ``NotImplementedError`` and
  a folder cannot be opened, as on Windows): ``import tychoreg`` and ``--help`` work, pulls from S3
  work (without the cache), and what cannot work here says so in one line.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import Result, Workspace
from faultproxy import FaultProxy, Rule

SHIM = textwrap.dedent(
    """
    import builtins, errno, os, sys

    LEVEL = os.environ["SIMULATED_PLATFORM"]
    sys.modules["fcntl"] = None  # import fcntl -> ImportError
    for name in ("pwrite", "pread", "SEEK_HOLE", "SEEK_DATA", "link", "copy_file_range",
                 "setxattr", "getxattr", "listxattr", "removexattr"):
        if hasattr(os, name):
            delattr(os, name)
    if LEVEL == "windows":
        for name in ("O_NOFOLLOW", "O_DIRECTORY", "O_NONBLOCK", "geteuid", "fchmod", "fwalk"):
            if hasattr(os, name):
                delattr(os, name)

    def _proc(path):
        try:
            path = os.fsdecode(os.fspath(path))
        except TypeError:
            return False
        return path == "/proc" or path.startswith("/proc/")

    def _wrap(func, *, dirs_refused=False):
        def wrapper(path, *args, **kwargs):
            if _proc(path):
                raise FileNotFoundError(errno.ENOENT, "no /proc on this platform", path)
            if LEVEL == "windows":
                if any(kwargs.get(k) is not None for k in ("dir_fd", "src_dir_fd", "dst_dir_fd")):
                    raise NotImplementedError("dir_fd unavailable on this platform")
                if dirs_refused and not isinstance(path, int) and os.path.isdir(path):
                    raise PermissionError(errno.EACCES, "a folder cannot be opened here", path)
            return func(path, *args, **kwargs)
        for support in ("supports_dir_fd", "supports_fd", "supports_follow_symlinks", "supports_effective_ids"):
            group = getattr(os, support)
            if func in group and not (LEVEL == "windows" and support == "supports_dir_fd"):
                group.add(wrapper)
        return wrapper

    builtins.open = _wrap(builtins.open)
    os.open = _wrap(os.open, dirs_refused=True)
    for name in ("stat", "lstat", "mkdir", "unlink", "rmdir", "rename", "replace", "symlink", "readlink",
                 "utime", "chmod", "access", "scandir", "listdir"):
        setattr(os, name, _wrap(getattr(os, name)))
    if LEVEL == "windows":
        os.supports_dir_fd.clear()
    """
)


def simulated(ws: Workspace, level: str, *args: str, cwd: Path | None = None, timeout: float = 120) -> Result:
    shim = ws.root.parent / f"shim-{level}"
    shim.mkdir(exist_ok=True)
    (shim / "sitecustomize.py").write_text(SHIM)
    env = {**ws.base_env(), "PYTHONPATH": str(shim), "SIMULATED_PLATFORM": level}
    proc = subprocess.run(
        [sys.executable, "-m", "tychoreg", *args],
        cwd=cwd or ws.root,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    result = Result(proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in result.all, result.all
    return result


def ok(ws: Workspace, level: str, *args: str, **kw) -> Result:
    result = simulated(ws, level, *args, **kw)
    assert result.code == 0, result.all
    return result


@pytest.mark.parametrize("level", ["posix", "windows"])
def test_the_shim_really_takes_the_calls_away(s3_ws: Workspace, level: str) -> None:
    probe = (
        "import os, sys\nfrom tychoreg import portable\n"
        "print(portable.fcntl is None, hasattr(os, 'pwrite'), hasattr(os, 'SEEK_HOLE'), hasattr(os, 'link'),"
        " os.path.isdir('/proc/self/fd'), portable.DIR_FDS, portable.O_NOFOLLOW == 0)"
    )
    shim = s3_ws.root.parent / f"shim-{level}"
    shim.mkdir(exist_ok=True)
    (shim / "sitecustomize.py").write_text(SHIM)
    out = subprocess.run(
        [sys.executable, "-c", probe],
        env={**s3_ws.base_env(), "PYTHONPATH": str(shim), "SIMULATED_PLATFORM": level},
        capture_output=True,
        text=True,
        timeout=60,
    )
    windows = level == "windows"
    assert out.stdout.split() == ["True", "False", "False", "False", "False", str(not windows), str(windows)], out


@pytest.mark.parametrize("level", ["posix", "windows"])
def test_the_file_backend_refuses_at_start_with_one_line(tmp_path: Path, level: str) -> None:
    root = tmp_path / "project"
    root.mkdir()
    ws = Workspace(root, "file", {"tycho": {"backend": "file"}, "file": {"path": str(tmp_path / "registry")}})
    ws.write_config()
    for args in (("list",), ("pull", "narf"), ("push", "narf", "1.0", "x")):
        result = simulated(ws, level, *args)
        assert result.code == 2, result.all
        lines = result.err.splitlines()
        assert lines[0].startswith("error: a file registry cannot be used here") and len(lines) <= 2, result.err
        assert "record locks" in lines[0]
    # The embedded default (no config at all) is a file registry too.
    bare = ws.root / "bare"
    bare.mkdir()
    assert simulated(ws, level, "list", cwd=bare).code == 2


@pytest.mark.parametrize("level", ["posix", "windows"])
def test_import_help_and_version(s3_ws: Workspace, level: str) -> None:
    assert "Usage: tychoreg" in ok(s3_ws, level, "--help").out
    assert "prune" in ok(s3_ws, level, "--help").out
    assert ok(s3_ws, level, "--version").out.startswith("tychoreg ")
    assert "--format" in ok(s3_ws, level, "push", "--help").out


def test_the_read_path_without_linux_calls(proxied_s3: tuple[Workspace, FaultProxy], tmp_path: Path) -> None:
    """posix: everything a reader does, end to end, with the stand-ins."""
    ws, proxy = proxied_s3
    data = os.urandom(20 * 1024 * 1024 + 5)  # past one part: parallel ranged reads, written by pwrite
    ws.ok("init", "narf", "narf.bin")
    ok(ws, "posix", "push", "narf", "1.0", str(ws.file("src/narf", data)), "--promote-latest")
    ok(ws, "posix", "pull", "narf")
    dest = ws.root / "tycho_packages" / "narf.bin"
    assert dest.read_bytes() == data
    # A transfer cut off half way resumes with a ranged read, hashed on from the part file.
    small = os.urandom(3 * 1024 * 1024 + 17)
    ws.ok("init", "cut", "cut.bin")
    ws.ok("push", "cut", "1.0", str(ws.file("src/cut", small)), "--promote-latest")
    proxy.rules.append(Rule("GET", "cut/tycho_1.0.pkg", "truncate", times=1))
    assert "resumed 1x" in ok(ws, "posix", "pull", "cut", "--no-cache").out
    assert (ws.root / "tycho_packages" / "cut.bin").read_bytes() == small
    assert proxy.injected["truncate"] == 1
    assert "Up to date" in ok(ws, "posix", "pull", "narf").out
    other = ws.root / "elsewhere" / "narf.bin"
    assert "from the cache" in ok(ws, "posix", "pull", "narf", "--outfile", str(other)).out
    assert other.read_bytes() == data
    info = json.loads(ok(ws, "posix", "cache", "info", "--json").out)
    assert info["entries"] == 1 and info["bytes"] == len(data)
    entry = Path(info["path"]) / "sha256" / hashlib.sha256(data).hexdigest()[:2] / hashlib.sha256(data).hexdigest()
    assert entry.read_bytes() == data and not entry.stat().st_mode & 0o222
    # A folder: packed, pushed, extracted (from the cache, then from the store).
    tree = ws.root / "build"
    (tree / "bin").mkdir(parents=True)
    (tree / "bin" / "tool").write_bytes(b"#!/bin/sh\n")
    (tree / "bin" / "tool").chmod(0o755)
    os.symlink("bin/tool", tree / "run")
    ws.ok("init", "site", "site.tar.gz")
    ok(ws, "posix", "push", "site", "1.0", "build", "--promote-latest")
    ok(ws, "posix", "pull", "site", "--extract", "unpacked")
    assert (ws.root / "unpacked" / "bin" / "tool").read_bytes() == b"#!/bin/sh\n"
    assert os.readlink(ws.root / "unpacked" / "run") == "bin/tool"
    ok(ws, "posix", "pull", "site", "--extract", "again", "--no-cache")
    assert (ws.root / "again" / "bin" / "tool").stat().st_mode & 0o100
    # pull-list, lock and sync with declared packages, offline from the cache.
    ws.config["packages"] = {"narf": "latest", "site": {"version": "1.0", "extract": "vendor/site"}}
    ws.write_config()
    dest.unlink()
    ok(ws, "posix", "pull-list", "narf", "site")
    assert dest.read_bytes() == data
    ok(ws, "posix", "sync")
    assert (ws.root / "vendor" / "site" / "bin" / "tool").exists()
    dest.unlink()
    ok(ws, "posix", "sync", "--offline")
    assert dest.read_bytes() == data
    ok(ws, "posix", "prune", "narf", "--keep", "1", "--dry-run")
    assert "Removed 2 cached files" in ok(ws, "posix", "cache", "prune").out


def test_windows_like_pulls_from_s3_and_says_what_it_cannot_do(s3_ws: Workspace) -> None:
    ws = s3_ws
    data = os.urandom(9 * 1024 * 1024)
    ws.ok("init", "narf", "narf.bin")
    ws.ok("push", "narf", "1.0", str(ws.file("src/narf", data)), "--promote-latest")
    ok(ws, "windows", "pull", "narf")
    dest = ws.root / "tycho_packages" / "narf.bin"
    assert dest.read_bytes() == data
    assert "Up to date" in ok(ws, "windows", "pull", "narf").out
    assert ok(ws, "windows", "list", "--json").out.strip().startswith("[")
    tree = ws.root / "build"
    tree.mkdir()
    (tree / "a.txt").write_bytes(b"a")
    ws.ok("init", "site", "site.zip")
    ok(ws, "windows", "push", "site", "1.0", "build", "--promote-latest")  # packed in a plain temporary folder
    refused = simulated(ws, "windows", "pull", "site", "--extract", "unpacked")
    assert refused.code == 1 and refused.err.startswith("error: cannot extract"), refused.all
    assert len(refused.err.splitlines()) == 2 and not (ws.root / "unpacked").exists()
    ws.ok("pull", "site", "--extract", "unpacked")  # the same archive, on Linux
    assert (ws.root / "unpacked" / "a.txt").read_bytes() == b"a"


def test_cutting_the_chunk_index_never_moves_the_uploads_read_position(tmp_path: Path, monkeypatch) -> None:
    """Where there is no ``os.pread`` (Windows), the stand-in seeks and restores the file
    position, which a descriptor shares with its duplicates: a chunk cutter reading a duplicate
    of the pushed file's descriptor moved the position under the upload's sequential reads, and
    the push stored (and recorded, self-consistently) other bytes than the file's. The cutter
    must read through a file description of its own."""
    from tychoreg import chunks

    monkeypatch.delattr(os, "pread")
    data = os.urandom(24 * 1024 * 1024)
    src = tmp_path / "big.bin"
    src.write_bytes(data)
    for _ in range(3):
        with open(src, "rb") as fh:
            background = chunks.Background(fh)
            read = hashlib.sha256()
            while block := fh.read(64 * 1024):
                read.update(block)
            index = background.result(len(data), read.hexdigest())
        assert read.hexdigest() == hashlib.sha256(data).hexdigest()
        assert index is not None and sum(p.length for p in index.pieces) == len(data)
