"""``tychoreg serve``: a registry (a folder or a bucket) read-only over HTTP, for browsers and for
the ``http`` backend: a team share from a folder, or a gateway without credentials in front of a
private bucket.

Only what the static catalog publishes is served, by a fixed map from URL to key built from names
that pass the name rules (so no path can climb out, and nothing else of the store is reachable:
not ``PKG/.tycho/versions``, not the file backend's lock, not a staging file, not a key of another
application in a shared bucket):

==============================  ===========================================================
``/``, ``/index.html``          ``index.html`` (the registry's page)
``/.tycho-catalog.json``        the registry's machine index
``/PKG/``, ``/PKG/index.html``  ``PKG/index.html`` (``/PKG`` redirects to ``/PKG/``)
``/PKG/.tycho/catalog.json``    the package's machine index
``/PKG/tycho.json``             the package document
``/PKG/tycho_VERSION.pkg``      a version's data: ``Range``, ``If-Range``, ``If-Match``
``/PKG/.tycho/chunks/V.cdx``    a version's chunk index (delta pulls), served as data
==============================  ===========================================================

Everything is read through the store, so the file backend's rules hold (no symbolic link is
followed) and a data read is pinned to the object its headers described. Every answer has an
``ETag`` (``If-None-Match`` answers 304) and ``HEAD`` works. Data goes out as
``application/octet-stream``, never sniffed (``nosniff``): a pushed HTML file cannot run as a
page of the catalog's origin.

The standard library's threading server is enough here: one thread per connection streams
straight from the store with the socket's back-pressure (no buffering of large bodies, unlike
WSGI servers that spool slow responses to disk), idle or stalled connections time out, a client
that goes away mid-download costs only its thread, and the accept queue is deep enough for bursts
of clients. What it does not parse (the request line and headers) it leaves to ``http.server``,
whose URL-to-file mapping is not used at all.
"""

from __future__ import annotations

import hashlib
import re
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from typing import Any
from urllib.parse import unquote, urlsplit

from . import layout
from .errors import IntegrityError, OperationError, TychoError
from .names import is_valid_segment
from .store import ObjectNotFound, PreconditionFailed, Store
from .store.base import ObjectInfo

#: Seconds a connection may sit idle (or a client stall) before it is closed.
IDLE_TIMEOUT = 60
#: Seconds a stop waits for requests in flight to finish (and log their line).
GRACE = 2.0
_RANGE = re.compile(r"bytes=(\d*)-(\d*)\Z")
_TYPES = {
    "page": "text/html; charset=utf-8",
    "index": "application/json",
    "document": "application/json",
    "data": "application/octet-stream",
}


@dataclass(frozen=True)
class Target:
    """What a URL path names: a key of a kind, or a redirect."""

    key: str | None
    kind: str
    redirect: str | None = None


def route(path: str) -> Target | None:
    """The key a request path names, or None (404). Segments are split before they are decoded,
    so an encoded ``/`` or ``..`` can only make an invalid name."""
    raw = urlsplit(path).path
    if not raw.startswith("/"):
        return None
    try:
        parts = [unquote(p, errors="strict") for p in raw[1:].split("/")]
    except UnicodeDecodeError:
        return None
    if parts in ([""], [layout.ROOT_PAGE]):
        return Target(layout.ROOT_PAGE, "page")
    if parts == [layout.ROOT_INDEX]:
        return Target(layout.ROOT_INDEX, "index")
    package = parts[0]
    if not is_valid_segment(package):
        return None
    if len(parts) == 1:
        return Target(None, "redirect", raw + "/")
    rest = "/".join(parts[1:])
    if rest in ("", layout.PAGE):
        return Target(layout.package_page(package), "page")
    if rest == layout.PACKAGE_INDEX:
        return Target(layout.package_index(package), "index")
    if rest == layout.PACKAGE_DOC:
        return Target(layout.package_doc(package), "document")
    if len(parts) == 2 and is_valid_segment(layout.version_of_data(package, f"{package}/{rest}")):
        return Target(f"{package}/{rest}", "data")
    if len(parts) == 4 and is_valid_segment(layout.version_of_chunk_index(package, f"{package}/{rest}")):
        return Target(f"{package}/{rest}", "data")  # a chunk index, for delta pulls over HTTP
    return None


def _quoted(tag: str) -> str:
    bare = tag.strip('"')
    return f'"{bare}"'


