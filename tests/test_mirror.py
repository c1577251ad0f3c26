"""``tychoreg mirror --to CONFIG``: any backend to any backend, verified, incremental (a second run
moves no data, counted at the wire), never overwriting, resumable after a kill; signatures
copied and checked on the destination with the source's trusted signers."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import Workspace, s3_config
from servers import ACCESS_KEY, SECRET_KEY
from test_signatures import keygen, public

pytestmark = pytest.mark.skipif(
    subprocess.run(["which", "ssh-keygen"], capture_output=True).returncode != 0, reason="needs ssh-keygen"
)


def destination(tmp_path: Path, kind: str, request: pytest.FixtureRequest) -> Workspace:
    """A second registry (its own project folder and config), on a backend of its own."""
    root = tmp_path / "dest"
    root.mkdir()
    if kind == "file":
        return Workspace(
            root, "file", {"tycho": {"backend": "file"}, "file": {"path": str(tmp_path / "dest-registry")}}
        )
    seaweed = request.getfixturevalue("seaweed")
    bucket = seaweed.new_bucket()
    return Workspace(root, "s3", s3_config(seaweed, bucket), seaweed=seaweed, bucket=bucket)


def populate(ws: Workspace, alice: Path) -> dict[str, bytes]:
    data = {v: f"narf {v}\n".encode() * (100 + i) for i, v in enumerate(("1.0", "1.1", "2.0"))}
    ws.ok("init", "narf", "narf.bin")
    ws.ok("push", "narf", "1.0", str(ws.file("a", data["1.0"])), "--sign", str(alice), "--note", "first")
    ws.ok("push", "narf", "1.1", str(ws.file("b", data["1.1"])), "--sign", str(alice))
    ws.ok("push", "narf", "2.0", str(ws.file("c", data["2.0"])), "--promote-latest")
    ws.ok("tag", "narf", "1.1", "stable")
    ws.ok("yank", "narf", "1.0", "--reason", "broken")
    ws.ok("init", "tool", "tool.bin")
    ws.ok("push", "tool", "0.1", str(ws.file("d", b"tool")), "--promote-latest")
    return data


def listing(ws: Workspace, package: str) -> list[dict]:
    keep = ("version", "size", "sha256", "pushed_at", "pushed_by", "note", "tags", "yanked", "yank_reason")
    return [{k: row[k] for k in keep} for row in ws.ok("list-versions", package, "--json").json()]


@pytest.mark.parametrize("kinds", [("file", "s3"), ("s3", "file"), ("s3", "s3")], ids=lambda k: "-to-".join(k))
def test_mirror_between_backends(
    kinds: tuple[str, str], tmp_path: Path, request: pytest.FixtureRequest, seaweed
) -> None:
    src_kind, dst_kind = kinds
    src_root = tmp_path / "src"
    src_root.mkdir()
    if src_kind == "file":
        src = Workspace(src_root, "file", {"tycho": {"backend": "file"}, "file": {"path": str(tmp_path / "src-reg")}})
    else:
        bucket = seaweed.new_bucket()
        src = Workspace(src_root, "s3", s3_config(seaweed, bucket), seaweed=seaweed, bucket=bucket)
    src.write_config()
    dst = destination(tmp_path, dst_kind, request)
    dst.write_config()
    alice = keygen(tmp_path, "alice")
    populate(src, alice)

    done = src.ok("mirror", "--to", str(dst.root / ".tychoreg.json"), "--json").json()
    assert done["copied"] == [{"package": "narf", "version": v} for v in ("1.0", "1.1", "2.0")] + [
        {"package": "tool", "version": "0.1"}
    ]
    assert done["skipped"] == 0 and done["conflicts"] == [] and done["failed"] == []
    assert done["signatures"] == 2
    for package in ("narf", "tool"):
        assert listing(dst, package) == listing(src, package)
    assert dst.ok("list", "--json").json() == src.ok("list", "--json").json()
    assert dst.ok("info", "narf", "1.0", "--json").json()["note"] == "first"

    # the destination, trusting the source's signers, verifies what was copied
    (dst.root / "allowed_signers").write_text(f"alice@example.com {public(alice)}\n")
    dst.config["tycho"].update({"trusted_signers": "allowed_signers", "require_signatures": True})
    dst.write_config()
    pulled = dst.ok("pull", "narf", "--version", "stable")
    assert "signed by alice@example.com" in pulled.out
    assert (dst.root / "tycho_packages/narf.bin").read_bytes() == src.read_stored("narf/tycho_1.1.pkg")
    assert dst.run("pull", "narf").code == 1  # 2.0 is unsigned, and the destination requires signatures

    # a signature added on the source later follows on the next run; nothing else moves
    src.ok("sign", "narf", "2.0", "--key", str(alice))
    again = src.ok("mirror", "--to", str(dst.root / ".tychoreg.json"), "--json").json()
    assert again["copied"] == [] and again["skipped"] == 4 and again["signatures"] == 1 and again["bytes"] == 0
    assert "signed by alice@example.com" in dst.ok("pull", "narf").out
    quiet = src.ok("mirror", "--to", str(dst.root / ".tychoreg.json"))
    assert "Nothing to copy: 4 versions already" in quiet.err


def test_conflict_is_reported_not_overwritten(ws: Workspace, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    dst = destination(tmp_path, "file", request)
    dst.write_config()
    ws.ok("init", "narf", "narf.bin")
    ws.ok("push", "narf", "1.0", str(ws.file("a", b"source 1.0")), "--promote-latest")
    ws.ok("push", "narf", "2.0", str(ws.file("b", b"source 2.0")))
    ws.ok("tag", "narf", "1.0", "stable")
    dst.ok("init", "narf", "narf.bin")
    dst.ok("push", "narf", "1.0", str(dst.file("x", b"other bytes")))
    result = ws.run("mirror", "--to", str(dst.root / ".tychoreg.json"), "--json")
    assert result.code == 1
    done = result.json()
    assert [(c["package"], c["version"]) for c in done["conflicts"]] == [("narf", "1.0")]
    assert done["copied"] == [{"package": "narf", "version": "2.0"}]
    assert "conflict: narf 1.0" in result.err and "not overwritten" in result.err
    assert dst.read_stored("narf/tycho_1.0.pkg") == b"other bytes"
    assert dst.read_stored("narf/tycho_2.0.pkg") == b"source 2.0"
    doc = json.loads(dst.read_stored("narf/tycho.json"))
    assert doc["latest"] is None and "tychoreg" not in doc  # no reference moved to the conflicting version


def test_a_second_run_transfers_zero_data_bytes(proxied_s3, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """Counted at the wire: the source's S3 traffic goes through a proxy that records requests
    and response bytes; the second run reads no data object and the destination gets no write."""
    ws, proxy = proxied_s3
    dst = destination(tmp_path, "file", request)
    dst.write_config()
    ws.ok_all(
        ["init", "narf", "narf.bin"],
        *(["push", "narf", f"1.{i}", str(ws.file(f"v{i}", os.urandom(200_000 + i)))] for i in range(6)),
        ["promote", "narf", "1.5"],
    )

    def data_reads() -> list[tuple[str, str, int]]:
        return [s for s in proxy.seen if s[0] == "GET" and "/narf/tycho_" in s[1]]

    proxy.seen.clear()
    first = ws.ok("mirror", "--to", str(dst.root / ".tychoreg.json"), "--json").json()
    assert len(first["copied"]) == 6 and first["bytes"] == sum(200_000 + i for i in range(6))
    assert len(data_reads()) >= 6
    before = {k: dst.read_stored(k) for k in dst.stored_keys() if not k.startswith(".tycho-lock")}

    proxy.seen.clear()
    second = ws.ok("mirror", "--to", str(dst.root / ".tychoreg.json"), "--json").json()
    assert second["copied"] == [] and second["skipped"] == 6 and second["bytes"] == 0
    assert data_reads() == [], data_reads()
    assert {k: dst.read_stored(k) for k in dst.stored_keys() if not k.startswith(".tycho-lock")} == before
    print(f"FIGURES mirror second run: {len(proxy.seen)} requests to the source, 0 data reads")


def test_dry_run_changes_nothing(ws: Workspace, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    dst = destination(tmp_path, "file", request)
    dst.write_config()
    ws.ok("init", "narf", "narf.bin")
    ws.ok("push", "narf", "1.0", str(ws.file("a", b"one")), "--promote-latest")
    done = ws.ok("mirror", "narf", "--to", str(dst.root / ".tychoreg.json"), "--dry-run", "--json").json()
    assert done["dry_run"] is True and done["copied"] == [{"package": "narf", "version": "1.0"}]
    assert "narf latest -> 1.0" in done["refs"]
    assert not (tmp_path / "dest-registry").exists() or dst.stored_keys() <= {".tycho-lock"}
    unknown = ws.run("mirror", "nope", "--to", str(dst.root / ".tychoreg.json"))
    assert unknown.code == 1 and "no package nope" in unknown.err
    bad = ws.run("mirror", "--to", str(tmp_path / "missing.json"))
    assert bad.code == 2


def test_a_killed_copy_is_resumed_by_the_next_run(
    file_backend, tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A copy killed after claiming the version on the destination (before its data went in)
    leaves a young claim there; the next run writes the very same record, recognises the claim
    as its own and completes (instead of "being pushed by someone else" for an hour)."""
    from interleave import Killed
    from tychoreg import Registry
    from tychoreg import publish as publish_module

    src_cfg = tmp_path / "src.json"
    src_cfg.write_text(json.dumps({"tycho": {"backend": "file"}, "file": {"path": str(tmp_path / "src-reg")}}))
    dst_cfg = tmp_path / "dst.json"
    dst_cfg.write_text(json.dumps({"tycho": {"backend": "file"}, "file": {"path": str(tmp_path / "dst-reg")}}))
    src, dst = Registry.from_config(src_cfg), Registry.from_config(dst_cfg)
    src.init("narf", "narf.bin")
    payload = os.urandom(300_000)
    (tmp_path / "p").write_bytes(payload)
    src.push("narf", "1.0", tmp_path / "p", promote_latest=True)

    real = publish_module._Push.commit
    monkeypatch.setattr(publish_module._Push, "commit", lambda self, claim: (_ for _ in ()).throw(Killed()))
    with pytest.raises(Killed):
        src.mirror(dst)
    assert (tmp_path / "dst-reg/narf/.tycho/versions/1.0.json").exists()  # the claim it left
    assert not (tmp_path / "dst-reg/narf/tycho_1.0.pkg").exists()
    monkeypatch.setattr(publish_module._Push, "commit", real)
    done = src.mirror(dst)
    assert done.copied == [("narf", "1.0")] and not done.failed and not done.conflicts
    assert (tmp_path / "dst-reg/narf/tycho_1.0.pkg").read_bytes() == payload
    assert [v.ok for v in dst.verify()] == [True]
    assert dst.resolve("narf").sha256 == hashlib.sha256(payload).hexdigest()


