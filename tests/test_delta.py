"""Delta pulls (docs/FORMAT.md, "Chunk indexes"): a version that shares most of its bytes with one
on this machine pulls only the rest, on every backend, and whatever goes wrong (a local copy that
changed, an index that lies or is missing, a server without ranges) the result is the version's
exact bytes.

Bytes fetched are counted on the wire where a proxy can stand between (S3, HTTP), and taken from
``--json`` (``fetched_bytes``) on the file backend."""

from __future__ import annotations

import hashlib
import json
import random
import struct
from pathlib import Path

import pytest

from conftest import Workspace, http_client, s3_config, serving, static_server
from faultproxy import FaultProxy

MiB = 1024 * 1024
SIZE = 24 * MiB
REGION = 2 * MiB
INDEX_ENTRY = 36


def versions(seed: int = 7) -> tuple[bytes, bytes, int]:
    """Two versions: the second has an insertion, a deletion and an overwrite of REGION bytes each
    (deterministic); returns them and the count of new bytes in the second."""
    rng = random.Random(seed)
    one = rng.randbytes(SIZE)
    two = bytearray(one[: 4 * MiB] + rng.randbytes(REGION) + one[4 * MiB : 12 * MiB] + one[12 * MiB + REGION :])
    two[18 * MiB : 18 * MiB + REGION] = rng.randbytes(REGION)
    return one, bytes(two), 2 * REGION


def index_size(ws: Workspace, version: str) -> int:
    return len(ws.read_stored(f"narf/.tycho/chunks/{version}.cdx"))


def pushed(ws: Workspace, one: bytes, two: bytes) -> None:
    ws.file("v1.bin", one)
    ws.file("v2.bin", two)
    ws.ok("init", "narf", "narf.bin")
    ws.ok("push", "narf", "1.0", "v1.bin")
    ws.ok("push", "narf", "2.0", "v2.bin")


def pull_json(ws: Workspace, *args: str) -> dict:
    return ws.ok("pull", "narf", *args, "--json").json()


def test_push_writes_a_compact_chunk_index(ws: Workspace) -> None:
    one, two, _ = versions()
    pushed(ws, one, two)
    raw = ws.read_stored("narf/.tycho/chunks/1.0.cdx")
    head, _, body = raw.partition(b"\n")
    meta = json.loads(head)
    assert meta["sha256"] == hashlib.sha256(one).hexdigest() and meta["size"] == SIZE
    assert len(body) == meta["count"] * INDEX_ENTRY
    lengths = [n for n, _ in struct.iter_unpack(">I32s", body)]
    assert sum(lengths) == SIZE
    offset = 0
    for (length, digest), _ in zip(struct.iter_unpack(">I32s", body), range(50), strict=False):
        assert hashlib.sha256(one[offset : offset + length]).digest() == digest
        offset += length
    assert len(raw) < SIZE / 1000  # under 0.1 % of the data
    # 0.4.0 sees nothing new: the package's top level holds only its two kinds of keys
    top = {k.split("/")[1] for k in ws.stored_keys() if k.startswith("narf/") and k.count("/") == 1}
    assert top == {"tycho.json", "tycho_1.0.pkg", "tycho_2.0.pkg"}


def test_pull_fetches_only_the_changed_pieces(ws: Workspace) -> None:
    one, two, _changed = versions()
    pushed(ws, one, two)
    assert pull_json(ws, "--version", "1.0")["fetched_bytes"] == SIZE
    out = ws.run("pull", "narf", "--version", "2.0")
    assert out.code == 0, out.all
    assert "reused " in out.all and "fetched " in out.all
    assert (ws.root / "tycho_packages" / "narf.bin").read_bytes() == two
    # back to 1.0 with --json: the fields say what came from where
    back = pull_json(ws, "--version", "1.0", "--no-cache")
    assert (ws.root / "tycho_packages" / "narf.bin").read_bytes() == one
    assert back["downloaded"] is True and back["sha256"] == hashlib.sha256(one).hexdigest()
    assert back["reused_bytes"] + back["fetched_bytes"] == SIZE
    # 1.0 holds two regions that 2.0 lacks: the one deleted, and the one overwritten
    assert back["fetched_bytes"] <= 1.3 * 2 * REGION + index_size(ws, "1.0")
    assert back["reused_bytes"] >= SIZE - 3 * REGION


