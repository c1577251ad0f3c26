"""The seed commands, on both backends, through the real command line."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from conftest import Workspace

DATA = b"narf release 1.0\n" * 10


def setup_pkg(ws: Workspace, name: str = "narf", filename: str = "narf.tar.gz") -> None:
    ws.ok("init", name, filename)


def push(ws: Workspace, name: str, version: str, data: bytes, *extra: str):
    path = ws.file(f"src/{hashlib.md5(f'{name}/{version}'.encode()).hexdigest()}.bin", data)
    return ws.run("push", name, version, str(path), *extra)


def leftovers(folder: Path) -> list[str]:
    """Temporary or partial files a pull must never leave behind."""
    return [p.name for p in folder.rglob("*") if p.name.endswith((".tmp", ".part")) and p.is_file()]


def test_round_trip_bytes_equal(ws: Workspace) -> None:
    setup_pkg(ws)
    assert push(ws, "narf", "1.0", DATA, "--promote-latest").code == 0
    result = ws.ok("pull", "narf")
    dest = ws.root / "tycho_packages" / "narf.tar.gz"
    assert dest.read_bytes() == DATA
    assert "verified" in result.out
    assert leftovers(ws.root) == []


def test_large_file_round_trip(ws: Workspace) -> None:
    """Bigger than one multipart part, not a multiple of it."""
    data = os.urandom(8 * 1024 * 1024 * 2 + 12345)
    setup_pkg(ws)
    assert push(ws, "narf", "2.0", data, "--promote-latest").code == 0
    ws.ok("pull", "narf", "--outfile", "out/big.bin")
    assert (ws.root / "out/big.bin").read_bytes() == data
    listed = ws.ok("list-versions", "narf", "--json").json()
    assert [(r["version"], r["size"], r["sha256"]) for r in listed] == [
        ("2.0", len(data), hashlib.sha256(data).hexdigest())
    ]


def test_empty_file_round_trip(ws: Workspace) -> None:
    setup_pkg(ws)
    assert push(ws, "narf", "0.0", b"", "--promote-latest").code == 0
    ws.ok("pull", "narf")
    assert (ws.root / "tycho_packages/narf.tar.gz").read_bytes() == b""


def test_push_needs_init(ws: Workspace) -> None:
    result = push(ws, "ghost", "1.0", DATA)
    assert result.code == 1
    assert "tychoreg init ghost" in result.err
    assert ws.stored_keys() == set()


def test_init_twice_fails_and_keeps_first(ws: Workspace) -> None:
    setup_pkg(ws, filename="first.bin")
    result = ws.run("init", "narf", "second.bin")
    assert result.code == 1
    assert "already exists" in result.err
    push(ws, "narf", "1", DATA, "--promote-latest")
    ws.ok("pull", "narf")
    assert (ws.root / "tycho_packages/first.bin").read_bytes() == DATA


def test_versions_are_immutable(ws: Workspace) -> None:
    setup_pkg(ws)
    assert push(ws, "narf", "1.0", DATA).code == 0
    again = push(ws, "narf", "1.0", b"other bytes")
    assert again.code == 1
    assert "already exists" in again.err
    assert ws.read_stored("narf/tycho_1.0.pkg") == DATA


def test_push_unreadable_file_is_usage_error(ws: Workspace) -> None:
    setup_pkg(ws)
    result = ws.run("push", "narf", "1.0", "missing.bin")
    assert result.code == 2
    assert "missing.bin" in result.err
    assert len(result.err.strip().splitlines()) <= 2


def test_push_of_a_folder_to_a_package_that_saves_a_plain_file_is_usage_error(ws: Workspace) -> None:
    """A folder is packed into an archive; a package whose pulls are saved as ``narf.bin`` would
    hand out an archive under a name that says otherwise."""
    setup_pkg(ws, filename="narf.bin")
    (ws.root / "a-folder").mkdir()
    result = ws.run("push", "narf", "1.0", "a-folder")
    assert result.code == 2
    assert "narf.bin" in result.err
    assert len(result.err.strip().splitlines()) <= 2
    assert not any(k.endswith(".pkg") for k in ws.stored_keys())


def test_latest_is_reserved(ws: Workspace) -> None:
    setup_pkg(ws)
    result = push(ws, "narf", "latest", DATA)
    assert result.code == 2
    assert not any("tycho_latest" in k for k in ws.stored_keys())


def test_pull_without_latest(ws: Workspace) -> None:
    setup_pkg(ws)
    push(ws, "narf", "1.0", DATA)
    result = ws.run("pull", "narf")
    assert result.code == 1
    assert "latest" in result.err
    assert "promote" in result.err
    assert not (ws.root / "tycho_packages").exists() or not any((ws.root / "tycho_packages").iterdir())


def test_pull_unknown_package_and_version(ws: Workspace) -> None:
    assert ws.run("pull", "nope").code == 1
    setup_pkg(ws)
    push(ws, "narf", "1.0", DATA, "--promote-latest")
    result = ws.run("pull", "narf", "--version", "9.9")
    assert result.code == 1
    assert "9.9" in result.err


def test_pull_explicit_version_and_outfile_with_new_parents(ws: Workspace) -> None:
    setup_pkg(ws)
    push(ws, "narf", "1.0", b"one", "--promote-latest")
    push(ws, "narf", "2.0", b"two")
    ws.ok("pull", "narf", "--version", "2.0", "--outfile", "deep/er/x.bin")
    assert (ws.root / "deep/er/x.bin").read_bytes() == b"two"
    ws.ok("pull", "narf")
    assert (ws.root / "tycho_packages/narf.tar.gz").read_bytes() == b"one"


def test_outfile_that_is_a_folder_is_refused(ws: Workspace) -> None:
    setup_pkg(ws)
    push(ws, "narf", "1.0", DATA, "--promote-latest")
    (ws.root / "dir").mkdir()
    result = ws.run("pull", "narf", "--outfile", "dir")
    assert result.code == 2
    assert list((ws.root / "dir").iterdir()) == []


def test_skip_when_up_to_date_and_force(ws: Workspace) -> None:
    setup_pkg(ws)
    push(ws, "narf", "1.0", DATA, "--promote-latest")
    ws.ok("pull", "narf")
    dest = ws.root / "tycho_packages/narf.tar.gz"
    inode = dest.stat().st_ino
    second = ws.ok("pull", "narf")
    assert "up to date" in second.out.lower()
    assert dest.stat().st_ino == inode  # not rewritten
    forced = ws.ok("pull", "narf", "--force")
    assert "Pulled" in forced.out
    assert dest.stat().st_ino != inode
    assert dest.read_bytes() == DATA


def test_skip_decided_by_content(ws: Workspace) -> None:
    setup_pkg(ws)
    push(ws, "narf", "1.0", DATA, "--promote-latest")
    dest = ws.root / "tycho_packages/narf.tar.gz"
    dest.parent.mkdir()
    dest.write_bytes(DATA)  # put there by other means: skipped
    assert "up to date" in ws.ok("pull", "narf").out.lower()
    changed = bytearray(DATA)
    changed[3] ^= 0xFF
    dest.write_bytes(bytes(changed))  # same size, other bytes: replaced
    result = ws.ok("pull", "narf")
    assert "Pulled" in result.out
    assert dest.read_bytes() == DATA


def test_list_and_list_versions_json(ws: Workspace) -> None:
    assert ws.ok("list", "--json").json() == []
    ws.ok("init", "zeta", "z.bin")
    setup_pkg(ws)
    ws.ok("init", "alpha", "a.bin")
    versions = ["1.10", "1.9", "1.0", "1.0rc1", "2.0"]
    for v in versions:
        assert push(ws, "narf", v, v.encode() * 3).code == 0
    ws.ok("promote", "narf", "1.10")
    assert ws.ok("list", "--json").json() == [
        {"name": "alpha", "latest": None},
        {"name": "narf", "latest": "1.10"},
        {"name": "zeta", "latest": None},
    ]
    listed = ws.ok("list-versions", "narf", "--json").json()
    assert [v["version"] for v in listed] == ["1.0rc1", "1.0", "1.9", "1.10", "2.0"]
    for row in listed:
        data = row["version"].encode() * 3
        assert row["size"] == len(data)
        assert row["sha256"] == hashlib.sha256(data).hexdigest()
        assert row["pushed_at"][:4].isdigit() and "T" in row["pushed_at"]
    assert {"version", "size", "sha256", "pushed_at"} <= set(listed[0])
    human = ws.ok("list-versions", "narf").out.splitlines()
    assert [line.split()[0] for line in human] == ["1.0rc1", "1.0", "1.9", "1.10", "2.0"]


def test_list_versions_of_empty_and_unknown_package(ws: Workspace) -> None:
    setup_pkg(ws)
    assert ws.ok("list-versions", "narf", "--json").json() == []
    assert ws.run("list-versions", "nope").code == 1


def test_list_versions_semver_with_prereleases(ws: Workspace) -> None:
    setup_pkg(ws)
    for v in ["v1.0.0", "v1.0.0-rc.1", "v1.0.0-alpha", "v0.9.12", "v0.9.2"]:
        assert push(ws, "narf", v, b"x").code == 0
    listed = [r["version"] for r in ws.ok("list-versions", "narf", "--json").json()]
    assert listed == ["v0.9.2", "v0.9.12", "v1.0.0-alpha", "v1.0.0-rc.1", "v1.0.0"]


def test_promote(ws: Workspace) -> None:
    setup_pkg(ws)
    push(ws, "narf", "1.0", b"one", "--promote-latest")
    push(ws, "narf", "2.0", b"two")
    assert ws.run("promote", "narf", "3.0").code == 1
    assert ws.run("promote", "ghost", "1.0").code == 1
    ws.ok("promote", "narf", "2.0")
    assert ws.ok("list", "--json").json() == [{"name": "narf", "latest": "2.0"}]
    ws.ok("pull", "narf")
    assert (ws.root / "tycho_packages/narf.tar.gz").read_bytes() == b"two"


def test_pull_list(ws: Workspace) -> None:
    for name in ("a", "b", "c"):
        ws.ok("init", name, f"{name}.bin")
        push(ws, name, "1.0", name.encode() * 5, "--promote-latest")
    ws.ok("pull-list", "a", "b", "c")
    for name in ("a", "b", "c"):
        assert (ws.root / f"tycho_packages/{name}.bin").read_bytes() == name.encode() * 5
    result = ws.run("pull-list", "a", "missing", "b")
    assert result.code == 1
    assert "missing" in result.err
    assert "up to date" in result.out.lower()  # the others were still handled
    assert ws.run("pull-list").code == 2


def test_corrupted_object_fails_and_leaves_destination(ws: Workspace) -> None:
    setup_pkg(ws)
    push(ws, "narf", "1.0", DATA, "--promote-latest")
    dest = ws.root / "tycho_packages/narf.tar.gz"
    dest.parent.mkdir()
    dest.write_bytes(b"previous content")
    damaged = bytearray(DATA)
    damaged[0] ^= 0x01
    ws.write_stored("narf/tycho_1.0.pkg", bytes(damaged))  # same size, wrong bytes
    result = ws.run("pull", "narf")
    assert result.code == 1
    assert "narf" in result.err and "1.0" in result.err
    assert dest.read_bytes() == b"previous content"
    assert leftovers(ws.root) == []
    ws.write_stored("narf/tycho_1.0.pkg", DATA + b"tail")  # other size
    result = ws.run("pull", "narf", "--force", "--outfile", "fresh.bin")
    assert result.code == 1
    assert not (ws.root / "fresh.bin").exists()
    assert leftovers(ws.root) == []


def test_damaged_package_document(ws: Workspace) -> None:
    setup_pkg(ws)
    push(ws, "narf", "1.0", DATA, "--promote-latest")
    ws.write_stored("narf/tycho.json", b'{"localname": "../../escape", "latest": "1.0"}')
    result = ws.run("pull", "narf")
    assert result.code == 1
    assert "localname" in result.err
    assert not (ws.root.parent / "escape").exists()
    ws.write_stored("narf/tycho.json", b"not json")
    assert ws.run("pull", "narf").code == 1
    listed = ws.run("list", "--json")
    assert listed.code == 0
    assert listed.json() == [{"name": "narf", "latest": None}]


BAD_NAMES = ["", "..", ".", "a/b", "-x", ".x", "x" * 129, "has space", "caf\u00e9", "a\\b", "a:b"]


@pytest.mark.parametrize("bad", BAD_NAMES)
def test_invalid_names_refused_before_storage(ws: Workspace, bad: str) -> None:
    src = ws.file("f.bin", b"data")
    before = ws.stored_keys()
    cases = [
        ("init", bad, "f.bin"),
        ("init", "ok", bad),
        ("push", bad, "1.0", str(src)),
        ("push", "ok", bad, str(src)),
        ("pull", bad),
        ("pull", "ok", "--version", bad),
        ("pull-list", "ok", bad),
        ("list-versions", bad),
        ("promote", bad, "1.0"),
        ("promote", "ok", bad),
    ]
    for args in cases:
        result = ws.run(*args)
        assert result.code == 2, (args, result.all)
        assert result.err.startswith("error:"), result.err
    assert ws.stored_keys() == before


def test_longest_valid_name(ws: Workspace) -> None:
    name = "a" * 128
    ws.ok("init", name, "b" * 128)
    assert push(ws, name, "1" * 128, b"x", "--promote-latest").code == 0
    ws.ok("pull", name)
    assert (ws.root / "tycho_packages" / ("b" * 128)).read_bytes() == b"x"


def test_names_refused_without_reaching_storage(tmp_path: Path) -> None:
    """An unreachable endpoint proves no request is made: we get 2, not a network error."""
    ws = Workspace(
        tmp_path,
        "s3",
        {
            "s3": {
                "bucket": "b",
                "endpoint_url": "http://127.0.0.1:9",
                "config": {"connect_timeout": 1, "retries": {"max_attempts": 1}},
            }
        },
    )
    ws.write_config()
    assert ws.run("pull", "../etc").code == 2
    assert ws.run("init", "ok", "a/b").code == 2
    assert ws.run("pull", "ok").code == 1  # and a valid name does reach the (dead) endpoint


def test_help_and_version(ws: Workspace) -> None:
    out = ws.ok("--help").out
    for command in ("init", "push", "pull", "pull-list", "list", "list-versions", "promote"):
        assert command in out
    assert ws.ok("--version").out.startswith("tychoreg ")
    assert "--promote-latest" in ws.ok("push", "--help").out


def test_unknown_command_and_option_are_usage_errors(ws: Workspace) -> None:
    result = ws.run("frobnicate")
    assert result.code == 2
    assert len(result.err.strip().splitlines()) <= 2
    assert ws.run("pull", "narf", "--no-such-flag").code == 2
    assert ws.run("push", "narf", "1.0").code == 2


def test_console_script_matches_module(ws: Workspace) -> None:
    import shutil
    import subprocess
    import sys

    exe = shutil.which("tychoreg", path=str(Path(sys.executable).parent))
    assert exe
    proc = subprocess.run([exe, "list", "--json"], cwd=ws.root, env=ws.base_env(), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ws.ok("list", "--json").out


def test_output_is_never_masked_data(ws: Workspace) -> None:
    """Secret masking applies to error text only; a name that contains a key is printed as is."""
    from conftest import ACCESS_KEY

    name = f"{ACCESS_KEY}-tools"
    ws.ok("init", name, f"{ACCESS_KEY}.bin")
    assert ws.ok("list", "--json").json() == [{"name": name, "latest": None}]


def test_damaged_fields_do_not_block_repairs(ws: Workspace) -> None:
    setup_pkg(ws)
    push(ws, "narf", "1.0", DATA)
    ws.write_stored("narf/tycho.json", b'{"localname": "../x", "latest": "../../y"}')
    assert ws.run("pull", "narf", "--version", "1.0").code == 1  # unsafe localname is never used
    ws.ok("pull", "narf", "--version", "1.0", "--outfile", "safe.bin")  # ... but --outfile works
    assert (ws.root / "safe.bin").read_bytes() == DATA
    assert ws.run("pull", "narf", "--outfile", "x.bin").code == 1  # invalid latest refused
    ws.ok("promote", "narf", "1.0")  # and promote repairs it
    ws.ok("pull", "narf", "--outfile", "x.bin")
    assert (ws.root / "x.bin").read_bytes() == DATA


def test_version_without_record_is_skipped_by_content(ws: Workspace) -> None:
    """Copied in by another tool (no record): pulled unverified, and a second pull is a no-op."""
    setup_pkg(ws)
    ws.write_stored("narf/tycho_0.1.pkg", DATA)
    first = ws.ok("pull", "narf", "--version", "0.1")
    assert "unverified" in first.err
    dest = ws.root / "tycho_packages/narf.tar.gz"
    assert dest.read_bytes() == DATA
    assert "up to date" in ws.ok("pull", "narf", "--version", "0.1").out.lower()
    dest.write_bytes(DATA[::-1])  # same size, other bytes
    assert "Pulled" in ws.ok("pull", "narf", "--version", "0.1").out
    assert dest.read_bytes() == DATA


def test_damaged_record_is_reported_not_hidden(ws: Workspace) -> None:
    setup_pkg(ws)
    push(ws, "narf", "1.0", DATA)
    ws.write_stored("narf/.tycho/versions/1.0.json", b'{"version": "1.0", "size": "big"}')
    listed = ws.run("list-versions", "narf", "--json")
    assert listed.code == 0
    assert listed.json()[0]["sha256"] is None
    assert "damaged" in listed.err
    assert "DAMAGED" in ws.ok("list-versions", "narf").out
    result = ws.run("pull", "narf", "--version", "1.0")
    assert result.code == 1
    assert "damaged" in result.err


def test_no_arguments_shows_help_exit_2(ws: Workspace) -> None:
    result = ws.run()
    assert result.code == 2
    assert "Commands:" in result.err
    assert result.out == ""


def test_huge_planted_document_is_refused(ws: Workspace) -> None:
    setup_pkg(ws)
    ws.write_stored("narf/tycho.json", b'{"localname": "x", "pad": "' + b"a" * (17 * 1024 * 1024) + b'"}')
    result = ws.run("pull", "narf")
    assert result.code == 1
    assert "too large" in result.err


def test_dangling_symlink_destination_is_replaced_not_followed(ws: Workspace) -> None:
    setup_pkg(ws)
    push(ws, "narf", "1.0", DATA, "--promote-latest")
    dest = ws.root / "tycho_packages/narf.tar.gz"
    dest.parent.mkdir()
    dest.symlink_to(ws.root / "nowhere/target")
    ws.ok("pull", "narf")
    assert not dest.is_symlink() and dest.read_bytes() == DATA
    assert not (ws.root / "nowhere").exists()
