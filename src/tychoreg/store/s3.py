"""A registry in an S3 bucket (AWS or any S3-compatible server), through boto3.

Conditional writes are S3's own: ``If-None-Match: *`` to create (also on completing a multipart
upload, so large versions appear atomically) and ``If-Match: ETAG`` to replace. A lost race comes
back as 412 PreconditionFailed, or on some stores 409 ConditionalRequestConflict; both mean the
same to the domain, which re-reads and retries where that makes sense.
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import threading
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from datetime import datetime
from typing import Any

from ..concurrency import backoff, executor
from ..errors import ConfigError, StorageError
from .base import (
    CHUNK,
    MAX_DOCUMENT,
    FileRangeSink,
    Leftover,
    ObjectInfo,
    ObjectNotFound,
    PreconditionFailed,
    Progress,
    RangeSink,
    Sink,
    Source,
    TransferInterrupted,
    too_large,
)
from .s3http import Chunks, Fallback, LeanS3, Listed, http_date

MiB = 1024 * 1024
PART_SIZE = 8 * MiB
MAX_PARTS = 10_000
CONCURRENCY = 8
#: Objects up to this size are read in one plain GET by the lean client (see s3http.py).
LEAN_READ = 1 * MiB
#: Bytes of parts read ahead of their upload (each is held in memory until sent).
UPLOAD_BUFFER = 40 * MiB
#: Bytes of ranged-download parts held in memory at once (they wait there to be written in order).
DOWNLOAD_BUFFER = 48 * MiB
#: Ranges in flight at once, written into the file as they arrive (nothing held in memory), when
#: the server is far (no answer within ``NEAR`` seconds): each connection then carries only so
#: much, and each range waits a round trip for its first byte.
RANGES_FAR, NEAR = 32, 0.015
#: Upload parts to a far server: S3's smallest, so ``UPLOAD_BUFFER`` keeps 8 of them in flight.
FAR_UPLOAD_PART = 5 * MiB
_BODY_ATTEMPTS = 4
_CONFLICT_CODES = {"PreconditionFailed", "ConditionalRequestConflict"}
_MISSING_CODES = {"NoSuchKey", "404", "NotFound", "NoSuchUpload"}
_DENIED_CODES = {
    "AccessDenied",
    "403",
    "Forbidden",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "InvalidToken",
    "ExpiredToken",
    "AccountProblem",
}
#: Checksums only where S3 requires them: every byte is already SHA-256-hashed on its way, and
#: botocore's default CRC32 of every part would be a second pass over the data.
_DEFAULT_CONFIG = {
    "retries": {"mode": "standard", "max_attempts": 5},
    "connect_timeout": 10,
    "read_timeout": 60,
    "request_checksum_calculation": "when_required",
    "response_checksum_validation": "when_required",
}


#: Uploaded parts, as complete_multipart_upload takes them (``PartNumber``, ``ETag``).
_Parts = list[dict[str, Any]]


def _body_errors() -> tuple[type[BaseException], ...]:
    import botocore.exceptions  # noqa: PLC0415 - boto3: ~80 ms, only if the lean client cannot answer
    import urllib3.exceptions  # noqa: PLC0415 - comes with botocore

    return (botocore.exceptions.BotoCoreError, urllib3.exceptions.HTTPError, ConnectionError)


def _client_kwargs(options: dict[str, Any], pool: int = 2 * CONCURRENCY) -> dict[str, Any]:
    from botocore.config import Config  # noqa: PLC0415 - boto3: ~80 ms, only if the lean client cannot answer

    kwargs = {k: v for k, v in options.items() if k not in ("bucket", "prefix")}
    user_config = kwargs.pop("config", None)
    config = Config(**_DEFAULT_CONFIG, max_pool_connections=pool)
    if not str(kwargs.get("endpoint_url") or "https:").lower().startswith("http:"):
        # Over TLS, botocore's SHA-256 of every request body (its payload signature, which it
        # computes when no checksum header is sent) is a second pass over every pushed byte that
        # guards nothing TLS does not: 0.45 s of CPU per 512 MiB here. Over plain http it stays,
        # the only check of the bytes in transit. A config that says otherwise wins.
        config = config.merge(Config(s3={"payload_signing_enabled": False}))
    if isinstance(user_config, dict):
        try:
            config = config.merge(Config(**user_config))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"s3.config has an option botocore does not accept: {exc}") from None
    elif user_config is not None:
        raise ConfigError(
            "s3.config must be a JSON object of botocore Config options",
            'e.g. "config": {"connect_timeout": 5, "retries": {"max_attempts": 8}}',
        )
    kwargs["config"] = config
    return kwargs


class _StagedPut:
    """A small object held in memory until commit: one PUT with If-None-Match."""

    def __init__(self, store: S3Store, key: str, data: bytes, meta: Mapping[str, str] | None = None) -> None:
        self._store, self._key, self._data, self.size = store, key, data, len(data)
        self._meta = dict(meta or {})
        self.etag = f'"{hashlib.md5(data, usedforsecurity=False).hexdigest()}"'

    def commit(self, guard: tuple[str, str] | None = None) -> None:
        # ``guard`` cannot be checked atomically on S3: the caller confirms its claim afterwards.
        self.put()

    def put(self) -> str:
        """The PUT itself; returns the new object's ETag."""
        with self._store._errors(self._key):
            etag: str = self._store.client.put_object(
                Bucket=self._store.bucket,
                Key=self._store._full(self._key),
                Body=self._data,
                IfNoneMatch="*",
                Metadata=self._meta,
            )["ETag"]
        return etag

    def abort(self) -> None:
        self._data = b""


