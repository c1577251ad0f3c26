"""On a real network (issue 16): what is read ahead or in parallel never changes what is pulled.

Every client here talks to SeaweedFS through the benchmark's network emulator
(benchmarks/netem.py) with a round trip of 30 ms, so the S3 store sees a far server: it reads a
version it guesses while it reads ``tycho.json``, and streams many ranges straight into the file.
Nothing is timed; requests and connections are counted by the emulator.
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from conftest import Workspace
from faultproxy import FaultProxy, Rule
from servers import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
from netem import Netem, Profile

MiB = 1024 * 1024
FAR = Profile("test-far", rtt=0.03, bandwidth=40e6)


def _route(ws: Workspace, endpoint: str, profile: Profile) -> Netem:
    up = urlsplit(endpoint)
    assert up.hostname and up.port
    net = Netem((up.hostname, up.port), profile).start()
    ws.config["s3"]["endpoint_url"] = net.endpoint
    ws.write_config()
    return net


@pytest.fixture
def far_ws(s3_ws: Workspace) -> Iterator[tuple[Workspace, Netem]]:
    net = _route(s3_ws, s3_ws.seaweed.endpoint, FAR)
    yield s3_ws, net
    net.stop()


def test_a_wrong_guess_never_changes_what_is_pulled(far_ws: tuple[Workspace, Netem]) -> None:
    """``latest`` is guessed from what this machine verified before (the newest of them): when
    ``tycho.json`` names another version, that one is pulled, whatever was read meanwhile."""
    ws, _ = far_ws
    dest = ws.root / "tycho_packages" / "narf.bin"
    ws.ok("init", "narf", "narf.bin")
    ws.ok("push", "narf", "1.0", str(ws.file("one", b"one")))
    ws.ok("push", "narf", "2.0", str(ws.file("two", b"two")))
    for latest, data in (("2.0", b"two"), ("1.0", b"one"), ("2.0", b"two"), ("1.0", b"one")):
        ws.ok("promote", "narf", latest)
        out = ws.ok("pull", "narf", "--json").json()
        assert (out["version"], dest.read_bytes()) == (latest, data)
    # an exact version is read alongside tycho.json too; one that does not exist is still refused
    ws.ok("pull", "narf", "--version", "2.0", "--outfile", str(ws.root / "two.bin"))
    assert (ws.root / "two.bin").read_bytes() == b"two"
    missing = ws.run("pull", "narf", "--version", "3.0", "--outfile", str(ws.root / "three.bin"))
    assert missing.code == 1 and not (ws.root / "three.bin").exists()


def test_a_version_deleted_and_pushed_again_is_pulled_as_it_is_now(far_ws: tuple[Workspace, Netem]) -> None:
    ws, _ = far_ws
    dest = ws.root / "tycho_packages" / "narf.bin"
    ws.ok("init", "narf", "narf.bin")
    ws.ok("push", "narf", "1.0", str(ws.file("old", b"old bytes")), "--promote-latest")
    ws.ok("pull", "narf")
    ws.ok("delete", "narf", "1.0", "--force", "--yes")
    ws.ok("push", "narf", "1.0", str(ws.file("new", b"new bytes")), "--promote-latest")
    ws.ok("pull", "narf")
    assert dest.read_bytes() == b"new bytes"


def test_a_no_op_pull_sends_its_three_reads_at_once(far_ws: tuple[Workspace, Netem]) -> None:
    """tycho.json, the record and a HEAD of the data: three requests (in parallel, on connections
    opened ahead), and the destination is not downloaded again."""
    ws, net = far_ws
    ws.ok("init", "narf", "narf.bin")
    ws.ok("push", "narf", "1.0", str(ws.file("n", os.urandom(3 * MiB))), "--promote-latest")
    ws.ok("pull", "narf")
    dest = ws.root / "tycho_packages" / "narf.bin"
    before = dest.stat()
    net.reset()
    assert not ws.ok("pull", "narf", "--json").json()["downloaded"]
    stats = net.reset()
    assert stats.requests == 3
    assert 1 <= stats.connections <= 3
    assert (dest.stat().st_ino, dest.stat().st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_far_pulls_stream_many_ranges_and_verify_them(far_ws: tuple[Workspace, Netem]) -> None:
    ws, net = far_ws
    data = os.urandom(12 * MiB + 3)
    ws.ok("init", "narf", "narf.bin")
    ws.ok("push", "narf", "1.0", str(ws.file("big", data)), "--promote-latest")
    dest = ws.root / "tycho_packages" / "narf.bin"
    for cache in ((), ("--no-cache",)):
        dest.unlink(missing_ok=True)  # nothing local to reuse: a whole ranged download
        net.reset()
        ws.ok("pull", "narf", "--force", *cache)
        assert hashlib.sha256((ws.root / "tycho_packages" / "narf.bin").read_bytes()).digest() == (
            hashlib.sha256(data).digest()
        )
        # tycho.json, record, HEAD, then 1 MiB ranges (12 MiB over the 32 ranges a far link gets)
        assert net.reset().requests == 3 + 13


def test_a_streamed_range_cut_off_is_read_again_whole(s3_ws: Workspace) -> None:
    """Far mode writes each range into the file as it arrives: a range cut off half way is read
    again from its start (by boto3), and the bytes are verified whole."""
    data = os.urandom(6 * MiB + 11)
    s3_ws.ok("init", "narf", "narf.bin")
    s3_ws.ok("push", "narf", "1.0", str(s3_ws.file("big", data)), "--promote-latest")
    proxy = FaultProxy(s3_ws.seaweed.endpoint)
    net = _route(s3_ws, proxy.endpoint, FAR)
    try:
        proxy.rules.append(Rule("GET", "narf/tycho_1.0.pkg", "truncate", times=2))
        s3_ws.ok("pull", "narf", "--no-cache")
        assert (s3_ws.root / "tycho_packages" / "narf.bin").read_bytes() == data
        assert not [p for p in (s3_ws.root / "tycho_packages").iterdir() if p.name.startswith(".")]
    finally:
        net.stop()
        proxy.close()


_ORDER = """
import json, sys
events = []
def hook(event, args):
    if event == "import":
        events.append(["import", args[0]])
    elif event == "socket.connect" and isinstance(args[1], tuple):
        events.append(["connect", args[1][1]])