def test_sigkill_mid_mirror_then_rerun(s3_ws: Workspace, tmp_path: Path) -> None:
    """SIGKILL a real mirror process (file registry to S3) while it copies; the destination holds
    only complete, verified versions; the next run finishes the rest and moves refs last."""
    src_cfg = {"tycho": {"backend": "file"}, "file": {"path": str(tmp_path / "src-reg")}}
    (s3_ws.root / "src.json").write_text(json.dumps(src_cfg))
    s3_ws.ok("--config", "src.json", "init", "big", "big.bin")
    sizes = {}
    for i in range(8):
        data = os.urandom(6 * 1024 * 1024 + i)
        sizes[f"1.{i}"] = hashlib.sha256(data).hexdigest()
        s3_ws.ok("--config", "src.json", "push", "big", f"1.{i}", str(s3_ws.file(f"b{i}", data)))
    s3_ws.ok("--config", "src.json", "promote", "big", "1.7")
    args = [sys.executable, "-m", "tychoreg", "--config", "src.json", "mirror", "--to", ".tychoreg.json"]
    proc = subprocess.Popen(args, cwd=s3_ws.root, env=s3_ws.base_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any(k.startswith("big/tycho_") for k in s3_ws.stored_keys()):
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    copied_before = {k for k in s3_ws.stored_keys() if k.startswith("big/tycho_")}
    assert len(copied_before) < 8, "the mirror finished before it could be killed"
    if "big/tycho.json" in s3_ws.stored_keys():
        assert json.loads(s3_ws.read_stored("big/tycho.json"))["latest"] is None  # refs move last
    verified = s3_ws.run("verify", "--json")
    assert all(v["ok"] for v in verified.json()), verified.out  # what is visible is complete and verified

    done = s3_ws.ok("--config", "src.json", "mirror", "--to", ".tychoreg.json", "--json").json()
    assert done["failed"] == [] and done["conflicts"] == []
    assert done["skipped"] + len(done["copied"]) == 8 and done["skipped"] >= len(copied_before)
    listed = {v["version"]: v["sha256"] for v in s3_ws.ok("list-versions", "big", "--json").json()}
    assert listed == sizes
    assert json.loads(s3_ws.read_stored("big/tycho.json"))["latest"] == "1.7"
    assert all(v["ok"] for v in s3_ws.ok("verify", "--json").json())
    print(f"FIGURES mirror killed after {len(copied_before)} of 8 versions; the rerun copied {len(done['copied'])}")


def test_versions_pushed_by_0_4_0_are_copied_and_checked(
    s3_ws: Workspace, seed_tychoreg: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    dst = destination(tmp_path, "file", request)
    dst.write_config()

    def seed(*args: str) -> None:
        proc = subprocess.run(
            [str(seed_tychoreg), *args], cwd=s3_ws.root, env=s3_ws.base_env(), capture_output=True, text=True
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr

    old = os.urandom(9 * 1024 * 1024)  # multipart: checked by its ETag of part MD5s
    s3_ws.file("old.bin", old)
    seed("init", "legacy", "legacy.bin")
    seed("push", "legacy", "1.0", "old.bin", "--promote-latest")
    first = s3_ws.ok("mirror", "--to", str(dst.root / ".tychoreg.json"), "--json").json()
    assert first["copied"] == [{"package": "legacy", "version": "1.0"}]
    pulled = dst.ok("pull", "legacy")
    assert "sha256 verified" in pulled.out
    assert (dst.root / "tycho_packages/legacy.bin").read_bytes() == old
    second = s3_ws.ok("mirror", "--to", str(dst.root / ".tychoreg.json"), "--json").json()
    assert second["copied"] == [] and second["skipped"] == 1 and second["bytes"] == 0
    # other bytes under the same version on the destination: a conflict, found by hashing
    dst.write_stored("legacy/tycho_1.0.pkg", os.urandom(len(old)))
    third = s3_ws.run("mirror", "--to", str(dst.root / ".tychoreg.json"), "--json")
    assert third.code == 1 and third.json()["conflicts"][0]["version"] == "1.0"


def test_destination_secrets_stay_masked(ws: Workspace, tmp_path: Path, seaweed) -> None:
    """A destination config whose credentials are wrong: exit 1, and no secret in any output."""
    ws.ok("init", "narf", "narf.bin")
    ws.ok("push", "narf", "1.0", str(ws.file("a", b"x")))
    cfg = s3_config(seaweed, seaweed.new_bucket())
    cfg["s3"]["aws_secret_access_key"] = "WRONG" + SECRET_KEY[5:]
    cfg["s3"]["aws_access_key_id"] = ACCESS_KEY
    path = tmp_path / "dst.json"
    path.write_text(json.dumps(cfg))
    path.chmod(0o600)
    result = ws.run("mirror", "--to", str(path))
    assert result.code == 1
    assert cfg["s3"]["aws_secret_access_key"] not in result.all
