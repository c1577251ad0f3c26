"""Managing versions: ranges, tags, yank, delete, notes, info, --skip-existing, list globs."""

from __future__ import annotations

import hashlib
import json

import pytest

from conftest import Workspace


def publish(ws: Workspace, package: str, versions: list[str], *extra: str) -> None:
    ws.ok_all(*pushes(ws, package, versions, *extra))


def pushes(ws: Workspace, package: str, versions: list[str], *extra: str) -> list[list[str]]:
    """The commands that push each of ``versions`` (the bytes say which), for ``ok_all``."""
    commands = []
    for v in versions:
        src = ws.file(f"src/{hashlib.md5(f'{package}/{v}'.encode()).hexdigest()}", f"{package} {v}".encode())
        commands.append(["push", package, v, str(src), *extra])
    return commands


def pulled(ws: Workspace, *args: str) -> str:
    """Pull to a scratch file and return the version whose bytes arrived."""
    out = ws.root / "pulled.bin"
    ws.ok("pull", *args, "--outfile", str(out), "--force")
    return out.read_bytes().decode().split(" ", 1)[1]


@pytest.fixture
def narf(ws: Workspace) -> Workspace:
    ws.ok_all(
        ["init", "narf", "narf.bin"],
        *pushes(ws, "narf", ["1.0.0", "1.2.0", "1.2.5", "1.10.0", "2.0.0", "2.1.0-rc.1"]),
        ["promote", "narf", "2.0.0"],
    )
    return ws


@pytest.mark.parametrize(
    "selector,expected",
    [
        ("^1.2", "1.10.0"),
        ("~1.2.0", "1.2.5"),
        (">=1.2,<2", "1.10.0"),
        ("1.x", "1.10.0"),
        ("1.2.*", "1.2.5"),
        ("*", "2.0.0"),
        ("latest", "2.0.0"),
        ("1.2.0", "1.2.0"),
        ("^2.1.0-rc.1", "2.1.0-rc.1"),
    ],
)
def test_selectors(narf: Workspace, selector: str, expected: str) -> None:
    assert pulled(narf, "narf", "--version", selector) == expected


def test_pre_flag_and_no_match(narf: Workspace) -> None:
    assert pulled(narf, "narf", "--version", "*", "--pre") == "2.1.0-rc.1"
    result = narf.run("pull", "narf", "--version", "^3")
    assert result.code == 1
    assert "^3" in result.err
    assert narf.run("pull", "narf", "--version", ">=").code == 2


def test_tags(narf: Workspace) -> None:
    assert narf.ok("tag", "narf", "^1", "stable").out.strip() == "narf stable -> 1.10.0"
    assert pulled(narf, "narf", "--version", "stable") == "1.10.0"
    narf.ok("tag", "narf", "1.2.0", "lts")
    listed = {v["version"]: v for v in narf.ok("list-versions", "narf", "--json").json()}
    assert listed["1.10.0"]["tags"] == ["stable"]
    assert listed["2.0.0"]["tags"] == ["latest"]
    assert listed["1.2.0"]["tags"] == ["lts"]
    info = narf.ok("info", "narf", "--json").json()
    assert info["tags"] == {"latest": "2.0.0", "lts": "1.2.0", "stable": "1.10.0"}
    assert narf.run("tag", "narf", "1.0.0", "1.2.0").code == 1  # a tag may not be named like a version
    assert narf.run("tag", "narf", "1.0.0", "^1").code == 2  # nor like a range
    assert narf.run("tag", "narf", "9.9.9", "beta").code == 1
    narf.ok("untag", "narf", "lts")
    assert narf.run("pull", "narf", "--version", "lts").code == 1
    assert narf.run("untag", "narf", "lts").code == 1
    narf.ok("tag", "narf", "1.0.0", "latest")  # latest is a tag like the others...
    doc = json.loads(narf.read_stored("narf/tycho.json"))
    assert doc["latest"] == "1.0.0"  # ... kept in 0.4.0's own field
    assert doc["tychoreg"]["tags"] == {"stable": "1.10.0"}


def test_yank(narf: Workspace) -> None:
    narf.ok("yank", "narf", "1.10.0", "--reason", "broken build")
    assert pulled(narf, "narf", "--version", "^1") == "1.2.5"  # ranges skip it
    result = narf.ok("pull", "narf", "--version", "1.10.0", "--outfile", "y.bin")  # exact still works
    assert "yanked" in result.err and "broken build" in result.err
    listed = {v["version"]: v for v in narf.ok("list-versions", "narf", "--json").json()}
    assert listed["1.10.0"]["yanked"] is True and listed["1.10.0"]["yank_reason"] == "broken build"
    assert "YANKED" in narf.ok("list-versions", "narf").out
    narf.ok("unyank", "narf", "1.10.0")
    assert pulled(narf, "narf", "--version", "^1") == "1.10.0"
    assert narf.run("unyank", "narf", "1.10.0").code == 1
    assert narf.run("yank", "narf", "7.7.7").code == 1


def test_yanking_latest_needs_yes_and_moves_latest(narf: Workspace) -> None:
    refused = narf.run("yank", "narf", "2.0.0")
    assert refused.code == 1
    assert "1.10.0" in refused.err and "--yes" in refused.err
    assert narf.ok("list", "--json").json() == [{"name": "narf", "latest": "2.0.0"}]
    narf.ok("yank", "narf", "2.0.0", "--yes")
    assert narf.ok("list", "--json").json() == [{"name": "narf", "latest": "1.10.0"}]
    assert pulled(narf, "narf") == "1.10.0"


