"""Connections opened while Python is still importing the rest of tychoreg.

A command on a server 20-80 ms away pays one round trip for the TCP handshake before its first
request, and start-up (the imports of the domain, the S3 client, ``http.client``) costs about as
much again on these machines. Both can overlap: as soon as the configuration is read, the CLI
calls :func:`start`, which connects sockets in background threads using nothing but the standard
``socket`` module; the lean S3 client then adopts them (:func:`take`) instead of connecting.

Nothing here changes what is sent or believed: an adopted socket carries the same signed
requests as one the client would have opened, and a socket that failed to connect is simply not
handed out (the client then connects itself, and boto3 retries whatever goes wrong after).
Sockets nobody takes are closed when the process exits.
"""

from __future__ import annotations

import socket
import threading
import time

#: Seconds a connect may take before its socket is given up on (the client then connects itself).
CONNECT_TIMEOUT = 10.0
#: A socket connected longer ago than this is not handed out: the server may have closed it idle.
FRESH = 5.0


class _Attempt:
    def __init__(self) -> None:
        self.done = threading.Event()
        self.sock: socket.socket | None = None
        self.connected = 0.0


_lock = threading.Lock()
_attempts: dict[tuple[str, int], list[_Attempt]] = {}


def start(host: str, port: int, count: int) -> None:
    """Begin ``count`` connections to ``host:port`` in the background (best effort)."""
    for _ in range(count):
        attempt = _Attempt()
        with _lock:
            _attempts.setdefault((host, port), []).append(attempt)
        threading.Thread(target=_connect, args=(host, port, attempt), name="tychoreg-connect", daemon=True).start()


def _connect(host: str, port: int, attempt: _Attempt) -> None:
    try:
        sock = socket.create_connection((host, port), timeout=CONNECT_TIMEOUT)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as http.client does
        attempt.sock, attempt.connected = sock, time.monotonic()
    except OSError:
        pass
    finally:
        attempt.done.set()


def take(host: str, port: int) -> socket.socket | None:
    """A socket connected to ``host:port`` by :func:`start`, waiting for one still connecting (it
    is nearer done than a new one would be); None when none was started or it failed."""
    while True:
        with _lock:
            waiting = _attempts.get((host, port))
            attempt = waiting.pop(0) if waiting else None
        if attempt is None:
            return None
        attempt.done.wait(CONNECT_TIMEOUT + 1)
        if attempt.sock is None or time.monotonic() - attempt.connected <= FRESH:
            return attempt.sock
        attempt.sock.close()  # left over by an earlier command of this process: try the next
