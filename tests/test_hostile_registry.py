"""A registry that someone else can write to: links planted inside a file registry, and documents
built to crash or hide (nested past the parser's limits, or too large). Nothing may be read or
deleted outside the registry, and one bad package never hides the others."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import Workspace

DATA = b"the real bytes"


def registry(ws: Workspace) -> Path:
    return Path(ws.config["file"]["path"])


@pytest.fixture
def folder_ws(tmp_path: Path) -> Workspace:
    """A file registry (links exist only in a folder)."""
    root = tmp_path / "project"
    root.mkdir()
    space = Workspace(root, "file", {"tycho": {"backend": "file"}, "file": {"path": str(tmp_path / "registry")}})
    space.write_config()
    return space


def test_a_planted_link_to_a_private_file_is_never_read(folder_ws: Workspace) -> None:
    """Before: `reg/narf/tycho_1.1.pkg -> ~victim/secret` plus latest=1.1 copied the victim's
    0600 file into the (shared) output folder. Now the link is refused, exit 1, nothing written."""
    ws = folder_ws
    secret = ws.root.parent / "victim" / "secret"
    secret.parent.mkdir()
    secret.write_bytes(b"private key material")
    secret.chmod(0o600)
    ws.ok("init", "narf", "narf.bin")
    ws.ok("push", "narf", "1.0", str(ws.file("a", DATA)))
    (registry(ws) / "narf" / "tycho_1.1.pkg").symlink_to(secret)
    doc = json.loads((registry(ws) / "narf" / "tycho.json").read_text())
    (registry(ws) / "narf" / "tycho.json").write_text(json.dumps({**doc, "latest": "1.1"}))
    result = ws.run("pull", "narf")
    assert result.code == 1
    assert "symbolic link" in result.err and "tycho_1.1.pkg" in result.err
    assert not (ws.root / "tycho_packages" / "narf.bin").exists()
    assert b"private" not in b"".join(p.read_bytes() for p in ws.root.rglob("*") if p.is_file())
    # The link is not a version: listings skip it; the real version still pulls.
    assert [v["version"] for v in ws.ok("list-versions", "narf", "--json").json()] == ["1.0"]
    ws.ok("pull", "narf", "--version", "1.0")
    assert (ws.root / "tycho_packages" / "narf.bin").read_bytes() == DATA


def test_a_linked_record_or_package_document_is_refused(folder_ws: Workspace) -> None:
    ws = folder_ws
    outside = ws.root.parent / "outside.json"
    outside.write_text(json.dumps({"localname": "narf.bin", "latest": "1.0"}))
    ws.ok("init", "narf", "narf.bin")
    ws.ok("push", "narf", "1.0", str(ws.file("a", DATA)), "--promote-latest")
    doc = registry(ws) / "narf" / "tycho.json"
    doc.unlink()
    doc.symlink_to(outside)
    result = ws.run("pull", "narf")
    assert result.code == 1 and "symbolic link" in result.err
    listed = ws.run("list", "--json")  # one bad package does not hide the others
    assert listed.code == 0 and listed.json() == [{"name": "narf", "latest": None}]
    assert "symbolic link" in listed.err


def test_delete_of_a_package_that_is_a_link_deletes_nothing_outside(folder_ws: Workspace) -> None:
    """Before: a package folder that was a symlink made `delete --force` delete the files in
    the link's target. Now the folder is never entered."""
    ws = folder_ws
    elsewhere = ws.root.parent / "someone-elses"
    elsewhere.mkdir()
    (elsewhere / "tycho.json").write_text(json.dumps({"localname": "x", "latest": None}))
    (elsewhere / "tycho_1.0.pkg").write_bytes(b"theirs")
    (elsewhere / "notes.txt").write_text("keep me")
    registry(ws).mkdir(parents=True, exist_ok=True)
    (registry(ws) / "narf").symlink_to(elsewhere, target_is_directory=True)
    result = ws.run("delete", "narf", "--yes", "--force")
    assert result.code == 1 and "symbolic link" in result.err
    assert sorted(p.name for p in elsewhere.iterdir()) == ["notes.txt", "tycho.json", "tycho_1.0.pkg"]
    assert ws.ok("list", "--json").json() == []  # not listed as a package either