def data_etag(info: ObjectInfo) -> str:
    """The ETag a data object is served with: the store's own (S3's, so clients that compare it
    with a listing's agree), else one made from what identifies this very file."""
    if info.etag:
        return _quoted(info.etag)
    return '"file-' + hashlib.sha256((info.stamp or f"{info.size}").encode()).hexdigest()[:24] + '"'


def _matches(header: str | None, etag: str) -> bool:
    if header is None:
        return False
    if header.strip() == "*":
        return True
    return any(_quoted(t.strip().removeprefix("W/")) == etag for t in header.split(","))


def parse_range(header: str | None, size: int) -> tuple[int, int] | bool | None:
    """A single byte range as (first, last); None: serve it all; False: unsatisfiable."""
    if not header:
        return None
    found = _RANGE.match(header.strip())
    if not found:
        return None  # several ranges, or units we do not serve: the whole object (allowed)
    first, last = found.groups()
    if not first:
        if not last:
            return None
        n = int(last)
        return (max(0, size - n), size - 1) if n and size else False
    a = int(first)
    b = min(int(last), size - 1) if last else size - 1
    if a >= size or (last and int(last) < a):
        return False
    return a, b


class _Enough(Exception):
    """The range asked for has been sent."""


class _Out:
    """Writes at most ``left`` bytes to the client, then stops the read."""

    def __init__(self, wfile: Any, left: int) -> None:
        self.wfile, self.left, self.sent = wfile, left, 0

    def write(self, data: bytes) -> None:
        if len(data) >= self.left:
            data, self.left = data[: self.left], 0
        else:
            self.left -= len(data)
        self.wfile.write(data)
        self.sent += len(data)
        if not self.left:
            raise _Enough()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 128
    allow_reuse_address = True
    log: Callable[[str], None] = staticmethod(lambda line: None)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.busy = threading.Condition()
        self.in_flight = 0

    def settle(self, timeout: float) -> None:
        """Wait (a little) for the requests in flight to finish."""
        with self.busy:
            self.busy.wait_for(lambda: self.in_flight == 0, timeout)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away between requests is no error; anything else is one line, not
        the base class's traceback."""
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)):
            return
        self.log(f"{client_address[0]} internal error: {type(exc).__name__}: {exc}")


class _Stop(Exception):
    """SIGTERM: stop as on Ctrl-C."""


