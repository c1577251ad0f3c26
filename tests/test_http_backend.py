"""The `http` backend: a registry read over plain HTTP with nothing but its URL, (a) from a folder
served by the standard library's HTTP server, (b) from a SeaweedFS bucket behind `tychoreg serve`:
every read command, ranged resume after a dropped connection, a corrupted object, a stale catalog,
writes refused, headers from the environment, a no-op pull in one small request."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from threading import Thread
from typing import ClassVar
from urllib.parse import urlsplit

import pytest

from conftest import Workspace, http_client, serving, static_server
from faultproxy import FaultProxy, Rule

MiB = 1024 * 1024


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def publish(ws: Workspace) -> dict[str, bytes]:
    """narf 1.0 (stable), 1.1 (yanked), 2.0 (latest, 3 MiB); tool 0.1 (latest)."""
    data = {"1.0": os.urandom(1000), "1.1": os.urandom(2000), "2.0": os.urandom(3 * MiB + 5), "tool": b"tool\n" * 50}
    ws.ok_all(
        ["init", "narf", "narf.bin"],
        ["init", "tool", "tool.txt"],
        *(
            ["push", "narf", v, str(ws.file(f"{v}.bin", data[v])), "--note", f"build {v}"]
            for v in ("1.0", "1.1", "2.0")
        ),
        ["push", "tool", "0.1", str(ws.file("tool.txt", data["tool"])), "--promote-latest"],
        ["promote", "narf", "2.0"],
        ["tag", "narf", "1.0", "stable"],
        ["yank", "narf", "1.1", "--reason", "broken"],
    )
    return data


WRITES = [
    ("init", "new", "new.bin"),
    ("push", "narf", "3.0", "PUSHFILE"),
    ("push", "narf", "2.0", "PUSHFILE"),  # an existing version: still "read-only", not "exists"
    ("promote", "narf", "1.0"),
    ("tag", "narf", "1.0", "beta"),
    ("untag", "narf", "stable"),
    ("yank", "narf", "2.0", "--yes"),
    ("unyank", "narf", "1.1"),
    ("delete", "narf", "1.0", "--yes", "--force"),
    ("delete", "narf", "--yes", "--force"),
    ("index",),
]


def every_read_command(origin: Workspace, client: Workspace, data: dict[str, bytes]) -> None:
    """What the client reads over HTTP is what the origin reads from its store, command by command."""
    for args in (
        ("list", "--json"),
        ("list", "n*", "--json"),
        ("list-versions", "narf", "--json"),
        ("info", "narf", "--json"),
        ("info", "narf", "stable", "--json"),
        ("info", "narf", "^1", "--json"),
    ):
        assert client.ok(*args).json() == origin.ok(*args).json(), args
    assert "2.0" in client.ok("list-versions", "narf").out

    client.ok("pull", "narf")
    assert (client.root / "tycho_packages/narf.bin").read_bytes() == data["2.0"]
    assert "Up to date" in client.ok("pull", "narf").out
    client.ok("pull", "narf", "--version", "stable", "--outfile", "stable.bin", "--no-cache")
    assert (client.root / "stable.bin").read_bytes() == data["1.0"]
    yanked = client.ok("pull", "narf", "--version", "1.1", "--outfile", "yanked.bin")
    assert "yanked: broken" in yanked.err
    assert (client.root / "yanked.bin").read_bytes() == data["1.1"]
    client.ok("pull-list", "narf", "tool")
    assert (client.root / "tycho_packages/tool.txt").read_bytes() == data["tool"]
    assert client.ok("verify", "narf", "--json").json()[0]["ok"] is True

    # declared packages, a lock, sync, and sync --offline from the cache
    client.config["packages"] = {"narf": "^1", "tool": "latest"}
    client.write_config()
    client.ok("lock")
    lock = json.loads((client.root / "tycho.lock").read_text())
    assert {n: e["version"] for n, e in lock["packages"].items()} == {"narf": "1.0", "tool": "0.1"}
    assert lock["packages"]["narf"]["sha256"] == sha(data["1.0"])
    client.ok("sync", "--locked")
    assert (client.root / "tycho_packages/narf.bin").read_bytes() == data["1.0"]
    (client.root / "tycho_packages/narf.bin").unlink()
    client.ok("sync", "--offline")
    assert (client.root / "tycho_packages/narf.bin").read_bytes() == data["1.0"]
    assert client.ok("cache", "info", "--json").json()["entries"] >= 2

    push_file = str(client.file("push.bin", b"new bytes"))
    for args in WRITES:
        refused = client.run(*(push_file if a == "PUSHFILE" else a for a in args))
        assert refused.code == 1, (args, refused.all)
        assert "this registry is read-only over HTTP" in refused.err, (args, refused.err)
        assert "hint: HTTP only reads" in refused.err
    assert origin.ok("list-versions", "narf", "--json").json() == client.ok("list-versions", "narf", "--json").json()


def test_a_folder_served_by_the_standard_librarys_http_server(tmp_path: Path) -> None:
    origin = Workspace(tmp_path / "origin", "file", {"tycho": {"backend": "file"}, "file": {"path": "../registry"}})
    origin.root.mkdir()
    origin.write_config()
    data = publish(origin)
    with static_server(tmp_path / "registry") as server:
        every_read_command(origin, http_client(tmp_path, server.url), data)


@pytest.fixture
def served_bucket(s3_ws: Workspace) -> Iterator[tuple[Workspace, str]]:
    with serving(s3_ws) as server:
        yield s3_ws, server.url


def test_a_bucket_behind_tychoreg_serve(served_bucket, tmp_path: Path) -> None:
    origin, url = served_bucket
    data = publish(origin)
    every_read_command(origin, http_client(tmp_path, url), data)


def test_a_no_op_pull_costs_one_small_request(served_bucket, tmp_path: Path) -> None:
    origin, url = served_bucket
    publish(origin)
    proxy = FaultProxy(url)
    try:
        client = http_client(tmp_path, proxy.endpoint + "/")
        client.ok("pull", "narf")
        proxy.seen.clear()
        assert "Up to date" in client.ok("pull", "narf").out
        assert proxy.seen == [("GET", "/narf/.tycho/catalog.json", 304)]
    finally:
        proxy.close()


def test_ranged_parallel_download_resumes_after_a_dropped_connection(served_bucket, tmp_path: Path) -> None:
    origin, url = served_bucket
    big, small = os.urandom(23 * MiB + 7), os.urandom(3 * MiB + 1)
    origin.ok("init", "big", "big.bin")
    origin.ok("push", "big", "1", str(origin.file("big.bin", big)), "--promote-latest")
    origin.ok("init", "small", "small.bin")
    origin.ok("push", "small", "1", str(origin.file("small.bin", small)), "--promote-latest")
    proxy = FaultProxy(url)
    try:
        client = http_client(tmp_path, proxy.endpoint + "/")
        client.config["tycho"]["part_size"] = "5MiB"
        client.write_config()
        # parallel ranges; one of them is cut off half way and asked again
        proxy.rules.append(Rule("GET", "/big/tycho_1.pkg", "truncate", times=1))
        client.ok("pull", "big")
        assert (client.root / "tycho_packages/big.bin").read_bytes() == big
        ranges = [r for p, r in proxy.ranges if p == "/big/tycho_1.pkg"]
        assert {"bytes=0-5242879", f"bytes=20971520-{len(big) - 1}"} <= set(ranges)
        assert len(ranges) == 6  # five parts, one of them twice

        # one stream, dropped half way: the pull resumes where it stopped, with a range
        proxy.ranges.clear()
        proxy.rules.append(Rule("GET", "/small/tycho_1.pkg", "truncate", times=1))
        pulled = client.ok("pull", "small")
        assert "resumed 1x" in pulled.out
        assert (client.root / "tycho_packages/small.bin").read_bytes() == small
        ranges = [r for p, r in proxy.ranges if p == "/small/tycho_1.pkg"]
        assert len(ranges) == 2 and ranges[0] is None
        resumed_at = int(re.fullmatch(r"bytes=(\d+)-", ranges[1]).group(1))
        assert 0 < resumed_at <= len(small) // 2
    finally:
        proxy.close()


def test_a_corrupted_object_fails_and_writes_nothing(served_bucket, tmp_path: Path) -> None:
    origin, url = served_bucket
    data = publish(origin)
    origin.write_stored("narf/tycho_2.0.pkg", os.urandom(len(data["2.0"])))  # same size, other bytes
    client = http_client(tmp_path, url)
    failed = client.run("pull", "narf")
    assert failed.code == 1
    assert "narf 2.0 failed verification" in failed.err
    assert not (client.root / "tycho_packages").exists() or not list((client.root / "tycho_packages").iterdir())
    assert client.run("verify", "narf", "2.0").code == 1


def test_a_stale_catalog_shows_the_registry_as_it_was_until_index(served_bucket, tmp_path: Path) -> None:
    origin, url = served_bucket
    data = publish(origin)
    client = http_client(tmp_path, url)
    # written by a tool that keeps no catalog: not seen over HTTP until the catalog is rebuilt
    origin.write_stored("narf/tycho_3.0.pkg", b"three")
    assert "3.0" not in [v["version"] for v in client.ok("list-versions", "narf", "--json").json()]
    missing = client.run("pull", "narf", "--version", "3.0", "--outfile", "three.bin")
    assert missing.code == 1 and "no version 3.0 of package narf" in missing.err
    assert origin.run("index", "--check").code == 1
    origin.ok("index")
    assert "3.0" in [v["version"] for v in client.ok("list-versions", "narf", "--json").json()]
    client.ok("pull", "narf", "--version", "3.0", "--outfile", "three.bin")
    assert (client.root / "three.bin").read_bytes() == b"three"

    # the catalog names a version whose data is gone: an error, nothing written
    origin.seaweed.client().delete_object(Bucket=origin.bucket, Key="narf/tycho_1.0.pkg")
    gone = client.run("pull", "narf", "--version", "1.0", "--outfile", "one.bin")
    assert gone.code == 1, gone.all
    assert "deleted while it was being downloaded" in gone.err
    assert not (client.root / "one.bin").exists()
    assert data["1.0"] not in b"".join(p.read_bytes() for p in client.root.rglob("*") if p.is_file())


def test_a_registry_without_a_catalog_says_so(tmp_path: Path) -> None:
    folder = tmp_path / "registry"
    (folder / "narf").mkdir(parents=True)
    (folder / "narf/tycho.json").write_text('{"localname": "narf.bin", "latest": "1.0"}')
    (folder / "narf/tycho_1.0.pkg").write_bytes(b"0.4.0 bytes")
    with static_server(folder) as server:
        client = http_client(tmp_path, server.url)
        for args in (("list",), ("pull", "narf")):
            failed = client.run(*args)
            assert failed.code == 1, failed.all
            assert "has no catalog (.tycho-catalog.json is missing)" in failed.err
            assert "hint: with a config for the registry's bucket or folder, run: tychoreg index" in failed.err


class _Gate(BaseHTTPRequestHandler):
    """In front of another server: only requests with the expected Authorization pass."""

    protocol_version = "HTTP/1.1"
    upstream = ("127.0.0.1", 0)
    token = ""
    seen: ClassVar[list[str | None]] = []

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.seen.append(self.headers.get("Authorization"))
        if self.headers.get("Authorization") != f"Bearer {self.token}":
            self.send_response(401)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        conn = http.client.HTTPConnection(*self.upstream, timeout=30)
        conn.request(self.command, self.path, headers={k: v for k, v in self.headers.items() if k != "Connection"})
        resp = conn.getresponse()
        body = resp.read()
        self.send_response(resp.status)
        for k, v in resp.getheaders():
            if k.lower() not in ("connection", "transfer-encoding"):
                self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_HEAD = do_GET


def test_headers_from_the_environment_are_sent_and_never_shown(served_bucket, tmp_path: Path) -> None:
    origin, url = served_bucket
    publish(origin)
    token = "s3cr3t-bearer-4711"
    parts = urlsplit(url)
    handler = type("Gate", (_Gate,), {"upstream": (parts.hostname, parts.port), "token": token, "seen": []})
    gate = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    Thread(target=gate.serve_forever, daemon=True).start()
    try:
        gated = f"http://127.0.0.1:{gate.server_address[1]}/"
        client = http_client(tmp_path, gated, headers={"Authorization": {"env": "TYCHOREG_HTTP_AUTH"}})
        client.ok("pull", "narf", env={"TYCHOREG_HTTP_AUTH": f"Bearer {token}"})
        assert handler.seen and set(handler.seen) == {f"Bearer {token}"}

        denied = client.run("pull", "tool", env={"TYCHOREG_HTTP_AUTH": f"Bearer {token}-wrong"})
        assert denied.code == 1
        assert "access denied" in denied.err and "(HTTP 401)" in denied.err
        assert "hint: check the headers (http.headers) your config sends" in denied.err
        assert token not in denied.all

        # a cloned repository's config may not send just any secret of yours to its URL
        client.config["http"]["headers"] = {"Authorization": {"env": "GITHUB_TOKEN"}}
        client.write_config()
        refused = client.run("list", env={"GITHUB_TOKEN": "ghp_do_not_send"})
        assert refused.code == 2
        assert "GITHUB_TOKEN" in refused.err and "ghp_do_not_send" not in refused.all
    finally:
        gate.shutdown()
        gate.server_close()


@pytest.mark.parametrize(
    ("http_section", "message"),
    [
        ({}, "the http backend needs http.url"),
        ({"url": "ftp://example.test/reg"}, "must be an http:// or https:// URL"),
        ({"url": "https://user:pw@example.test/reg"}, "holds credentials"),
        ({"url": "https://example.test/reg?x=1"}, "must not have a query"),
        ({"url": "https://example.test/", "headers": ["x"]}, "must be a JSON object"),
        ({"url": "https://example.test/", "headers": {"Bad Name": "x"}}, "is not a header name"),
        ({"url": "https://example.test/", "headers": {"X-A": "a\nb"}}, "must be a one-line string"),
        ({"url": "https://example.test/", "timeout": 3}, "unknown key http.timeout"),
    ],
)
def test_a_bad_http_section_is_a_config_error(tmp_path: Path, http_section: dict, message: str) -> None:
    client = http_client(tmp_path, "http://127.0.0.1:9/")
    client.config["http"] = http_section
    client.write_config()
    failed = client.run("list")
    assert failed.code == 2, failed.all
    assert message in failed.err
    assert "pw@" not in failed.all


def test_mirror_from_http_keeps_the_destinations_catalog_and_never_writes_over_http(tmp_path: Path) -> None:
    """A registry read over HTTP mirrors into a folder: the versions verify, and the folder's own
    static catalog lists what arrived without an `index` run. Over HTTP, mirror to it and sign are
    refused as writes."""
    origin = Workspace(tmp_path / "origin", "file", {"tycho": {"backend": "file"}, "file": {"path": "../registry"}})
    origin.root.mkdir()
    origin.write_config()
    data = publish(origin)
    with static_server(tmp_path / "registry") as server:
        client = http_client(tmp_path, server.url)
        dest_config = tmp_path / "dest.json"
        dest_config.write_text(json.dumps({"tycho": {"backend": "file"}, "file": {"path": str(tmp_path / "dest")}}))
        copied = client.ok("mirror", "--to", str(dest_config), "--json").json()
        assert sorted((c["package"], c["version"]) for c in copied["copied"]) == [
            ("narf", "1.0"),
            ("narf", "1.1"),
            ("narf", "2.0"),
            ("tool", "0.1"),
        ]
        catalog = json.loads((tmp_path / "dest" / ".tycho-catalog.json").read_text())
        assert "narf" in json.dumps(catalog) and "tool" in json.dumps(catalog)
        assert (tmp_path / "dest" / "narf" / "index.html").is_file()
        assert (tmp_path / "dest" / "narf" / "tycho_2.0.pkg").read_bytes() == data["2.0"]

        back = tmp_path / "back.json"
        back.write_text(json.dumps({"tycho": {"backend": "http"}, "http": {"url": server.url}}))
        origin_side = Workspace(
            tmp_path / "dest-project", "file", {"tycho": {"backend": "file"}, "file": {"path": str(tmp_path / "dest")}}
        )
        origin_side.root.mkdir()
        origin_side.write_config()
        refused = origin_side.run("mirror", "--to", str(back))
        assert refused.code == 1 and "read-only over HTTP" in refused.err, refused.all
        refused = client.run("sign", "narf", "1.0", "--key", str(tmp_path / "no-such-key"))
        assert refused.code == 1 and "read-only over HTTP" in refused.err, refused.all
