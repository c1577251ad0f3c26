"""Unit tests of the small pure modules: names, ETag recomputation, the public names."""

from __future__ import annotations

import hashlib
import json
import os

import pytest

from tychoreg.errors import UsageError
from tychoreg.integrity import Digests, etag_plan
from tychoreg.names import check_version, is_valid_segment


@pytest.mark.parametrize("name", ["a", "narf", "1.0", "v1.0.0-rc.1+build.5", "A_b-C.d+e", "x" * 128, "0"])
def test_valid_names(name: str) -> None:
    assert is_valid_segment(name)


@pytest.mark.parametrize(
    "name",
    [
        "",
        ".",
        "..",
        ".hidden",
        "-opt",
        "a/b",
        "a\\b",
        "x" * 129,
        "has space",
        "caf\u00e9",
        "tab\t",
        "new\nline",
        "a:b",
        "a*b",
        None,
        5,
    ],
)
def test_invalid_names(name: object) -> None:
    assert not is_valid_segment(name)


def test_latest_is_reserved_for_push_only() -> None:
    assert check_version("latest") == "latest"
    with pytest.raises(UsageError):
        check_version("latest", for_push=True)


def _multipart_etag(data: bytes, part: int) -> str:
    digests = [hashlib.md5(data[i : i + part]).digest() for i in range(0, len(data), part)]
    return f'"{hashlib.md5(b"".join(digests)).hexdigest()}-{len(digests)}"'


@pytest.mark.parametrize(
    "size,part",
    [(8 * 2**20 + 1, 8 * 2**20), (16 * 2**20, 8 * 2**20), (20 * 2**20 + 7, 16 * 2**20), (5 * 2**20 * 3, 5 * 2**20)],
)
def test_multipart_etag_recomputed(size: int, part: int) -> None:
    data = os.urandom(size)
    plan = etag_plan(_multipart_etag(data, part), size, part_size=part)
    assert plan is not None and plan.part_size is not None
    digests = Digests(plan)
    for i in range(0, size, 1_000_003):  # chunk boundaries unrelated to part boundaries
        digests.update(data[i : i + 1_000_003])
    assert digests.etag == plan.etag
    assert digests.sha256 == hashlib.sha256(data).hexdigest()


def test_single_etag_and_unknown_etags() -> None:
    data = b"hello"
    plan = etag_plan(f'"{hashlib.md5(data).hexdigest()}"', len(data))
    digests = Digests(plan)
    digests.update(data)
    assert plan is not None and digests.etag == plan.etag
    assert etag_plan(None, 5) is None
    assert etag_plan('"not-an-md5"', 5) is None
    assert etag_plan(f'"{"a" * 32}-3"', 10) is None  # 3 parts of 8 MiB cannot make 10 bytes
    big = 20 * 2**20
    assert etag_plan(f'"{"a" * 32}-2"', big) is None  # not 8 MiB parts, and the store did not say
    assert etag_plan(f'"{"a" * 32}-2"', big, part_size=16 * 2**20) is not None


@pytest.mark.parametrize("ignores", ["If-None-Match", "If-Match", "conditional DELETE"])
def test_probe_detects_a_store_that_ignores_conditional_writes(tmp_path, monkeypatch, ignores: str) -> None:
    """A store that accepts conditional headers and ignores them cannot exist here (SeaweedFS
    enforces them), so a file store with one of them broken stands in for one. Each of the three
    must be noticed on its own; the answer is cached per store identity (endpoint + location)."""
    from tychoreg import probe
    from tychoreg.store.file import FileStore

    class Careless(FileStore):
        probe_conditional_writes = True

        def put_if_absent(self, key: str, data: bytes) -> str:
            if ignores != "If-None-Match":
                return super().put_if_absent(key, data)
            (self.root / key).parent.mkdir(parents=True, exist_ok=True)
            (self.root / key).write_bytes(data)
            return "x"

        def put_if_match(self, key: str, data: bytes, etag: str) -> str:
            if ignores != "If-Match":
                return super().put_if_match(key, data, etag)
            (self.root / key).write_bytes(data)
            return "x"

        def delete_if_match(self, key: str, etag: str) -> None:
            if ignores != "conditional DELETE":
                return super().delete_if_match(key, etag)
            (self.root / key).unlink()

    class Careful(FileStore):
        probe_conditional_writes = True

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    careful, careless = Careful(tmp_path / "a"), Careless(tmp_path / "b")
    careless.identity = "http://other-endpoint|" + careless.location  # type: ignore[attr-defined]
    assert probe.enforces_conditional_writes(careful) is True
    assert probe.enforces_conditional_writes(careless) is False
    assert [p.name for p in (tmp_path / "b").iterdir()] in ([], [".tycho-lock"])  # the probe cleans up
    cached = json.loads((tmp_path / "cache/tychoreg/conditional-writes.json").read_text())
    assert cached == {str(tmp_path / "a"): True, careless.identity: False}


