"""A small HTTP proxy between the client and SeaweedFS that injects faults by rule.

The Host header is passed through unchanged, so SigV4 signatures made for the proxy's address
still verify at the server. Rules are (method, path substring, fault, times): ``"503"`` answers
503 without forwarding; ``"503-after"`` forwards the request (so the server does the work) and
then answers 503 instead of the server's reply, as a lost response looks to a client;
``"truncate"`` forwards and sends the headers but only half of the body, then closes.
``ranges`` records the path and Range header of every GET, to show that downloads resume;
``sent`` counts the body bytes sent back per path (what a delta pull really fetched).
``transform``, when set, rewrites every forwarded response body: ``(method, path, body) -> body``
(e.g. a listing as another S3-compatible server would write it).

Random mode: with ``rate`` > 0, each request that no rule matched gets, with probability
``rate``, one fault drawn from ``kinds`` by a ``random.Random(seed)`` (deterministic for a given
order of requests): ``"503"`` (answer 503 without forwarding), ``"reset"`` (close the connection
with a TCP reset and no response, without forwarding), ``"truncate"`` (forward, send headers with
the full Content-Length but only half the body, then close) and ``"stall"`` (forward, so the server
does the work, then send nothing for ``stall_seconds`` - longer than the client's read timeout -
and close). ``injected`` counts the faults actually applied, by kind (a truncate of an empty body
changes nothing and is not counted).
"""

from __future__ import annotations

import http.client
import random
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "te", "upgrade"}
_ERROR = (
    b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>ServiceUnavailable</Code>'
    b"<Message>injected by the test proxy</Message></Error>"
)


@dataclass
class Rule:
    method: str
    path_contains: str
    fault: str
    times: int = 1


RANDOM_KINDS = ("503", "reset", "truncate", "stall")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # many clients connect at once in the reliability tests


class FaultProxy:
    def __init__(
        self,
        upstream: str,
        *,
        rate: float = 0.0,
        seed: int | None = None,
        kinds: tuple[str, ...] = RANDOM_KINDS,
        stall_seconds: float = 3.0,
    ) -> None:
        parts = urlsplit(upstream)
        self.rate = rate
        self.kinds = kinds
        self.stall_seconds = stall_seconds
        self.rng = random.Random(seed)
        self.injected: Counter[str] = Counter()
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.rules: list[Rule] = []
        self.seen: list[tuple[str, str, int]] = []
        self.transform: Callable[[str, str, bytes], bytes] | None = None
        self.ranges: list[tuple[str, str | None]] = []
        #: Response body bytes sent to the client, by request path (GETs only).
        self.sent: Counter[str] = Counter()
        self._lock = threading.Lock()
        self.server = _Server(("127.0.0.1", 0), self._handler())
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _fault_for(self, method: str, path: str) -> str | None:
        with self._lock:
            for rule in self.rules:
                if rule.times and rule.method == method and rule.path_contains in path:
                    rule.times -= 1
                    return rule.fault
            if self.rate > 0 and self.rng.random() < self.rate:
                return self.rng.choice(self.kinds)
        return None

    def _count(self, kind: str) -> None:
        with self._lock:
            self.injected[kind] += 1

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _body(self) -> bytes:
                if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                    out = bytearray()
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                        if size == 0:
                            while self.rfile.readline().strip():
                                pass
                            return bytes(out)
                        out += self.rfile.read(size)
                        self.rfile.readline()
                return self.rfile.read(int(self.headers.get("Content-Length", 0) or 0))

            def _reply_error(self) -> None:
                self.send_response(503)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(_ERROR)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(_ERROR)

            def _any(self) -> None:
                body = self._body()
                if self.command == "GET":
                    proxy.ranges.append((self.path, self.headers.get("Range")))
                fault = proxy._fault_for(self.command, self.path)
                if fault == "503":
                    proxy.seen.append((self.command, self.path, 503))
                    proxy._count("503")
                    return self._reply_error()
                if fault == "reset":
                    proxy.seen.append((self.command, self.path, 0))
                    proxy._count("reset")
                    self.close_connection = True
                    # SO_LINGER 0: close() sends RST, the client sees a reset, not a clean EOF.
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    return None
                conn = http.client.HTTPConnection(*proxy.upstream, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
                if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                    headers["Content-Length"] = str(len(body))
                conn.request(self.command, self.path, body=body or None, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                conn.close()
                if proxy.transform is not None and self.command != "HEAD":
                    data = proxy.transform(self.command, self.path, data)
                if fault == "503-after":
                    proxy.seen.append((self.command, self.path, 503))
                    return self._reply_error()
                if fault == "stall":
                    proxy.seen.append((self.command, self.path, 0))
                    proxy._count("stall")
                    time.sleep(proxy.stall_seconds)
                    self.close_connection = True
                    return None
                if fault == "truncate" and (self.command == "HEAD" or not data):
                    fault = None  # nothing to cut short
                elif fault == "truncate":
                    proxy._count("truncate")
                proxy.seen.append((self.command, self.path, resp.status))
                full = len(data)
                if fault == "truncate":
                    data = data[: len(data) // 2]
                    self.close_connection = True
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in _HOP and (k.lower() != "content-length" or self.command == "HEAD"):
                        self.send_header(k, v)
                if self.command != "HEAD":
                    self.send_header("Content-Length", str(full))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                    with proxy._lock:
                        proxy.sent[urlsplit(self.path).path] += len(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _any

        return Handler