sys.addaudithook(hook)
import threading
start = threading.Thread.start
def recorded(self):
    events.append(["thread", self.name])
    start(self)
threading.Thread.start = recorded
sys.argv = ["tychoreg", *sys.argv[2:]]
try:
    from tychoreg.cli import main
    main()
finally:
    with open(OUT, "w") as f:
        json.dump(events, f)
"""


def test_the_connections_open_while_the_domain_is_still_importing(far_ws: tuple[Workspace, Netem]) -> None:
    """A no-op pull waits for one round trip after start-up, not two: the TCP handshakes to the
    server start as soon as the configuration is read, before the registry, the S3 client and
    http.client are imported (about as long as a handshake on a far link)."""
    import json
    import subprocess

    ws, net = far_ws
    ws.ok("init", "narf", "narf.bin")
    ws.ok("push", "narf", "1.0", str(ws.file("n", b"narf")), "--promote-latest")
    ws.ok("pull", "narf")
    port = urlsplit(net.endpoint).port
    out = ws.root / "events.json"
    for args, wanted in ((["pull", "narf"], 3), (["list"], 8), (["list-versions", "narf"], 4)):
        proc = subprocess.run(
            [sys.executable, "-c", _ORDER.replace("OUT", repr(str(out))), "-", *args],
            cwd=ws.root,
            env=ws.base_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 0, proc.stderr
        events = [tuple(e) for e in json.loads(out.read_text())]
        connecting = events.index(("thread", "tychoreg-connect"))
        assert connecting < events.index(("import", "tychoreg.registry")), args
        assert connecting < events.index(("import", "http.client")), args
        # and those connections are the ones used: no other is opened
        assert events.count(("connect", port)) == events.count(("thread", "tychoreg-connect")) == wanted, args
    # a command that reads nothing remotely opens nothing ahead
    net.reset()
    ws.ok("cache", "info")
    assert net.reset().connections == 0
