"""The scripting surface (issue 15, first half; CONTRACT.md "Selectors", "JSON output",
"Behaviour every command keeps"): ``PKG@SELECTOR``, ``--json`` on every command, dry runs,
``lock --check``, shell completion, ``help``, Ctrl-C and a closed pipe. All through the real CLI
(and real shells, signals and pipes), on both backends where the backend matters.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import click
import jsonschema
import pytest

from conftest import Result, Workspace
from faultproxy import FaultProxy, Rule

BIN = Path(sys.executable).parent


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def tar_of(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def push(ws: Workspace, package: str, version: str, data: bytes, *extra: str) -> None:
    ws.ok("push", package, version, str(ws.file(f"in/{package}-{version}", data)), *extra)


def usage_error(result: Result, *mentions: str) -> None:
    """Exit 2, nothing on stdout, an error line (and a hint line) naming each of ``mentions``."""
    assert result.code == 2, result.all
    assert result.out == ""
    lines = result.err.strip().splitlines()
    assert lines[0].startswith("error: ") and len(lines) <= 2, lines
    for mention in mentions:
        assert mention in result.err, (mention, result.err)


# -- the JSON shapes of the contract, as JSON Schemas --------------------------------------------------
NULLABLE_SHA = {"type": ["string", "null"], "pattern": "^[0-9a-f]{64}$"}
PULL = {
    "type": "object",
    "required": ["package", "version", "path", "size", "sha256", "downloaded"],
    "properties": {
        "package": {"type": "string"},
        "version": {"type": "string"},
        "path": {"type": "string"},
        "size": {"type": "integer", "minimum": 0},
        "sha256": NULLABLE_SHA,
        "downloaded": {"type": "boolean"},
    },
}
PUSH = {
    "type": "object",
    "required": ["package", "version", "size", "sha256", "latest"],
    "properties": {
        "package": {"type": "string"},
        "version": {"type": "string"},
        "size": {"type": "integer", "minimum": 0},
        "sha256": NULLABLE_SHA,
        "latest": {"type": ["string", "null"]},
    },
}
FAILED = {
    "type": "object",
    "required": ["package", "error"],
    "properties": {"package": {"type": "string"}, "error": {"type": "string", "minLength": 1}},
    "not": {"required": ["downloaded"]},
}
PULLS = {"type": "array", "items": {"anyOf": [PULL, FAILED]}}


def valid(doc: object, schema: dict) -> object:
    jsonschema.validate(doc, schema)
    return doc


def json_of(result: Result, code: int = 0) -> object:
    """The one JSON document a --json command printed (stdout holds nothing else)."""
    assert result.code == code, result.all
    return json.loads(result.out)


@pytest.fixture
def narf(ws: Workspace) -> Workspace:
    """narf 1.0.0, 1.2.0, 1.3.0-rc.1 and 2.0.0 (latest), tag stable -> 1.2.0; tool 0.9 (stable)."""
    versions = ("1.0.0", "1.2.0", "1.3.0-rc.1", "2.0.0")
    ws.ok_all(
        ["init", "narf", "narf.bin"],
        *(["push", "narf", v, str(ws.file(f"in/narf-{v}", f"narf {v}\n".encode() * 100))] for v in versions),
        ["promote", "narf", "2.0.0"],
        ["tag", "narf", "1.2.0", "stable"],
        ["init", "tool", "tool.bin"],
        ["push", "tool", "0.9", str(ws.file("in/tool-0.9", b"tool\n" * 100)), "--promote-latest"],
        ["tag", "tool", "0.9", "stable"],
    )
    return ws


def narf_bytes(version: str) -> bytes:
    return f"narf {version}\n".encode() * 100


# -- PKG@SELECTOR ---------------------------------------------------------------------------------
def test_package_at_selector_wherever_a_package_is_read(narf: Workspace) -> None:
    ws = narf
    for spec, version in (
        ("narf@^1", "1.2.0"),
        ("narf@stable", "1.2.0"),
        ("narf@1.0.0", "1.0.0"),
        ("narf@latest", "2.0.0"),
        ("narf@~1.3.0-rc.0", "1.3.0-rc.1"),
        ("narf", "2.0.0"),
    ):
        out = ws.root / "got" / spec
        pulled = valid(json_of(ws.run("pull", spec, "--outfile", str(out), "--json")), PULL)
        assert pulled["version"] == version, spec
        assert out.read_bytes() == narf_bytes(version)
        assert pulled["sha256"] == sha(narf_bytes(version)) and pulled["size"] == len(narf_bytes(version))
    # the same as --version
    assert json_of(ws.run("pull", "narf", "--version", "^1", "--json"))["version"] == "1.2.0"

    listed = valid(json_of(ws.run("pull-list", "narf@^1", "tool@stable", "--json")), PULLS)
    assert [(p["package"], p["version"]) for p in listed] == [("narf", "1.2.0"), ("tool", "0.9")]
    assert (ws.root / "tycho_packages" / "narf.bin").read_bytes() == narf_bytes("1.2.0")

    by_at = json_of(ws.run("info", "narf@stable", "--json"))
    assert by_at == json_of(ws.run("info", "narf", "stable", "--json"))
    assert by_at == json_of(ws.run("info", "narf", "--version", "stable", "--json"))
    assert by_at["version"] == "1.2.0"
    checked = json_of(ws.run("verify", "narf@^1", "--json"))
    assert [(r["version"], r["ok"]) for r in checked] == [("1.2.0", True)]

    # a pull list file may use selectors too
    listfile = ws.file("wanted.txt", b"# what CI needs\nnarf@1.0.0\ntool@stable  # the tool\n")
    listed = json_of(ws.run("pull-list", "--from", str(listfile), "--json"))
    assert [(p["package"], p["version"]) for p in listed] == [("narf", "1.0.0"), ("tool", "0.9")]


def test_a_selector_given_twice_or_malformed_is_a_usage_error(narf: Workspace) -> None:
    ws = narf
    before = ws.stored_keys()
    usage_error(ws.run("pull", "narf@1.0.0", "--version", "1.0.0"), "narf@1.0.0", "--version")
    usage_error(ws.run("info", "narf@1.0.0", "1.0.0"), "VERSION")
    usage_error(ws.run("info", "narf", "1.0.0", "--version", "1.0.0"), "--version")
    usage_error(ws.run("info", "narf@1.0.0", "--version", "stable"), "--version")
    usage_error(ws.run("verify", "narf@1.0.0", "1.0.0"), "VERSION")
    usage_error(ws.run("pull", "narf@"), "narf@", "PKG@SELECTOR")
    usage_error(ws.run("pull", "narf@>>1"), "invalid version or range")
    usage_error(ws.run("pull", "@1.0"), "invalid package name")
    usage_error(ws.run("pull-list", "narf@1.0.0", "narf@^1", "--json"), "named twice")
    assert not (ws.root / "tycho_packages").exists()
    assert ws.stored_keys() == before
    # the same selector twice is one package
    listed = json_of(ws.run("pull-list", "narf@1.0.0", "narf@1.0.0", "--json"))
    assert [p["version"] for p in listed] == ["1.0.0"]


# -- --json on every command -----------------------------------------------------------------------
def every_command(group: click.Group, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], click.Command]]:
    found = []
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            found += every_command(command, (*path, name))
        else:
            found.append(((*path, name), command))
    return found


def test_every_command_takes_json() -> None:
    from tychoreg.cli import cli

    commands = every_command(cli)
    assert len(commands) >= 21
    missing = [" ".join(path) for path, command in commands if not any("--json" in p.opts for p in command.params)]
    assert missing == []


def test_json_output_of_every_command(narf: Workspace) -> None:
    """Each command with --json prints exactly one JSON document on stdout, in the documented shape."""
    ws = narf
    data = b"fresh bytes\n" * 1000
    src = str(ws.file("in/fresh.bin", data))

    made = json_of(ws.run("init", "fresh", "fresh.bin", "--json"))
    assert made == {"package": "fresh", "filename": "fresh.bin", "registry": made["registry"]}
    pushed = valid(json_of(ws.run("push", "fresh", "1.0", src, "--json")), PUSH)
    assert (pushed["version"], pushed["size"], pushed["sha256"], pushed["latest"]) == (
        "1.0",
        len(data),
        sha(data),
        None,
    )
    assert pushed["skipped"] is False
    again = valid(json_of(ws.run("push", "fresh", "1.0", src, "--skip-existing", "--promote-latest", "--json")), PUSH)
    assert (again["skipped"], again["latest"]) == (True, "1.0")
    pushed = valid(json_of(ws.run("push", "fresh", "1.1", src, "--json")), PUSH)
    assert pushed["latest"] == "1.0"  # what latest is after the push

    pulled = valid(json_of(ws.run("pull", "fresh", "--json")), PULL)
    assert pulled["downloaded"] is True and Path(pulled["path"]).read_bytes() == data
    assert pulled["path"] == str(ws.root / "tycho_packages" / "fresh.bin")
    assert valid(json_of(ws.run("pull", "fresh", "--json")), PULL)["downloaded"] is False

    assert json_of(ws.run("promote", "fresh", "1.1", "--json")) == {
        "package": "fresh",
        "version": "1.1",
        "latest": "1.1",
    }
    assert json_of(ws.run("tag", "fresh", "^1", "beta", "--json")) == {
        "package": "fresh",
        "tag": "beta",
        "version": "1.1",
    }
    assert json_of(ws.run("untag", "fresh", "beta", "--json")) == {"package": "fresh", "tag": "beta", "was": "1.1"}
    assert json_of(ws.run("yank", "fresh", "1.1", "--reason", "broken", "--yes", "--json")) == {
        "package": "fresh",
        "version": "1.1",
        "yanked": True,
        "reason": "broken",
        "latest": "1.0",
    }
    assert json_of(ws.run("unyank", "fresh", "1.1", "--json")) == {
        "package": "fresh",
        "version": "1.1",
        "yanked": False,
    }
    deleted = json_of(ws.run("delete", "fresh", "1.1", "--yes", "--json"))
    assert deleted == {"package": "fresh", "version": "1.1", "tags": [], "deleted": True, "dry_run": False}
    debris = json_of(ws.run("gc", "--json"))
    assert debris == {"removed": False, "dry_run": True, "debris": []}

    listed = json_of(ws.run("list", "--json"))
    assert {"name": "fresh", "latest": "1.0"} in listed
    versions = json_of(ws.run("list-versions", "fresh", "--json"))
    assert [v["version"] for v in versions] == ["1.0"]
    assert json_of(ws.run("info", "fresh", "--json"))["latest"] == "1.0"
    assert [r["ok"] for r in json_of(ws.run("verify", "fresh", "--json"))] == [True]

    cache = json_of(ws.run("cache", "info", "--json"))
    assert cache["entries"] >= 1 and cache["bytes"] >= len(data)
    pruned = json_of(ws.run("cache", "prune", "--json"))
    assert pruned == {"removed": cache["entries"], "bytes": cache["bytes"], "dry_run": False}

    helped = json_of(ws.run("help", "pull", "--json"))
    assert helped["command"] == "tychoreg pull" and "PKG[@SELECTOR]" in helped["help"] and helped["commands"] == []
    assert "pull" in json_of(ws.run("help", "--json"))["commands"]
    script = json_of(ws.run("completion", "bash", "--json"))
    assert script["shell"] == "bash" and "_TYCHOREG_COMPLETE" in script["script"]

    # declared packages: lock, lock --check, sync
    ws.write_config({**ws.config, "packages": {"fresh": "^1", "tool": "stable"}})
    locked = json_of(ws.run("lock", "--json"))
    assert locked["changed"] is True and locked["dry_run"] is False
    assert locked["lockfile"] == str(ws.root / "tycho.lock")
    assert [(p["package"], p["version"], p["sha256"]) for p in locked["packages"]] == [
        ("fresh", "1.0", sha(data)),
        ("tool", "0.9", sha(b"tool\n" * 100)),
    ]
    assert json_of(ws.run("lock", "--check", "--json")) == {
        "lockfile": locked["lockfile"],
        "fresh": True,
        "problems": [],
    }
    synced = valid(json_of(ws.run("sync", "--json")), PULLS)
    assert [(p["package"], p["version"]) for p in synced] == [("fresh", "1.0"), ("tool", "0.9")]


def test_json_keeps_progress_and_remarks_off_stdout(narf: Workspace) -> None:
    """Lines that say what was done go nowhere with --json; warnings still go to stderr."""
    ws = narf
    ws.ok("yank", "narf", "1.0.0")
    result = ws.run("pull", "narf@1.0.0", "--json")
    assert valid(json_of(result), PULL)["version"] == "1.0.0"
    assert "is yanked" in result.err
    result = ws.run("pull-list", "narf", "tool", "--json")
    assert len(valid(json_of(result), PULLS)) == 2


def test_pull_list_reports_each_failure_in_its_json(narf: Workspace) -> None:
    ws = narf
    result = ws.run("pull-list", "narf", "nope", "tool@9.9", "--json")
    listed = valid(json_of(result, code=1), PULLS)
    assert [p["package"] for p in listed] == ["narf", "nope", "tool"]
    assert listed[0]["version"] == "2.0.0" and listed[0]["downloaded"] is True
    for failed, reason in ((listed[1], "no-package"), (listed[2], "no-version")):
        valid(failed, FAILED)
        assert failed["reason"] == reason and failed["error"] in result.err, failed
    assert "error: 2 of 3 packages failed to pull" in result.err


def test_sync_reports_each_failure_in_its_json(narf: Workspace) -> None:
    ws = narf
    ws.write_config({**ws.config, "packages": {"narf": "^1", "tool": "stable"}})
    ws.ok("lock")
    ws.write_stored("narf/tycho_1.2.0.pkg", narf_bytes("1.2.1"))  # damaged in storage: same size, other bytes
    result = ws.run("sync", "--json", "--no-cache")
    listed = valid(json_of(result, code=1), PULLS)
    assert [p["package"] for p in listed] == ["narf", "tool"]
    valid(listed[0], FAILED)
    assert listed[1]["downloaded"] is True
    assert not (ws.root / "tycho_packages" / "narf.bin").exists()
    # a declared package that cannot be resolved: nothing is installed, and the JSON says which
    ws.write_config({**ws.config, "packages": {"narf": "^1", "tool": "stable", "ghost": "1.0", "gcc": "^13"}})
    result = ws.run("sync", "--json")
    listed = valid(json_of(result, code=1), PULLS)
    assert [(p["package"], p["reason"]) for p in listed] == [("gcc", "no-package"), ("ghost", "no-package")]


# -- dry runs ---------------------------------------------------------------------------------------
def tree(root: Path) -> dict[str, bytes | None]:
    return {
        str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None)
        for p in sorted(root.rglob("*"))
        if "home" not in p.relative_to(root).parts[:1]
    }


def test_sync_dry_run_says_what_would_happen_and_changes_nothing(narf: Workspace) -> None:
    ws = narf
    archive = tar_of({"bin/t": b"t" * 100})
    ws.ok("init", "kit", "kit.tar")
    push(ws, "kit", "1.0", archive, "--promote-latest")
    ws.write_config({**ws.config, "packages": {"narf": "^1", "kit": {"version": "latest", "extract": "tools/kit"}}})
    stored, local = ws.stored_keys(), tree(ws.root)

    planned = json_of(ws.run("sync", "--dry-run", "--json"))
    assert [(p["package"], p["version"], p["action"]) for p in planned] == [
        ("kit", "1.0", "download"),
        ("narf", "1.2.0", "download"),
    ]
    assert planned[0]["path"] == str(ws.root / "tools" / "kit") and planned[0]["extracted"] is True
    text = ws.run("sync", "--dry-run")
    assert text.code == 0 and "would download: narf 1.2.0 -> tycho_packages/narf.bin" in text.out
    assert "Would write tycho.lock" in text.out and "Dry run" in text.err
    assert ws.stored_keys() == stored and tree(ws.root) == local  # no lock, no file, no cache entry

    ws.ok("sync")
    planned = json_of(ws.run("sync", "--dry-run", "--locked", "--json"))
    assert [p["action"] for p in planned] == ["up-to-date", "up-to-date"]
    assert "Would write" not in ws.ok("sync", "--dry-run").out
    (ws.root / "tycho_packages" / "narf.bin").write_bytes(b"edited")
    planned = json_of(ws.run("sync", "--dry-run", "--offline", "--json"))
    assert [p["action"] for p in planned] == ["up-to-date", "from-cache"]
    assert (ws.root / "tycho_packages" / "narf.bin").read_bytes() == b"edited"
    ws.ok("cache", "prune")
    result = ws.run("sync", "--dry-run", "--offline", "--json")
    planned = json_of(result, code=1)
    assert planned[1] == {**planned[1], "package": "narf", "reason": "offline-miss"}
    assert (ws.root / "tycho_packages" / "narf.bin").read_bytes() == b"edited"


def test_lock_dry_run_and_check(narf: Workspace) -> None:
    ws = narf
    lockfile = ws.root / "tycho.lock"
    ws.write_config({**ws.config, "packages": {"narf": "^1"}})

    missing = ws.run("lock", "--check")
    assert missing.code == 1 and "there is no tycho.lock" in missing.err and "tychoreg lock" in missing.err
    assert json_of(ws.run("lock", "--check", "--json"), code=1)["fresh"] is False

    planned = json_of(ws.run("lock", "--dry-run", "--json"))
    assert planned["changed"] is True and planned["dry_run"] is True
    assert [(p["package"], p["version"]) for p in planned["packages"]] == [("narf", "1.2.0")]
    assert not lockfile.exists()
    ws.ok("lock")
    assert ws.ok("lock", "--check").code == 0
    body = lockfile.read_bytes()

    push(ws, "narf", "1.9.0", b"newer")
    upgrade = json_of(ws.run("lock", "--upgrade", "--dry-run", "--json"))
    assert upgrade["changed"] is True and upgrade["packages"][0]["version"] == "1.9.0"
    assert lockfile.read_bytes() == body
    assert json_of(ws.run("lock", "--dry-run", "--json"))["changed"] is False  # locked pins stay
    assert ws.ok("lock", "--check").code == 0  # a newer match does not make the lock stale

    ws.write_config({**ws.config, "packages": {"narf": "^2", "tool": "stable"}})
    stale = ws.run("lock", "--check", "--json")
    report = json_of(stale, code=1)
    assert report["fresh"] is False and len(report["problems"]) == 2
    assert "tool is declared but not locked" in stale.err
    assert lockfile.read_bytes() == body
    usage_error(ws.run("lock", "--check", "--upgrade"), "--check")


def test_lock_check_needs_no_registry(tmp_path: Path) -> None:
    """CI can check the lock before it has credentials or network: only local files are read."""
    root = tmp_path / "p"
    root.mkdir()
    config = {
        "tycho": {"backend": "s3"},
        "s3": {"bucket": "nowhere", "endpoint_url": "http://127.0.0.1:9", "region_name": "us-east-1"},
        "packages": {"narf": "^1"},
    }
    ws = Workspace(root, "s3", config)
    ws.write_config()
    sha_hex = "ab" * 32
    entry = {"version": "1.2.0", "sha256": sha_hex, "size": 3, "localname": "narf.bin", "requested": "^1"}
    (root / "tycho.lock").write_text(json.dumps({"format": 1, "registry": "x", "packages": {"narf": entry}}))
    started = time.monotonic()
    assert ws.run("lock", "--check").code == 0
    assert time.monotonic() - started < 10


def test_delete_dry_run_deletes_nothing_and_refuses_what_delete_refuses(narf: Workspace) -> None:
    ws = narf
    before = ws.stored_keys()
    planned = json_of(ws.run("delete", "narf", "1.0.0", "--dry-run", "--json"))
    assert planned == {
        "package": "narf",
        "version": "1.0.0",
        "tags": [],
        "versions": ["1.0.0"],
        "deleted": False,
        "dry_run": True,
    }
    tagged = ws.run("delete", "narf", "stable", "--dry-run")
    assert tagged.code == 1 and "tagged stable" in tagged.err and "--force" in tagged.err
    forced = json_of(ws.run("delete", "narf", "stable", "--dry-run", "--force", "--json"))
    assert (forced["version"], forced["tags"]) == ("1.2.0", ["stable"])
    assert ws.run("delete", "narf", "9.9", "--dry-run").code == 1
    whole = ws.run("delete", "narf", "--dry-run", "--force")
    assert whole.code == 0 and "Would delete package narf (4 versions) and tags latest, stable" in whole.out
    assert whole.out.split("\n")[1:5] == ["  1.0.0", "  1.2.0", "  1.3.0-rc.1", "  2.0.0"]
    assert ws.run("delete", "narf", "--dry-run").code == 1  # tagged: refused as delete refuses it
    assert ws.stored_keys() == before


def test_cache_prune_dry_run_removes_nothing(narf: Workspace) -> None:
    ws = narf
    ws.ok("pull-list", "narf", "tool")
    info = json_of(ws.run("cache", "info", "--json"))
    assert info["entries"] == 2
    cache_dir = Path(info["path"])
    before = sorted(p for p in cache_dir.rglob("*") if p.is_file())
    planned = json_of(ws.run("cache", "prune", "--dry-run", "--json"))
    assert planned == {"removed": 2, "bytes": info["bytes"], "dry_run": True}
    assert "Would remove 2 cached files" in ws.ok("cache", "prune", "--dry-run").out
    assert sorted(p for p in cache_dir.rglob("*") if p.is_file()) == before
    assert json_of(ws.run("cache", "prune", "--json"))["removed"] == 2
    assert json_of(ws.run("cache", "info", "--json"))["entries"] == 0


# -- help and completion ------------------------------------------------------------------------------
def test_help_command(ws: Workspace) -> None:
    assert ws.ok("help").out == ws.ok("--help").out
    assert ws.ok("help", "pull").out == ws.ok("pull", "--help").out
    assert ws.ok("help", "cache", "prune").out == ws.ok("cache", "prune", "--help").out
    assert "Usage: tychoreg cache prune" in ws.ok("help", "cache", "prune").out
    usage_error(ws.run("help", "nope"), "no command 'nope'")
    usage_error(ws.run("help", "pull", "more"), "no subcommands")


def complete(ws: Workspace, *words: str, env: dict[str, str] | None = None) -> list[str]:
    """What bash offers after ``tychoreg WORDS`` (the last word is the one being completed), with
    the script ``tychoreg completion bash`` prints, in a real bash."""
    script = ws.ok("completion", "bash").out
    program = (
        f"{script}\nCOMP_WORDS=(tychoreg {' '.join(words)}); COMP_CWORD={len(words)}; COMPREPLY=()\n"
        '_tychoreg_completion tychoreg; printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    proc = subprocess.run(
        ["bash", "--norc", "-c", program],
        cwd=ws.root,
        env={**ws.base_env(), "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    return [line for line in proc.stdout.splitlines() if line]


def test_bash_completion_offers_commands_and_package_names_from_the_registry(narf: Workspace) -> None:
    ws = narf
    ws.ok("init", "narwhal", "n.bin")
    assert complete(ws, "pu") == ["pull", "pull-list", "push"]
    assert complete(ws, "pull", "nar") == ["narf", "narwhal"]
    assert complete(ws, "pull-list", "narf", "t") == ["tool"]
    assert complete(ws, "info", "narf@") == [
        "narf@latest",
        "narf@stable",
        "narf@2.0.0",
        "narf@1.3.0-rc.1",
        "narf@1.2.0",
        "narf@1.0.0",
    ]
    assert complete(ws, "promote", "narw") == ["narwhal"]
    assert complete(ws, "cache", "p") == ["prune"]
    assert complete(ws, "completion", "") == ["bash", "zsh", "fish"]


def test_completion_stays_quiet_and_quick_when_the_registry_cannot_answer(tmp_path: Path) -> None:
    """A registry that does not answer gives no completions, within a few seconds, and prints nothing."""
    import socket

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)  # accepts connections, never answers
    try:
        root = tmp_path / "p"
        root.mkdir()
        endpoint = f"http://127.0.0.1:{silent.getsockname()[1]}"
        ws = Workspace(root, "s3", {"s3": {"bucket": "b", "endpoint_url": endpoint, "region_name": "us-east-1"}})
        ws.write_config()
        started = time.monotonic()
        assert complete(ws, "pull", "na") == []
        assert time.monotonic() - started < 20
        assert complete(ws, "pul") == ["pull", "pull-list"]
    finally:
        silent.close()


@pytest.mark.parametrize("shell,marker", [("zsh", "#compdef tychoreg"), ("fish", "function _tychoreg_completion")])
def test_completion_scripts_for_zsh_and_fish(narf: Workspace, shell: str, marker: str) -> None:
    """No zsh or fish here to run them in: the script is the one click writes for that shell, and
    the program answers the requests it sends (package names from the registry)."""
    ws = narf
    script = ws.ok("completion", shell).out
    assert script.startswith(marker) or marker in script
    assert "_TYCHOREG_COMPLETE" in script
    cword = "2" if shell == "zsh" else "to"
    asked = ws.run(
        env={"_TYCHOREG_COMPLETE": f"{shell}_complete", "COMP_WORDS": "tychoreg pull-list to", "COMP_CWORD": cword}
    )
    assert asked.code == 0 and "tool" in asked.out and "narf" not in asked.out, asked.all
    usage_error(ws.run("completion", "tcsh"), "tcsh")


# -- Ctrl-C and a closed pipe -----------------------------------------------------------------------
def interrupt_mid_download(
    ws: Workspace, proxy: FaultProxy, args: list[str], folder: Path, pattern: str, packages: tuple[str, ...] = ("",)
) -> tuple[Result, float]:
    """Start ``tychoreg ARGS`` with the first read of the data of each of ``packages`` (any, by
    default) stalled for a minute, wait until other ranges have landed in as many files
    ``folder.glob(pattern)`` finds, send SIGINT; return the result and how long the command took
    to exit after the signal."""
    proxy.stall_seconds = 60
    for package in packages:
        proxy.rules.append(Rule("GET", f"{package}/tycho_1.0.pkg", "stall"))
    stalls = len(packages)
    proc = ws.spawn(*args)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            written = [p for p in folder.glob(pattern) if p.is_file() and p.stat().st_size > 0]
        except OSError:
            written = []
        if len(written) >= stalls:
            break
        time.sleep(0.02)
    else:
        proc.kill()
        raise AssertionError("the download never started")
    time.sleep(0.2)
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=90)
    took = time.monotonic() - sent
    assert "Traceback" not in out + err, err
    return Result(proc.returncode, out, err), took


@pytest.fixture
def big(proxied_s3: tuple[Workspace, FaultProxy]) -> tuple[Workspace, FaultProxy, bytes]:
    ws, proxy = proxied_s3
    data = os.urandom(40 * 2**20)  # five ranged reads in parallel
    ws.ok("init", "big", "big.bin")
    ws.ok("push", "big", "1.0", str(ws.file("in/big.bin", data)), "--promote-latest")
    return ws, proxy, data


def test_ctrl_c_mid_download_exits_130_at_once_and_leaves_no_partial_file(big) -> None:
    ws, proxy, data = big
    outdir = ws.root / "tycho_packages"
    result, took = interrupt_mid_download(ws, proxy, ["pull", "big"], outdir, ".*.part")
    assert result.code == 130, result.all
    assert took < 8, f"the command took {took:.1f}s to exit after Ctrl-C"
    assert result.out == ""
    assert [line for line in result.err.splitlines() if line.strip()] == [
        "error: interrupted; nothing half-written was left in place"
    ]
    assert not (outdir / "big.bin").exists()
    left = sorted(p.name for p in outdir.iterdir())
    assert len(left) <= 1 and all(name.startswith(".big.bin.") and name.endswith(".part") for name in left), left
    for name in left:  # a hidden part file the next pull resumes: only bytes of this version, where written
        part = (outdir / name).read_bytes()
        assert len(part) <= len(data)
        chunk = 1024 * 1024
        for at in range(0, len(part), chunk):
            piece = part[at : at + chunk]
            assert piece == data[at : at + len(piece)] or piece == bytes(len(piece)), at
    proxy.rules.clear()
    ws.ok("pull", "big")
    assert (outdir / "big.bin").read_bytes() == data
    assert sorted(p.name for p in outdir.iterdir()) == ["big.bin"]


def test_ctrl_c_during_an_extracting_pull_leaves_nothing_behind(big) -> None:
    ws, proxy, data = big
    target = ws.root / "unpacked"
    ws.ok("init", "kit", "kit.tar")
    archive = tar_of({"a": data})
    ws.ok("push", "kit", "1.0", str(ws.file("in/kit.tar", archive)), "--promote-latest")
    args = ["pull", "kit", "--extract", str(target), "--no-cache"]
    result, took = interrupt_mid_download(ws, proxy, args, ws.root, ".unpacked.*/*")
    assert result.code == 130 and took < 8, (result.all, took)
    assert not target.exists()
    assert sorted(p.name for p in ws.root.iterdir() if p.name.startswith(".unpacked")) == []


def test_ctrl_c_during_a_pull_list_stops_every_download(big) -> None:
    ws, proxy, data = big
    ws.ok("init", "twin", "twin.bin")
    ws.ok("push", "twin", "1.0", str(ws.file("in/twin.bin", data[::-1])), "--promote-latest")
    outdir = ws.root / "tycho_packages"
    result, took = interrupt_mid_download(
        ws, proxy, ["pull-list", "big", "twin", "--no-cache"], outdir, ".*.part", ("/big", "/twin")
    )
    assert result.code == 130 and took < 8, (result.all, took)
    assert not (outdir / "big.bin").exists() and not (outdir / "twin.bin").exists()
    assert all(p.name.endswith(".part") for p in outdir.iterdir())


def test_a_closed_pipe_ends_the_command_quietly(file_ws: Workspace) -> None:
    """`tychoreg list | head -1` with more output than a pipe holds: the first line arrives, the
    command stops at the closed pipe with 141 (as SIGPIPE would) and says nothing."""
    ws = file_ws
    registry = Path(ws.config["file"]["path"])
    names = [f"pkg-{i:04d}-{'x' * 100}" for i in range(1200)]  # ~150 KB of listing
    for name in names:
        (registry / name).mkdir(parents=True)
        (registry / name / "tycho.json").write_text(json.dumps({"localname": "f.bin", "latest": None}))
    for command in ("list", "list --json", "help"):
        proc = subprocess.run(
            ["bash", "-c", f'{sys.executable} -m tychoreg {command} | head -1; echo "status=${{PIPESTATUS[0]}}"'],
            cwd=ws.root,
            env=ws.base_env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        lines = proc.stdout.splitlines()
        assert proc.stderr == "", (command, proc.stderr)
        if command == "list":
            assert lines[0].startswith(names[0]), lines[0]
            assert lines[-1] == "status=141", lines[-1]
        else:
            assert lines[-1] in ("status=141", "status=0"), lines[-1]


@pytest.fixture
def file_ws(tmp_path: Path) -> Workspace:
    root = tmp_path / "project"
    root.mkdir()
    space = Workspace(root, "file", {"tycho": {"backend": "file"}, "file": {"path": str(tmp_path / "registry")}})
    space.write_config()
    return space