def test_probe_answers_are_kept_per_endpoint(tmp_path, monkeypatch) -> None:
    """Two S3 servers may both have a bucket named like ours: the cached answer of one must not
    stand for the other (the cache key holds the endpoint)."""
    from tychoreg.store.s3 import S3Store

    options = {
        "bucket": "same-name",
        "aws_access_key_id": "k",
        "aws_secret_access_key": "s",
        "region_name": "us-east-1",
    }
    one = S3Store({**options, "endpoint_url": "http://127.0.0.1:1"})
    two = S3Store({**options, "endpoint_url": "http://127.0.0.1:2"})
    assert one.location == two.location
    assert one.identity != two.identity


def test_public_names_are_listed_and_importable() -> None:
    import tychoreg

    assert set(tychoreg.__all__) == {*tychoreg._HOMES, "__version__"}
    for name in tychoreg.__all__:
        assert getattr(tychoreg, name) is not None, name


def test_a_download_is_flushed_to_disk_as_it_grows_not_all_at_the_end(tmp_path, monkeypatch) -> None:
    """The fsync before the rename would otherwise wait for the whole file (Linux writes nothing
    back until then): a background flush follows the file as it grows, and stops before the file
    is closed (its descriptor is never used after)."""
    import threading
    import time

    from tychoreg import localfs

    flushed: list[tuple[int, int]] = []
    monkeypatch.setattr(localfs, "FLUSH_EVERY", 1024 * 1024)
    monkeypatch.setattr(localfs.portable, "fdatasync", lambda fd: flushed.append((fd, os.fstat(fd).st_size)))
    dest = tmp_path / "big.bin"
    data = os.urandom(3 * 1024 * 1024)
    with localfs.resumable_write(dest, None) as fh:
        for i in range(3):
            fh.write(data[i * 1024 * 1024 : (i + 1) * 1024 * 1024])
            fh.flush()
            deadline = time.monotonic() + 10
            while len(flushed) <= i and time.monotonic() < deadline:
                time.sleep(0.02)
        during = list(flushed)
        fd = fh.fileno()
    assert [size for _, size in during] == [1024 * 1024, 2 * 1024 * 1024, 3 * 1024 * 1024]
    assert {d for d, _ in during} == {fd}
    assert flushed == during  # nothing after the block
    assert not [t for t in threading.enumerate() if t.name == "tychoreg-flush"]
    assert dest.read_bytes() == data


@pytest.mark.parametrize(
    "endpoint,config,signed",
    [
        ("https://s3.example.test", None, False),  # TLS guards the bytes: no second pass over them
        (None, None, False),  # AWS itself: https
        ("http://127.0.0.1:9", None, True),  # plain http: the payload signature is the only check
        ("https://s3.example.test", {"s3": {"payload_signing_enabled": True}}, True),  # the config wins
    ],
)
def test_request_bodies_are_hashed_for_the_signature_only_without_tls(monkeypatch, endpoint, config, signed) -> None:
    """What botocore sends for a part of a push, caught before it leaves (no server needed): over
    https the body is not SHA-256-hashed for the signature (UNSIGNED-PAYLOAD), over http it is."""
    from botocore.awsrequest import AWSResponse

    from tychoreg.store.s3 import S3Store

    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    options = {"bucket": "bkt", "region_name": "us-east-1", "aws_access_key_id": "AKIAX", "aws_secret_access_key": "s"}
    if endpoint:
        options["endpoint_url"] = endpoint
    if config:
        options["config"] = config
    client = S3Store(options).client
    sent: list[str] = []

    class Empty:  # the body of the answer: nothing
        def stream(self, **_):
            return iter(())

    def catch(request, **_):
        sent.append(request.headers["X-Amz-Content-SHA256"].decode())
        return AWSResponse(request.url, 200, {"ETag": '"e"'}, Empty())

    client.meta.events.register("before-send.s3.UploadPart", catch)
    body = os.urandom(1000)
    client.upload_part(Bucket="bkt", Key="k", UploadId="u", PartNumber=1, Body=body)
    assert sent == [hashlib.sha256(body).hexdigest() if signed else "UNSIGNED-PAYLOAD"]


def test_a_request_takes_a_connection_being_opened_ahead_rather_than_opening_another() -> None:
    """warm() opens connections in the background for requests about to be sent. A request that
    comes while they are still opening must wait for one of them, not open one more: a no-op pull
    opened 5 connections for its 3 requests (1 run in 5) once opening one got slower (the first
    one imports http.client)."""
    import threading
    import time

    from tychoreg.store.s3http import LeanS3

    options = {
        "bucket": "bkt",
        "endpoint_url": "http://127.0.0.1:9",
        "region_name": "us-east-1",
        "aws_access_key_id": "AKIAX",
        "aws_secret_access_key": "s",
    }
    lean = LeanS3.for_options(options, env={})
    assert lean is not None
    opened: list[object] = []
    lock = threading.Lock()

    class Connected:  # what _new_connection gives: a connection whose socket is open
        sock = object()

    def slow_new_connection() -> Connected:
        time.sleep(0.3)  # a handshake on a far link, or the import of http.client
        conn = Connected()
        with lock:
            opened.append(conn)
        return conn

    lean._new_connection = slow_new_connection  # type: ignore[method-assign]
    lean.warm(3)
    got: list[object] = []
    threads = [threading.Thread(target=lambda: got.append(lean._connection())) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    assert len(opened) == 3 and sorted(map(id, got)) == sorted(map(id, opened))