def _handler(store: Store, log: Callable[[str], None]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "tychoreg"
        sys_version = ""
        timeout = IDLE_TIMEOUT

        def log_message(self, format: str, *args: Any) -> None:
            pass  # one line per request, written by _finish

        def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
            pass

        def _finish(self, status: int, sent: int, note: str = "") -> None:
            took = (time.monotonic() - self._started) * 1000
            log(
                f'{self.client_address[0]} "{self.command} {self.path}" {status} {sent} {took:.0f}ms'
                + (f" ({note})" if note else "")
            )

        def _common(self) -> None:
            self.send_header("X-Content-Type-Options", "nosniff")
            self.send_header("Referrer-Policy", "no-referrer")
            self.send_header("Cache-Control", "no-cache")

        def _plain(self, status: int, text: str, extra: dict[str, str] | None = None) -> None:
            body = (text + "\n").encode()
            self.send_response(status)
            self._common()
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            for k, v in (extra or {}).items():
                self.send_header(k, v)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
            self._finish(status, 0 if self.command == "HEAD" else len(body))

        def do_GET(self) -> None:
            self._started = time.monotonic()
            server: Any = self.server
            with server.busy:
                server.in_flight += 1
            try:
                self._answer()
            except (TimeoutError, BrokenPipeError, ConnectionResetError):
                self.close_connection = True
                self._finish(499, 0, "client went away")
            finally:
                with server.busy:
                    server.in_flight -= 1
                    server.busy.notify_all()

        do_HEAD = do_GET

        def _refuse_method(self) -> None:
            self._started = time.monotonic()
            self.close_connection = True
            self._plain(405, "read-only: only GET and HEAD", {"Allow": "GET, HEAD"})

        do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _refuse_method

        def _answer(self) -> None:
            target = route(self.path)
            if target is None:
                return self._plain(404, "not found")
            if target.redirect is not None:
                return self._plain(301, "moved", {"Location": target.redirect})
            assert target.key is not None
            try:
                if target.kind == "data":
                    return self._data(target.key)
                return self._document(target.key, target.kind)
            except ObjectNotFound:
                return self._plain(404, "not found")
            except IntegrityError as exc:  # a link where a file should be, a planted document: refused
                self._finish_error(404, exc)
            except TychoError as exc:  # an unreachable or refusing bucket
                self.close_connection = True
                self._finish_error(502, exc)

        def _finish_error(self, status: int, exc: TychoError) -> None:
            body = b"not found\n" if status == 404 else b"the registry could not be read\n"
            self.send_response(status)
            self._common()
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
            self._finish(status, len(body), str(exc))

        def _document(self, key: str, kind: str) -> None:
            body, etag = store.get(key)
            tag = _quoted(etag)
            if _matches(self.headers.get("If-None-Match"), tag):
                self.send_response(304)
                self._common()
                self.send_header("ETag", tag)
                self.end_headers()
                return self._finish(304, 0)
            self.send_response(200)
            self._common()
            self.send_header("Content-Type", _TYPES[kind])
            self.send_header("Content-Length", str(len(body)))
            self.send_header("ETag", tag)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
            self._finish(200, 0 if self.command == "HEAD" else len(body))

        def _data(self, key: str) -> None:
            info = store.head(key)
            if info is None:
                return self._plain(404, "not found")
            tag = data_etag(info)
            modified = format_datetime(info.modified, usegmt=True) if info.modified and info.modified.tzinfo else None
            if self.headers.get("If-Match") is not None and not _matches(self.headers.get("If-Match"), tag):
                return self._plain(412, "the object changed")
            if _matches(self.headers.get("If-None-Match"), tag):
                self.send_response(304)
                self._common()
                self.send_header("ETag", tag)
                self.end_headers()
                return self._finish(304, 0)
            wanted = parse_range(self.headers.get("Range"), info.size)
            if_range = self.headers.get("If-Range")
            if wanted is not None and if_range is not None and if_range.strip() not in (tag, modified):
                wanted = None  # changed since the client's copy: send it all
            if wanted is False:
                return self._plain(416, "range not satisfiable", {"Content-Range": f"bytes */{info.size}"})
            first, last = wanted if isinstance(wanted, tuple) else (0, info.size - 1)
            length = max(0, last - first + 1)
            status = 206 if isinstance(wanted, tuple) else 200
            self.send_response(status)
            self._common()
            self.send_header("Content-Type", _TYPES["data"])
            self.send_header("Content-Disposition", "attachment")
            self.send_header("Content-Length", str(length))
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("ETag", tag)
            if modified:
                self.send_header("Last-Modified", modified)
            if status == 206:
                self.send_header("Content-Range", f"bytes {first}-{last}/{info.size}")
            self.end_headers()
            if self.command == "HEAD" or not length:
                return self._finish(status, 0)
            out = _Out(self.wfile, length)
            try:
                store.read(key, out, start=first, if_match=info.stamp)
            except _Enough:
                pass
            except (PreconditionFailed, ObjectNotFound, TychoError) as exc:
                self.close_connection = True  # the client sees a short body and asks again
                return self._finish(status, out.sent, f"cut short: {exc}")
            if out.left:
                self.close_connection = True
                return self._finish(status, out.sent, "cut short: the object ended early")
            self._finish(status, out.sent)

    return Handler


def url_for(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/"


def serve(
    store: Store,
    host: str,
    port: int,
    *,
    ready: Callable[[str], None],
    log: Callable[[str], None],
    stop: threading.Event | None = None,
) -> None:
    """Serve until Ctrl-C, SIGTERM or ``stop``; ``ready`` hears the URL once it listens."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    server_class = type("Server", (_Server,), {"address_family": family, "log": staticmethod(log)})
    try:
        server = server_class((host, port), _handler(store, log))
    except OSError as exc:
        raise OperationError(
            f"cannot listen on {url_for(host, port)}: {exc.strerror or exc}",
            reason="cannot-listen",
            host=host,
            port=port,
        ) from None
    bound_host, bound_port = server.server_address[:2]
    in_main = threading.current_thread() is threading.main_thread()
    previous: Any = None
    if in_main:

        def on_term(signum: int, frame: FrameType | None) -> None:
            raise _Stop()

        previous = signal.signal(signal.SIGTERM, on_term)
    watcher = None
    if stop is not None:
        watcher = threading.Thread(target=lambda: (stop.wait(), server.shutdown()), daemon=True)
        watcher.start()
    try:
        ready(url_for(str(bound_host), int(bound_port)))
        server.serve_forever(poll_interval=0.2)
    except (KeyboardInterrupt, _Stop):
        pass
    finally:
        server.server_close()  # no new connections; requests in flight get a moment to finish
        server.settle(GRACE)
        if in_main:
            signal.signal(signal.SIGTERM, previous)
