"""A registry read over plain HTTP(S), without credentials: read-only.

Any static web server in front of a registry's bucket or folder will do (a bucket's website, a
CDN, nginx, ``python -m http.server``, ``tychoreg serve``). HTTP has no listings, so what a bucket
would list, head or answer for a small document comes from the package's machine index
(``PKG/.tycho/catalog.json``, see :mod:`tychoreg.store.snapshot`), which every write keeps current:
one request per package and command, answered ``304 Not Modified`` from a local copy when the
index has not changed (so a pull with nothing to do costs one small request). The registry's
index (``.tycho-catalog.json``) lists the packages. Data is read from the objects themselves:
ranged, in parallel, resumable, every range tied to the first answer's validator (``If-Range``
and, with a strong ETag, ``If-Match``) so that an object replaced meanwhile fails the read
instead of mixing bytes; what was read is checked against its record's SHA-256 as always.

Errors are the store's own: a missing object is :class:`ObjectNotFound`, a changed one
:class:`PreconditionFailed`, a cut-off body :class:`TransferInterrupted` (the pull resumes),
anything else :class:`StorageError`; every write raises :class:`ReadOnly`.
"""

from __future__ import annotations

import concurrent.futures as cf
import email.utils
import hashlib
import json
import os
import stat
import threading
import urllib.parse
import urllib.request
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import urllib3

from .. import __version__
from ..concurrency import backoff
from ..errors import StorageError
from .base import (
    CHUNK,
    ObjectInfo,
    ObjectNotFound,
    Pieces,
    PreconditionFailed,
    Progress,
    RangeSink,
    RangesUnsupported,
    Sink,
    TransferInterrupted,
)
from .snapshot import PACKAGE_INDEX, ROOT_INDEX, Snapshot, SnapshotStore

MiB = 1024 * 1024
PART_SIZE = 8 * MiB
CONCURRENCY = 8
DOWNLOAD_BUFFER = 48 * MiB
#: The largest machine index read (a package of many thousand versions is a few MiB).
MAX_INDEX = 256 * MiB
_BODY_ATTEMPTS = 4
#: A Last-Modified this close to the answer's Date may hide a change made within the same second:
#: such an answer is not revalidated by date (as git treats racily clean files).
_RACY = 2.0
_BODY_ERRORS = (urllib3.exceptions.HTTPError, OSError)


