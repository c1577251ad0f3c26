"""`tychoreg serve`: the URL on the first line, loopback by default, nothing outside what the
catalog publishes (no traversal, no links out, no internals), HTTP semantics (Range, ETag,
HEAD), 50 concurrent clients and clients that drop mid-download, one log line per request,
a clean stop on Ctrl-C."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from conftest import Workspace, http_client, serving
from tychoreg.serve import parse_range, route

MiB = 1024 * 1024


def request(url: str, path: str, method: str = "GET", headers: dict | None = None) -> tuple[int, dict, bytes]:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        conn.request(method, path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


@pytest.fixture
def registry(ws: Workspace) -> tuple[Workspace, bytes]:
    data = os.urandom(2 * MiB + 3)
    ws.ok_all(["init", "narf", "narf.bin"], ["push", "narf", "1.0", str(ws.file("a.bin", data)), "--promote-latest"])
    return ws, data


def test_first_line_is_the_url_on_loopback_and_json_says_the_same(registry, tmp_path: Path) -> None:
    ws, data = registry
    with serving(ws) as server:
        assert server.url.startswith("http://127.0.0.1:") and server.url.endswith("/")
        status, headers, body = request(server.url, "/")
        assert status == 200 and headers["content-type"].startswith("text/html")
        assert b'href="narf/index.html"' in body
    with serving(ws, "--json") as server:
        assert server.url.startswith("http://127.0.0.1:")
        client = http_client(tmp_path, server.url)
        client.ok("pull", "narf")
        assert (client.root / "tycho_packages/narf.bin").read_bytes() == data


@pytest.mark.parametrize(
    "path",
    [
        "/../../../../etc/passwd",
        "/narf/../../../../etc/passwd",
        "/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "/narf/%2e%2e%2f%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "/narf%2f..%2f..%2fetc/passwd",
        "//etc/passwd",
        "/narf/tycho_1.0.pkg/../tycho.json",
        "/narf/.tycho/versions/1.0.json",
        "/narf/.tycho/index.json",
        "/.tycho-lock",
        "/narf/.tycho_1.0.pkg.abc.tmp",
        "/narf/tycho_..pkg",
        "/narf/other.txt",
        "/%ff/",
    ],
)
def test_nothing_outside_what_the_catalog_publishes(registry, path: str) -> None:
    ws, _ = registry
    ws.write_stored("narf/other.txt", b"another tool's file")
    with serving(ws) as server:
        status, _, body = request(server.url, path)
        assert status == 404, (path, status, body[:200])
        assert b"root:" not in body and b"tool's file" not in body


def test_links_in_a_folder_registry_are_never_followed(tmp_path: Path) -> None:
    ws = Workspace(tmp_path / "p", "file", {"tycho": {"backend": "file"}, "file": {"path": str(tmp_path / "reg")}})
    ws.root.mkdir()
    ws.write_config()
    ws.ok("init", "narf", "narf.bin")
    ws.ok("push", "narf", "1.0", str(ws.file("a.bin", b"ours")))
    secret = tmp_path / "secret.txt"
    secret.write_text("private key material")
    os.symlink(secret, tmp_path / "reg/narf/tycho_6.6.pkg")
    os.symlink(tmp_path, tmp_path / "reg/evil")
    os.symlink(secret, tmp_path / "reg/evil2")
    with serving(ws) as server:
        for path in ("/narf/tycho_6.6.pkg", "/evil/secret.txt", "/evil/tycho.json", "/evil/", "/evil2/"):
            status, _, body = request(server.url, path)
            assert status == 404, (path, status)
            assert b"private" not in body
        assert request(server.url, "/narf/tycho_1.0.pkg")[2] == b"ours"


def test_ranges_etags_and_head(registry) -> None:
    ws, data = registry
    with serving(ws) as server:
        status, headers, body = request(server.url, "/narf/tycho_1.0.pkg", headers={"Range": "bytes=10-99"})
        assert (status, body, headers["content-range"]) == (206, data[10:100], f"bytes 10-99/{len(data)}")
        assert headers["content-type"] == "application/octet-stream"
        assert headers["x-content-type-options"] == "nosniff"
        etag = headers["etag"]
        status, headers, body = request(server.url, "/narf/tycho_1.0.pkg", headers={"Range": "bytes=-5"})
        assert (status, body) == (206, data[-5:])
        status, headers, _ = request(server.url, "/narf/tycho_1.0.pkg", headers={"Range": f"bytes={len(data)}-"})
        assert (status, headers["content-range"]) == (416, f"bytes */{len(data)}")
        status, headers, body = request(server.url, "/narf/tycho_1.0.pkg", "HEAD")
        assert (status, headers["content-length"], body) == (200, str(len(data)), b"")
        assert headers["accept-ranges"] == "bytes"
        assert request(server.url, "/narf/tycho_1.0.pkg", headers={"If-None-Match": etag})[0] == 304
        stale = {"Range": "bytes=0-9", "If-Range": '"old"'}
        status, _, body = request(server.url, "/narf/tycho_1.0.pkg", headers=stale)
        assert (status, body) == (200, data)  # changed since the client's copy: all of it
        assert request(server.url, "/narf/tycho_1.0.pkg", headers={"If-Match": '"other"'})[0] == 412
        status, headers, body = request(server.url, "/narf/.tycho/catalog.json")
        assert status == 200 and json.loads(body)["package"] == "narf"
        assert request(server.url, "/narf/.tycho/catalog.json", headers={"If-None-Match": headers["etag"]})[0] == 304
        status, headers, _ = request(server.url, "/narf")
        assert (status, headers["location"]) == (301, "/narf/")
        assert request(server.url, "/narf/")[0] == 200
        assert request(server.url, "/narf/tycho.json")[0] == 200
        assert request(server.url, "/narf/tycho_1.0.pkg", "POST")[0] == 405
        assert request(server.url, "/narf/tycho_1.0.pkg", "DELETE")[0] == 405
    assert ws.read_stored("narf/tycho_1.0.pkg") == data


def test_fifty_concurrent_clients_and_clients_that_drop_mid_download(registry) -> None:
    ws, data = registry
    want = hashlib.sha256(data).hexdigest()
    with serving(ws) as server:
        parts = urlsplit(server.url)

        def full(i: int) -> tuple[int, str]:
            status, _, body = request(server.url, "/narf/tycho_1.0.pkg" if i % 5 else "/narf/")
            return status, hashlib.sha256(body).hexdigest() if i % 5 else "page"

        def drop(i: int) -> None:
            sock = socket.create_connection((parts.hostname, parts.port), timeout=30)
            sock.sendall(b"GET /narf/tycho_1.0.pkg HTTP/1.1\r\nHost: x\r\n\r\n")
            sock.recv(1000 + i)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            sock.close()  # a reset, mid-body

        started = time.monotonic()
        with ThreadPoolExecutor(70) as pool:
            drops = [pool.submit(drop, i) for i in range(20)]
            results = list(pool.map(full, range(50)))
            for d in drops:
                d.result()
        assert all(status == 200 for status, _ in results)
        assert {digest for _, digest in results} == {want, "page"}
        assert time.monotonic() - started < 60
        # still serving, and still right
        status, _, body = request(server.url, "/narf/tycho_1.0.pkg")
        assert status == 200 and body == data
    log = server.proc.stderr.read() if server.proc.stderr else ""
    assert "Traceback" not in log, log


def test_one_log_line_per_request_and_a_clean_stop_on_ctrl_c(registry) -> None:
    ws, _ = registry
    with serving(ws) as server:
        for path in ("/", "/narf/", "/narf/tycho_1.0.pkg", "/nothing/here"):
            request(server.url, path)
        server.proc.send_signal(signal.SIGINT)
        code = server.proc.wait(10)
        log = server.proc.stderr.read().splitlines() if server.proc.stderr else []
    assert code == 0
    requests = [line for line in log if '"GET ' in line]
    statuses = {line.split('"')[1]: line.split('"')[2].split()[0] for line in requests}  # lines in any order
    assert len(requests) == 4
    ok = {"GET /": "200", "GET /narf/": "200", "GET /narf/tycho_1.0.pkg": "200"}
    assert statuses == {**ok, "GET /nothing/here": "404"}
    assert log[-1] == "Stopped"
    assert not any("Traceback" in line or line.startswith("error") for line in log)


def test_sigterm_stops_it_too(registry) -> None:
    ws, _ = registry
    with serving(ws) as server:
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(10) == 0


def test_a_port_in_use_and_an_http_registry_are_refused(registry, tmp_path: Path) -> None:
    ws, _ = registry
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        port = taken.getsockname()[1]
        busy = ws.run("serve", "--port", str(port), timeout=30)
        assert busy.code == 1
        assert f"cannot listen on http://127.0.0.1:{port}/" in busy.err
        assert "hint: choose another --port" in busy.err
    finally:
        taken.close()
    client = http_client(tmp_path, "http://127.0.0.1:9/")
    again = client.run("serve", "--port", "0", timeout=30)
    assert again.code == 2
    assert "reached over HTTP already" in again.err


def test_route_and_range_parsing() -> None:
    assert route("/") == route("/index.html")
    assert route("/narf").redirect == "/narf/"
    assert route("/narf/?x=1").key == "narf/index.html"
    assert route("/na%72f/tycho_1.0.pkg").key == "narf/tycho_1.0.pkg"
    assert route("/narf/tycho_latest.pkg").key == "narf/tycho_latest.pkg"  # a name; the store says whether it exists
    for bad in ("/.tycho/x", "/narf/tycho_.pkg", "/-narf/", "/narf/.tycho/versions/1.json", "narf/", "/narf/a/b/c"):
        assert route(bad) is None, bad
    assert parse_range("bytes=0-0", 10) == (0, 0)
    assert parse_range("bytes=5-", 10) == (5, 9)
    assert parse_range("bytes=5-100", 10) == (5, 9)
    assert parse_range("bytes=-3", 10) == (7, 9)
    assert parse_range("bytes=10-", 10) is False
    assert parse_range("bytes=3-1", 10) is False
    assert parse_range("bytes=0-1,4-5", 10) is None
    assert parse_range("items=0-1", 10) is None


def test_help_names_the_new_commands() -> None:
    out = subprocess.run([sys.executable, "-m", "tychoreg", "--help"], capture_output=True, text=True).stdout
    assert "index" in out and "serve" in out