def test_delta_bytes_on_the_wire_s3(proxied_s3: tuple[Workspace, FaultProxy]) -> None:
    ws, proxy = proxied_s3
    one, two, changed = versions()
    pushed(ws, one, two)
    pull_json(ws, "--version", "1.0")
    proxy.sent.clear()
    got = pull_json(ws, "--version", "2.0")
    assert (ws.root / "tycho_packages" / "narf.bin").read_bytes() == two
    data = sum(n for path, n in proxy.sent.items() if path.endswith("/tycho_2.0.pkg"))
    index = sum(n for path, n in proxy.sent.items() if path.endswith("/2.0.cdx"))
    assert index == index_size(ws, "2.0")
    assert data == got["fetched_bytes"]
    assert data <= 1.3 * changed + index, (data, changed)
    # --no-delta: the whole file
    proxy.sent.clear()
    whole = ws.ok("pull", "narf", "--version", "2.0", "--force", "--no-delta", "--no-cache", "--json").json()
    assert whole["reused_bytes"] == 0 and whole["fetched_bytes"] == len(two)
    assert sum(n for path, n in proxy.sent.items() if path.endswith("/tycho_2.0.pkg")) == len(two)
    assert (ws.root / "tycho_packages" / "narf.bin").read_bytes() == two


def test_delta_over_http_serve(ws: Workspace, tmp_path: Path) -> None:
    """``serve`` hands out chunk indexes and ranges: a client over HTTP fetches only the change."""
    one, two, changed = versions()
    pushed(ws, one, two)
    with serving(ws) as served:
        proxy = FaultProxy(served.url.rstrip("/"))
        try:
            client = http_client(tmp_path, proxy.endpoint + "/")
            client.ok("pull", "narf", "--version", "1.0", "--json")
            proxy.sent.clear()
            got = client.ok("pull", "narf", "--version", "2.0", "--json").json()
            assert (client.root / "tycho_packages" / "narf.bin").read_bytes() == two
            data = sum(n for path, n in proxy.sent.items() if path.endswith("/tycho_2.0.pkg"))
            index = proxy.sent["/narf/.tycho/chunks/2.0.cdx"]
            assert index == index_size(ws, "2.0")
            assert got["reused_bytes"] > 0 and data == got["fetched_bytes"]
            assert data <= 1.3 * changed + index, (data, changed)
        finally:
            proxy.close()


def test_server_without_ranges_falls_back(tmp_path: Path) -> None:
    """Python's own web server answers every request whole: the pull downloads whole, verified."""
    root = tmp_path / "project"
    root.mkdir()
    ws = Workspace(root, "file", {"tycho": {"backend": "file"}, "file": {"path": str(tmp_path / "registry")}})
    ws.write_config()
    one, two, _ = versions()
    pushed(ws, one, two)
    with static_server(tmp_path / "registry") as served:
        client = http_client(tmp_path, served.url)
        client.ok("pull", "narf", "--version", "1.0")
        got = client.ok("pull", "narf", "--version", "2.0", "--json").json()
        assert (client.root / "tycho_packages" / "narf.bin").read_bytes() == two
        assert got["reused_bytes"] == 0 and got["fetched_bytes"] == len(two)