def _date(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None


def _strong(etag: str | None) -> str | None:
    return etag if etag and not etag.startswith("W/") else None


class _Answers:
    """Earlier answers for documents (body and validators), to ask again conditionally: a
    private folder in the user's own cache, one file per URL. Best effort: never an error."""

    def __init__(self, folder: Path) -> None:
        self._folder = folder

    def _path(self, url: str) -> Path:
        return self._folder / hashlib.sha256(url.encode()).hexdigest()[:40]

    def load(self, url: str) -> tuple[dict[str, str], bytes] | None:
        try:
            fd = os.open(self._path(url), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            return None
        with os.fdopen(fd, "rb") as fh:
            st = os.fstat(fh.fileno())
            if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or st.st_size > MAX_INDEX:
                return None
            line = fh.readline(64 * 1024)
            body = fh.read()
        try:
            head = json.loads(line)
        except ValueError:
            return None
        if not isinstance(head, dict) or head.get("url") != url:
            return None
        return {k: v for k, v in head.items() if isinstance(v, str)}, body

    def save(self, url: str, validators: Mapping[str, str], body: bytes) -> None:
        try:
            self._folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            st = os.stat(self._folder, follow_symlinks=False)
            if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o077:
                return  # not a private folder of ours: keep nothing there
            path = self._path(url)
            tmp = path.with_name(f".{path.name}.{os.urandom(6).hex()}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(json.dumps({"url": url, **validators}).encode() + b"\n" + body)
            os.replace(tmp, path)
        except OSError:
            pass

    def forget(self, url: str) -> None:
        try:
            os.unlink(self._path(url))
        except OSError:
            pass


def answers_root() -> Path:
    """Where earlier answers are kept: the user's own cache folder (never a shared one)."""
    from platformdirs import user_cache_dir  # noqa: PLC0415 - platformdirs: ~3 ms, only to find the folder

    return Path(user_cache_dir("tychoreg", appauthor=False)) / "http"


class HttpStore(SnapshotStore):
    """Reads the registry whose root is ``options["url"]``; ``options["headers"]`` go with every
    request (a bearer token, say)."""

    def __init__(
        self,
        options: Mapping[str, Any],
        *,
        part_size: int = PART_SIZE,
        concurrency: int = CONCURRENCY,
        answers: Path | None = None,
    ) -> None:
        base = str(options["url"])
        base = base if base.endswith("/") else base + "/"
        super().__init__(base.rstrip("/"))
        self.identity = f"http|{base}"
        self.part_size, self.concurrency = part_size, concurrency
        self._base = base
        self._headers = {"User-Agent": f"tychoreg/{__version__}", **dict(options.get("headers") or {})}
        self._answers = _Answers((answers or answers_root()) / hashlib.sha256(base.encode()).hexdigest()[:32])
        self._lock = threading.Lock()
        self._loading: dict[str, threading.Lock] = {}
        self._root: list[str] | None = None
        #: The validator (strong ETag, else Last-Modified) each object had when first read.
        self._validators: dict[str, str] = {}
        self._http: urllib3.PoolManager | None = None

    # -- plumbing ------------------------------------------------------------------------------
    def _pool(self) -> urllib3.PoolManager:
        with self._lock:
            if self._http is None:
                self._http = _pool_for(self._base, maxsize=2 * self.concurrency)
            return self._http

    def url(self, key: str) -> str:
        return self._base + urllib.parse.quote(key, safe="/-_.~")

    def _request(
        self, method: str, key: str, headers: Mapping[str, str] | None = None, *, stream: bool = False
    ) -> urllib3.BaseHTTPResponse:
        retries = urllib3.Retry(
            total=4,
            connect=4,
            read=2,
            status=4,
            backoff_factor=0.2,
            status_forcelist=(429, 500, 502, 503, 504),
            allowed_methods=("GET", "HEAD"),
            raise_on_status=False,
            respect_retry_after_header=True,
        )
        try:
            return self._pool().request(
                method,
                self.url(key),
                headers={**self._headers, **(headers or {})},
                preload_content=not stream,
                decode_content=True,
                retries=retries,
                timeout=urllib3.Timeout(connect=10, read=60),
                redirect=True,
            )
        except urllib3.exceptions.MaxRetryError as exc:
            raise StorageError(
                f"cannot reach {self.location}/{key}: {type(exc.reason).__name__ if exc.reason else 'no answer'}",
                "check http.url and your network; the command can be retried",
            ) from None
        except _BODY_ERRORS as exc:
            raise TransferInterrupted(f"reading {self.location}/{key} was interrupted ({type(exc).__name__})") from None

    def _failed(self, resp: urllib3.BaseHTTPResponse, key: str) -> StorageError:
        where = f"{self.location}/{key}"
        if resp.status == 404 or resp.status == 410:
            return ObjectNotFound(f"{where} not found")
        if resp.status == 412:
            return PreconditionFailed(f"{where} was replaced since it was first read")
        if resp.status in (401, 403):
            return StorageError(
                f"access denied to {where} (HTTP {resp.status})", "check the headers (http.headers) your config sends"
            )
        return StorageError(f"HTTP request for {where} failed: {resp.status} {resp.reason or ''}".rstrip())

    def _document(self, key: str) -> bytes | None:
        """A machine index, asked conditionally when an earlier answer is kept; None if absent."""
        url = self.url(key)
        kept = self._answers.load(url)
        headers = {"Accept-Encoding": "gzip, deflate"}
        if kept:
            if kept[0].get("etag"):
                headers["If-None-Match"] = kept[0]["etag"]
            if kept[0].get("last-modified"):
                headers["If-Modified-Since"] = kept[0]["last-modified"]
        resp = self._request("GET", key, headers, stream=True)
        try:
            if resp.status == 304 and kept:
                return kept[1]
            if resp.status in (404, 410):
                self._answers.forget(url)
                return None
            if resp.status != 200:
                raise self._failed(resp, key)
            chunks, size = [], 0
            try:
                for chunk in resp.stream(CHUNK):
                    chunks.append(chunk)
                    size += len(chunk)
                    if size > MAX_INDEX:
                        raise StorageError(f"{self.location}/{key} is larger than {MAX_INDEX // MiB} MiB")
            except _BODY_ERRORS as exc:
                raise TransferInterrupted(
                    f"reading {self.location}/{key} was interrupted ({type(exc).__name__})",
                    "check the network and try again",
                ) from None
        finally:
            resp.release_conn()
        body = b"".join(chunks)
        validators: dict[str, str] = {}
        if _strong(resp.headers.get("ETag")):
            validators["etag"] = resp.headers["ETag"]
        modified, answered = resp.headers.get("Last-Modified"), _date(resp.headers.get("Date"))
        when = _date(modified)
        if modified and when and answered and (answered - when).total_seconds() >= _RACY:
            validators["last-modified"] = modified
        if validators:
            self._answers.save(url, validators, body)
        return body

    # -- what the machine indexes answer ---------------------------------------------------------
    def snapshot(self, package: str) -> Snapshot | None:
        with self._lock:
            if package in self._snapshots:
                return self._snapshots[package]
            loading = self._loading.setdefault(package, threading.Lock())
        with loading:
            with self._lock:
                if package in self._snapshots:
                    return self._snapshots[package]
            key = f"{package}/{PACKAGE_INDEX}"
            raw = self._document(key)
            snap = Snapshot.parse(package, raw, f"{self.location}/{key}") if raw is not None else None
            if snap is None:
                self.packages()  # a registry without any catalog says so, not "no such package"
            with self._lock:
                self._snapshots.setdefault(package, snap)
                return self._snapshots[package]

    def packages(self) -> list[str]:
        """The packages the registry's index lists."""
        if self._root is None:
            raw = self._document(ROOT_INDEX)
            if raw is None:
                raise StorageError(
                    f"{self.location} has no catalog ({ROOT_INDEX} is missing): it is not a tychoreg registry, "
                    "or its catalog was never written",
                    reason="no-catalog",
                )
            try:
                doc = json.loads(raw)
                names = doc["packages"] if isinstance(doc, dict) else None
            except (ValueError, KeyError, RecursionError):
                names = None
            if not isinstance(names, dict):
                raise StorageError(f"the catalog {self.location}/{ROOT_INDEX} is damaged", reason="catalog-damaged")
            self._root = sorted(n for n in names if isinstance(n, str))
        return self._root

    def list_folders(self, prefix: str) -> Iterator[str]:
        if prefix:
            return
        yield from self.packages()

    # -- data ----------------------------------------------------------------------------------
    def read(
        self,
        key: str,
        sink: Sink,
        *,
        start: int = 0,
        size: int | None = None,
        progress: Progress | None = None,
        if_match: str | None = None,
    ) -> ObjectInfo:
        if size is not None and size - start >= 2 * self.part_size:
            ranged = self._pinned(key, size)
            if ranged:
                return self._read_ranges(key, sink, start, size, progress)
        return self._read_stream(key, sink, start, size, progress)

    def _remember(self, key: str, resp: urllib3.BaseHTTPResponse) -> str | None:
        """Tie reads of ``key`` to the object first read; PreconditionFailed if this answer is
        of another one. Returns the validator to send."""
        seen = _strong(resp.headers.get("ETag")) or resp.headers.get("Last-Modified")
        with self._lock:
            first = self._validators.setdefault(key, seen) if seen else self._validators.get(key)
        if seen and first != seen:
            raise PreconditionFailed(f"{self.location}/{key} was replaced since it was first read")
        return first

    def _conditions(self, key: str) -> dict[str, str]:
        with self._lock:
            validator = self._validators.get(key)
        if not validator:
            return {}
        out = {"If-Range": validator}
        if validator.startswith('"'):
            out["If-Match"] = validator
        return out

    def _pinned(self, key: str, size: int) -> bool:
        """HEAD the object: is it the size expected, and does the server read ranges?"""
        resp = self._request("HEAD", key, {"Accept-Encoding": "identity"})
        if resp.status != 200:
            raise self._failed(resp, key)
        self._remember(key, resp)
        length = resp.headers.get("Content-Length")
        if length is not None and length.isdigit() and int(length) != size:
            raise StorageError(
                f"{self.location}/{key} is {length} bytes, not the {size} expected: it was replaced or damaged",
                reason="replaced-or-damaged",
            )
        return resp.headers.get("Accept-Ranges", "").strip().lower() == "bytes"

    def _read_stream(self, key: str, sink: Sink, start: int, size: int | None, progress: Progress | None) -> ObjectInfo:
        headers = {"Accept-Encoding": "identity", **self._conditions(key)}
        if start:
            headers["Range"] = f"bytes={start}-"
        else:
            headers.pop("If-Range", None)
        resp = self._request("GET", key, headers, stream=True)
        try:
            if resp.status == 416 and size is not None and start >= size:
                return ObjectInfo(key, size)
            if resp.status not in (200, 206):
                raise self._failed(resp, key)
            self._remember(key, resp)
            skip = 0
            if resp.status == 206:
                first, _, total = _content_range(resp.headers.get("Content-Range"))
                if first != start or (size is not None and total is not None and total != size):
                    raise StorageError(f"{self.location}/{key} answered another range than asked for")
            else:
                skip = start  # the server sends everything (it reads no ranges): the bytes we have go
                length = resp.headers.get("Content-Length")
                if size is not None and length is not None and length.isdigit() and int(length) != size:
                    raise StorageError(
                        f"{self.location}/{key} is {length} bytes, not the {size} expected: it was replaced or damaged",
                        reason="replaced-or-damaged",
                    )
            got = start
            try:
                for chunk in resp.stream(CHUNK):
                    if skip:
                        cut = min(skip, len(chunk))
                        chunk, skip = chunk[cut:], skip - cut
                        if not chunk:
                            continue
                    sink.write(chunk)
                    got += len(chunk)
                    if progress:
                        progress(len(chunk))
            except _BODY_ERRORS as exc:
                raise TransferInterrupted(
                    f"download of {self.location}/{key} was interrupted ({type(exc).__name__})",
                    "run the pull again: it resumes",
                ) from None
            if skip or (size is not None and got != size):
                raise TransferInterrupted(
                    f"download of {self.location}/{key} ended early", "run the pull again: it resumes"
                )
            return ObjectInfo(key, got, resp.headers.get("ETag"))
        finally:
            resp.release_conn()

    def _range(self, key: str, first: int, last: int) -> list[bytes]:
        """Bytes ``first..last`` of the object first read, in pieces; retried when cut off."""
        for attempt in range(_BODY_ATTEMPTS):
            headers = {"Accept-Encoding": "identity", "Range": f"bytes={first}-{last}", **self._conditions(key)}
            resp = self._request("GET", key, headers, stream=True)
            try:
                if resp.status == 200:  # If-Range did not hold: another object is there now
                    raise PreconditionFailed(f"{self.location}/{key} was replaced since it was first read")
                if resp.status != 206:
                    raise self._failed(resp, key)
                self._remember(key, resp)
                begin, end, _ = _content_range(resp.headers.get("Content-Range"))
                if (begin, end) != (first, last):
                    raise StorageError(f"{self.location}/{key} answered another range than asked for")
                chunks = list(resp.stream(CHUNK))
                if sum(map(len, chunks)) == last - first + 1:
                    return chunks
            except _BODY_ERRORS:
                pass
            finally:
                resp.release_conn()
            backoff(attempt, 0.1, 2.0)
        raise TransferInterrupted(
            f"download of {self.location}/{key} was interrupted", "run the pull again: it resumes"
        )

    def _read_ranges(self, key: str, sink: Sink, start: int, size: int, progress: Progress | None) -> ObjectInfo:
        """Ranged GETs in parallel, handed to ``sink`` in order (see the S3 store's, which this
        mirrors): a :class:`RangeSink` gets each part written by its worker; at most
        ``DOWNLOAD_BUFFER`` bytes wait in memory; a part that fails stops the read at the last
        byte handed over in order, so the caller resumes from there."""
        write_at = sink.write_at if isinstance(sink, RangeSink) else None

        def fetch(first: int, last: int) -> list[bytes]:
            chunks = self._range(key, first, last)
            if write_at:
                at = first
                for chunk in chunks:
                    write_at(chunk, at)
                    at += len(chunk)
            return chunks

        take: Callable[[bytes], object] = sink.account if isinstance(sink, RangeSink) else sink.write
        ranges = [(a, min(a + self.part_size, size) - 1) for a in range(start, size, self.part_size)]
        pending: deque[cf.Future[list[bytes]]] = deque()
        window = max(2, min(self.concurrency, DOWNLOAD_BUFFER // self.part_size))

        def drain(future: cf.Future[list[bytes]]) -> None:
            for chunk in future.result():
                take(chunk)
                if progress:
                    progress(len(chunk))

        with cf.ThreadPoolExecutor(window) as pool:
            try:
                for first, last in ranges:
                    pending.append(pool.submit(fetch, first, last))
                    if len(pending) >= window:
                        drain(pending.popleft())
                while pending:
                    drain(pending.popleft())
            except BaseException:
                for f in pending:
                    f.cancel()
                raise
        return ObjectInfo(key, size)

    # -- delta pulls: one byte range ---------------------------------------------------------
    def read_range(self, key: str, first: int, last: int, *, size: int, if_match: str | None = None) -> Pieces:
        """Pinned like every read here: the first asks (HEAD) whether the server serves ranges
        and ties the reads that follow to the object it describes."""
        with self._lock:
            seen = key in self._validators
        if not seen and not self._pinned(key, size):
            raise RangesUnsupported(f"{self.location} does not serve byte ranges")
        return self._range(key, first, last)


def _content_range(value: str | None) -> tuple[int | None, int | None, int | None]:
    """``bytes FIRST-LAST/TOTAL`` (TOTAL may be ``*``)."""
    try:
        unit, _, spec = (value or "").strip().partition(" ")
        span, _, total = spec.partition("/")
        first, _, last = span.partition("-")
        if unit.lower() != "bytes":
            return None, None, None
        return int(first), int(last), (int(total) if total.strip() not in ("", "*") else None)
    except ValueError:
        return None, None, None


def _pool_for(base: str, *, maxsize: int) -> urllib3.PoolManager:
    """Connections to the registry's host, through the proxy the environment names
    (``https_proxy``, ``http_proxy``, ``no_proxy``) as other HTTP clients do."""
    parts = urllib.parse.urlsplit(base)
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and not urllib.request.proxy_bypass(parts.hostname or ""):
        proxied = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        headers = None
        if proxied.username is not None:
            auth = f"{urllib.parse.unquote(proxied.username)}:{urllib.parse.unquote(proxied.password or '')}"
            headers = urllib3.make_headers(proxy_basic_auth=auth)
        plain = proxied._replace(netloc=proxied.netloc.rpartition("@")[2])
        return urllib3.ProxyManager(plain.geturl(), maxsize=maxsize, proxy_headers=headers)
    return urllib3.PoolManager(maxsize=maxsize)
