"""A lean, read-only S3 client for the requests that decide how fast a command feels.

Importing boto3 and building a client costs about 0.3 s, more than a no-op pull or a ``list``
of hundreds of packages needs in all. When the config is plain (static keys, an endpoint or a
region, nothing boto3-specific), GET, HEAD and LIST of metadata go through this module instead:
``http.client`` with one kept-alive connection per thread and SigV4 signing by hand.

Connections are kept alive in one pool shared by every thread (a thread takes an idle one or
opens a new one, and gives it back after a clean answer), so parallel work that comes in waves
(per package, per range) does not pay a new TCP handshake in each wave; :meth:`LeanS3.warm`
opens some before they are needed, in parallel, so their handshakes overlap whatever the
command does meanwhile. The fastest answer seen (:attr:`LeanS3.fastest`) tells how far the
server is, for callers that size their parallelism to the link.

It only ever makes the *first attempt*. Anything but a clean 2xx or 404 (a 403, a 5xx, a reset,
a redirect, a truncated body) raises :class:`Fallback`, and the caller repeats the request with
boto3, whose retries, credential chain and error messages then apply unchanged. So this module
can make things faster, never different.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import hmac
import os
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, overload

from . import preconnect
from .s3target import LeanTarget, lean_target

if TYPE_CHECKING:
    import http.client

_EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
_META = "x-amz-meta-"


#: An object's bytes in the pieces they were read in (joining them would briefly double the
#: memory). A name of its own because ``list`` in the clients' class bodies is their method.
Chunks = list[bytes]


class Fallback(Exception):
    """This request must be made by boto3 instead."""


@dataclass(frozen=True)
class Listed:
    key: str
    size: int
    etag: str | None
    modified: _dt.datetime | None


def _quote(text: str, safe: str = "-_.~") -> str:
    return urllib.parse.quote(text, safe=safe)


#: Idle connections kept for reuse; more are closed when given back.
MAX_IDLE = 64


class LeanS3:
    """Signed GET/HEAD/LIST against one bucket; see the module docstring for when it is used."""

    def __init__(self, target: LeanTarget, timeout: float) -> None:
        parts = urllib.parse.urlsplit(target.endpoint)
        self._https, self._host, self._address = target.https, target.host, target.address
        path, bucket = parts.path.rstrip("/"), _quote(target.bucket)
        self._base = f"{path}/{bucket}" if target.path_style else path
        self._region, self._key_id = target.region, target.key_id
        self._secret, self._token = target.secret, target.token
        self._timeout, self._ca_bundle = timeout, target.ca_bundle
        self._idle: list[http.client.HTTPConnection] = []
        self._pool_lock = threading.Lock()
        #: Told when a connection is given back or a warming one is done (opened or failed).
        self._pool_changed = threading.Condition(self._pool_lock)
        self._warming = 0
        #: Has the bucket answered (a 2xx, or a 404 that names a missing key)? Then a HEAD's bare
        #: 404 means a missing key. ``_in_flight`` counts requests whose answer may tell.
        self._bucket_seen = False
        self._in_flight = 0
        self._answers = threading.Condition(self._pool_lock)
        #: Seconds of the quickest request so far (headers answered): about one round trip.
        self.fastest: float | None = None
        self._signing_key: tuple[str, bytes] | None = None

    @classmethod
    def for_options(cls, options: Mapping[str, Any], env: Mapping[str, str] = os.environ) -> LeanS3 | None:
        """A lean client when ``options`` (the config's s3 section) are plain enough, else None."""
        target = lean_target(options, env)
        return None if target is None else cls(target, timeout=60.0)

    # -- requests ------------------------------------------------------------------------
    def get(self, key: str, limit: int, if_match: str | None = None) -> tuple[bytes, str] | None:
        """The object's bytes and ETag; None when it does not exist (a missing bucket is not a
        missing key: that 404 goes to boto3, which says so). With ``if_match``, only from the
        object whose ETag that is (a 412 goes to boto3, which raises it)."""
        status, headers, body = self._request("GET", key, {}, limit, {"if-match": if_match} if if_match else None)
        if status == 404:
            if b"<Code>NoSuchKey</Code>" not in body:
                raise Fallback("404 without NoSuchKey")
            return None
        return body, headers.get("etag", "")

    def get_range(self, key: str, first: int, last: int, etag: str | None, chunk: int) -> Chunks:
        """Bytes ``first..last`` of the object, in ``chunk``-sized pieces; only from the object
        whose ETag is ``etag`` (a replaced object answers 412, and boto3 then says so)."""
        extra = {"range": f"bytes={first}-{last}"}
        if etag:
            extra["if-match"] = etag
        status, _, body = self._request("GET", key, {}, last - first + 1, extra, chunk)
        if status != 206 or not isinstance(body, list) or sum(map(len, body)) != last - first + 1:
            raise Fallback(f"range answered {status}")
        return body

    def stream_range(
        self, key: str, first: int, last: int, etag: str | None, chunk: int, into: Callable[[bytes], None]
    ) -> None:
        """As :meth:`get_range`, each piece handed to ``into`` as it arrives (nothing is kept).
        On :class:`Fallback` some pieces may have been handed over already: the caller reads the
        whole range again."""
        extra = {"range": f"bytes={first}-{last}"}
        if etag:
            extra["if-match"] = etag
        status, headers, _ = self._request("GET", key, {}, last - first + 1, extra, chunk, into)
        if status != 206 or headers.get("content-length") != str(last - first + 1):
            raise Fallback(f"range answered {status}")

    def head(self, key: str) -> tuple[int, str | None, _dt.datetime | None, dict[str, str], _dt.datetime | None] | None:
        """Size, ETag, last modified, user metadata and the server's clock, as boto3 gives them;
        None when the key does not exist. A HEAD's 404 has no body to tell a missing key from a
        missing bucket: it means a missing key once the bucket has answered another request of
        this client (a bucket deleted in between fails the command's next request, as it
        would anyway); before that, boto3 asks again and says which."""
        status, headers, _ = self._request("HEAD", key, {}, 0)
        if status == 404:
            if self._bucket_exists():
                return None
            raise Fallback("HEAD 404")  # no body to tell a missing key from a missing bucket: boto3 decides
        meta = {k[len(_META) :]: v for k, v in headers.items() if k.startswith(_META)}
        try:
            return (
                int(headers.get("content-length", "")),
                headers.get("etag"),
                http_date(headers.get("last-modified")),
                meta,
                http_date(headers.get("date")),
            )
        except ValueError:
            raise Fallback("HEAD without a length") from None

    def list(self, prefix: str, delimiter: str | None = None) -> Iterator[Listed | str]:
        """Objects (as :class:`Listed`) and, with a delimiter, common prefixes (as ``str``).

        Each page is checked before anything of it is used (see :func:`_page`): a listing this
        module does not fully understand goes to boto3, never reads as empty."""
        token: str | None = None
        while True:
            query = {"list-type": "2", "prefix": prefix}
            if delimiter:
                query["delimiter"] = delimiter
            if token:
                query["continuation-token"] = token
            status, _, body = self._request("GET", "", query, 64 * 1024 * 1024)
            if status != 200:
                raise Fallback(f"list answered {status}")
            found, commons, token = _page(body, prefix)
            yield from found
            yield from commons
            if token is None:
                return

    # -- plumbing ------------------------------------------------------------------------
    def _bucket_exists(self) -> bool:
        """Has the bucket answered? Waits for the requests in flight (sent at the same moment,
        e.g. a push's ``tycho.json`` beside its HEAD), whose answers may tell."""
        with self._answers:
            self._answers.wait_for(lambda: self._bucket_seen or not self._in_flight, self._timeout)
            return self._bucket_seen

    def _answered(self, status: int, body: bytes | Chunks) -> None:
        """One request fewer in flight; note whether its answer shows that the bucket exists."""
        with self._answers:
            self._in_flight -= 1
            if 200 <= status < 300 or (status == 404 and isinstance(body, bytes) and b"<Code>NoSuchKey</Code>" in body):
                self._bucket_seen = True
            self._answers.notify_all()

    def _new_connection(self) -> http.client.HTTPConnection:
        """A connection, already connected when :mod:`preconnect` opened a socket for it."""
        import http.client  # noqa: PLC0415 - http.client, ssl, email: ~15 ms, only once a request is due
        import ssl  # noqa: PLC0415 - as above

        sock = preconnect.take(*self._address)
        if sock is not None:
            sock.settimeout(self._timeout)
        if self._https:
            context = ssl.create_default_context(cafile=self._ca_bundle)
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                self._host, timeout=self._timeout, context=context
            )
            if sock is not None:
                conn.sock = context.wrap_socket(sock, server_hostname=self._address[0])
            return conn
        conn = http.client.HTTPConnection(self._host, timeout=self._timeout)
        conn.sock = sock
        return conn

    def _connection(self) -> http.client.HTTPConnection:
        with self._pool_changed:
            # A connection being opened ahead (warm) is nearer ready than a new one would be:
            # wait for it rather than open one more (which the server would have to accept too).
            while not self._idle and self._warming:
                self._pool_changed.wait(self._timeout)
            if self._idle:
                return self._idle.pop()
        return self._new_connection()

    def _give_back(self, conn: http.client.HTTPConnection | None, *, warmed: bool = False) -> None:
        """Pool ``conn``, or close it when the pool is full. ``warmed``: it comes from
        :meth:`warm` (None: that failed), and stops counting as warming in the same step, so a
        request waiting in :meth:`_connection` never sees "nothing warming, nothing idle" in
        between and opens a connection of its own."""
        with self._pool_changed:
            if warmed:
                self._warming -= 1
            if conn is not None and len(self._idle) < MAX_IDLE:
                self._idle.append(conn)
                conn = None
            self._pool_changed.notify_all()
        if conn is not None:
            conn.close()

    def _saw(self, seconds: float) -> None:
        if self.fastest is None or seconds < self.fastest:
            self.fastest = seconds

    def warm(self, connections: int) -> None:
        """Open up to ``connections`` connections (counting idle ones) in the background, in
        parallel, for requests about to be sent; best effort (a failure opens nothing)."""
        with self._pool_lock:
            wanted = min(connections, MAX_IDLE) - len(self._idle) - self._warming
            if wanted <= 0:
                return
            self._warming += wanted

        def one() -> None:
            import http.client  # noqa: PLC0415 - see _new_connection

            conn: http.client.HTTPConnection | None = None
            try:
                conn = self._new_connection()
                if conn.sock is None:
                    conn.connect()  # not timed: a proxy (or an emulated link) may accept at once
            except (OSError, ValueError, http.client.HTTPException):
                conn = None
            finally:
                self._give_back(conn, warmed=True)

        for _ in range(wanted):
            threading.Thread(target=one, name="tychoreg-warm", daemon=True).start()

    @overload
    def _request(
        self,
        method: str,
        key: str,
        query: dict[str, str],
        limit: int,
        extra: dict[str, str] | None = None,
        chunk: Literal[0] = 0,
    ) -> tuple[int, dict[str, str], bytes]: ...

    @overload
    def _request(
        self,
        method: str,
        key: str,
        query: dict[str, str],
        limit: int,
        extra: dict[str, str] | None,
        chunk: int,
        into: Callable[[bytes], None] | None = None,
    ) -> tuple[int, dict[str, str], bytes | Chunks]: ...

    def _request(
        self,
        method: str,
        key: str,
        query: dict[str, str],
        limit: int,
        extra: dict[str, str] | None = None,
        chunk: int = 0,
        into: Callable[[bytes], None] | None = None,
    ) -> tuple[int, dict[str, str], bytes | Chunks]:
        """One signed request; the body whole, or with ``chunk`` (a 206 answer) as a list of pieces,
        or with ``into`` too, each piece handed to it as it arrives (the list then stays empty)."""
        with self._answers:
            self._in_flight += 1
        answer: tuple[int, dict[str, str], bytes | Chunks] = (0, {}, b"")
        try:
            answer = self._send(method, (key, query, limit, extra), chunk, into)
        finally:
            self._answered(answer[0], answer[2])
        return answer

    def _send(
        self,
        method: str,
        what: tuple[str, dict[str, str], int, dict[str, str] | None],
        chunk: int,
        into: Callable[[bytes], None] | None,
    ) -> tuple[int, dict[str, str], bytes | Chunks]:
        """The request itself: ``what`` is (key, query, limit, extra) as :meth:`_request` takes them."""
        import http.client  # noqa: PLC0415 - see _new_connection

        key, query, limit, extra = what
        path = self._base + "/" + _quote(key, safe="-_.~/") if key else self._base + "/"
        canonical_query = "&".join(f"{_quote(k)}={_quote(v)}" for k, v in sorted(query.items()))
        headers = {**self._sign(method, path, canonical_query), **(extra or {})}
        try:
            conn = self._connection()
        except (OSError, ValueError) as exc:  # e.g. an AWS_CA_BUNDLE that cannot be read
            raise Fallback(f"{type(exc).__name__}: {exc}") from None
        try:
            sent = time.perf_counter()
            reused = conn.sock is not None
            conn.request(method, f"{path}?{canonical_query}" if canonical_query else path, headers=headers)
            resp = conn.getresponse()
            # A request on an open connection takes about one round trip; on a new one, about
            # two (the handshake first): either tells how far the server is.
            self._saw((time.perf_counter() - sent) / (1 if reused else 2))
            length = resp.getheader("content-length")
            if length is not None and int(length) > limit and method == "GET" and resp.status in (200, 206):
                resp.close()
                conn.close()
                raise Fallback("object larger than a document")
            body: bytes | Chunks
            got = 0
            if chunk and resp.status == 206:
                body = []
                while piece := resp.read(chunk):
                    got += len(piece)
                    if into is None:
                        body.append(piece)
                    else:
                        into(piece)
            else:
                body = resp.read()
                got = len(body)
        except (OSError, ValueError, http.client.HTTPException) as exc:
            conn.close()
            raise Fallback(f"{type(exc).__name__}: {exc}") from None
        if resp.will_close:
            conn.close()
        else:
            self._give_back(conn)
        if resp.status not in (200, 206, 404) or (length is not None and method != "HEAD" and got != int(length)):
            raise Fallback(f"{method} answered {resp.status}")
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, body

    def _sign(self, method: str, path: str, canonical_query: str) -> dict[str, str]:
        now = _dt.datetime.now(_dt.timezone.utc)
        stamp, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
        headers = {"host": self._host, "x-amz-content-sha256": _EMPTY_SHA256, "x-amz-date": stamp}
        if self._token:
            headers["x-amz-security-token"] = self._token
        names = sorted(headers)
        canonical = "\n".join(
            [method, path, canonical_query, *(f"{n}:{headers[n]}" for n in names), "", ";".join(names), _EMPTY_SHA256]
        )
        scope = f"{day}/{self._region}/s3/aws4_request"
        to_sign = f"AWS4-HMAC-SHA256\n{stamp}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
        signature = hmac.new(self._key_for(day), to_sign.encode(), hashlib.sha256).hexdigest()
        headers["authorization"] = (
            f"AWS4-HMAC-SHA256 Credential={self._key_id}/{scope}, "
            f"SignedHeaders={';'.join(names)}, Signature={signature}"
        )
        return headers

    def _key_for(self, day: str) -> bytes:
        if self._signing_key is None or self._signing_key[0] != day:
            key = ("AWS4" + self._secret).encode()
            for part in (day, self._region, "s3", "aws4_request"):
                key = hmac.new(key, part.encode(), hashlib.sha256).digest()
            self._signing_key = (day, key)
        return self._signing_key[1]


