"""The benchmark's network emulator (benchmarks/netem.py): delay, bandwidth cap, bytes, counts.

Time is only bounded from below by physics (a round trip cannot take less than its RTT, a
transfer less than size / bandwidth); the upper bounds are generous, so a busy 2-core machine
cannot make these fail. Nothing here times tychoreg: that is the benchmark's job.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest

from servers import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
from netem import PROFILES, Netem, Profile, RequestCounter

MIB = 1024 * 1024
BLOB = os.urandom(3 * MIB)


class _Handler(BaseHTTPRequestHandler):
    """GET /blob: 3 MiB of random bytes; GET /small: a few; PUT/POST: the SHA-256 of the body."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def _answer(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self._answer(BLOB if self.path == "/blob" else b"ok")

    def do_PUT(self) -> None:
        digest = hashlib.sha256()
        if "chunked" in self.headers.get("Transfer-Encoding", ""):
            while size := int(self.rfile.readline().split(b";")[0], 16):
                digest.update(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b""):
                pass
        else:
            left = int(self.headers["Content-Length"])
            while left:
                chunk = self.rfile.read(min(left, 1 << 16))
                digest.update(chunk)
                left -= len(chunk)
        self._answer(digest.hexdigest().encode())

    do_POST = do_PUT


@pytest.fixture(scope="module")
def origin() -> Iterator[tuple[str, int]]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield ("127.0.0.1", server.server_address[1])
    server.shutdown()
    server.server_close()


def _connect(net: Netem) -> http.client.HTTPConnection:
    url = urlsplit(net.endpoint)
    return http.client.HTTPConnection(url.hostname, url.port, timeout=60)


def _get(conn: http.client.HTTPConnection, path: str) -> tuple[float, bytes]:
    start = time.perf_counter()
    conn.request("GET", path)
    body = conn.getresponse().read()
    return time.perf_counter() - start, body


def test_a_new_connection_pays_a_handshake_then_each_request_a_round_trip(origin: tuple[str, int]) -> None:
    profile = Profile("test", rtt=0.1, bandwidth=None)
    with Netem(origin, profile) as net:
        conn = _connect(net)
        first, body = _get(conn, "/small")
        again, body2 = _get(conn, "/small")
        conn.close()
        stats = net.stats()
    assert body == body2 == b"ok"
    assert first >= 2 * profile.rtt  # the handshake, then the request and its answer
    assert again >= profile.rtt
    assert first < 2 * profile.rtt + 10 and again < profile.rtt + 10
    assert (stats.connections, stats.requests) == (1, 2)
    assert stats.round_trips == 3  # handshake + two exchanges
    assert stats.serial_round_trips == 3


def test_bandwidth_is_capped_per_connection_and_bytes_arrive_unchanged(origin: tuple[str, int]) -> None:
    profile = Profile("test", rtt=0.02, bandwidth=8e6)
    upload = os.urandom(2 * MIB + 12345)
    with Netem(origin, profile) as net:
        conn = _connect(net)
        down, body = _get(conn, "/blob")
        start = time.perf_counter()
        conn.request("PUT", "/up", body=upload)
        answer = conn.getresponse().read()
        up = time.perf_counter() - start
        conn.request("POST", "/chunked", body=iter([upload[:MIB], upload[MIB:]]), encode_chunked=True)
        chunked_answer = conn.getresponse().read()
        conn.close()
        stats = net.stats()
    assert body == BLOB
    assert answer == chunked_answer == hashlib.sha256(upload).hexdigest().encode()
    floor_down = len(BLOB) / profile.bandwidth + profile.rtt * 2  # handshake + the exchange
    floor_up = len(upload) / profile.bandwidth + profile.rtt
    assert floor_down <= down < floor_down * 3 + 10
    assert floor_up <= up < floor_up * 3 + 10
    # bodies (one of them chunked) are not mistaken for request lines
    assert (stats.connections, stats.requests) == (1, 3)
    assert stats.bytes_down >= len(BLOB) and stats.bytes_up >= 2 * len(upload)


def test_connections_in_parallel_each_get_the_bandwidth(origin: tuple[str, int]) -> None:
    """The cap is per connection: four at once take about as long as one (not four times)."""
    profile = Profile("test", rtt=0.02, bandwidth=10e6)
    with Netem(origin, profile) as net:
        times: list[float] = []
        bodies: list[bytes] = []

        def one() -> None:
            conn = _connect(net)
            seconds, body = _get(conn, "/blob")
            conn.close()
            times.append(seconds)
            bodies.append(body)

        start = time.perf_counter()
        threads = [threading.Thread(target=one) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - start
        stats = net.stats()
    assert bodies == [BLOB] * 4
    floor = len(BLOB) / profile.bandwidth + 2 * profile.rtt
    assert min(times) >= floor
    assert wall < 4 * len(BLOB) / profile.bandwidth  # what one shared connection's cap would allow
    assert (stats.connections, stats.requests) == (4, 4)
    assert stats.round_trips == 8  # four handshakes, four exchanges
    assert 2 <= stats.serial_round_trips <= 8


def test_reset_counts_from_zero_and_profiles(origin: tuple[str, int]) -> None:
    assert PROFILES["region"] == Profile("region", 0.020, 40e6)
    assert PROFILES["far"] == Profile("far", 0.080, 15e6)
    with Netem(origin, PROFILES["loopback"]) as net:
        conn = _connect(net)
        _get(conn, "/small")
        assert net.reset().requests == 1
        _get(conn, "/small")
        conn.close()
        assert (net.stats().connections, net.stats().requests) == (0, 1)


def test_request_counter_skips_bodies_split_anywhere() -> None:
    stream = (
        b"PUT /a HTTP/1.1\r\nContent-Length: 30\r\n\r\n"
        + b"GET /fake HTTP/1.1\r\n\r\n".ljust(30, b"x")
        + b"POST /b HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nGET /\r\n0\r\n\r\n"
        + b"HEAD /c HTTP/1.1\r\nHost: h\r\n\r\n"
    )
    for step in (1, 3, 7, len(stream)):
        counter = RequestCounter()
        for i in range(0, len(stream), step):
            counter.feed(stream[i : i + step])
        assert counter.count == 3, step


def test_an_s3_client_through_the_emulator(seaweed) -> None:
    import boto3

    from servers import ACCESS_KEY, SECRET_KEY

    bucket = seaweed.new_bucket()
    upstream = urlsplit(seaweed.endpoint)
    with Netem((upstream.hostname, upstream.port), Profile("test", 0.01, 20e6)) as net:
        s3 = boto3.client(
            "s3",
            endpoint_url=net.endpoint,
            region_name="us-east-1",
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
        )
        data = os.urandom(MIB + 7)
        s3.put_object(Bucket=bucket, Key="k", Body=data)
        got = s3.get_object(Bucket=bucket, Key="k")["Body"].read()
        stats = net.stats()
    assert got == data
    assert stats.requests == 2
    assert stats.connections >= 1
