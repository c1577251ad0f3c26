"""The fast paths: ranged parallel downloads, the lean metadata client, the version catalog,
progress output and --quiet. Each is checked for the outcome (bytes, JSON, requests on the wire),
never for its speed; speed is measured by benchmarks/bench.py."""

from __future__ import annotations

import hashlib
import json
import os
import pty
import select
import subprocess
import sys

import pytest

from conftest import Workspace
from faultproxy import FaultProxy, Rule

MiB = 1024 * 1024


@pytest.fixture
def counted(proxied_s3: tuple[Workspace, FaultProxy]) -> tuple[Workspace, FaultProxy]:
    """Package narf through the proxy, with 5 MiB parts (so a few MiB make several ranges)."""
    ws, proxy = proxied_s3
    ws.config["tycho"]["part_size"] = "5MiB"
    ws.write_config()
    ws.ok("init", "narf", "narf.bin")
    return ws, proxy


def test_large_pull_uses_parallel_ranges_in_order(counted) -> None:
    ws, proxy = counted
    data = os.urandom(23 * MiB + 7)
    ws.ok("push", "narf", "1.0", str(ws.file("big", data)), "--promote-latest")
    proxy.ranges.clear()
    ws.ok("pull", "narf", "--no-cache")
    assert (ws.root / "tycho_packages" / "narf.bin").read_bytes() == data
    got = sorted(r for p, r in proxy.ranges if "tycho_1.0.pkg" in p and r)
    assert len(got) == 5  # 23 MiB in 5 MiB parts
    assert "bytes=0-5242879" in got and f"bytes={20 * MiB}-{len(data) - 1}" in got


def test_cut_off_range_resumes_where_the_written_bytes_end(counted) -> None:
    ws, proxy = counted
    data = os.urandom(16 * MiB)
    ws.ok("push", "narf", "1.0", str(ws.file("big", data)), "--promote-latest")
    # every attempt at one range fails: the pull stops there, and the next run resumes
    proxy.rules.append(Rule("GET", "tycho_1.0.pkg", "truncate", times=40))
    first = ws.run("pull", "narf", "--no-cache")
    proxy.rules.clear()
    if first.code != 0:
        assert "resumes" in first.err
    ws.ok("pull", "narf", "--no-cache")
    assert (
        hashlib.sha256((ws.root / "tycho_packages" / "narf.bin").read_bytes()).digest() == hashlib.sha256(data).digest()
    )
    assert not [p for p in (ws.root / "tycho_packages").iterdir() if p.name.startswith(".")]


def test_no_op_pull_needs_no_boto3(s3_ws: Workspace) -> None:
    s3_ws.ok("init", "narf", "narf.bin")
    s3_ws.ok("push", "narf", "1.0", str(s3_ws.file("n", b"narf")), "--promote-latest")
    s3_ws.ok("pull", "narf")
    probe = (
        "import sys\nfrom tychoreg.cli import main\ncode = main(['pull', 'narf'])\n"
        "print(code, 'boto3' in sys.modules, 'botocore' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=s3_ws.root, env=s3_ws.base_env(), capture_output=True, text=True, timeout=60
    )
    assert out.stdout.splitlines()[-1] == "0 False False", out.stdout + out.stderr
    assert "Up to date" in out.stdout


def test_help_and_version_import_no_boto3(ws: Workspace) -> None:
    probe = (
        "import sys\nfrom tychoreg.cli import main\nfor a in (['--help'], ['--version']):\n"
        "    main(a)\nprint('boto3' in sys.modules, 'rich' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=ws.root, env=ws.base_env(), capture_output=True, text=True, timeout=60
    )
    assert out.stdout.splitlines()[-1] == "False False"


def test_lean_client_defers_to_boto3_on_errors(counted) -> None:
    """A 503 on a metadata read is retried by boto3, invisibly to the user."""
    ws, proxy = counted
    ws.ok("push", "narf", "1.0", str(ws.file("n", b"narf")), "--promote-latest")
    proxy.seen.clear()
    proxy.rules.append(Rule("GET", "narf/tycho.json", "503", times=1))
    result = ws.ok("list", "--json")
    assert result.json() == [{"name": "narf", "latest": "1.0"}]
    assert sum(1 for m, p, _ in proxy.seen if m == "GET" and p.endswith("narf/tycho.json")) == 2


