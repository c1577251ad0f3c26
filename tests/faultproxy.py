"""A small HTTP proxy between the client and SeaweedFS that injects faults by rule.

The Host header is passed through unchanged, so SigV4 signatures made for the proxy's address
still verify at the server. Rules are (method, path substring, fault, times): ``"503"`` answers
503 without forwarding; ``"503-after"`` forwards the request (so the server does the work) and
then answers 503 instead of the server's reply, as a lost response looks to a client;
``"truncate"`` forwards and sends the headers but only half of the body, then closes.
``ranges`` records the path and Range header of every GET, to show that downloads resume.
"""

from __future__ import annotations

import http.client
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "te", "upgrade"}
_ERROR = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>ServiceUnavailable</Code>'
          b"<Message>injected by the test proxy</Message></Error>")


@dataclass
class Rule:
    method: str
    path_contains: str
    fault: str
    times: int = 1


class FaultProxy:
    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.rules: list[Rule] = []
        self.seen: list[tuple[str, str, int]] = []
        self.ranges: list[tuple[str, str | None]] = []
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
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
        return None

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
                    return self._reply_error()
                conn = http.client.HTTPConnection(*proxy.upstream, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
                if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                    headers["Content-Length"] = str(len(body))
                conn.request(self.command, self.path, body=body or None, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                conn.close()
                if fault == "503-after":
                    proxy.seen.append((self.command, self.path, 503))
                    return self._reply_error()
                proxy.seen.append((self.command, self.path, resp.status))
                if fault == "truncate":
                    data = data[: len(data) // 2]
                    self.close_connection = True
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in _HOP and (k.lower() != "content-length" or self.command == "HEAD"):
                        self.send_header(k, v)
                if self.command != "HEAD":
                    full = len(data) * 2 if fault == "truncate" else len(data)
                    self.send_header("Content-Length", str(full))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _any

        return Handler
