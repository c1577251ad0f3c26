"""Signed versions: SSH signatures made by tychoreg verify with ``ssh-keygen -Y verify`` and those
made by ``ssh-keygen -Y sign`` verify in tychoreg; every pull, pull-list, sync, lock and verify
checks them against ``tycho.trusted_signers``; a bad, untrusted, expired, revoked or copied
signature (and, where required, a missing one) is refused with nothing written."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from conftest import Result, Workspace

pytestmark = pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="needs OpenSSH's ssh-keygen")

NARF = b"narf 1.0 bytes\n" * 50
TWO = b"narf 2.0 bytes\n" * 70


def keygen(folder: Path, name: str, kind: str = "ed25519", passphrase: str = "") -> Path:
    key = folder / name
    args = ["-t", kind] + (["-b", "2048"] if kind == "rsa" else [])
    subprocess.run(["ssh-keygen", "-q", *args, "-N", passphrase, "-C", name, "-f", str(key)], check=True)
    return key


def public(key: Path) -> str:
    return " ".join(key.with_suffix(".pub").read_text().split()[:2])


def statement(package: str, version: str, data: bytes) -> bytes:
    sha = hashlib.sha256(data).hexdigest()
    return f"tychoreg-signed-version 1\npackage {package}\nversion {version}\nsize {len(data)}\nsha256 {sha}\n".encode()


def ssh_sign(key: Path, message: bytes, namespace: str = "tychoreg") -> bytes:
    return subprocess.run(
        ["ssh-keygen", "-q", "-Y", "sign", "-f", str(key), "-n", namespace],
        input=message,
        capture_output=True,
        check=True,
    ).stdout


def sig_key(package: str, version: str, data: bytes, key: Path) -> str:
    """Where a signature of ``data`` by ``key`` is stored (docs/FORMAT.md, "Signatures")."""
    import base64

    blob = base64.b64decode(public(key).split()[1])
    sha = hashlib.sha256(data).hexdigest()
    return f"{package}/.tycho/signatures/{version}/{sha}.{hashlib.sha256(blob).hexdigest()}.sig"


def trust(ws: Workspace, lines: list[str], *, required: bool = False, revoked: list[str] | None = None) -> None:
    (ws.root / "allowed_signers").write_text("".join(line + "\n" for line in lines))
    ws.config["tycho"]["trusted_signers"] = "allowed_signers"
    ws.config["tycho"]["require_signatures"] = required
    if revoked is not None:
        (ws.root / "revoked").write_text("".join(line + "\n" for line in revoked))
        ws.config["tycho"]["revoked_signers"] = "revoked"
    ws.write_config()


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, Path]:
    folder = tmp_path / "keys"
    folder.mkdir()
    return {
        "alice": keygen(folder, "alice"),
        "bob": keygen(folder, "bob", "ecdsa"),
        "carol": keygen(folder, "carol", "rsa"),
        "mallory": keygen(folder, "mallory"),
    }


def published(ws: Workspace, *, sign: Path | None = None) -> None:
    ws.ok("init", "narf", "narf.bin")
    extra = ["--sign", str(sign)] if sign else []
    ws.ok("push", "narf", "1.0", str(ws.file("one.bin", NARF)), "--promote-latest", *extra)
    ws.ok("push", "narf", "2.0", str(ws.file("two.bin", TWO)), *extra)


def refused(ws: Workspace, result: Result, *words: str) -> None:
    assert result.code == 1, result.all
    assert not (ws.root / "tycho_packages").exists() or not any((ws.root / "tycho_packages").iterdir())
    assert not list(ws.root.glob("tycho_packages/.*"))
    for word in words:
        assert word in result.err, result.err


def test_pushed_signature_verifies_with_ssh_keygen_and_on_pull(ws: Workspace, keys: dict[str, Path]) -> None:
    published(ws, sign=keys["alice"])
    stored = ws.read_stored(sig_key("narf", "1.0", NARF, keys["alice"]))
    sig = ws.root / "narf.sig"
    sig.write_bytes(stored)
    allowed = ws.root / "allowed_signers"
    allowed.write_text(f"alice@example.com {public(keys['alice'])}\n")
    check = subprocess.run(
        ["ssh-keygen", "-Y", "verify", "-f", str(allowed), "-I", "alice@example.com", "-n", "tychoreg", "-s", str(sig)],
        input=statement("narf", "1.0", NARF),
        capture_output=True,
    )
    assert check.returncode == 0, check.stderr
    assert b'Good "tychoreg" signature for alice@example.com' in check.stdout + check.stderr
    # ... and not for another statement (ssh-keygen agrees the statement is what is signed)
    other = subprocess.run(
        ["ssh-keygen", "-Y", "verify", "-f", str(allowed), "-I", "alice@example.com", "-n", "tychoreg", "-s", str(sig)],
        input=statement("narf", "2.0", NARF),
        capture_output=True,
    )
    assert other.returncode != 0

    trust(ws, ["alice@example.com " + public(keys["alice"])], required=True)
    pulled = ws.ok("pull", "narf")
    assert "signed by alice@example.com" in pulled.out
    assert (ws.root / "tycho_packages/narf.bin").read_bytes() == NARF
    info = ws.ok("info", "narf", "1.0", "--json").json()
    assert info["signed_by"] == ["alice@example.com"]
    assert "signed by:  alice@example.com" in ws.ok("info", "narf", "1.0").out
    verified = ws.ok("verify", "--json").json()
    assert [(v["version"], v["ok"], v["signed_by"]) for v in verified] == [
        ("1.0", True, ["alice@example.com"]),
        ("2.0", True, ["alice@example.com"]),
    ]


@pytest.mark.parametrize("kind", ["alice", "bob", "carol"])
def test_ssh_keygen_signatures_verify_in_tychoreg(ws: Workspace, keys: dict[str, Path], kind: str) -> None:
    """ed25519, ECDSA and RSA keys: ``ssh-keygen -Y sign`` on the canonical statement, stored where
    the format says, verifies in tychoreg (pure Python: no ssh-keygen on the pulling side)."""
    published(ws)
    key = keys[kind]
    ws.write_stored(sig_key("narf", "2.0", TWO, key), ssh_sign(key, statement("narf", "2.0", TWO)))
    trust(ws, [f'"{kind}@example.com" {public(key)}'], required=True)
    pulled = ws.ok("pull", "narf", "--version", "2.0", env={"PATH": "/nonexistent"})
    assert f"signed by {kind}@example.com" in pulled.out
    assert (ws.root / "tycho_packages/narf.bin").read_bytes() == TWO


def test_second_signature_and_sign_json(ws: Workspace, keys: dict[str, Path]) -> None:
    published(ws, sign=keys["alice"])
    signed = ws.ok("sign", "narf", "latest", "--key", str(keys["bob"]), "--json").json()
    assert signed["package"] == "narf" and signed["version"] == "1.0" and signed["added"] is True
    assert signed["sha256"] == hashlib.sha256(NARF).hexdigest()
    again = ws.ok("sign", "narf", "1.0", "--key", str(keys["bob"]), "--json").json()
    assert again["added"] is False and again["key"] == signed["key"]
    trust(ws, [f"bob@example.com {public(keys['bob'])}"])  # alice's is untrusted here, bob's suffices
    assert "signed by bob@example.com" in ws.ok("pull", "narf").out


def _tamper_cases(ws: Workspace, keys: dict[str, Path]) -> dict[str, tuple[bytes, list[str]]]:
    alice = keys["alice"]
    other_size = statement("narf", "1.0", NARF)[:-1] + b"0\n"
    return {
        "tampered statement": (ssh_sign(alice, other_size), ["does not verify"]),
        "garbage": (b"-----BEGIN SSH SIGNATURE-----\nAAAA\n-----END SSH SIGNATURE-----\n", ["does not verify"]),
        "wrong namespace": (ssh_sign(alice, statement("narf", "1.0", NARF), "git"), ["namespace"]),
        "another version's signature": (ssh_sign(alice, statement("narf", "2.0", TWO)), ["does not verify"]),
    }


@pytest.mark.parametrize("required", [False, True])
def test_bad_signatures_are_refused_with_nothing_written(ws: Workspace, keys: dict[str, Path], required: bool) -> None:
    published(ws)
    trust(ws, [f"alice@example.com {public(keys['alice'])}"], required=required)
    where = sig_key("narf", "1.0", NARF, keys["alice"])
    for name, (body, words) in _tamper_cases(ws, keys).items():
        ws.write_stored(where, body)
        result = ws.run("pull", "narf")
        refused(ws, result, "narf 1.0", *words)
        assert "Traceback" not in result.all, name
        assert ws.run("verify", "narf", "1.0").code == 1
        assert ws.run("pull-list", "narf").code == 1


def test_copied_signature_of_another_version_is_refused(ws: Workspace, keys: dict[str, Path]) -> None:
    """2.0's signature copied under 1.0's name (the digest 1.0's bytes have): it signs 2.0's
    statement, so it does not verify for 1.0."""
    published(ws)
    ws.ok("sign", "narf", "2.0", "--key", str(keys["alice"]))
    trust(ws, [f"alice@example.com {public(keys['alice'])}"], required=True)
    stolen = ws.read_stored(sig_key("narf", "2.0", TWO, keys["alice"]))
    ws.write_stored(sig_key("narf", "1.0", NARF, keys["alice"]), stolen)
    refused(ws, ws.run("pull", "narf", "--version", "1.0"), "narf 1.0", "does not verify")
    # copied under its own digest into 1.0's folder, it names bytes 1.0 does not
    # have, so it is never looked at for 1.0 (which is then unsigned: required, so refused)
    ws.write_stored(sig_key("narf", "1.0", NARF, keys["alice"]), b"")
    ws.write_stored(sig_key("narf", "1.0", TWO, keys["alice"]), stolen)
    refused(ws, ws.run("pull", "narf", "--version", "1.0"), "narf 1.0")


def test_wrong_expired_and_revoked_signers_are_refused(ws: Workspace, keys: dict[str, Path]) -> None:
    published(ws)
    ws.ok("sign", "narf", "1.0", "--key", str(keys["mallory"]))
    trust(ws, [f"alice@example.com {public(keys['alice'])}"])
    refused(ws, ws.run("pull", "narf"), "narf 1.0", "is not a trusted signer")

    ws.ok("sign", "narf", "2.0", "--key", str(keys["alice"]))
    past = (datetime.now(timezone.utc) - timedelta(days=2)).strftime("%Y%m%dZ")
    future = (datetime.now(timezone.utc) + timedelta(days=2)).strftime("%Y%m%d%H%M%SZ")
    trust(ws, [f'alice@example.com valid-before="{past}" {public(keys["alice"])}'])
    refused(ws, ws.run("pull", "narf", "--version", "2.0"), "narf 2.0", "expired")
    trust(ws, [f'alice@example.com valid-after="{future}" {public(keys["alice"])}'])
    refused(ws, ws.run("pull", "narf", "--version", "2.0"), "narf 2.0", "valid only after")
    trust(ws, [f'alice@example.com namespaces="git,file" {public(keys["alice"])}'])
    refused(ws, ws.run("pull", "narf", "--version", "2.0"), "narf 2.0", "namespaces")
    trust(ws, [f"alice@example.com {public(keys['alice'])}"], revoked=[public(keys["alice"])])
    refused(ws, ws.run("pull", "narf", "--version", "2.0"), "narf 2.0", "revoked")
    trust(ws, [f'alice@example.com namespaces="tycho*,!git" {public(keys["alice"])}'], revoked=[])
    assert "signed by alice@example.com" in ws.ok("pull", "narf", "--version", "2.0").out


def test_unsigned_warns_or_is_refused_when_required(ws: Workspace, keys: dict[str, Path]) -> None:
    published(ws)
    trust(ws, [f"alice@example.com {public(keys['alice'])}"])
    pulled = ws.ok("pull", "narf")
    assert "warning: narf 1.0 is not signed" in pulled.err
    os.remove(ws.root / "tycho_packages/narf.bin")
    trust(ws, [f"alice@example.com {public(keys['alice'])}"], required=True)
    refused(ws, ws.run("pull", "narf"), "narf 1.0 is not signed", "required")
    refused(ws, ws.run("pull-list", "narf"), "narf 1.0 is not signed")
    assert ws.run("verify").code == 1
    ws.ok("sign", "narf", "1.0", "--key", str(keys["alice"]))
    ws.ok("pull", "narf")


def test_lock_records_the_signer_and_sync_checks_it_offline(ws: Workspace, keys: dict[str, Path]) -> None:
    published(ws, sign=keys["alice"])
    trust(ws, [f"alice@example.com {public(keys['alice'])}"], required=True)
    ws.config["packages"] = {"narf": "^1"}
    ws.write_config()
    locked = ws.ok("lock")
    assert "signed by alice@example.com" in locked.out
    entry = json.loads((ws.root / "tycho.lock").read_text())["packages"]["narf"]
    assert entry["signer"] == "alice@example.com"
    assert entry["signature"].startswith("-----BEGIN SSH SIGNATURE-----")
    synced = ws.ok("sync")
    assert "signed by alice@example.com" in synced.out
    # offline: the lock's signature is checked against the trusted signers, no registry needed
    os.remove(ws.root / "tycho_packages/narf.bin")
    assert "signed by alice@example.com" in ws.ok("sync", "--offline").out
    # a lock whose signature was swapped for another's is not believed; the registry decides
    doc = json.loads((ws.root / "tycho.lock").read_text())
    doc["packages"]["narf"]["signature"] = ssh_sign(keys["mallory"], statement("narf", "2.0", TWO)).decode()
    (ws.root / "tycho.lock").write_text(json.dumps(doc))
    os.remove(ws.root / "tycho_packages/narf.bin")
    offline = ws.run("sync", "--offline")
    assert offline.code == 1 and "no signature that the trusted signers accept" in offline.err
    assert not (ws.root / "tycho_packages/narf.bin").exists()
    assert "signed by alice@example.com" in ws.ok("sync", "--locked").out
    # older locks (no signer) still read
    del doc["packages"]["narf"]["signer"], doc["packages"]["narf"]["signature"]
    (ws.root / "tycho.lock").write_text(json.dumps(doc))
    ws.ok("sync", "--locked")


def test_unsigned_version_makes_lock_fail_with_nothing_written(ws: Workspace, keys: dict[str, Path]) -> None:
    published(ws)
    trust(ws, [f"alice@example.com {public(keys['alice'])}"], required=True)
    ws.config["packages"] = {"narf": "^1"}
    ws.write_config()
    result = ws.run("sync")
    assert result.code == 1 and "not signed" in result.err
    assert not (ws.root / "tycho.lock").exists()
    assert not (ws.root / "tycho_packages").exists()


def test_config_signing_key_signs_every_push(ws: Workspace, keys: dict[str, Path]) -> None:
    shutil.copy(keys["alice"], ws.root / "ci_key")
    (ws.root / "ci_key").chmod(0o600)
    ws.config["tycho"]["signing_key"] = "ci_key"
    ws.write_config()
    ws.ok("init", "narf", "narf.bin")
    pushed = ws.ok("push", "narf", "1.0", str(ws.file("one.bin", NARF)), "--promote-latest")
    assert "Signed narf 1.0 with SHA256:" in pushed.out
    trust(ws, [f"alice@example.com {public(keys['alice'])}"], required=True)
    assert "signed by alice@example.com" in ws.ok("pull", "narf").out


def test_signing_problems(ws: Workspace, keys: dict[str, Path], tmp_path: Path) -> None:
    published(ws)
    no_key = ws.run("sign", "narf", "1.0")
    assert no_key.code == 2 and "no key to sign with" in no_key.err and "hint:" in no_key.err
    missing = ws.run("sign", "narf", "1.0", "--key", str(tmp_path / "nope"))
    assert missing.code == 2 and "cannot read the signing key" in missing.err
    before = ws.stored_keys()
    typo = ws.run("push", "narf", "3.0", str(ws.file("three.bin", b"3")), "--sign", str(tmp_path / "nope"))
    assert typo.code == 2 and ws.stored_keys() == before  # refused before any upload
    locked = keygen(tmp_path / "keys", "locked", passphrase="secret words")
    failed = ws.run("sign", "narf", "1.0", "--key", str(locked))  # no terminal to ask the passphrase on
    assert failed.code == 1 and "could not sign" in failed.err and "hint:" in failed.err
    assert not [k for k in ws.stored_keys() if ".tycho/signatures/" in k]
    ranged = ws.run("sign", "narf", "^1", "--key", str(keys["alice"]))
    assert ranged.code == 2


def test_trust_files_are_confined_and_checked(ws: Workspace, keys: dict[str, Path], tmp_path: Path) -> None:
    published(ws)
    outside = tmp_path / "elsewhere"
    outside.write_text(f"alice@example.com {public(keys['alice'])}\n")
    for setting, value in (
        ("trusted_signers", str(outside)),
        ("trusted_signers", "../elsewhere"),
        ("signing_key", str(keys["alice"])),  # the user's own key, named by a cloned config
        ("revoked_signers", "../elsewhere"),
    ):
        ws.config["tycho"] = {k: v for k, v in ws.config["tycho"].items() if k == "backend"}
        ws.config["tycho"]["trusted_signers"] = "allowed_signers"
        (ws.root / "allowed_signers").write_text("")
        ws.config["tycho"][setting] = value
        ws.write_config()
        result = ws.run("list")
        assert result.code == 2, (setting, result.all)
        assert f"tycho.{setting}" in result.err and "outside" in result.err
    (ws.root / "linked").symlink_to(outside)
    ws.config["tycho"] = {"backend": ws.config["tycho"]["backend"], "trusted_signers": "linked"}
    ws.write_config()
    assert ws.run("pull", "narf").code == 2
    ws.config["tycho"] = {"backend": ws.config["tycho"]["backend"], "trusted_signers": "missing_file"}
    ws.write_config()
    missing = ws.run("pull", "narf")
    assert missing.code == 2 and "cannot read tycho.trusted_signers" in missing.err
    (ws.root / "bad_signers").write_text("# fine\nalice@example.com ssh-ed25519 not-base64!! secret-looking-comment\n")
    ws.config["tycho"]["trusted_signers"] = "bad_signers"
    ws.write_config()
    bad = ws.run("pull", "narf")
    assert bad.code == 2 and "line 2" in bad.err and "secret-looking-comment" not in bad.err
    ws.config["tycho"] = {"backend": ws.config["tycho"]["backend"], "require_signatures": True}
    ws.write_config()
    assert ws.run("list").code == 2
    assert not (ws.root / "tycho_packages").exists()


def test_a_version_pushed_without_a_record_is_verified_by_its_signature(
    s3_ws: Workspace, keys: dict[str, Path], seed_tychoreg: Path
) -> None:
    """0.4.0 pushes (no SHA-256); `sign` reads and checks it by size and ETag and signs its
    SHA-256; pulls then verify its bytes against the signed digest."""

    def seed(*args: str) -> None:
        proc = subprocess.run(
            [str(seed_tychoreg), *args], cwd=s3_ws.root, env=s3_ws.base_env(), capture_output=True, text=True
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr

    s3_ws.file("one.bin", NARF)
    seed("init", "narf", "narf.bin")
    seed("push", "narf", "1.0", "one.bin", "--promote-latest")
    signed = s3_ws.ok("sign", "narf", "1.0", "--key", str(keys["alice"]), "--json").json()
    assert signed["sha256"] == hashlib.sha256(NARF).hexdigest()
    trust(s3_ws, [f"alice@example.com {public(keys['alice'])}"], required=True)
    pulled = s3_ws.ok("pull", "narf")
    assert "sha256 verified, signed by alice@example.com" in pulled.out and "unverified" not in pulled.err
    # other bytes swapped in by a tool that writes no record: refused against the signed digest
    s3_ws.write_stored("narf/tycho_1.0.pkg", NARF[:-1] + b"X")
    os.remove(s3_ws.root / "tycho_packages/narf.bin")
    result = s3_ws.run("pull", "narf")
    assert result.code == 1 and "verified it before" in result.err  # this machine remembers the digest
    shutil.rmtree(s3_ws.root / "home/.cache/tychoreg/known")  # another machine: the signature decides
    result = s3_ws.run("pull", "narf", "--no-cache")  # (the cache would hand out the signed bytes)
    assert result.code == 1 and "failed verification" in result.err
    assert not (s3_ws.root / "tycho_packages/narf.bin").exists()


def test_allowed_signers_parsing_and_patterns() -> None:
    from tychoreg import sshsig

    blob = "AAAAC3NzaC1lZDI1NTE5AAAAIOwDUTz0N8Ez0tKGpcDk0Ugl6bI7JtO8LqRRQzMs7EYe"
    text = (
        "# comment\n\n"
        f'"a b@x,c@y" cert-authority,namespaces="tychoreg,git" ssh-ed25519 {blob} comment\n'
        f'  d@z VALID-AFTER="20200101",valid-before="20991231235959Z" ssh-ed25519 {blob}\n'
        f"e@w ssh-ed25519 {blob}\n"
    )
    lines = sshsig.parse_allowed_signers(text)
    assert [line.principals for line in lines] == ["a b@x,c@y", "d@z", "e@w"]
    assert lines[0].cert_authority and lines[0].namespaces == "tychoreg,git"
    assert lines[1].valid_before == datetime(2099, 12, 31, 23, 59, 59, tzinfo=timezone.utc)
    assert lines[1].valid_after is not None and lines[1].valid_after.year == 2020
    for bad in (
        f'x@y namespaces="a ssh-ed25519 {blob}',
        f"x@y bogus=1 ssh-ed25519 {blob}",
        f'x@y valid-before="2020" ssh-ed25519 {blob}',
        "x@y ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIOwDUTz0N8Ez0tKGpcDk0Ugl6bI7JtO8LqRRQzMs7EYe",
        "lonely",
    ):
        with pytest.raises(ValueError, match="line 1"):
            sshsig.parse_allowed_signers(bad)
    assert sshsig.match_pattern_list("tycho*,!git", "tychoreg")
    assert not sshsig.match_pattern_list("*,!tychoreg", "tychoreg")
    assert not sshsig.match_pattern_list("git", "tychoreg")
    assert sshsig.match_pattern_list("t?choreg", "tychoreg") and not sshsig.match_pattern_list("[t]ychoreg", "tychoreg")
    with pytest.raises(ValueError, match="KRL"):
        sshsig.parse_revoked("SSHKRL\n")


def test_a_pushed_folder_is_signed_too(ws: Workspace, keys: dict[str, Path]) -> None:
    """push --sign of a folder signs the archive it was packed into, and a pull checks it."""
    tree = ws.root / "tree"
    (tree / "bin").mkdir(parents=True)
    (tree / "bin" / "tool").write_bytes(b"#!/bin/sh\necho hi\n")
    ws.ok("init", "site", "site.tar.gz")
    pushed = ws.ok("push", "site", "1.0", str(tree), "--sign", str(keys["alice"]), "--promote-latest")
    assert "Signed site 1.0" in pushed.out
    trust(ws, [f"alice@example.com {public(keys['alice'])}"], required=True)
    pulled = ws.ok("pull", "site", "--extract", "out")
    assert "signed by alice@example.com" in pulled.out + pulled.err
    assert (ws.root / "out" / "bin" / "tool").read_bytes() == b"#!/bin/sh\necho hi\n"