def test_catalog_answers_many_versions_in_few_requests(counted) -> None:
    ws, proxy = counted
    from tychoreg import Registry

    reg = Registry.from_config(ws.root / ".tychoreg.json")
    src = ws.file("v", b"v")
    for i in range(40):
        reg.push("narf", f"1.0.{i}", src)
    first = ws.ok("list-versions", "narf", "--json").json()
    assert [v["version"] for v in first] == [f"1.0.{i}" for i in range(40)]
    assert all(v["sha256"] == hashlib.sha256(b"v").hexdigest() for v in first)
    assert "narf/.tycho/index.json" in ws.stored_keys()  # written back after 40 record reads
    proxy.seen.clear()
    assert ws.ok("list-versions", "narf", "--json").json() == first
    record_gets = [p for m, p, _ in proxy.seen if m == "GET" and "/.tycho/versions/" in p]
    assert record_gets == []  # every record came from the catalog
    assert len(proxy.seen) <= 6


def test_catalog_never_outranks_the_records(ws: Workspace) -> None:
    ws.ok_all(
        ["init", "narf", "narf.bin"],
        *(["push", "narf", f"1.{i}", str(ws.file(f"v{i}", f"v{i}".encode()))] for i in range(20)),
    )
    ws.ok("list-versions", "narf")
    # S3 listings carry each record's ETag, so a catalog saves reads; a folder's carry none, so
    # its records are read directly and no catalog is written (it could never be trusted).
    assert ("narf/.tycho/index.json" in ws.stored_keys()) == (ws.backend == "s3")
    ws.ok("delete", "narf", "1.3", "--yes")
    ws.ok("push", "narf", "1.3", str(ws.file("again", b"other bytes")), "--note", "second try")
    listed = {v["version"]: v for v in ws.ok("list-versions", "narf", "--json").json()}
    assert listed["1.3"]["sha256"] == hashlib.sha256(b"other bytes").hexdigest()
    assert listed["1.3"]["note"] == "second try"
    ws.write_stored("narf/.tycho/index.json", b"{not json")
    assert {v["version"]: v for v in ws.ok("list-versions", "narf", "--json").json()} == listed
    ws.write_stored(
        "narf/.tycho/index.json",
        json.dumps(
            {
                "format": 1,
                "records": {"1.4": {"etag": "forged", "record": {"version": "1.4", "size": 2, "sha256": "0" * 64}}},
            }
        ).encode(),
    )
    assert {v["version"]: v for v in ws.ok("list-versions", "narf", "--json").json()} == listed


def test_quiet_and_non_terminal_output(ws: Workspace) -> None:
    ws.ok("init", "narf", "narf.bin")
    quiet = ws.ok("push", "narf", "1.0", str(ws.file("n", os.urandom(2 * MiB))), "--promote-latest", "-q")
    assert quiet.out == "" and quiet.err == ""
    assert ws.ok("-q", "pull", "narf").out == ""
    plain = ws.ok("pull", "narf", "--force")
    assert plain.out.startswith("Pulled narf 1.0") and plain.err == ""  # one line, no bar off a terminal


def test_progress_bar_on_a_terminal_goes_to_stderr(ws: Workspace) -> None:
    ws.ok("init", "narf", "narf.bin")
    ws.ok("push", "narf", "1.0", str(ws.file("n", os.urandom(4 * MiB))), "--promote-latest")
    main, child = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tychoreg", "pull", "narf", "--force", "--no-cache"],
        cwd=ws.root,
        env={**ws.base_env(), "TERM": "xterm", "COLUMNS": "100"},
        stdout=subprocess.PIPE,
        stderr=child,
        text=False,
    )
    os.close(child)
    seen = b""
    while True:
        ready, _, _ = select.select([main], [], [], 30)
        if not ready:
            break
        try:
            chunk = os.read(main, 65536)
        except OSError:
            break
        if not chunk:
            break
        seen += chunk
    out = proc.stdout.read()
    assert proc.wait(30) == 0
    os.close(main)
    assert out.decode().startswith("Pulled narf 1.0")
    assert b"narf 1.0" in seen and b"MiB" in seen  # the bar: label and bytes, on the terminal only
    assert b"MiB" not in out


def _part_file(ws: Workspace, data: bytes) -> os.PathLike[str]:
    sha = hashlib.sha256(data).hexdigest()
    return ws.root / "tycho_packages" / f".narf.bin.{sha[:16]}-{len(data)}.part"


def test_part_file_with_holes_resumes_from_its_written_prefix(counted) -> None:
    """A pull killed mid-way leaves ranges written out of order: only the prefix before the first
    hole is trusted."""
    ws, proxy = counted
    data = os.urandom(12 * MiB)
    ws.ok("push", "narf", "1.0", str(ws.file("big", data)), "--promote-latest")
    part = _part_file(ws, data)
    part.parent.mkdir()
    with open(part, "wb") as fh:
        fh.write(data[: 2 * MiB])
        fh.seek(8 * MiB)
        fh.write(data[8 * MiB : 9 * MiB])  # a range written ahead, with a hole before it
    proxy.ranges.clear()
    ws.ok("pull", "narf", "--no-cache")
    assert (ws.root / "tycho_packages" / "narf.bin").read_bytes() == data
    starts = sorted(int(r.split("=")[1].split("-")[0]) for p, r in proxy.ranges if "tycho_1.0.pkg" in p and r)
    assert starts[0] == 2 * MiB  # nothing before the hole was fetched again