def test_destination_edited_in_place(ws: Workspace) -> None:
    one, two, _ = versions()
    pushed(ws, one, two)
    pull_json(ws, "--version", "1.0")
    dest = ws.root / "tycho_packages" / "narf.bin"
    edited = bytearray(dest.read_bytes())
    edited[1 * MiB : 3 * MiB] = b"\0" * (2 * MiB)  # a region 2.0 shares with 1.0
    dest.write_bytes(bytes(edited))
    got = pull_json(ws, "--version", "2.0", "--no-cache")
    assert dest.read_bytes() == two
    assert got["fetched_bytes"] >= 2 * MiB  # the edited region came from the registry
    assert got["reused_bytes"] > 0


def cache_entry(ws: Workspace, data: bytes) -> Path:
    sha = hashlib.sha256(data).hexdigest()
    found = [p for p in (ws.root / "home" / ".cache").rglob(sha) if p.is_file()]
    assert found, "the pull did not fill the cache"
    return found[0]


def test_cache_entry_of_another_version_is_a_source(ws: Workspace) -> None:
    one, two, changed = versions()
    pushed(ws, one, two)
    pull_json(ws, "--version", "1.0")  # into the cache, and remembered
    got = ws.ok("pull", "narf", "--version", "2.0", "--outfile", "elsewhere/narf.bin", "--json").json()
    assert (ws.root / "elsewhere" / "narf.bin").read_bytes() == two
    assert got["reused_bytes"] >= SIZE - 3 * REGION
    assert got["fetched_bytes"] <= 1.3 * changed + index_size(ws, "2.0")


def test_corrupted_cache_entry_is_not_reused(ws: Workspace) -> None:
    one, two, _ = versions()
    pushed(ws, one, two)
    pull_json(ws, "--version", "1.0")
    entry = cache_entry(ws, one)
    entry.chmod(0o644)
    damaged = bytearray(entry.read_bytes())
    for at in range(0, SIZE, 8 * 1024):  # a flipped byte in every piece (16 KiB at least)
        damaged[at] ^= 0xFF
    entry.write_bytes(bytes(damaged))
    got = ws.ok("pull", "narf", "--version", "2.0", "--outfile", "other.bin", "--json").json()
    assert (ws.root / "other.bin").read_bytes() == two
    assert got["reused_bytes"] == 0 and got["fetched_bytes"] == len(two)


def lying_index(ws: Workspace, honest: str, size: int, sha256: str) -> bytes:
    """``honest``'s index claiming to describe other bytes (``size``, ``sha256``)."""
    head, _, body = ws.read_stored(f"narf/.tycho/chunks/{honest}.cdx").partition(b"\n")
    meta = json.loads(head)
    entries = list(struct.iter_unpack(">I32s", body))
    total = sum(n for n, _ in entries)
    while total > size:  # trim (or stretch) the last piece so the lengths add up to ``size``
        n, _d = entries.pop()
        total -= n
    if total < size:
        entries.append((size - total, b"\1" * 32))
    meta.update(size=size, sha256=sha256, count=len(entries))
    return json.dumps(meta).encode() + b"\n" + b"".join(struct.pack(">I32s", n, d) for n, d in entries)


def test_an_index_that_lies_falls_back_to_a_whole_download(ws: Workspace) -> None:
    one, two, _ = versions()
    pushed(ws, one, two)
    pull_json(ws, "--version", "1.0")
    # 2.0's index now says its bytes are 1.0's pieces: everything "is" at the destination
    ws.write_stored("narf/.tycho/chunks/2.0.cdx", lying_index(ws, "1.0", len(two), hashlib.sha256(two).hexdigest()))
    got = pull_json(ws, "--version", "2.0", "--no-cache")
    assert (ws.root / "tycho_packages" / "narf.bin").read_bytes() == two
    assert got["reused_bytes"] == 0 and got["fetched_bytes"] == len(two)


