"""Declared packages, tycho.lock, the shared cache, offline installs and ``pull --extract``."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
from pathlib import Path

import pytest

from conftest import Workspace


def _tar_gz(files: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o755
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    return buf.getvalue()


def _declare(ws: Workspace, packages: dict) -> None:
    ws.config["packages"] = packages
    ws.write_config()


def _lock(ws: Workspace) -> dict:
    return json.loads((ws.root / "tycho.lock").read_text())


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def narf_and_gcc(ws: Workspace) -> tuple[Workspace, bytes, bytes]:
    narf = os.urandom(3000)
    gcc = _tar_gz({"bin/gcc": b"#!/bin/sh\necho gcc 12\n", "lib/libgcc.a": os.urandom(500)})
    ws.ok_all(
        ["init", "narf", "narf.bin"],
        ["push", "narf", "1.2.0", str(ws.file("narf-1.2.0", narf)), "--promote-latest"],
        ["push", "narf", "2.0.0", str(ws.file("narf-2.0.0", os.urandom(10)))],
        ["init", "gcc", "gcc.tar.gz"],
        ["push", "gcc", "12.1", str(ws.file("gcc.tgz", gcc))],
        ["tag", "gcc", "12.1", "stable"],
    )
    _declare(ws, {"narf": "^1.2", "gcc": {"version": "stable", "extract": "tools/gcc"}})
    return ws, narf, gcc


def test_sync_locks_installs_and_extracts(narf_and_gcc) -> None:
    ws, narf, gcc = narf_and_gcc
    ws.ok("sync")
    lock = _lock(ws)
    assert lock["format"] == 1 and list(lock["packages"]) == ["gcc", "narf"]
    assert lock["packages"]["narf"] == {
        "version": "1.2.0",
        "sha256": hashlib.sha256(narf).hexdigest(),
        "size": 3000,
        "localname": "narf.bin",
        "requested": "^1.2",
    }
    assert lock["packages"]["gcc"] == {
        "version": "12.1",
        "sha256": hashlib.sha256(gcc).hexdigest(),
        "size": len(gcc),
        "localname": "gcc.tar.gz",
        "requested": "stable",
        "extract": "tools/gcc",
    }
    assert (ws.root / "tycho_packages" / "narf.bin").read_bytes() == narf
    tree = ws.root / "tools" / "gcc"
    assert (tree / "bin" / "gcc").read_bytes() == b"#!/bin/sh\necho gcc 12\n"
    assert os.access(tree / "bin" / "gcc", os.X_OK)
    assert not (ws.root / "tycho_packages" / "gcc.tar.gz").exists()  # extracted, not saved

    again = ws.ok("sync")
    assert again.out.count("Up to date") == 2


def test_lock_keeps_pins_until_upgrade(narf_and_gcc) -> None:
    ws, narf, _ = narf_and_gcc
    ws.ok("lock")
    before = (ws.root / "tycho.lock").read_bytes()
    ws.ok("push", "narf", "1.3.0", str(ws.file("narf-1.3.0", b"newer")))
    assert "Unchanged" in ws.ok("lock").out
    assert (ws.root / "tycho.lock").read_bytes() == before
    ws.ok("sync")
    assert (ws.root / "tycho_packages" / "narf.bin").read_bytes() == narf  # still the locked 1.2.0
    assert ws.run("lock", "narf").code == 2  # names need --upgrade
    ws.ok("lock", "--upgrade", "narf")
    assert _lock(ws)["packages"]["narf"]["version"] == "1.3.0"
    assert _lock(ws)["packages"]["gcc"]["version"] == "12.1"
    ws.ok("sync")
    assert (ws.root / "tycho_packages" / "narf.bin").read_bytes() == b"newer"


def test_locked_refuses_a_stale_lock(narf_and_gcc) -> None:
    ws, _, _ = narf_and_gcc
    no_lock = ws.run("sync", "--locked")
    assert no_lock.code == 1 and "tycho.lock" in no_lock.err and "tychoreg lock" in no_lock.err
    ws.ok("lock")
    _declare(ws, {"narf": "^2", "gcc": {"version": "stable", "extract": "tools/gcc"}})
    stale = ws.run("sync", "--locked")
    assert stale.code == 1
    assert "does not match" in stale.err and "narf" in stale.err
    assert not (ws.root / "tycho_packages").exists()
    _declare(ws, {"narf": "^1.2"})
    assert "gcc is locked but no longer declared" in ws.run("sync", "--locked").err
    ws.ok("sync")  # without --locked the lock follows the declarations
    assert list(_lock(ws)["packages"]) == ["narf"]


def test_offline_works_from_cache_and_lock_only(narf_and_gcc) -> None:
    ws, narf, _ = narf_and_gcc
    ws.ok("lock")
    missing = ws.run("sync", "--offline")
    assert missing.code == 1
    assert "not in the cache" in missing.err and "narf" in missing.err and "gcc" in missing.err
    ws.ok("sync")
    shutil.rmtree(ws.root / "tycho_packages")
    shutil.rmtree(ws.root / "tools")
    ws.config[ws.backend] = (
        {"path": str(ws.root / "nowhere")}
        if ws.backend == "file"
        else {**ws.config["s3"], "endpoint_url": "http://127.0.0.1:9"}
    )
    ws.write_config()  # the registry is unreachable now
    result = ws.ok("sync", "--offline")
    assert "from the cache" in result.out
    assert (ws.root / "tycho_packages" / "narf.bin").read_bytes() == narf
    assert (ws.root / "tools" / "gcc" / "bin" / "gcc").exists()


def test_corrupt_cache_entry_is_detected_and_replaced(narf_and_gcc) -> None:
    ws, narf, _ = narf_and_gcc
    ws.ok("sync")
    sha = hashlib.sha256(narf).hexdigest()
    entry = next((ws.root / "home").rglob(sha))
    entry.chmod(0o644)
    entry.write_bytes(b"X" * len(narf))  # same size, other bytes
    (ws.root / "tycho_packages" / "narf.bin").unlink()
    assert ws.run("sync", "--offline").code == 1  # the damaged entry is not used
    ws.ok("sync")
    assert (ws.root / "tycho_packages" / "narf.bin").read_bytes() == narf
    assert entry.read_bytes() == narf


def test_no_cache_leaves_the_cache_alone(narf_and_gcc) -> None:
    ws, narf, _ = narf_and_gcc
    ws.ok("pull", "narf", "--no-cache")
    assert (ws.root / "tycho_packages" / "narf.bin").read_bytes() == narf
    info = json.loads(ws.ok("cache", "info", "--json").out)
    assert info["entries"] == 0
    ws.ok("pull", "narf", "--force")
    info = json.loads(ws.ok("cache", "info", "--json").out)
    assert info["entries"] == 1 and info["bytes"] == len(narf)
    assert "Removed 1 cached file" in ws.ok("cache", "prune").out
    assert json.loads(ws.ok("cache", "info", "--json").out)["entries"] == 0


def test_cache_prune_older_than(narf_and_gcc) -> None:
    ws, _, _ = narf_and_gcc
    ws.ok("sync")
    assert "Removed 0 cached files" in ws.ok("cache", "prune", "--older-than", "1d").out
    for entry in (ws.root / "home").rglob("sha256/*/*"):
        os.utime(entry, (1, 1))
    assert "Removed 2 cached files" in ws.ok("cache", "prune", "--older-than", "1d").out
    assert ws.run("cache", "prune", "--older-than", "soon").code == 2


def test_repushed_version_breaks_the_lock(narf_and_gcc) -> None:
    ws, _, _ = narf_and_gcc
    _declare(ws, {"narf": "1.2.0"})
    ws.ok("lock")
    ws.ok("delete", "narf", "1.2.0", "--yes", "--force")
    ws.ok("push", "narf", "1.2.0", str(ws.file("other", b"other bytes")))
    result = ws.run("sync", "--no-cache")
    assert result.code == 1
    assert "not what the lock file pinned" in result.err and "lock --upgrade narf" in result.err
    assert not (ws.root / "tycho_packages" / "narf.bin").exists()


def test_pull_list_from_lock_and_from_list(narf_and_gcc) -> None:
    ws, narf, _ = narf_and_gcc
    ws.ok("lock")
    ws.ok("promote", "narf", "2.0.0")
    lock_copy = ws.root / "elsewhere" / "tycho.lock"
    lock_copy.parent.mkdir()
    shutil.copy(ws.root / "tycho.lock", lock_copy)
    ws.ok("pull-list", "--from", str(lock_copy))
    assert (ws.root / "tycho_packages" / "narf.bin").read_bytes() == narf  # the locked 1.2.0, not latest
    assert (ws.root / "elsewhere" / "tools" / "gcc" / "bin" / "gcc").exists()  # relative to the lock
    names = ws.file("needs.txt", b"# what CI needs\nnarf\n\n")
    ws.ok("pull-list", "--from", str(names), "--force")
    assert len((ws.root / "tycho_packages" / "narf.bin").read_bytes()) == 10  # latest is 2.0.0 now
    assert ws.run("pull-list").code == 2
    assert ws.run("pull-list", "--from", str(ws.root / "missing.txt")).code == 2


def test_declarations_are_validated(ws: Workspace) -> None:
    assert ws.run("sync").code == 2  # nothing declared
    _declare(ws, {"../evil": "1.0"})
    assert ws.run("sync").code == 2
    _declare(ws, {"narf": {"version": "^1", "extract": 3}})
    assert ws.run("lock").code == 2
    _declare(ws, {"narf": ">>1"})
    bad = ws.run("sync")
    assert bad.code == 2 and "packages.narf" in bad.err


# -- extraction through the CLI -------------------------------------------------------------
def test_pull_extract_swaps_atomically_and_refuses_escapes(ws: Workspace) -> None:
    ws.ok("init", "kit", "kit.tar.gz")
    ws.ok("push", "kit", "1", str(ws.file("k1", _tar_gz({"a.txt": b"one", "sub/b.txt": b"bee"}))))
    ws.ok("push", "kit", "2", str(ws.file("k2", _tar_gz({"a.txt": b"two"}))))
    ws.ok("push", "kit", "3", str(ws.file("k3", _tar_gz({"ok.txt": b"x", "../escape.txt": b"evil"}))))
    ws.ok("push", "kit", "4", str(ws.file("k4", _tar_gz({"ok.txt": b"x"}, {"link": "/etc"}))))
    ws.ok("push", "kit", "5", str(ws.file("k5", b"\x1f\x8b" + os.urandom(200))))  # gzip that is not
    out = ws.root / "out"
    ws.ok("pull", "kit", "--version", "1", "--extract", "out")
    assert _tree(out) == {
        "a.txt": b"one",
        "sub/b.txt": b"bee",
        ".tycho-extract.json": _tree(out)[".tycho-extract.json"],
    }
    assert "already extracted" in ws.ok("pull", "kit", "--version", "1", "--extract", "out").out
    before = _tree(out)
    for bad in ("3", "4", "5"):
        result = ws.run("pull", "kit", "--version", bad, "--extract", "out")
        assert result.code == 1, result.all
        assert _tree(out) == before  # the old tree is intact
        assert not (ws.root / "escape.txt").exists()
        assert sorted(p.name for p in ws.root.iterdir() if p.name.startswith(".out")) == []
    got = ws.ok("pull", "kit", "--version", "2", "--extract", "out", "--json").json()
    assert set(_tree(out)) == {"a.txt", ".tycho-extract.json"} and (out / "a.txt").read_bytes() == b"two"
    assert got["fetched_bytes"] == (ws.root / "k2").stat().st_size  # it said 0 for an extracting pull
    got = ws.ok("pull", "kit", "--version", "1", "--extract", "out", "--json", "--no-cache").json()
    assert got["fetched_bytes"] == (ws.root / "k1").stat().st_size and set(_tree(out)) == set(before)


def test_extract_refuses_a_folder_it_did_not_make(ws: Workspace) -> None:
    ws.ok("init", "kit", "kit.tar.gz")
    ws.ok("push", "kit", "1", str(ws.file("k1", _tar_gz({"a.txt": b"one"}))), "--promote-latest")
    mine = ws.file("mine/notes.txt", b"keep me").parent
    result = ws.run("pull", "kit", "--extract", str(mine))
    assert result.code == 1 and "did not put there" in result.err
    assert _tree(mine) == {"notes.txt": b"keep me"}
    assert ws.run("pull", "kit", "--extract", "x", "--outfile", "y").code == 2


def test_extract_limit_from_config(ws: Workspace) -> None:
    ws.config["tycho"]["extract_limit"] = "1KiB"
    ws.write_config()
    ws.ok("init", "kit", "kit.tar.gz")
    ws.ok("push", "kit", "1", str(ws.file("k1", _tar_gz({"zeros": bytes(64 * 1024)}))), "--promote-latest")
    result = ws.run("pull", "kit", "--extract", "out")
    assert result.code == 1 and "zeros" in result.err
    assert not (ws.root / "out").exists()


# -- requests counted at the wire (the proxy: see conftest) -----------------------------------


def test_cache_hit_across_projects_and_second_sync_sends_nothing(proxied_s3) -> None:
    ws, proxy = proxied_s3
    data = os.urandom(2 * 1024 * 1024)
    ws.ok("init", "narf", "narf.bin")
    ws.ok("push", "narf", "1.0", str(ws.file("n", data)), "--promote-latest")
    _declare(ws, {"narf": "latest"})
    other = ws.root / "other-project"
    other.mkdir()
    (other / ".tychoreg.json").write_text(json.dumps(ws.config))

    def data_gets() -> int:
        return sum(1 for method, path, _ in proxy.seen if method == "GET" and "tycho_1.0.pkg" in path)

    ws.ok("sync")
    assert data_gets() == 1
    ws.ok("sync", cwd=other)
    assert data_gets() == 1  # the second project got it from the cache
    assert (other / "tycho_packages" / "narf.bin").read_bytes() == data
    proxy.seen.clear()
    result = ws.ok("sync", cwd=other)
    assert "Up to date" in result.out
    assert proxy.seen == []  # nothing changed: not a single request


def test_changing_a_pulled_file_in_place_never_reaches_another_project(narf_and_gcc) -> None:
    """A fresh download is linked into the cache (no copy); the cache then verifies on the way out."""
    ws, narf, _ = narf_and_gcc
    ws.ok("pull", "narf")
    mine = ws.root / "tycho_packages" / "narf.bin"
    with open(mine, "r+b") as fh:  # in place, same size: the shared inode changes too
        fh.write(b"\0" * 100)
    other = ws.root / "other"
    other.mkdir()
    (other / ".tychoreg.json").write_text(json.dumps(ws.config))
    ws.ok("pull", "narf", cwd=other)
    assert (other / "tycho_packages" / "narf.bin").read_bytes() == narf
    ws.ok("pull", "narf")  # and the changed copy is repaired by the next pull
    assert mine.read_bytes() == narf


def test_lock_without_packages_is_a_config_error(ws: Workspace) -> None:
    assert ws.run("lock").code == 2
    elsewhere = ws.root / "no-config-here"
    elsewhere.mkdir()
    no_file = ws.run("lock", cwd=elsewhere)  # the embedded default registry: no packages section
    assert no_file.code == 2 and "packages" in no_file.err


def test_two_packages_installed_to_one_place_are_refused(ws: Workspace) -> None:
    for name in ("pa", "pb"):
        ws.ok("init", name, "same.bin")
        ws.ok("push", name, "1.0", str(ws.file(name, name.encode())), "--promote-latest")
    _declare(ws, {"pa": "latest", "pb": "latest"})
    result = ws.run("sync")
    assert result.code == 2 and "pa and pb" in result.err
    assert not (ws.root / "tycho_packages" / "same.bin").exists()
    _declare(ws, {"pa": "latest", "pb": {"version": "latest", "extract": "x"}})
    ws.run("sync")  # now they differ (pb is no archive, so it fails, alone)
    assert (ws.root / "tycho_packages" / "same.bin").read_bytes() == b"pa"


def test_a_record_without_data_is_not_a_version_even_if_cached(narf_and_gcc) -> None:
    """A record whose data is gone (a dead push or delete) must not pull, from the cache or not."""
    ws, _, _ = narf_and_gcc
    ws.ok("pull", "narf")
    if ws.backend == "file":
        (Path(ws.config["file"]["path"]) / "narf" / "tycho_1.2.0.pkg").unlink()
    else:
        prefix = ws.config["s3"]["prefix"]
        ws.seaweed.client().delete_object(Bucket=ws.bucket, Key=f"{prefix}/narf/tycho_1.2.0.pkg")
    for args in (("pull", "narf", "--version", "1.2.0", "--outfile", "elsewhere.bin"), ("pull", "narf")):
        result = ws.run(*args)
        assert result.code == 1 and "no version 1.2.0" in result.err, result.all
    assert not (ws.root / "elsewhere.bin").exists()


def test_a_cache_hit_leaves_other_projects_files_untouched(narf_and_gcc) -> None:
    ws, _, _ = narf_and_gcc
    ws.ok("pull", "narf")
    mine = ws.root / "tycho_packages" / "narf.bin"
    os.utime(mine, (1000, 1000))
    other = ws.root / "other"
    other.mkdir()
    (other / ".tychoreg.json").write_text(json.dumps(ws.config))
    assert "from the cache" in ws.ok("pull", "narf", cwd=other).out
    assert mine.stat().st_mtime == 1000  # a build tool would see no change


def test_uppercase_digest_in_the_lock_is_accepted(narf_and_gcc) -> None:
    """A lock edited by hand (or by another tool) with an upper-case SHA-256 installs as usual,
    from the cache too."""
    ws, narf, _gcc = narf_and_gcc
    ws.ok("lock")
    doc = _lock(ws)
    for entry in doc["packages"].values():
        entry["sha256"] = entry["sha256"].upper()
    (ws.root / "tycho.lock").write_text(json.dumps(doc, indent=2))
    ws.ok("sync", "--locked")
    assert (ws.root / "tycho_packages" / "narf.bin").read_bytes() == narf
    assert (ws.root / "tools" / "gcc" / "bin" / "gcc").exists()
    shutil.rmtree(ws.root / "tycho_packages")
    ws.ok("sync", "--offline")
    assert (ws.root / "tycho_packages" / "narf.bin").read_bytes() == narf
    ws.ok("pull-list", "--from", "tycho.lock", "--force")


@pytest.mark.parametrize("digest", ["Z" * 64, "g" * 64, " " * 64, "0x" + "a" * 62, 64])
def test_non_hex_digest_in_the_lock_is_damaged(narf_and_gcc, digest) -> None:
    ws, _, _ = narf_and_gcc
    ws.ok("lock")
    doc = _lock(ws)
    doc["packages"]["narf"]["sha256"] = digest
    (ws.root / "tycho.lock").write_text(json.dumps(doc, indent=2))
    for args in (("sync", "--locked"), ("sync", "--offline"), ("pull-list", "--from", "tycho.lock")):
        result = ws.run(*args)
        assert result.code == 1, result.all
        assert "damaged" in result.err and "internal error" not in result.err, result.err
    assert not (ws.root / "tycho_packages").exists()
