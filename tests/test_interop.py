"""Interoperation with the real tycho-station 0.4.0 on the same SeaweedFS bucket, both ways."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest

from conftest import Result, Workspace


@pytest.fixture
def seed(seed_tychoreg: Path, s3_ws: Workspace):
    """Run tycho-station 0.4.0 in the workspace, with the same config file."""

    def run(*args: str) -> Result:
        proc = subprocess.run(
            [str(seed_tychoreg), *args],
            cwd=s3_ws.root,
            env=s3_ws.base_env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert "Traceback" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr
        return Result(proc.returncode, proc.stdout, proc.stderr)

    return run


def test_seed_pushes_tychoreg_reads(s3_ws: Workspace, seed) -> None:
    one, ten = b"one\n" * 100, b"ten\n" * 7
    s3_ws.file("one.bin", one)
    s3_ws.file("ten.bin", ten)
    assert seed("init", "narf", "narf.bin").code == 0
    assert seed("push", "narf", "1.0", "one.bin", "--promote-latest").code == 0
    assert seed("push", "narf", "1.10", "ten.bin").code == 0

    assert s3_ws.ok("list", "--json").json() == [{"name": "narf", "latest": "1.0"}]
    contract_keys = ("version", "size", "sha256", "pushed_at")
    assert [{k: row[k] for k in contract_keys} for row in s3_ws.ok("list-versions", "narf", "--json").json()] == [
        {"version": "1.0", "size": len(one), "sha256": None, "pushed_at": None},
        {"version": "1.10", "size": len(ten), "sha256": None, "pushed_at": None},
    ]

    pulled = s3_ws.ok("pull", "narf")
    assert (s3_ws.root / "tycho_packages/narf.bin").read_bytes() == one
    assert "unverified" in pulled.err
    assert "ETag" in pulled.err
    again = s3_ws.ok("pull", "narf")  # content matches the ETag: skipped
    assert "up to date" in again.out.lower()

    s3_ws.ok("pull", "narf", "--version", "1.10", "--outfile", "ten-copy.bin")
    assert (s3_ws.root / "ten-copy.bin").read_bytes() == ten

    s3_ws.ok("promote", "narf", "1.10")
    os.remove(s3_ws.root / "tycho_packages/narf.bin")
    assert seed("pull", "narf").code == 0
    assert (s3_ws.root / "tycho_packages/narf.bin").read_bytes() == ten


def test_tychoreg_pushes_seed_reads(s3_ws: Workspace, seed) -> None:
    one, two = os.urandom(3000), os.urandom(5000)
    s3_ws.ok("init", "narf", "narf.bin")
    s3_ws.ok("push", "narf", "1.0", str(s3_ws.file("one.bin", one)), "--promote-latest")
    s3_ws.ok("push", "narf", "2.0", str(s3_ws.file("two.bin", two)))
    s3_ws.ok("init", "empty", "e.bin")

    listed = seed("list")
    assert listed.code == 0
    lines = sorted(listed.out.splitlines())
    assert lines == ["empty -- Latest Version: None", "narf -- Latest Version: 1.0"]
    versions = seed("list-versions", "narf")
    assert versions.code == 0
    assert [line.strip() for line in versions.out.splitlines()] == ["narf Versions", "- 1.0", "- 2.0"]

    assert seed("pull", "narf").code == 0
    assert (s3_ws.root / "tycho_packages/narf.bin").read_bytes() == one
    assert seed("promote", "narf", "2.0").code == 0
    assert s3_ws.ok("list", "--json").json() == [{"name": "empty", "latest": None}, {"name": "narf", "latest": "2.0"}]
    pulled = s3_ws.ok("pull", "narf")
    assert "sha256 verified" in pulled.out
    assert (s3_ws.root / "tycho_packages/narf.bin").read_bytes() == two
    # 0.4.0 wrote tycho.json in its own way; ours still parses it and keeps its shape.
    doc = json.loads(s3_ws.read_stored("narf/tycho.json"))
    assert doc == {"localname": "narf.bin", "latest": "2.0"}


def test_seed_multipart_upload_checked_by_etag(s3_ws: Workspace, seed) -> None:
    """0.4.0 uploads big files in 8 MiB parts; their ETag is an MD5 of part MD5s."""
    data = os.urandom(8 * 1024 * 1024 + 4321)
    s3_ws.file("big.bin", data)
    assert seed("init", "big", "big.bin").code == 0
    assert seed("push", "big", "1", "big.bin", "--promote-latest").code == 0
    etag = s3_ws.seaweed.client().head_object(Bucket=s3_ws.bucket, Key="big/tycho_1.pkg")["ETag"]
    assert etag.strip('"').endswith("-2")
    pulled = s3_ws.ok("pull", "big")
    assert "size and ETag" in pulled.err
    dest = s3_ws.root / "tycho_packages/big.bin"
    assert hashlib.sha256(dest.read_bytes()).digest() == hashlib.sha256(data).digest()
    assert "up to date" in s3_ws.ok("pull", "big").out.lower()
    tampered = bytearray(data)
    tampered[-1] ^= 0xFF
    dest.write_bytes(bytes(tampered))  # same size, other content: replaced
    assert "Pulled" in s3_ws.ok("pull", "big").out
    assert dest.read_bytes() == data


def test_seed_push_conflicts_with_tychoreg_version(s3_ws: Workspace, seed) -> None:
    s3_ws.ok("init", "narf", "narf.bin")
    s3_ws.ok("push", "narf", "1.0", str(s3_ws.file("a.bin", b"ours")))
    s3_ws.file("b.bin", b"theirs")
    seed("push", "narf", "1.0", "b.bin")  # 0.4.0 refuses (prints, exits 0 or 1 depending on path)
    assert s3_ws.read_stored("narf/tycho_1.0.pkg") == b"ours"
    assert s3_ws.ok("list-versions", "narf", "--json").json()[0]["sha256"] == hashlib.sha256(b"ours").hexdigest()


def test_foreign_multipart_part_size_checked_by_etag(s3_ws: Workspace) -> None:
    """A version uploaded by another tool with 5 MiB parts: the part size comes from the store."""
    from boto3.s3.transfer import TransferConfig

    data = os.urandom(11 * 1024 * 1024)
    s3_ws.ok("init", "other", "o.bin")
    s3_ws.seaweed.client().upload_file(
        str(s3_ws.file("o.bin", data)),
        s3_ws.bucket,
        "other/tycho_3.pkg",
        Config=TransferConfig(multipart_threshold=5 * 2**20, multipart_chunksize=5 * 2**20),
    )
    pulled = s3_ws.ok("pull", "other", "--version", "3", "--outfile", "got.bin")
    assert "size and ETag" in pulled.err
    assert (s3_ws.root / "got.bin").read_bytes() == data


def test_seed_keeps_tags_yanks_and_notes(s3_ws: Workspace, seed) -> None:
    """0.4.0 still lists, pulls and promotes a package with tags, yanks and notes; its promote keeps them."""
    s3_ws.ok("init", "narf", "narf.bin")
    for v in ("1.0", "1.1", "2.0"):
        s3_ws.ok("push", "narf", v, str(s3_ws.file(f"{v}.bin", v.encode())), "--note", f"note {v}")
    s3_ws.ok("promote", "narf", "2.0")
    s3_ws.ok("tag", "narf", "1.1", "stable")
    s3_ws.ok("yank", "narf", "1.0", "--reason", "bad")
    assert seed("list").out.strip() == "narf -- Latest Version: 2.0"
    assert [line.strip() for line in seed("list-versions", "narf").out.splitlines()][1:] == ["- 1.0", "- 1.1", "- 2.0"]
    assert seed("pull", "narf").code == 0
    assert (s3_ws.root / "tycho_packages/narf.bin").read_bytes() == b"2.0"
    assert seed("promote", "narf", "1.1").code == 0
    doc = json.loads(s3_ws.read_stored("narf/tycho.json"))
    assert doc["latest"] == "1.1"
    assert doc["tychoreg"]["tags"] == {"stable": "1.1"}
    assert doc["tychoreg"]["yanked"]["1.0"]["reason"] == "bad"
    listed = {v["version"]: v for v in s3_ws.ok("list-versions", "narf", "--json").json()}
    assert listed["1.1"]["tags"] == ["latest", "stable"] and listed["1.0"]["yanked"] is True
    assert s3_ws.ok("info", "narf", "2.0", "--json").json()["note"] == "note 2.0"