def _page(body: bytes, prefix: str) -> tuple[list[Listed], list[str], str | None]:
    """One page of ListObjectsV2: objects, common prefixes, the next continuation token (None on
    the last page). Element names are matched without their XML namespace (S3 uses
    ``2006-03-01``, some compatible stores and proxies none or another one), and the page must
    be a ``ListBucketResult`` whose ``KeyCount``, when given, counts what was parsed: anything
    else raises :class:`Fallback`."""
    import xml.etree.ElementTree as ET  # noqa: PLC0415 - xml.etree: ~2 ms, only listings

    try:
        root = ET.fromstring(body)
    except ET.ParseError as exc:
        raise Fallback(f"unreadable listing: {exc}") from None

    def local(tag: str) -> str:
        return tag.rpartition("}")[2]

    def child(node: ET.Element, name: str) -> str | None:
        return next((c.text or "" for c in node if local(c.tag) == name), None)

    if local(root.tag) != "ListBucketResult":
        raise Fallback(f"listing answered <{local(root.tag)}>")
    found: list[Listed] = []
    commons: list[str] = []
    try:
        for item in root:
            kind = local(item.tag)
            if kind == "Contents":  # each child read once: a page holds 1,000 of these
                fields = {local(c.tag): c.text or "" for c in item}
                found.append(
                    Listed(
                        fields.get("Key", ""),
                        int(fields.get("Size", "")),
                        fields.get("ETag"),
                        _iso_date(fields.get("LastModified", "")),
                    )
                )
            elif kind == "CommonPrefixes":
                commons.append(child(item, "Prefix") or "")
    except ValueError as exc:
        raise Fallback(f"unreadable listing: {exc}") from None
    if any(not o.key.startswith(prefix) for o in found) or any(not c.startswith(prefix) for c in commons):
        raise Fallback("listing holds keys outside the prefix asked for")
    count = child(root, "KeyCount")
    if count is not None and count.strip() != str(len(found) + len(commons)):
        raise Fallback(f"listing says {count} keys, {len(found) + len(commons)} parsed")
    truncated = (child(root, "IsTruncated") or "").strip().lower()
    if truncated not in ("true", "false"):
        raise Fallback("listing does not say whether it is complete")
    if truncated == "false":
        return found, commons, None
    token = child(root, "NextContinuationToken")
    if not token:
        raise Fallback("truncated listing without a continuation token")
    return found, commons, token


def _iso_date(text: str) -> _dt.datetime | None:
    try:
        return _dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def http_date(text: str | None) -> _dt.datetime | None:
    """An HTTP date header (``Last-Modified``, ``Date``) as a datetime; None if absent or bad."""
    if not text:
        return None
    import email.utils  # noqa: PLC0415 - see _new_connection

    try:
        return email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
