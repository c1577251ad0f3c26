"""verify (scrub) and gc (debris of dead pushes), on both backends."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from conftest import Workspace


def test_verify_reports_each_mismatch(ws: Workspace) -> None:
    ws.ok_all(
        ["init", "narf", "narf.bin"],
        *(["push", "narf", v, str(ws.file(f"{v}.bin", v.encode() * 100))] for v in ("1.0", "2.0")),
    )
    assert ws.ok("verify").out.count("ok") == 2
    ws.write_stored("narf/tycho_1.0.pkg", b"X" * 300)  # same size, other bytes
    result = ws.run("verify")
    assert result.code == 1
    assert "FAILED  narf 1.0" in result.out and "ok      narf 2.0" in result.out
    assert "narf 1.0" in result.err
    assert ws.ok("verify", "narf", "2.0").code == 0
    assert ws.run("verify", "narf", "1.0", "--json").json() == [
        {
            "package": "narf",
            "version": "1.0",
            "ok": False,
            "checked_by": "sha256",
            "problem": ws.run("verify", "narf", "1.0", "--json").json()[0]["problem"],
        }
    ]
    assert ws.run("verify", "ghost").code == 1


def test_gc_removes_debris_only(ws: Workspace) -> None:
    ws.ok("init", "narf", "narf.bin")
    ws.ok("push", "narf", "1.0", str(ws.file("a.bin", b"good")))
    claim = {"format": 1, "version": "9.9", "size": 1, "sha256": "0" * 64, "pushed_at": "2020-01-01T00:00:00+00:00"}
    ws.write_stored("narf/.tycho/versions/9.9.json", json.dumps(claim).encode())
    if ws.backend == "file":
        ws.write_stored("narf/.tycho_8.0.pkg.deadbeef.tmp", b"partial")
    else:
        prefix = ws.config["s3"]["prefix"]
        ws.seaweed.client().create_multipart_upload(Bucket=ws.bucket, Key=f"{prefix}/narf/tycho_8.0.pkg")
    assert "No debris" in ws.ok("gc").err  # everything is younger than 24h: running pushes are safe
    dry = ws.ok("gc", "--older-than", "0s")
    assert "would remove  orphaned claim  narf/.tycho/versions/9.9.json" in dry.out
    assert "unfinished upload" in dry.out
    assert "narf/.tycho/versions/9.9.json" in ws.stored_keys()
    ws.ok("gc", "--older-than", "0s", "--yes")
    keys = ws.stored_keys()
    assert "narf/.tycho/versions/9.9.json" not in keys
    assert not any(k.endswith(".tmp") for k in keys)
    if ws.backend == "s3":
        uploads = ws.seaweed.client().list_multipart_uploads(Bucket=ws.bucket, Prefix=ws.config["s3"]["prefix"] + "/")
        assert not uploads.get("Uploads")
    assert "No debris" in ws.ok("gc", "--older-than", "0s").err
    ws.ok("verify", "narf")
    assert ws.run("gc", "--older-than", "soon").code == 2


def delete_stored(ws: Workspace, key: str) -> None:
    if ws.backend == "file":
        (Path(ws.config["file"]["path"]) / key).unlink()
    else:
        prefix = ws.config["s3"].get("prefix", "")
        ws.seaweed.client().delete_object(Bucket=ws.bucket, Key=f"{prefix}/{key}" if prefix else key)


def test_gc_removes_the_chunk_index_of_a_version_that_is_gone(ws: Workspace) -> None:
    """A delete that stopped after the data and record went leaves the version's chunk index:
    gc lists and removes it, and leaves the index of a live version and (file backend, where
    an index can be aged) that of a version whose fresh claim says a push may be under way."""
    ws.ok_all(
        ["init", "narf", "narf.bin"],
        *(["push", "narf", v, str(ws.file(f"{v}.bin", v.encode() * 50_000))] for v in ("1.0", "2.0", "3.0")),
    )
    assert {f"narf/.tycho/chunks/{v}.cdx" for v in ("1.0", "2.0", "3.0")} <= ws.stored_keys()
    for key in ("narf/tycho_2.0.pkg", "narf/.tycho/versions/2.0.json", "narf/tycho_3.0.pkg"):
        delete_stored(ws, key)  # 2.0 gone but for its index; 3.0 claimed, its data not there
    assert "No debris" in ws.ok("gc").err  # younger than 24 hours
    if ws.backend == "file":
        two_hours_ago = time.time() - 7200
        for v in ("1.0", "2.0", "3.0"):
            os.utime(Path(ws.config["file"]["path"]) / f"narf/.tycho/chunks/{v}.cdx", (two_hours_ago,) * 2)
        aged = ws.ok("gc", "--older-than", "1h", "--json").json()  # 3.0's claim is minutes old
        assert [(d["kind"], d["key"]) for d in aged["debris"]] == [
            ("orphaned chunk index", "narf/.tycho/chunks/2.0.cdx")
        ]
    dry = ws.ok("gc", "--older-than", "0s", "--json").json()
    expected = [
        ("orphaned claim", "narf/.tycho/versions/3.0.json"),
        ("orphaned chunk index", "narf/.tycho/chunks/2.0.cdx"),
        ("orphaned chunk index", "narf/.tycho/chunks/3.0.cdx"),
    ]
    assert [(d["kind"], d["key"]) for d in dry["debris"]] == expected
    assert "narf/.tycho/chunks/2.0.cdx" in ws.stored_keys()
    text = ws.ok("gc", "--older-than", "0s", "--yes").out
    assert "removed  orphaned chunk index  narf/.tycho/chunks/2.0.cdx" in text
    keys = ws.stored_keys()
    assert not {key for _, key in expected} & keys  # the claim went first, then 3.0's index with it
    assert "narf/.tycho/chunks/1.0.cdx" in keys
    assert "No debris" in ws.ok("gc", "--older-than", "0s").err
    assert ws.ok("pull", "narf", "--version", "1.0").code == 0
