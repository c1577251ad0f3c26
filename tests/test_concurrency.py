"""Concurrent pushes and promotes, from separate processes, on both backends."""

from __future__ import annotations

import hashlib
import json
import subprocess

import pytest

from conftest import Workspace, finish


def run_parallel(ws: Workspace, commands: list[list[str]]) -> list[subprocess.CompletedProcess]:
    return finish([ws.spawn(*cmd) for cmd in commands])


@pytest.mark.parametrize("size", [1000, 9 * 1024 * 1024], ids=["small", "multipart"])
def test_same_version_exactly_one_winner(ws: Workspace, size: int) -> None:
    ws.ok("init", "narf", "narf.bin")
    files = [ws.file(f"c{i}.bin", bytes([i]) * size) for i in range(6)]
    results = run_parallel(ws, [["push", "narf", "1.0", str(f)] for f in files])
    codes = [r.returncode for r in results]
    assert sorted(codes) == [0, 1, 1, 1, 1, 1], [r.stderr for r in results]
    winner = codes.index(0)
    for r in results:
        if r.returncode:
            assert "already exists" in r.stderr or "being pushed" in r.stderr, r.stderr
    expected = files[winner].read_bytes()
    assert ws.read_stored("narf/tycho_1.0.pkg") == expected
    listed = ws.ok("list-versions", "narf", "--json").json()
    assert [(v["version"], v["sha256"]) for v in listed] == [("1.0", hashlib.sha256(expected).hexdigest())]
    ws.ok("pull", "narf", "--version", "1.0", "--outfile", "got.bin")
    assert (ws.root / "got.bin").read_bytes() == expected


def test_different_versions_with_promotes_lose_nothing(ws: Workspace) -> None:
    ws.ok("init", "narf", "narf.bin")
    versions = [f"1.{i}" for i in range(8)]
    files = {v: ws.file(f"v{v}.bin", v.encode() * 50) for v in versions}
    results = run_parallel(ws, [["push", "narf", v, str(files[v]), "--promote-latest"] for v in versions])
    assert [r.returncode for r in results] == [0] * 8, [r.stderr for r in results]
    listed = ws.ok("list-versions", "narf", "--json").json()
    assert [v["version"] for v in listed] == versions
    for row in listed:
        assert row["sha256"] == hashlib.sha256(files[row["version"]].read_bytes()).hexdigest()
    doc = json.loads(ws.read_stored("narf/tycho.json"))
    assert doc["localname"] == "narf.bin"
    assert doc["latest"] in versions
    promotes = run_parallel(ws, [["promote", "narf", v] for v in versions])
    assert [r.returncode for r in promotes] == [0] * 8
    doc = json.loads(ws.read_stored("narf/tycho.json"))
    assert doc["localname"] == "narf.bin" and doc["latest"] in versions
    assert not any(k.endswith(".tmp") for k in ws.stored_keys())


def test_promote_keeps_fields_it_does_not_know(ws: Workspace) -> None:
    """Later additions to tycho.json survive a promote (compare-and-swap keeps the whole document)."""
    ws.ok("init", "narf", "narf.bin")
    ws.ok("push", "narf", "1.0", str(ws.file("a.bin", b"a")))
    doc = json.loads(ws.read_stored("narf/tycho.json"))
    doc["tychoreg"] = {"future": [1, 2, 3]}
    ws.write_stored("narf/tycho.json", json.dumps(doc).encode())
    ws.ok("promote", "narf", "1.0")
    assert json.loads(ws.read_stored("narf/tycho.json")) == {
        "localname": "narf.bin",
        "latest": "1.0",
        "tychoreg": {"future": [1, 2, 3]},
    }


def test_stale_claim_is_taken_over_fresh_claim_is_not(ws: Workspace) -> None:
    """A record without data is a push in progress, or after the claim timeout a dead push's leftover."""
    ws.ok("init", "narf", "narf.bin")
    claim = {
        "format": 1,
        "version": "1.0",
        "size": 1,
        "sha256": "0" * 64,
        "pushed_by": "ghost@gone",
        "note": None,
        "pushed_at": "2020-01-01T00:00:00+00:00",
    }
    ws.write_stored("narf/.tycho/versions/1.0.json", json.dumps(claim).encode())
    assert ws.ok("list-versions", "narf", "--json").json() == []  # claims are invisible
    src = ws.file("a.bin", b"real")
    result = ws.run("push", "narf", "1.0", str(src))  # written just now: a push in progress
    assert result.code == 1
    assert "being pushed" in result.err
    ws.ok("push", "narf", "1.0", str(src), env={"TYCHOREG_CLAIM_TIMEOUT": "0"})
    listed = ws.ok("list-versions", "narf", "--json").json()
    assert [(v["version"], v["sha256"]) for v in listed] == [("1.0", hashlib.sha256(b"real").hexdigest())]
    ws.ok("pull", "narf", "--version", "1.0", "--outfile", "got.bin")
    assert (ws.root / "got.bin").read_bytes() == b"real"


def test_delete_racing_promotes_and_tags_leaves_no_dangling_tag(ws: Workspace) -> None:
    """Deletes of versions while other processes promote and tag them: afterwards no tag names a
    version that is gone (delete and promote each re-check after writing; one sees the other)."""
    versions = [f"2.{i}" for i in range(6)]
    ws.ok_all(
        ["init", "narf", "narf.bin"], *(["push", "narf", v, str(ws.file(f"{v}.bin", v.encode()))] for v in versions)
    )
    commands = []
    for v in versions[:4]:
        commands += [["delete", "narf", v, "--yes", "--force"], ["promote", "narf", v], ["tag", "narf", v, f"t{v[-1]}"]]
    results = run_parallel(ws, commands)
    assert all(r.returncode in (0, 1) for r in results), [r.stderr for r in results]
    remaining = {v["version"] for v in ws.ok("list-versions", "narf", "--json").json()}
    assert remaining >= set(versions[4:])
    doc = json.loads(ws.read_stored("narf/tycho.json"))
    named = [doc["latest"]] if doc["latest"] else []
    named += list(doc.get("tychoreg", {}).get("tags", {}).values())
    assert set(named) <= remaining, (named, remaining)
