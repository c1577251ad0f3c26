"""Pushes through a fault-injecting proxy: lost responses and failed writes leave no debris."""

from __future__ import annotations

import hashlib
import os

import pytest

from conftest import Workspace
from faultproxy import FaultProxy, Rule


@pytest.fixture
def proxied(proxied_s3: tuple[Workspace, FaultProxy]) -> tuple[Workspace, FaultProxy]:
    """Package narf through the proxy, with few retries (each injected fault costs one)."""
    ws, proxy = proxied_s3
    ws.config["s3"]["config"] = {"retries": {"mode": "standard", "max_attempts": 3}}
    ws.write_config()
    ws.ok("init", "narf", "narf.bin")
    return ws, proxy


@pytest.mark.parametrize("size", [1000, 9 * 1024 * 1024], ids=["put", "multipart"])
def test_failed_commit_releases_the_claim(proxied, size: int) -> None:
    ws, proxy = proxied
    data = os.urandom(size)
    src = ws.file("a.bin", data)
    method = "PUT" if size < 8 * 2**20 else "POST"
    proxy.rules.append(Rule(method, "narf/tycho_1.0.pkg", "503", times=99))
    failed = ws.run("push", "narf", "1.0", str(src))
    assert failed.code == 1
    assert "503" in failed.err or "ServiceUnavailable" in failed.err
    assert ws.stored_keys() == {"narf/tycho.json"}  # no claim left, no data
    proxy.rules.clear()
    ws.ok("push", "narf", "1.0", str(src))  # a retry works at once
    assert ws.read_stored("narf/tycho_1.0.pkg") == data


@pytest.mark.parametrize(
    "size,method,target",
    [
        (1000, "PUT", "narf/tycho_1.0.pkg"),
        (9 * 1024 * 1024, "POST", "narf/tycho_1.0.pkg?uploadId"),
        (1000, "PUT", "narf/.tycho/versions/1.0.json"),
    ],
    ids=["data-put", "multipart-complete", "claim"],
)
def test_lost_response_of_own_write_is_recognised(proxied, size: int, method: str, target: str) -> None:
    """The server did the write, the client saw a 503 and retried into a 412: still our push."""
    ws, proxy = proxied
    data = os.urandom(size)
    proxy.rules.append(Rule(method, target, "503-after"))
    ws.ok("push", "narf", "1.0", str(ws.file("a.bin", data)), "--promote-latest")
    assert any(code == 503 for _, path, code in proxy.seen if target in path)
    listed = ws.ok("list-versions", "narf", "--json").json()
    assert [(v["version"], v["sha256"]) for v in listed] == [("1.0", hashlib.sha256(data).hexdigest())]
    assert ws.ok("list", "--json").json() == [{"name": "narf", "latest": "1.0"}]
    ws.ok("pull", "narf")
    assert (ws.root / "tycho_packages/narf.bin").read_bytes() == data


def test_promote_failure_after_push_says_the_version_is_there(proxied) -> None:
    ws, proxy = proxied
    proxy.rules.append(Rule("PUT", "narf/tycho.json", "503", times=99))
    result = ws.run("push", "narf", "1.0", str(ws.file("a.bin", b"x")), "--promote-latest")
    assert result.code == 1
    assert "pushed narf 1.0, but could not make it latest" in result.err
    assert "tychoreg promote narf 1.0" in result.err
    proxy.rules.clear()
    assert [v["version"] for v in ws.ok("list-versions", "narf", "--json").json()] == ["1.0"]


def test_truncated_download_resumes_with_range(proxied) -> None:
    ws, proxy = proxied
    data = os.urandom(3 * 1024 * 1024 + 17)
    ws.ok("push", "narf", "1.0", str(ws.file("a.bin", data)), "--promote-latest")
    proxy.rules.append(Rule("GET", "narf/tycho_1.0.pkg", "truncate", times=1))
    result = ws.ok("pull", "narf")
    assert "resumed 1x" in result.out
    assert (ws.root / "tycho_packages/narf.bin").read_bytes() == data
    data_reads = [r for path, r in proxy.ranges if "tycho_1.0.pkg" in path]
    assert data_reads[0] is None and data_reads[1].startswith("bytes=") and data_reads[1] != "bytes=0-"


def test_interrupted_pull_resumes_in_the_next_run(proxied) -> None:
    ws, proxy = proxied
    data = os.urandom(2 * 1024 * 1024)
    ws.ok("push", "narf", "1.0", str(ws.file("a.bin", data)), "--promote-latest")
    proxy.rules.append(Rule("GET", "narf/tycho_1.0.pkg", "truncate", times=99))
    failed = ws.run("pull", "narf")
    assert failed.code == 1
    assert "interrupted" in failed.err and "resumes" in failed.err
    dest = ws.root / "tycho_packages/narf.bin"
    assert not dest.exists()  # nothing partial at the destination
    parts = list(dest.parent.glob(".narf.bin.*.part"))
    assert len(parts) == 1 and 0 < parts[0].stat().st_size < len(data)
    have = parts[0].stat().st_size
    proxy.rules.clear()
    proxy.ranges.clear()
    result = ws.ok("pull", "narf", "--json").json()
    assert dest.read_bytes() == data
    data_reads = [r for path, r in proxy.ranges if "tycho_1.0.pkg" in path]
    assert data_reads == [f"bytes={have}-"]  # one ranged read of the rest, no start over
    # what it says it read is what it read: the rest, not the whole (it said the whole before)
    assert (result["fetched_bytes"], result["reused_bytes"]) == (len(data) - have, 0), result
    assert not list(dest.parent.glob(".narf.bin.*"))