def test_delete_version(narf: Workspace) -> None:
    assert narf.run("delete", "narf", "1.0.0").code == 1  # no --yes, no terminal: refused
    assert "--yes" in narf.run("delete", "narf", "1.0.0").err
    narf.ok("delete", "narf", "1.0.0", "--yes")
    assert "1.0.0" not in [v["version"] for v in narf.ok("list-versions", "narf", "--json").json()]
    assert not any("1.0.0" in k for k in narf.stored_keys())
    refused = narf.run("delete", "narf", "2.0.0", "--yes")  # latest points to it
    assert refused.code == 1 and "--force" in refused.err
    narf.ok("delete", "narf", "2.0.0", "--yes", "--force")
    assert narf.ok("list", "--json").json() == [{"name": "narf", "latest": None}]
    assert narf.run("delete", "narf", "2.0.0", "--yes").code == 1
    publish(narf, "narf", ["1.0.0"])  # a deleted version number can be pushed again


def test_delete_package(narf: Workspace) -> None:
    narf.ok("init", "other", "o.bin")
    assert narf.run("delete", "narf", "--yes").code == 1  # tagged (latest)
    narf.ok("delete", "narf", "--yes", "--force")
    assert narf.ok("list", "--json").json() == [{"name": "other", "latest": None}]
    assert not any(k.startswith("narf/") for k in narf.stored_keys())
    narf.ok("init", "narf", "again.bin")


def test_notes_identity_and_info(ws: Workspace) -> None:
    ws.ok("init", "narf", "narf.bin")
    src = ws.file("a.bin", b"abc")
    ws.ok("push", "narf", "1.0", str(src), "--note", "first cut", env={"TYCHOREG_IDENTITY": "ci@runner-7"})
    info = ws.ok("info", "narf", "1.0", "--json").json()
    assert info["sha256"] == hashlib.sha256(b"abc").hexdigest()
    assert info["size"] == 3 and info["note"] == "first cut" and info["pushed_by"] == "ci@runner-7"
    assert info["yanked"] is False and info["tags"] == []
    human = ws.ok("info", "narf", "1.0").out
    assert "first cut" in human and "ci@runner-7" in human
    ws.ok("push", "narf", "1.1", str(src))
    default_by = ws.ok("info", "narf", "1.1", "--json").json()["pushed_by"]
    assert "@" in default_by
    package = ws.ok("info", "narf", "--json").json()
    assert package["localname"] == "narf.bin" and package["version_count"] == 2
    assert [v["version"] for v in package["newest"]] == ["1.1", "1.0"]
    assert ws.run("info", "narf", "9.9").code == 1


def test_skip_existing(ws: Workspace) -> None:
    ws.ok("init", "narf", "narf.bin")
    same, other = ws.file("a.bin", b"same"), ws.file("b.bin", b"other")
    ws.ok("push", "narf", "1.0", str(same), "--skip-existing")
    again = ws.ok("push", "narf", "1.0", str(same), "--skip-existing", "--promote-latest")
    assert "skipped" in again.out
    assert ws.ok("list", "--json").json() == [{"name": "narf", "latest": "1.0"}]
    clash = ws.run("push", "narf", "1.0", str(other), "--skip-existing")
    assert clash.code == 1 and "other bytes" in clash.err
    assert ws.read_stored("narf/tycho_1.0.pkg") == b"same"


def test_list_glob(ws: Workspace) -> None:
    for name in ("tools-gcc", "tools-clang", "firmware"):
        ws.ok("init", name, "x.bin")
    assert [p["name"] for p in ws.ok("list", "tools-*", "--json").json()] == ["tools-clang", "tools-gcc"]
    assert ws.ok("list", "nomatch*", "--json").json() == []


def test_tags_and_versions_never_share_a_name(narf: Workspace) -> None:
    narf.ok("tag", "narf", "1.0.0", "edge")
    result = narf.run("push", "narf", "edge", str(narf.file("e.bin", b"e")))
    assert result.code == 2 and "tag" in result.err
    assert pulled(narf, "narf", "--version", "edge") == "1.0.0"


def test_skip_existing_compares_bytes_not_sizes(ws: Workspace) -> None:
    """A version without a record (copied in by another tool): same size, other bytes is a clash."""
    ws.ok("init", "narf", "narf.bin")
    ws.write_stored("narf/tycho_0.9.pkg", b"AAAA")
    clash = ws.run("push", "narf", "0.9", str(ws.file("b.bin", b"BBBB")), "--skip-existing")
    assert clash.code == 1
    ws.ok("push", "narf", "0.9", str(ws.file("a.bin", b"AAAA")), "--skip-existing")


@pytest.mark.parametrize("bad", ["1.x.2", "x.1", ">=", "^", "a b c"])
def test_malformed_ranges_are_usage_errors(narf: Workspace, bad: str) -> None:
    result = narf.run("pull", "narf", "--version", bad)
    assert result.code == 2, result.all
    assert result.err.startswith("error:")


def test_latest_never_means_a_yanked_version(narf: Workspace) -> None:
    narf.ok("yank", "narf", "1.0.0", "--reason", "CVE-1")
    assert narf.run("promote", "narf", "1.0.0").code == 1
    assert narf.run("tag", "narf", "1.0.0", "latest").code == 1
    narf.ok("yank", "narf", "1.0.0")  # yanking again keeps the reason
    listed = {v["version"]: v for v in narf.ok("list-versions", "narf", "--json").json()}
    assert listed["1.0.0"]["yank_reason"] == "CVE-1"
    narf.ok("yank", "narf", "latest", "--yes")  # tags and latest name a version here too
    assert narf.ok("list", "--json").json() == [{"name": "narf", "latest": "1.10.0"}]
    assert narf.run("yank", "narf", "^1").code == 2
    assert narf.run("delete", "narf", "^1", "--yes").code == 2