class _StagedMultipart:
    """Parts uploaded; the object appears only when the upload is completed."""

    def __init__(self, store: S3Store, key: str, upload_id: str, parts: _Parts, size: int) -> None:
        self._store, self._key, self._upload_id, self._parts, self.size = store, key, upload_id, parts, size
        self._done = False
        self.etag = _multipart_etag(parts)

    def commit(self, guard: tuple[str, str] | None = None) -> None:
        try:
            with self._store._errors(self._key):
                self._store.client.complete_multipart_upload(
                    Bucket=self._store.bucket,
                    Key=self._store._full(self._key),
                    UploadId=self._upload_id,
                    MultipartUpload={"Parts": self._parts},
                    IfNoneMatch="*",
                )
            self._done = True
        finally:
            if not self._done:
                self.abort()

    def abort(self) -> None:
        if self._done:
            return
        self._done = True
        try:
            self._store.client.abort_multipart_upload(
                Bucket=self._store.bucket, Key=self._store._full(self._key), UploadId=self._upload_id
            )
        except Exception:  # noqa: BLE001 - best effort; gc removes what is left
            pass


def _multipart_etag(parts: _Parts) -> str | None:
    """S3's ETag of a completed multipart upload: MD5 of the parts' MD5s, then ``-N``."""
    try:
        digests = b"".join(bytes.fromhex(p["ETag"].strip('"')) for p in parts)
    except (ValueError, KeyError):
        return None
    if len(digests) != 16 * len(parts):
        return None
    return f'"{hashlib.md5(digests, usedforsecurity=False).hexdigest()}-{len(parts)}"'