def test_a_link_planted_in_the_staging_or_lock_place_is_not_written_through(folder_ws: Workspace) -> None:
    """The lock file and every temporary file are opened with O_NOFOLLOW (and O_EXCL): a link
    planted there makes the write fail, never land in the link's target."""
    ws = folder_ws
    target = ws.root.parent / "target"
    target.write_bytes(b"untouched")
    ws.ok("init", "narf", "narf.bin")
    ws.ok("push", "narf", "1.0", str(ws.file("a", DATA)))
    lock = registry(ws) / ".tycho-lock"
    lock.unlink(missing_ok=True)
    lock.symlink_to(target)
    result = ws.run("promote", "narf", "1.0")
    assert result.code == 1 and "symbolic link" in result.err
    assert target.read_bytes() == b"untouched"


@pytest.mark.parametrize("what", ["tycho.json", "record", "catalog"])
def test_documents_nested_past_the_parser_limit_are_damage_not_a_crash(ws: Workspace, what: str) -> None:
    """Before: "internal error: RecursionError", and one such package made `list` fail for all."""
    ws.ok("init", "narf", "narf.bin")
    ws.ok("init", "other", "other.bin")
    ws.ok("push", "narf", "1.0", str(ws.file("a", DATA)), "--promote-latest")
    ws.ok("push", "other", "2.0", str(ws.file("b", DATA)), "--promote-latest")
    deep = b"[" * 100_000 + b"]" * 100_000
    key = {
        "tycho.json": "narf/tycho.json",
        "record": "narf/.tycho/versions/1.0.json",
        "catalog": "narf/.tycho/index.json",
    }[what]
    ws.write_stored(key, b'{"x": ' + deep + b"}")
    listed = ws.run("list", "--json")
    assert listed.code == 0
    expected_narf = None if what == "tycho.json" else "1.0"
    assert listed.json() == [{"name": "narf", "latest": expected_narf}, {"name": "other", "latest": "2.0"}]
    pulled = ws.run("pull", "narf")
    if what == "catalog":  # a cache: ignored
        assert pulled.code == 0
        assert ws.ok("list-versions", "narf", "--json").json()[0]["sha256"] is not None
    else:
        assert pulled.code == 1 and "nested too deeply" in pulled.err
    ws.ok("pull", "other")


def test_an_oversized_package_document_hides_no_other_package(ws: Workspace) -> None:
    ws.ok("init", "narf", "narf.bin")
    ws.ok("init", "other", "other.bin")
    ws.ok("push", "other", "2.0", str(ws.file("b", DATA)), "--promote-latest")
    ws.write_stored("narf/tycho.json", b'{"localname": "x", "pad": "' + b"a" * (17 * 1024 * 1024) + b'"}')
    listed = ws.run("list", "--json")
    assert listed.code == 0
    assert listed.json() == [{"name": "narf", "latest": None}, {"name": "other", "latest": "2.0"}]
    assert "too large" in listed.err


def test_a_removed_record_is_refused_by_the_cli_unless_allowed(ws: Workspace) -> None:
    """The command line's side of the rule in docs/FORMAT.md, "Reading a version": exit 1 naming
    package and version, nothing written; --allow-unverified takes it with a warning."""
    ws.ok("init", "narf", "narf.bin")
    ws.ok("push", "narf", "1.0", str(ws.file("a", DATA)), "--promote-latest")
    if ws.backend == "file":
        (registry(ws) / "narf" / ".tycho" / "versions" / "1.0.json").unlink()
    else:
        ws.seaweed.client().delete_object(
            Bucket=ws.bucket, Key=f"{ws.config['s3']['prefix']}/narf/.tycho/versions/1.0.json"
        )
    refused = ws.run("pull", "narf")
    assert refused.code == 1
    assert refused.err.startswith("error: narf 1.0 has no record") and "--allow-unverified" in refused.err
    assert not (ws.root / "tycho_packages").exists()
    taken = ws.ok("pull", "narf", "--allow-unverified")
    assert "unverified" in taken.err
    assert (ws.root / "tycho_packages" / "narf.bin").read_bytes() == DATA