@pytest.mark.parametrize("damage", ["garbage", "other-sha", "truncated", "empty"])
def test_a_damaged_index_is_ignored(ws: Workspace, damage: str) -> None:
    one, two, _ = versions()
    pushed(ws, one, two)
    pull_json(ws, "--version", "1.0")
    raw = ws.read_stored("narf/.tycho/chunks/2.0.cdx")
    bad = {
        "garbage": b"\x00\xff" * 999,
        "other-sha": raw.replace(hashlib.sha256(two).hexdigest().encode(), b"0" * 64),
        "truncated": raw[: len(raw) // 2],
        "empty": b"",
    }[damage]
    ws.write_stored("narf/.tycho/chunks/2.0.cdx", bad)
    got = pull_json(ws, "--version", "2.0", "--no-cache")
    assert (ws.root / "tycho_packages" / "narf.bin").read_bytes() == two
    assert got["reused_bytes"] == 0 and got["fetched_bytes"] == len(two)


def test_a_version_without_an_index_pulls_whole_until_indexed(ws: Workspace) -> None:
    one, two, changed = versions()
    pushed(ws, one, two)
    pull_json(ws, "--version", "1.0")
    if ws.backend == "file":
        (Path(ws.config["file"]["path"]) / "narf/.tycho/chunks/2.0.cdx").unlink()
    else:
        prefix = ws.config["s3"]["prefix"]
        ws.seaweed.client().delete_object(Bucket=ws.bucket, Key=f"{prefix}/narf/.tycho/chunks/2.0.cdx")
    got = pull_json(ws, "--version", "2.0", "--no-cache")
    assert (ws.root / "tycho_packages" / "narf.bin").read_bytes() == two
    assert got["reused_bytes"] == 0 and got["fetched_bytes"] == len(two)
    # the index command writes what is missing; the next pull is a delta again
    out = ws.ok("index")
    assert "narf/.tycho/chunks/2.0.cdx" in out.all
    assert "narf/.tycho/chunks/1.0.cdx" not in out.all
    pull_json(ws, "--version", "1.0", "--no-cache")
    again = pull_json(ws, "--version", "2.0", "--no-cache")
    assert (ws.root / "tycho_packages" / "narf.bin").read_bytes() == two
    assert 0 < again["fetched_bytes"] <= 1.3 * changed + index_size(ws, "2.0")


def test_no_delta_pulls_whole(ws: Workspace) -> None:
    one, two, _ = versions()
    pushed(ws, one, two)
    pull_json(ws, "--version", "1.0")
    got = pull_json(ws, "--version", "2.0", "--no-delta", "--no-cache")
    assert (ws.root / "tycho_packages" / "narf.bin").read_bytes() == two
    assert got["reused_bytes"] == 0 and got["fetched_bytes"] == len(two)
    pull_json(ws, "--version", "1.0", "--no-cache")
    ws.ok("promote", "narf", "2.0")
    listed = ws.ok("pull-list", "narf", "--no-delta", "--no-cache", "--json").json()
    assert listed[0]["reused_bytes"] == 0 and listed[0]["fetched_bytes"] == len(two)
    assert (ws.root / "tycho_packages" / "narf.bin").read_bytes() == two
    pull_json(ws, "--version", "1.0", "--no-cache")
    listed = ws.ok("pull-list", "narf", "--no-cache", "--json").json()
    assert 0 < listed[0]["fetched_bytes"] < len(two) / 2
    assert (ws.root / "tycho_packages" / "narf.bin").read_bytes() == two
    for command in ("sync", "mirror"):
        assert "--no-delta" in ws.ok(command, "--help").out


def mirror_target(ws: Workspace, tmp_path: Path, kind: str) -> Workspace:
    """A registry to mirror ``ws``'s into: a folder, or a bucket of the same SeaweedFS."""
    root = tmp_path / f"dest-{kind}"
    root.mkdir()
    if kind == "file":
        dst = Workspace(root, "file", {"tycho": {"backend": "file"}, "file": {"path": str(tmp_path / "dest-reg")}})
    else:
        bucket = ws.seaweed.new_bucket()
        dst = Workspace(root, "s3", s3_config(ws.seaweed, bucket), seaweed=ws.seaweed, bucket=bucket)
    dst.write_config()
    return dst


def wire(proxy: FaultProxy, suffix: str) -> int:
    return sum(n for path, n in proxy.sent.items() if path.endswith(suffix))


def test_mirror_reads_only_the_change_when_the_destination_folder_has_the_last_version(
    proxied_s3: tuple[Workspace, FaultProxy], tmp_path: Path
) -> None:
    """The destination folder's copy of 1.0 is a source of pieces: the source is read for the
    change only (counted on the wire), and what lands there is 2.0's bytes, verified."""
    ws, proxy = proxied_s3
    one, two, changed = versions()
    dst = mirror_target(ws, tmp_path, "file")
    to = str(dst.root / ".tychoreg.json")
    ws.file("v1.bin", one)
    ws.ok("init", "narf", "narf.bin")
    ws.ok("push", "narf", "1.0", "v1.bin")
    first = ws.ok("mirror", "narf", "--to", to, "--json").json()
    assert first["fetched_bytes"] == SIZE and first["reused_bytes"] == 0
    ws.ok("push", "narf", "2.0", str(ws.file("v2.bin", two)))
    proxy.sent.clear()
    out = ws.ok("mirror", "narf", "--to", to)
    assert "reused " in out.all and "fetched " in out.all
    data = wire(proxy, "/tycho_2.0.pkg")
    assert data <= 1.3 * changed + index_size(ws, "2.0"), (data, changed)
    assert dst.read_stored("narf/tycho_2.0.pkg") == two
    assert dst.ok("info", "narf", "2.0", "--json").json()["sha256"] == hashlib.sha256(two).hexdigest()
    assert dst.ok("verify", "narf", "--json").code == 0
    # --no-delta: 2.0 deleted there and copied again, whole
    dst.ok("delete", "narf", "2.0", "--yes")
    proxy.sent.clear()
    whole = ws.ok("mirror", "narf", "--to", to, "--no-delta", "--json").json()
    assert whole["copied"] == [{"package": "narf", "version": "2.0"}]
    assert whole["reused_bytes"] == 0 and whole["fetched_bytes"] == whole["bytes"] == len(two)
    assert wire(proxy, "/tycho_2.0.pkg") == len(two)
    assert dst.read_stored("narf/tycho_2.0.pkg") == two


def test_mirror_reuses_the_cache_and_never_trusts_the_destination(
    proxied_s3: tuple[Workspace, FaultProxy], tmp_path: Path
) -> None:
    """To a bucket, the cache's copy of 1.0 (pulled before) is the source of pieces; a folder
    destination whose copy of 1.0 was damaged in place gives nothing wrong: 2.0 lands verified."""
    ws, proxy = proxied_s3
    one, two, changed = versions()
    pushed(ws, one, two)
    pull_json(ws, "--version", "1.0")  # into the cache, and remembered
    dst = mirror_target(ws, tmp_path, "s3")
    proxy.sent.clear()
    done = ws.ok("mirror", "narf", "--to", str(dst.root / ".tychoreg.json"), "--json").json()
    assert len(done["copied"]) == 2 and done["failed"] == []
    assert wire(proxy, "/tycho_2.0.pkg") <= 1.3 * changed + index_size(ws, "2.0")
    assert done["reused_bytes"] >= SIZE - 3 * REGION
    assert done["fetched_bytes"] == done["bytes"] == SIZE + wire(proxy, "/tycho_2.0.pkg")
    assert dst.read_stored("narf/tycho_2.0.pkg") == two and dst.read_stored("narf/tycho_1.0.pkg") == one

    folder = mirror_target(ws, tmp_path, "file")
    ws.ok("mirror", "narf", "--to", str(folder.root / ".tychoreg.json"), "--no-delta")
    folder.ok("delete", "narf", "2.0", "--yes")
    copy = tmp_path / "dest-reg" / "narf" / "tycho_1.0.pkg"
    damaged = bytearray(copy.read_bytes())
    for at in range(0, SIZE, 8 * 1024):  # a flipped byte in every piece
        damaged[at] ^= 0xFF
    copy.chmod(0o644)
    copy.write_bytes(bytes(damaged))
    again = ws.ok("mirror", "narf", "--to", str(folder.root / ".tychoreg.json"), "--json").json()
    assert again["copied"] == [{"package": "narf", "version": "2.0"}]
    assert folder.read_stored("narf/tycho_2.0.pkg") == two
    assert again["reused_bytes"] >= SIZE - 3 * REGION  # from the cache, not the damaged copy


def test_the_skip_check_and_the_delta_share_one_read_of_the_destination(
    proxied_s3: tuple[Workspace, FaultProxy],
) -> None:
    """Without the cache's memo the destination is read once, for the skip check and the delta's
    pieces: a destination that holds the version is still skipped with nothing asked of the store
    but the record, and one that holds the other version (same size) gives its pieces."""
    ws, proxy = proxied_s3
    one, two, changed = versions()
    assert len(one) == len(two)
    pushed(ws, one, two)
    pull_json(ws, "--version", "2.0", "--no-cache")
    proxy.sent.clear()
    again = pull_json(ws, "--version", "2.0", "--no-cache")
    assert again["downloaded"] is False
    assert wire(proxy, "/tycho_2.0.pkg") == 0 and wire(proxy, "/2.0.cdx") == 0
    dest = ws.root / "tycho_packages" / "narf.bin"
    dest.write_bytes(one)
    proxy.sent.clear()
    got = pull_json(ws, "--version", "2.0", "--no-cache")
    assert got["downloaded"] is True and dest.read_bytes() == two
    assert 0 < wire(proxy, "/tycho_2.0.pkg") == got["fetched_bytes"] <= 1.3 * changed + index_size(ws, "2.0")


def test_an_interrupted_download_is_resumed_rather_than_started_over_as_a_delta(
    proxied_s3: tuple[Workspace, FaultProxy],
) -> None:
    """The destination holds 1.0 (pieces of 2.0), and an interrupted download of 2.0 left its
    first 10 MiB beside it: the rerun reads the rest after them, asks for no index (no delta is
    started), and the result is 2.0's bytes."""
    ws, proxy = proxied_s3
    one, two, _ = versions()
    pushed(ws, one, two)
    pull_json(ws, "--version", "1.0")
    dest = ws.root / "tycho_packages" / "narf.bin"
    part = dest.with_name(f".narf.bin.{hashlib.sha256(two).hexdigest()[:16]}-{len(two)}.part")
    part.write_bytes(two[: 10 * MiB])  # what an interrupted whole download of 2.0 leaves
    proxy.sent.clear()
    proxy.ranges.clear()
    got = pull_json(ws, "--version", "2.0")
    assert dest.read_bytes() == two and not part.exists()
    assert got["reused_bytes"] == 0
    assert wire(proxy, "/2.0.cdx") == 0
    assert wire(proxy, "/tycho_2.0.pkg") == len(two) - 10 * MiB
    starts = [int(r.split("=")[1].split("-")[0]) for p, r in proxy.ranges if p.endswith("/tycho_2.0.pkg") and r]
    assert starts and min(starts) == 10 * MiB
    # the cache took the result: another project pulls it from there, verified
    again = ws.ok("pull", "narf", "--version", "2.0", "--outfile", "copy.bin", "--json").json()
    assert again["downloaded"] is False and (ws.root / "copy.bin").read_bytes() == two


@pytest.mark.parametrize("suffix", ["tar.gz", "zip"])
def test_a_folder_with_a_few_files_changed_pulls_little(ws: Workspace, suffix: str) -> None:
    """``push DIR`` packs with restarts at members (docs/FORMAT.md, "Folder archives"): files
    that did not change compress to the same bytes, so the next version's archive deltas well."""
    rng = random.Random(3)
    tree = ws.root / "tree"
    for i in range(24):
        ws.file(f"tree/lib/part{i:02}.so", rng.randbytes(MiB))
    for i in range(40):
        ws.file(f"tree/src/file{i:02}.txt", (f"line {i} " * rng.randrange(100, 3000)).encode())
    ws.ok("init", "narf", f"narf.{suffix}")
    ws.ok("push", "narf", "1.0", str(tree))
    ws.file("tree/lib/part05.so", rng.randbytes(MiB))
    ws.file("tree/src/file07.txt", b"changed\n" * 999)
    ws.ok("push", "narf", "2.0", str(tree))
    ws.ok("pull", "narf", "--version", "1.0")
    got = pull_json(ws, "--version", "2.0", "--no-cache")
    size = got["size"]
    assert got["reused_bytes"] + got["fetched_bytes"] == size
    assert got["fetched_bytes"] <= 1.3 * (MiB + 8 * 999) + 4 * 256 * 1024 + index_size(ws, "2.0"), got
    out = ws.root / "x"
    ws.ok("pull", "narf", "--version", "2.0", "--extract", str(out), "--no-cache")
    assert (out / "lib" / "part05.so").read_bytes() == (tree / "lib" / "part05.so").read_bytes()


def test_delta_benchmark_smoke(tmp_path: Path) -> None:
    """benchmarks/delta.py still runs end to end (on 8 MiB): the numbers are complete and the
    delta pull fetched a fraction of what the full one did."""
    import subprocess
    import sys

    from servers import ROOT

    proc = subprocess.run(
        [
            *(sys.executable, str(ROOT / "benchmarks" / "delta.py"), "--mib", "8", "--runs", "1"),
            *("--shares", "0.05", "--profiles", "loopback"),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    row, extra = lines[0], lines[1]
    # bytes on the wire: the data, and a few KiB of metadata and headers
    assert 8.0 <= row["full_fetched_mib"] < 8.1 and 0 < row["delta_fetched_mib"] < 1.5, row
    assert row["delta_s"] > 0 and row["full_s"] > 0
    assert extra["chunk_and_hash_mb_s"] > 0 and extra["push_with_index_s"] > 0
    assert "| link | change | new bytes |" in proc.stdout


def test_versions_pushed_by_0_4_0_pull_as_deltas_once_indexed(s3_ws: Workspace, seed_tychoreg: Path) -> None:
    """0.4.0 records no SHA-256 and writes no index: ``index`` writes one (verified by size and
    ETag on the way); the delta pull is verified by the ETag recomputed, as any 0.4.0 version."""
    import subprocess

    one, two, changed = versions()
    s3_ws.file("v1.bin", one)
    s3_ws.file("v2.bin", two)

    def seed(*args: str) -> None:
        proc = subprocess.run(
            [str(seed_tychoreg), *args], cwd=s3_ws.root, env=s3_ws.base_env(), capture_output=True, text=True
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr

    seed("init", "narf", "narf.bin")
    seed("push", "narf", "1.0", "v1.bin")
    seed("push", "narf", "2.0", "v2.bin")
    s3_ws.ok("pull", "narf", "--version", "1.0")
    whole = s3_ws.ok("pull", "narf", "--version", "2.0", "--json").json()
    assert whole["checked_by"] == "etag" and whole["fetched_bytes"] == len(two)
    out = s3_ws.ok("index")
    assert "narf/.tycho/chunks/1.0.cdx" in out.all and "narf/.tycho/chunks/2.0.cdx" in out.all
    s3_ws.ok("pull", "narf", "--version", "1.0")
    got = s3_ws.ok("pull", "narf", "--version", "2.0", "--json").json()
    assert (s3_ws.root / "tycho_packages" / "narf.bin").read_bytes() == two
    assert got["checked_by"] == "etag" and 0 < got["fetched_bytes"] <= 1.3 * changed + index_size(s3_ws, "2.0")
    # and 0.4.0 still reads the package
    seed("pull", "narf", "--version", "2.0", "--force")