def test_part_file_of_garbage_is_started_over(ws: Workspace) -> None:
    data = os.urandom(3 * MiB)
    ws.ok("init", "narf", "narf.bin")
    ws.ok("push", "narf", "1.0", str(ws.file("big", data)), "--promote-latest")
    part = _part_file(ws, data)
    part.parent.mkdir()
    part.write_bytes(os.urandom(MiB))  # not a prefix of these bytes
    ws.ok("pull", "narf", "--no-cache")
    assert (ws.root / "tycho_packages" / "narf.bin").read_bytes() == data
    assert not part.exists()


def test_pull_list_of_packages_sharing_a_file_name(ws: Workspace) -> None:
    """Parallel pulls to one destination: a part file renamed into place by one pull must never
    be written by another that locked it a moment too late."""
    data = os.urandom(5000)
    src = ws.file("same", data)
    names = [f"p{i}" for i in range(24)]
    ws.ok_all(*(c for n in names for c in (["init", n, "same.bin"], ["push", n, "1.0", str(src), "--promote-latest"])))
    for _ in range(3):
        (ws.root / "tycho_packages" / "same.bin").unlink(missing_ok=True)
        ws.ok("pull-list", *names, "--no-cache")
        assert (ws.root / "tycho_packages" / "same.bin").read_bytes() == data
        assert [p.name for p in (ws.root / "tycho_packages").iterdir()] == ["same.bin"]


def test_progress_counted_past_its_total_is_harmless() -> None:
    """A transfer that starts over reports its bytes twice; the bar must not fail on it."""
    from tychoreg.progress import Bars

    bars = Bars(enabled=True)
    advance = bars("narf 1.0", 2 * MiB)
    for _ in range(5):
        advance(MiB)  # 5 MiB reported for a 2 MiB transfer
    bars.close()


def test_a_listing_without_the_s3_namespace_is_read_or_left_to_boto3(counted) -> None:
    """Some S3-compatible stores and proxies write ListBucketResult without the 2006-03-01 XML
    namespace (or with another one). Before: the lean client found no elements, read the listing
    as empty, and did not fall back: list-versions showed nothing, and `delete PKG` removed
    tycho.json but left every version's data."""
    ws, proxy = counted
    for v in ("1.0", "1.1"):
        ws.ok("push", "narf", v, str(ws.file(v, v.encode())))
    ns = b' xmlns="http://s3.amazonaws.com/doc/2006-03-01/"'
    for replacement in (b"", b' xmlns="urn:another-store"'):
        proxy.transform = lambda method, path, body, r=replacement: (
            body.replace(ns, r) if "list-type=2" in path else body
        )
        listed = ws.ok("list-versions", "narf", "--json").json()
        assert [v["version"] for v in listed] == ["1.0", "1.1"]
    ws.ok("delete", "narf", "--yes")
    proxy.transform = None
    assert not [k for k in ws.stored_keys() if k.startswith("narf/")]


def test_lean_listing_pages_it_does_not_fully_understand_go_to_boto3() -> None:
    from tychoreg.store.s3http import Fallback, _page

    def page(inner: str, root: str = "ListBucketResult") -> bytes:
        return f"<?xml version='1.0'?><{root}>{inner}</{root}>".encode()

    item = '<Contents><Key>p/a</Key><Size>3</Size><ETag>"x"</ETag></Contents>'
    found, commons, token = _page(page(f"{item}<KeyCount>1</KeyCount><IsTruncated>false</IsTruncated>"), "p/")
    assert [(o.key, o.size) for o in found] == [("p/a", 3)] and commons == [] and token is None
    for bad in (
        page(f"{item}<KeyCount>2</KeyCount><IsTruncated>false</IsTruncated>"),  # says 2, holds 1
        page(f"{item}<IsTruncated>maybe</IsTruncated>"),
        page(f"{item}<IsTruncated>true</IsTruncated>"),  # truncated without a token
        page(f"{item}<IsTruncated>false</IsTruncated>", root="Error"),
        page("<Contents><Key>elsewhere</Key><Size>1</Size></Contents><IsTruncated>false</IsTruncated>"),
        b"<not xml",
    ):
        with pytest.raises(Fallback):
            _page(bad, "p/")