class S3Store:
    """Keys live under an optional ``prefix`` in ``bucket``."""

    #: Some S3-compatible stores accept conditional headers and ignore them: check (see probe.py).
    probe_conditional_writes = True
    #: No request makes a commit conditional on another object: publishers confirm afterwards.
    atomic_guard = False
    #: S3 and the S3-compatible stores keep user metadata (x-amz-meta-*) with each object.
    keeps_metadata = True

    def __init__(
        self, options: dict[str, Any], *, part_size: int | None = None, concurrency: int = CONCURRENCY
    ) -> None:
        #: Ranges are sized to the link unless the config sets ``part_size`` (then it is used as is).
        self.adaptive = part_size is None
        self.part_size, self.concurrency = part_size or PART_SIZE, concurrency
        self.bucket: str = options["bucket"]
        self.prefix: str = options.get("prefix", "")
        self.location = f"s3://{self.bucket}/{self.prefix}".rstrip("/")
        #: Location plus endpoint: two servers may hold buckets of one name (see probe.py).
        self.identity = f"{options.get('endpoint_url') or options.get('region_name') or ''}|{self.location}"
        self._options = options
        self._client: Any = None
        self._client_lock = threading.Lock()  # built once, maybe in the background (prepare_writes)
        self._lean = LeanS3.for_options(options)
        if self._lean is None:
            self.client  # noqa: B018 - build it now so a bad config fails before any request

    @property
    def client(self) -> Any:
        """The boto3 client, built on first use: many commands finish without needing it."""
        if self._client is None:
            with self._client_lock:
                if self._client is None:
                    self._client = self._build_client()
        return self._client

    def _build_client(self) -> Any:
        import boto3  # noqa: PLC0415 - boto3: ~80 ms, only if the lean client cannot answer
        import botocore.exceptions  # noqa: PLC0415 - boto3: ~80 ms, only if the lean client cannot answer
        from botocore.handlers import add_expect_header  # noqa: PLC0415 - comes with boto3

        try:
            client = boto3.client("s3", **_client_kwargs(self._options, 2 * self.concurrency))
        except (botocore.exceptions.BotoCoreError, TypeError, ValueError, AttributeError) as exc:
            raise ConfigError(
                f"cannot set up the S3 client: {exc}", "check the s3 section of your config (keys go to boto3.client)"
            ) from None
        # botocore sends every PUT and POST body with ``Expect: 100-continue`` and waits for the
        # server's go-ahead before the body: one more round trip for each claim, part, commit
        # and catalog write (20-80 ms each on a real network). The bodies are small documents
        # or parts of at most a few MiB, which are cheaper to send at once than to ask about.
        client.meta.events.unregister("before-call.s3", add_expect_header)
        return client

    def prepare_writes(self) -> None:
        """Build the boto3 client in the background (importing boto3 takes 0.2-0.4 s of CPU), for a
        command that will write: its first reads, through the lean client, go meanwhile. Best
        effort: a failure here is raised again where the client is first used."""
        if self._client is not None or self._lean is None:
            return

        def build() -> None:
            with suppress(Exception):
                self.client  # noqa: B018 - built for the writes to come

        threading.Thread(target=build, name="tychoreg-boto3", daemon=True).start()

    def _full(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _rel(self, full: str) -> str:
        return full[len(self.prefix) + 1 :] if self.prefix else full

    @contextmanager
    def _errors(self, key: str) -> Iterator[None]:
        """Translate boto3's exceptions into the store's typed errors."""
        import botocore.exceptions  # noqa: PLC0415 - boto3: ~80 ms, only if the lean client cannot answer

        where = f"{self.location}/{key}" if key else self.location
        try:
            yield
        except botocore.exceptions.ClientError as exc:
            err = exc.response.get("Error", {})
            code = str(err.get("Code", ""))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in _CONFLICT_CODES or (status in (409, 412) and code != "BucketAlreadyExists"):
                raise PreconditionFailed(f"{where} was changed by someone else") from None
            if code == "NotImplemented" or status == 501:
                raise StorageError(
                    f"{self.location} refused a request tychoreg needs ({code or status}): "
                    "it does not implement conditional writes (If-None-Match / If-Match)",
                    "use a store that does (AWS S3, SeaweedFS, MinIO, Ceph RGW, R2)",
                ) from None
            if code in _MISSING_CODES:
                raise ObjectNotFound(f"{where} not found") from None
            if code == "NoSuchBucket":
                raise StorageError(
                    f"bucket {self.bucket} does not exist", "check s3.bucket and s3.endpoint_url in your config"
                ) from None
            if code in _DENIED_CODES or status == 403:
                raise StorageError(
                    f"access denied to {where} ({code or status})",
                    "check the credentials and permissions your config gives",
                ) from None
            raise StorageError(
                f"S3 request for {where} failed: {code or status}: {err.get('Message', '')}".rstrip(": ")
            ) from None
        except botocore.exceptions.NoCredentialsError:
            raise StorageError(
                "no S3 credentials found",
                "set aws_access_key_id/aws_secret_access_key in the s3 section, or AWS_PROFILE / AWS_ACCESS_KEY_ID",
            ) from None
        except (botocore.exceptions.EndpointConnectionError, botocore.exceptions.ConnectionError) as exc:
            raise StorageError(
                f"cannot reach the S3 endpoint for {self.location}: {type(exc).__name__}",
                "check s3.endpoint_url and your network; the command can be retried",
            ) from None
        except botocore.exceptions.BotoCoreError as exc:
            raise StorageError(f"S3 request for {where} failed: {exc}") from None

    # -- Store interface -----------------------------------------------------------------
    def _lean_get(self, key: str, limit: int, if_match: str | None = None) -> tuple[bytes, str] | None:
        """The object through the lean client; None when boto3 must be asked instead."""
        if not self._lean:
            return None
        try:
            found = self._lean.get(self._full(key), limit, if_match)
        except Fallback:
            return None
        if found is None:
            raise ObjectNotFound(f"{self.location}/{key} not found")
        return found

    def _boto_range(self, key: str, first: int, last: int, etag: str | None) -> Chunks:
        errors = _body_errors()
        for attempt in range(_BODY_ATTEMPTS):
            with self._errors(key):
                resp = self.client.get_object(
                    Bucket=self.bucket,
                    Key=self._full(key),
                    Range=f"bytes={first}-{last}",
                    **({"IfMatch": etag} if etag else {}),
                )
            try:  # chunks, not one joined body: joining would briefly double the memory
                chunks = list(resp["Body"].iter_chunks(CHUNK))
                if sum(map(len, chunks)) == last - first + 1:
                    return chunks
            except errors:
                pass
            backoff(attempt, 0.1, 2.0)
        raise TransferInterrupted(
            f"download of {self.location}/{key} was interrupted", "run the pull again: it resumes"
        )

    def _lean_range(self, key: str, first: int, last: int, etag: str | None) -> Chunks | None:
        if not self._lean:
            return None
        try:
            return self._lean.get_range(self._full(key), first, last, etag, CHUNK)
        except Fallback:
            return None

    def get(self, key: str) -> tuple[bytes, str]:
        found = self._lean_get(key, MAX_DOCUMENT)
        if found is not None:
            return found
        # boto3 retries requests, not the reading of a body: a cut-off document is asked again.
        for attempt in range(_BODY_ATTEMPTS):
            with self._errors(key):
                resp = self.client.get_object(Bucket=self.bucket, Key=self._full(key))
            if resp["ContentLength"] > MAX_DOCUMENT:
                resp["Body"].close()
                raise too_large(self.location, key, resp["ContentLength"])
            try:
                return resp["Body"].read(), resp["ETag"]
            except _body_errors() as exc:
                if attempt == _BODY_ATTEMPTS - 1:
                    raise TransferInterrupted(
                        f"reading {self.location}/{key} was interrupted ({type(exc).__name__})",
                        "check the network and try again",
                    ) from None
                backoff(attempt, 0.1, 2.0)
        raise AssertionError("unreachable")

    def head(self, key: str) -> ObjectInfo | None:
        if self._lean:
            try:
                found = self._lean.head(self._full(key))
            except Fallback:
                pass
            else:
                return None if found is None else ObjectInfo(key, *found, stamp=found[1])
        try:
            with self._errors(key):
                resp = self.client.head_object(Bucket=self.bucket, Key=self._full(key))
        except ObjectNotFound:
            return None
        answered = http_date(resp.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date"))
        return ObjectInfo(
            key,
            resp["ContentLength"],
            resp.get("ETag"),
            resp.get("LastModified"),
            dict(resp.get("Metadata") or {}),
            answered,
            resp.get("ETag"),
        )

    def first_part_size(self, key: str) -> int | None:
        try:
            with self._errors(key):
                resp = self.client.head_object(Bucket=self.bucket, Key=self._full(key), PartNumber=1)
        except StorageError:
            return None  # not every S3-compatible store answers part requests
        return resp.get("ContentLength") if resp.get("PartsCount") else None

    def put_if_absent(self, key: str, data: bytes) -> str:
        return _StagedPut(self, key, data).put()

    def put_if_match(self, key: str, data: bytes, etag: str) -> str:
        try:
            with self._errors(key):
                new: str = self.client.put_object(Bucket=self.bucket, Key=self._full(key), Body=data, IfMatch=etag)[
                    "ETag"
                ]
            return new
        except ObjectNotFound:  # AWS answers 404 when the key is gone: the condition failed
            raise PreconditionFailed(f"{self.location}/{key} no longer exists") from None

    def delete(self, key: str) -> None:
        with self._errors(key):
            self.client.delete_object(Bucket=self.bucket, Key=self._full(key))

    def delete_if_match(self, key: str, etag: str, *, unless: str | None = None) -> None:
        # ``unless`` cannot be part of an S3 request: the caller checks afterwards.
        try:
            with self._errors(key):
                self.client.delete_object(Bucket=self.bucket, Key=self._full(key), IfMatch=etag)
        except ObjectNotFound:
            raise PreconditionFailed(f"{self.location}/{key} no longer exists") from None

    def now(self) -> datetime | None:
        return None  # every answer carries the server's Date: see ObjectInfo.answered

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        if self._lean:
            try:  # a listing is gathered whole before use, so a fallback never repeats an item
                found = [
                    ObjectInfo(self._rel(o.key), o.size, o.etag, o.modified)
                    for o in self._lean.list(self._full(prefix))
                    if isinstance(o, Listed)
                ]
            except Fallback:
                pass
            else:
                yield from found
                return
        with self._errors(prefix):
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self._full(prefix))
            for page in pages:
                for obj in page.get("Contents", ()):
                    yield ObjectInfo(self._rel(obj["Key"]), obj["Size"], obj.get("ETag"), obj.get("LastModified"))

    def list_folders(self, prefix: str) -> Iterator[str]:
        full = self._full(prefix) if prefix else (self.prefix + "/" if self.prefix else "")
        if self._lean:
            try:
                found = [o for o in self._lean.list(full, "/") if isinstance(o, str)]
            except Fallback:
                pass
            else:
                yield from (p[len(full) :].rstrip("/") for p in found)
                return
        with self._errors(prefix):
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=full, Delimiter="/"
            )
            for page in pages:
                for common in page.get("CommonPrefixes", ()):
                    yield common["Prefix"][len(full) :].rstrip("/")

    def stage(
        self,
        key: str,
        source: Source,
        size_hint: int | None = None,
        progress: Progress | None = None,
        meta: Mapping[str, str] | None = None,
    ) -> _StagedPut | _StagedMultipart:
        # Parts grow for huge files so that no upload needs more than S3's 10,000 parts. To a far
        # server, parts are S3's smallest, so that the same memory keeps more connections busy.
        far = self.adaptive and self._far()
        part = self._far_part(size_hint) if far else self.part_size
        part_size = max(part, -(-(size_hint or 0) // (MAX_PARTS - 100)))
        first = source.read(part_size)
        if len(first) < part_size:
            if progress:
                progress(len(first))
            return _StagedPut(self, key, first, meta)
        with self._errors(key):
            upload_id = self.client.create_multipart_upload(
                Bucket=self.bucket, Key=self._full(key), Metadata=dict(meta or {})
            )["UploadId"]
        try:
            window = self.concurrency if far else max(2, min(self.concurrency, UPLOAD_BUFFER // part_size))
            parts, size = self._upload_parts(key, upload_id, first, source, (part_size, window), progress)
        except BaseException:
            _StagedMultipart(self, key, upload_id, [], 0).abort()
            raise
        return _StagedMultipart(self, key, upload_id, parts, size)

    def _far_part(self, size: int | None) -> int:
        """The part size to a far server: S3's smallest, or a little more so that the parts fill
        whole rounds of ``concurrency`` uploads, and no last round of a few parts leaves the other
        connections idle (128 MiB: 24 parts of 5.3 MiB in 3 rounds, not 26 of 5 MiB in 4). At
        most a quarter more than the smallest, so the parts held in memory stay about
        ``UPLOAD_BUFFER``."""
        rounds = (size or 0) // (self.concurrency * FAR_UPLOAD_PART)
        if size and rounds:
            part = -(-size // (rounds * self.concurrency))
            if part <= FAR_UPLOAD_PART * 5 // 4:
                return part
        return FAR_UPLOAD_PART

    def _upload_parts(
        self, key: str, upload_id: str, first: bytes, source: Source, sizing: tuple[int, int], progress: Progress | None
    ) -> tuple[_Parts, int]:
        """Read parts in order (the caller hashes as we read) and upload them in parallel:
        ``sizing`` is (part size, parts in flight)."""
        part_size, window = sizing

        def send(number: int, body: bytes) -> dict[str, Any]:
            with self._errors(key):
                resp = self.client.upload_part(
                    Bucket=self.bucket, Key=self._full(key), UploadId=upload_id, PartNumber=number, Body=body
                )
            if progress:
                progress(len(body))
            return {"PartNumber": number, "ETag": resp["ETag"]}

        parts: _Parts = []
        pending: list[cf.Future[dict[str, Any]]] = []
        size, number, body = 0, 1, first
        with executor(window) as pool:
            try:
                while body:
                    if len(pending) >= window:  # bound memory: wait for the oldest part
                        parts.append(pending.pop(0).result())
                    pending.append(pool.submit(send, number, body))
                    size += len(body)
                    number += 1
                    body = source.read(part_size)
                parts.extend(f.result() for f in pending)
            except BaseException:
                for f in pending:
                    f.cancel()
                raise
        return parts, size

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
        part = self.part_size
        far = self.adaptive and isinstance(sink, FileRangeSink) and self._far()
        if far and size is not None:  # enough ranges to fill the parallel connections a far link needs
            part = max(MiB, min(part, -(-(size - start) // RANGES_FAR)))
        if size is not None and size - start >= 2 * part:
            return self._read_ranges(key, sink, start, size, progress, if_match, part)
        small = start == 0 and size is not None and size <= LEAN_READ
        found = self._lean_get(key, LEAN_READ, if_match) if small else None
        if found is not None:
            sink.write(found[0])
            if progress:
                progress(len(found[0]))
            return ObjectInfo(key, len(found[0]), found[1])
        extra: dict[str, str] = {"Range": f"bytes={start}-"} if start else {}
        if if_match:
            extra["IfMatch"] = if_match
        with self._errors(key):
            resp = self.client.get_object(Bucket=self.bucket, Key=self._full(key), **extra)
        try:
            for chunk in resp["Body"].iter_chunks(CHUNK):
                sink.write(chunk)
                if progress:
                    progress(len(chunk))
        except _body_errors() as exc:
            raise TransferInterrupted(
                f"download of {self.location}/{key} was interrupted ({type(exc).__name__})",
                "run the pull again: it resumes",
            ) from None
        total = resp["ContentLength"] + start
        return ObjectInfo(key, total, resp.get("ETag"), resp.get("LastModified"))

    def _read_ranges(
        self,
        key: str,
        sink: Sink,
        start: int,
        size: int,
        progress: Progress | None,
        if_match: str | None = None,
        part_size: int | None = None,
    ) -> ObjectInfo:
        """Ranged GETs in parallel, handed to ``sink`` strictly in order (the caller hashes them
        in order). A :class:`RangeSink` gets each part written by the worker that fetched it, so
        disk writes run in parallel too. At most ``DOWNLOAD_BUFFER`` bytes of parts are in
        memory; a part that fails after its own retries stops the read at the last byte handed
        over in order, so the caller resumes from there."""
        etag: list[str] = []
        write_at = sink.write_at if isinstance(sink, RangeSink) else None
        # Far away, many ranges must be in flight: they go straight into the file and are hashed
        # from there. Near, the few in flight are held in memory and hashed as they are (no
        # reading back: on loopback the hash, on the main thread, is what bounds a pull).
        streamed = isinstance(sink, FileRangeSink) and self.adaptive and self._far()

        def fetch(first: int, last: int) -> Chunks:
            if streamed and write_at and self._stream_range(key, first, last, etag[0] if etag else None, write_at):
                return []  # in the file; handed over from there (see _drain)
            chunks = self._lean_range(key, first, last, etag[0] if etag else None)
            if chunks is None:
                chunks = self._boto_range(key, first, last, etag[0] if etag else None)
            if write_at:
                at = first
                for chunk in chunks:
                    write_at(chunk, at)
                    at += len(chunk)
            return [] if streamed else chunks

        if if_match:
            # The caller's HEAD pinned the object (its ETag, and its size, which it passes as
            # ``size``): every range is conditional on that ETag, so a replaced object answers
            # 412 on its first range. No second HEAD, no round trip.
            pinned = ObjectInfo(key, size, if_match)
        else:
            found = self.head(key)  # one HEAD pins the object's ETag: every range must come from it
            if found is None:
                raise ObjectNotFound(f"{self.location}/{key} not found")
            pinned = found
        if pinned.size != size:
            raise StorageError(
                f"{self.location}/{key} is {pinned.size} bytes, not the {size} expected: it was replaced or damaged",
                reason="replaced-or-damaged",
            )
        if pinned.etag:
            etag.append(pinned.etag)
        part = part_size or self.part_size
        ranges = [(a, min(a + part, size) - 1) for a in range(start, size, part)]
        pending: deque[cf.Future[Chunks]] = deque()
        if streamed:
            window = RANGES_FAR
            self.warm_connections(min(window, len(ranges)))
        else:
            window = max(2, min(self.concurrency, DOWNLOAD_BUFFER // self.part_size))
        spans = {first: last - first + 1 for first, last in ranges}
        with executor(window) as pool:
            try:
                order: deque[int] = deque()
                for first, last in ranges:
                    pending.append(pool.submit(fetch, first, last))
                    order.append(first)
                    if len(pending) >= window:
                        self._drain(pending.popleft(), sink, progress, order.popleft(), spans)
                while pending:
                    self._drain(pending.popleft(), sink, progress, order.popleft(), spans)
            except BaseException:
                for f in pending:
                    f.cancel()
                raise
        return ObjectInfo(key, size, pinned.etag, pinned.modified)

    def _stream_range(
        self, key: str, first: int, last: int, etag: str | None, write_at: Callable[[bytes, int], None]
    ) -> bool:
        """Read a range through the lean client straight into the file; False when boto3 must read
        it (again, from its start: what was written is overwritten with the same bytes)."""
        assert self._lean is not None
        at = [first]

        def into(piece: bytes) -> None:
            write_at(piece, at[0])
            at[0] += len(piece)

        try:
            self._lean.stream_range(self._full(key), first, last, etag, CHUNK, into)
        except Fallback:
            return False
        return True

    @staticmethod
    def _drain(
        future: cf.Future[Chunks], sink: Sink, progress: Progress | None, first: int, spans: dict[int, int]
    ) -> None:
        """Hand a finished part to the sink in order: only accounted for if the worker wrote it
        (from the file when the worker kept no pieces of it)."""
        chunks = future.result()
        if not chunks and isinstance(sink, FileRangeSink) and spans[first]:
            sink.account_written(first, spans[first])
            if progress:
                progress(spans[first])
            return
        take = sink.account if isinstance(sink, RangeSink) else sink.write
        for chunk in chunks:
            take(chunk)
            if progress:
                progress(len(chunk))

    def leftovers(self) -> Iterator[Leftover]:
        prefix = self.prefix + "/" if self.prefix else ""
        with self._errors(""):
            pages = self.client.get_paginator("list_multipart_uploads").paginate(Bucket=self.bucket, Prefix=prefix)
            for page in pages:
                for upload in page.get("Uploads", ()):
                    yield Leftover(self._rel(upload["Key"]), upload["UploadId"], None, upload.get("Initiated"))

    def remove_leftover(self, leftover: Leftover) -> None:
        try:
            with self._errors(leftover.key):
                self.client.abort_multipart_upload(
                    Bucket=self.bucket, Key=self._full(leftover.key), UploadId=leftover.ref
                )
        except ObjectNotFound:
            pass

    # -- performance on a real network (issue 16) --------------------------------------------
    def _far(self) -> bool:
        """Has no answer come within :data:`NEAR` seconds (so the server is a real network away,
        not on this machine or in its rack)? False while nothing was timed yet."""
        return self._lean is not None and self._lean.fastest is not None and self._lean.fastest >= NEAR

    def warm_connections(self, connections: int) -> None:
        """Open connections for requests about to be sent, in the background (see s3http)."""
        if self._lean is not None:
            self._lean.warm(connections)

    # -- delta pulls: one byte range ---------------------------------------------------------
    def read_range(self, key: str, first: int, last: int, *, size: int, if_match: str | None = None) -> Chunks:
        chunks = self._lean_range(key, first, last, if_match)
        if chunks is None:
            chunks = self._boto_range(key, first, last, if_match)
        return chunks
