"""A cloned repository's ``.tychoreg.json`` and ``tycho.lock``, and strings from storage, as the
attacker: they must not unpack outside the project, read other files, send or print the user's
secrets, crash the parser, or drive the user's terminal.

Everything runs the real command line (``conftest.Workspace``). Where a secret could leave the
machine, the config points at a small local HTTP server that records every request, and the
test asserts the secret never reached it.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import tarfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from conftest import Result, Seaweed, Workspace, s3_config

VICTIM_SECRET = "victim-SECRET-4d7c1e9a0b"  # what the attacker is after
VICTIM_TOKEN = "glcbt-victimTOKEN-77aa31"
ESC = "\x1b"


# -- helpers --------------------------------------------------------------------------------
class Recorder:
    """An HTTP server on loopback that answers every request 403 (as S3 would without access) and
    remembers the request line, headers and body, so a test can look for a secret in them."""

    def __init__(self, status: int = 403, code: str = "AccessDenied", message: str = "no") -> None:
        seen: list[str] = []
        self.seen = seen
        payload = (
            f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{code}</Code><Message>{message}</Message></Error>"
        ).encode()

        class Handler(BaseHTTPRequestHandler):
            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode("latin-1") if length else ""
                seen.append(f"{self.requestline}\n{self.headers}\n{body}")
                self.send_response(status)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _any

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def text(self) -> str:
        return "\n".join(self.seen)


@contextlib.contextmanager
def recording(**answer: object) -> Iterator[Recorder]:
    rec = Recorder(**answer)  # type: ignore[arg-type]
    rec.thread.start()
    try:
        yield rec
    finally:
        rec.server.shutdown()
        rec.server.server_close()


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    with recording() as rec:
        yield rec


@pytest.fixture
def project(tmp_path: Path) -> Workspace:
    """A file-backend project; confinement rules do not depend on the backend."""
    root = tmp_path / "project"
    root.mkdir()
    space = Workspace(root, "file", {"tycho": {"backend": "file"}, "file": {"path": str(tmp_path / "registry")}})
    space.write_config()
    return space


def attacker_s3(endpoint: str, **s3) -> dict:
    """An S3 section pointing at ``endpoint`` with the attacker's own (literal) credentials, so
    that requests are made and signed; one attempt, short timeouts."""
    return {
        "bucket": "loot",
        "endpoint_url": endpoint,
        "region_name": "us-east-1",
        "aws_access_key_id": "AKIAATTACKER00000000",
        "aws_secret_access_key": "attacker-own-secret",
        "config": {"retries": {"max_attempts": 1}, "connect_timeout": 2, "read_timeout": 5},
        **s3,
    }


def tar_gz(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def one_error(result: Result, code: int, *mentions: str) -> None:
    """Exit ``code``, nothing on stdout, an ``error:`` line (and at most a hint) naming ``mentions``."""
    assert result.code == code, result.all
    assert result.out == "", result.all
    lines = [line for line in result.err.splitlines() if line.strip() and not line.startswith("warning:")]
    assert 1 <= len(lines) <= 2 and lines[0].startswith("error:"), result.err
    assert "internal error" not in result.err, result.err
    for text in mentions:
        assert text in result.err, (text, result.err)


def no_secret(result: Result, *secrets: str) -> None:
    for secret in secrets:
        assert secret not in result.all, result.all


def files_under(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*")} if root.exists() else set()


@pytest.fixture
def kit(project: Workspace) -> Workspace:
    """Package ``kit`` (an archive) and ``narf`` (a plain file), a config declaring both, and a
    good ``tycho.lock`` written by ``lock``."""
    project.ok_all(
        ["init", "kit", "kit.tar.gz"],
        [
            "push",
            "kit",
            "1.0",
            str(project.file("src/kit.tgz", tar_gz({"bin/tool": b"#!/bin/sh\n"}))),
            "--promote-latest",
        ],
        ["init", "narf", "narf.bin"],
        ["push", "narf", "1.0", str(project.file("src/narf", b"narf bytes\n")), "--promote-latest"],
    )
    project.config["packages"] = {"kit": {"version": "1.0", "extract": "tools/kit"}, "narf": "1.0"}
    project.write_config()
    project.ok("lock")
    return project


def set_lock_extract(lock: Path, package: str, extract: str) -> None:
    doc = json.loads(lock.read_text())
    doc["packages"][package]["extract"] = extract
    lock.write_text(json.dumps(doc, indent=2))


# -- 4. extract stays inside the project -----------------------------------------------------
ESCAPES = ["../../escaped", "ABS", "~/escaped", "tools/../../escaped", ".git/hooks", ".", "tools/./.."]


@pytest.mark.parametrize("extract", ESCAPES)
@pytest.mark.parametrize("command", ["pull-list", "sync"])
def test_lock_extract_outside_the_project_is_refused(
    kit: Workspace, tmp_path: Path, extract: str, command: str
) -> None:
    """A lock that unpacks outside its folder: exit 2 naming package and path, nothing installed
    at all (not even the other, harmless package)."""
    if extract == "ABS":
        extract = str(tmp_path / "escaped")
    (kit.root / ".git").mkdir()
    set_lock_extract(kit.root / "tycho.lock", "kit", extract)
    before = files_under(tmp_path)
    args = ("pull-list", "--from", "tycho.lock") if command == "pull-list" else ("sync", "--locked")
    result = kit.run(*args)
    one_error(result, 2, "kit", repr(extract)[1:-1])
    assert files_under(tmp_path) == before  # nothing extracted, nothing pulled, anywhere
    assert not (tmp_path / "escaped").exists() and not (kit.root / "home" / "escaped").exists()


@pytest.mark.parametrize("extract", ["../escaped", "ABS", "~/escaped", ".git/x", "."])
def test_config_extract_outside_the_project_is_refused(project: Workspace, tmp_path: Path, extract: str) -> None:
    if extract == "ABS":
        extract = str(tmp_path / "escaped")
    project.ok("init", "kit", "kit.tar.gz")
    project.ok("push", "kit", "1.0", str(project.file("src/kit.tgz", tar_gz({"a": b"a"}))), "--promote-latest")
    project.config["packages"] = {"kit": {"version": "1.0", "extract": extract}}
    project.write_config()
    before = files_under(tmp_path)
    for command in ("sync", "lock"):
        one_error(project.run(command), 2, "packages.kit.extract", repr(extract)[1:-1])
    assert files_under(tmp_path) == before
    assert not (project.root / "tycho.lock").exists()


def test_extract_through_a_symlink_out_of_the_project_is_refused(kit: Workspace, tmp_path: Path) -> None:
    """``tools`` is a link a repository committed, to a folder outside; through it, ``tools/kit``
    is outside too. Refused for the config (sync) and for a lock read elsewhere (pull-list)."""
    outside = tmp_path / "victim-home"
    outside.mkdir()
    (outside / "keep.txt").write_text("mine")
    (kit.root / "tools").symlink_to(outside)
    one_error(kit.run("sync"), 2, "kit", "tools/kit")
    one_error(kit.run("pull-list", "--from", "tycho.lock"), 2, "kit", "tools/kit")
    assert files_under(outside) == {"keep.txt"}
    assert not (kit.root / "tycho_packages").exists()
    # the extract folder itself as a link to outside
    (kit.root / "tools").unlink()
    (kit.root / "tools").mkdir()
    (kit.root / "tools" / "kit").symlink_to(outside)
    one_error(kit.run("sync", "--locked"), 2, "kit", "tools/kit")
    assert files_under(outside) == {"keep.txt"}


def test_extract_inside_the_project_still_works(kit: Workspace) -> None:
    """Links that stay inside the project are fine, and so is a lock read from another folder
    (extract is relative to the lock)."""
    (kit.root / "third_party").mkdir()
    (kit.root / "tools").symlink_to("third_party")
    kit.ok("sync")
    assert (kit.root / "third_party" / "kit" / "bin" / "tool").read_bytes() == b"#!/bin/sh\n"
    assert (kit.root / "tycho_packages" / "narf.bin").read_bytes() == b"narf bytes\n"
    other = kit.root / "sub" / "tycho.lock"
    other.parent.mkdir()
    other.write_text((kit.root / "tycho.lock").read_text())
    kit.ok("pull-list", "--from", str(other))
    assert (kit.root / "sub" / "tools" / "kit" / "bin" / "tool").exists()


# -- 6. a config cannot read other files, nor send or print secrets ----------------------------
@pytest.fixture
def victim_home(tmp_path: Path) -> Path:
    """The user's home, outside the project, with AWS credentials in it."""
    home = tmp_path / "victim"
    (home / ".aws").mkdir(parents=True)
    (home / ".aws" / "credentials").write_text(
        f"[default]\naws_access_key_id = AKIAVICTIM0000000000\naws_secret_access_key = {VICTIM_SECRET}\n"
    )
    return home


@pytest.mark.parametrize("how", ["home", "absolute", "dotdot", "symlink"])
def test_dotenv_outside_the_config_folder_is_refused(
    project: Workspace, recorder: Recorder, victim_home: Path, how: str
) -> None:
    """The reported attack: ``"dotenv": "~/.aws/credentials"`` plus ``"prefix": {"env":
    "aws_secret_access_key"}`` sent the secret in the URL path and printed it."""
    credentials = victim_home / ".aws" / "credentials"
    dotenv = {
        "home": "~/.aws/credentials",
        "absolute": str(credentials),
        "dotdot": os.path.relpath(credentials, project.root),
        "symlink": ".env",
    }[how]
    if how == "symlink":
        (project.root / ".env").symlink_to(credentials)
    project.write_config(
        {"tycho": {"dotenv": dotenv}, "s3": attacker_s3(recorder.url, prefix={"env": "aws_secret_access_key"})}
    )
    for args in (("list", "--json"), ("pull", "narf")):
        result = project.run(*args, env={"HOME": str(victim_home)})
        one_error(result, 2, "tycho.dotenv")
        no_secret(result, VICTIM_SECRET)
    assert recorder.seen == []


def test_dotenv_of_an_explicit_config_may_be_in_the_current_directory(
    project: Workspace, tmp_path: Path, victim_home: Path
) -> None:
    """With --config, ``dotenv`` is relative to the current directory (as in 0.4.0), so a file
    there is fine; one elsewhere is not, even for a config the user named."""
    registry = tmp_path / "reg-from-dotenv"
    config = tmp_path / "configs" / "team.json"
    config.parent.mkdir()
    config.write_text(
        json.dumps({"tycho": {"backend": "file", "dotenv": ".env"}, "file": {"path": {"env": "TEAM_REGISTRY"}}})
    )
    (project.root / ".env").write_text(f"TEAM_REGISTRY={registry}\n")
    project.ok("init", "narf", "narf.bin", "--config", str(config))
    assert (registry / "narf" / "tycho.json").is_file()
    config.write_text(
        json.dumps(
            {"tycho": {"backend": "file", "dotenv": str(victim_home / ".aws" / "credentials")}, "file": {"path": "reg"}}
        )
    )
    one_error(project.run("list", "--json", "--config", str(config)), 2, "tycho.dotenv")


SMUGGLES = {
    # setting -> (where to put the reference, variable the attacker names)
    "bucket": (("s3", "bucket"), "CI_JOB_TOKEN"),
    "prefix": (("s3", "prefix"), "AWS_SECRET_ACCESS_KEY"),
    "region": (("s3", "region_name"), "GITHUB_TOKEN"),
    "endpoint": (("s3", "endpoint_url"), "NPM_TOKEN"),
    "key-id-from-secret": (("s3", "aws_access_key_id"), "AWS_SECRET_ACCESS_KEY"),
    "key-id-from-token": (("s3", "aws_access_key_id"), "CI_JOB_TOKEN"),
    "session-token-from-ci-token": (("s3", "aws_session_token"), "CI_JOB_TOKEN"),
    "botocore-option": (("s3", "config", "user_agent_extra"), "DEPLOY_PASSWORD"),
    "identity": (("tycho", "identity"), "GH_PAT"),
    "outdir": (("tycho", "outdir"), "SSH_PRIVATE_KEY"),
    "package-version": (("packages", "narf", "version"), "GITLAB_API_KEY"),
}


@pytest.mark.parametrize("case", sorted(SMUGGLES))
def test_secret_named_variables_cannot_feed_other_settings(project: Workspace, recorder: Recorder, case: str) -> None:
    """``"bucket": {"env": "CI_JOB_TOKEN"}`` printed the token; the same trick on any setting
    that is sent (URL, header, record) or printed is refused before any request."""
    where, variable = SMUGGLES[case]
    config: dict = {
        "tycho": {"backend": "s3"},
        "s3": attacker_s3(recorder.url),
        "packages": {"narf": {"version": "^1"}},
    }
    node = config
    for key in where[:-1]:
        node = node.setdefault(key, {})
    node[where[-1]] = {"env": variable}
    project.write_config(config)
    env = {variable: VICTIM_TOKEN}
    for args in (("list", "--json"), ("lock",), ("push", "narf", "1.0", str(project.file("f", b"x")))):
        result = project.run(*args, env=env)
        one_error(result, 2, variable, ".".join(where))
        no_secret(result, VICTIM_TOKEN)
    assert recorder.seen == [], recorder.text()


def test_a_variable_holding_a_url_with_a_password_cannot_feed_a_setting(project: Workspace, recorder: Recorder) -> None:
    project.write_config({"s3": attacker_s3(recorder.url, prefix={"env": "DATABASE_URL"})})
    result = project.run("list", "--json", env={"DATABASE_URL": f"postgres://app:{VICTIM_SECRET}@db:5432/app"})
    one_error(result, 2, "DATABASE_URL", "s3.prefix")
    no_secret(result, VICTIM_SECRET)
    assert recorder.seen == []


def test_dotenv_cannot_copy_a_secret_by_expansion(project: Workspace, recorder: Recorder) -> None:
    """A repository's ``.env`` saying ``REG_BUCKET=${CI_JOB_TOKEN}`` would launder the token into
    a harmless-looking name; ``${...}`` is not expanded."""
    (project.root / ".env").write_text("REG_BUCKET=${CI_JOB_TOKEN}\nREG_PREFIX=x${CI_JOB_TOKEN}\n")
    for key in ("bucket", "prefix"):
        project.write_config(
            {"tycho": {"dotenv": ".env"}, "s3": attacker_s3(recorder.url, **{key: {"env": f"REG_{key.upper()}"}})}
        )
        result = project.run("list", "--json", env={"CI_JOB_TOKEN": VICTIM_TOKEN})
        no_secret(result, VICTIM_TOKEN)
    assert VICTIM_TOKEN not in recorder.text()


def test_dotenv_cannot_make_boto3_run_a_command(project: Workspace, recorder: Recorder) -> None:
    """A repository's ``.env`` setting ``AWS_CONFIG_FILE`` to its own file with a
    ``credential_process`` made boto3 run that command. Only credential variables pass."""
    marker = project.root.parent / "PWNED"
    (project.root / "evil.ini").write_text(
        f"[default]\ncredential_process = sh -c 'touch {marker}; "
        'echo {{\\"Version\\": 1, \\"AccessKeyId\\": \\"a\\", \\"SecretAccessKey\\": \\"b\\"}}\'\n'
    )
    (project.root / ".env").write_text(f"AWS_CONFIG_FILE={project.root / 'evil.ini'}\n")
    s3 = {k: v for k, v in attacker_s3(recorder.url).items() if not k.startswith("aws_")}
    project.write_config({"tycho": {"dotenv": ".env"}, "s3": s3})
    for args in (("list", "--json"), ("pull", "narf")):
        result = project.run(*args)
        assert result.code != 0, result.all
    assert not marker.exists()


def test_zero_four_config_with_env_values_keeps_working(s3_ws: Workspace, seaweed: Seaweed) -> None:
    """tycho-station 0.4.0's documented use: ``{"env": NAME, "default": VALUE}`` on credentials,
    endpoint, region and bucket, from the environment or from a ``.env`` beside the config."""
    from conftest import ACCESS_KEY, SECRET_KEY

    ref = {
        "bucket": "REG_BUCKET",
        "endpoint_url": "REG_ENDPOINT",
        "region_name": "REG_REGION",
        "aws_access_key_id": "REG_WRITE_KEY",
        "aws_secret_access_key": "REG_WRITE_SECRET",
    }
    s3_ws.write_config({"s3": {k: {"env": v, "default": "placeholder"} for k, v in ref.items()}})
    values = {
        "REG_BUCKET": s3_ws.bucket,
        "REG_ENDPOINT": seaweed.endpoint,
        "REG_REGION": "us-east-1",
        "REG_WRITE_KEY": ACCESS_KEY,
        "REG_WRITE_SECRET": SECRET_KEY,
    }
    data = os.urandom(2000)
    s3_ws.ok("init", "narf", "narf.bin", env=values)
    s3_ws.ok("push", "narf", "1.0", str(s3_ws.file("src/narf", data)), "--promote-latest", env=values)
    s3_ws.ok("pull", "narf", env=values)
    assert (s3_ws.root / "tycho_packages" / "narf.bin").read_bytes() == data
    assert s3_ws.read_stored("narf/tycho_1.0.pkg") == data

    # the same values from a .env file beside the config (0.4.0 let its path be absolute)
    dotenv = s3_ws.root / ".env"
    dotenv.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    dotenv.chmod(0o600)
    s3_ws.write_config(
        {"tycho": {"dotenv": str(dotenv)}, "s3": {k: {"env": v, "default": "placeholder"} for k, v in ref.items()}}
    )
    assert s3_ws.ok("list", "--json").json() == [{"name": "narf", "latest": "1.0"}]

    # and AWS_* credentials in the .env for boto3's own chain, with none in the config
    dotenv.write_text(f"AWS_ACCESS_KEY_ID={ACCESS_KEY}\nAWS_SECRET_ACCESS_KEY={SECRET_KEY}\n")
    s3_ws.write_config(
        {
            "tycho": {"dotenv": ".env"},
            "s3": {"bucket": s3_ws.bucket, "endpoint_url": seaweed.endpoint, "region_name": "us-east-1"},
        }
    )
    s3_ws.ok("pull", "narf", "--force")
    assert (s3_ws.root / "tycho_packages" / "narf.bin").read_bytes() == data


def test_allow_env_lets_the_user_permit_a_variable(s3_ws: Workspace, seaweed: Seaweed) -> None:
    """A bucket variable the name rule misjudges (``AUTH_SERVICE_BUCKET``): refused, unless the
    user allows it in TYCHOREG_ALLOW_ENV; a .env file cannot allow it."""
    s3 = dict(s3_config(seaweed, s3_ws.bucket)["s3"], bucket={"env": "AUTH_SERVICE_BUCKET"})
    s3_ws.write_config({"tycho": {"dotenv": ".env"}, "s3": s3})
    (s3_ws.root / ".env").write_text("TYCHOREG_ALLOW_ENV=AUTH_SERVICE_BUCKET\n")
    env = {"AUTH_SERVICE_BUCKET": s3_ws.bucket}
    one_error(s3_ws.run("list", "--json", env=env), 2, "AUTH_SERVICE_BUCKET", "TYCHOREG_ALLOW_ENV")
    s3_ws.ok("init", "narf", "narf.bin", env={**env, "TYCHOREG_ALLOW_ENV": "OTHER, AUTH_SERVICE_BUCKET"})
    assert "narf/tycho.json" in s3_ws.stored_keys()


def test_values_from_variables_are_masked_in_errors(project: Workspace, recorder: Recorder) -> None:
    """A value a variable supplies to a setting that is not a known public one is masked, even
    where boto3 repeats it in its own error, and in a --debug traceback."""
    hidden = "2099-HIDDEN-VALUE-1f2e"
    project.write_config({"s3": attacker_s3(recorder.url, api_version={"env": "REG_API_VERSION"})})
    env = {"REG_API_VERSION": hidden}
    result = project.run("list", "--json", env=env)
    one_error(result, 2)
    no_secret(result, hidden)
    proc = subprocess.run(
        [sys.executable, "-m", "tychoreg", "list", "--json", "--debug"],
        cwd=project.root,
        env={**project.base_env(), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "Traceback" in proc.stderr, proc.stderr
    assert hidden not in proc.stdout + proc.stderr


# -- 9. damaged documents: deep, huge, not a file -----------------------------------------------
def deep_json(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize(
    "text",
    [
        deep_json(100_000),
        '{"tycho": ' + '{"a": ' * 500 + "1" + "}" * 500 + "}",
        '{"tycho": {"backend": "file"}, "file": {"path": "r"}, "pad": "' + "x" * (17 * 1024 * 1024) + '"}',
    ],
    ids=["100000-deep", "500-deep-objects", "17MiB"],
)
def test_damaged_config_is_a_config_error(project: Workspace, text: str) -> None:
    (project.root / ".tychoreg.json").write_text(text)
    for args in (("list", "--json"), ("sync",)):
        one_error(project.run(*args), 2, ".tychoreg.json")


@pytest.mark.parametrize(
    "text",
    [
        deep_json(100_000),
        '{"packages": ' + '{"a": ' * 500 + "1" + "}" * 500 + "}",
        '{"packages": {}, "pad": "' + "x" * (17 * 1024 * 1024) + '"}',
    ],
    ids=["100000-deep", "500-deep-objects", "17MiB"],
)
def test_damaged_lock_is_reported_as_damaged(kit: Workspace, text: str) -> None:
    (kit.root / "tycho.lock").write_text(text)
    for args in (("sync", "--locked"), ("sync",), ("lock",), ("pull-list", "--from", "tycho.lock")):
        one_error(kit.run(*args), 1, "damaged")
    assert not (kit.root / "tycho_packages").exists()


def test_lock_that_is_a_fifo_does_not_hang(kit: Workspace) -> None:
    (kit.root / "tycho.lock").unlink()
    os.mkfifo(kit.root / "tycho.lock")
    one_error(kit.run("sync", "--locked", timeout=30), 1, "damaged", "not a regular file")


def test_dotenv_that_is_a_fifo_does_not_hang(project: Workspace) -> None:
    os.mkfifo(project.root / ".env")
    project.config["tycho"]["dotenv"] = ".env"
    project.write_config()
    one_error(project.run("list", "--json", timeout=30), 2, ".env")


# -- 10. bounded messages, escaped output, overflow ----------------------------------------------
@pytest.mark.parametrize("age", ["99999999999d", "9" * 400, "1000000000d"])
def test_huge_age_is_a_usage_error(project: Workspace, age: str) -> None:
    for args in (("gc", "--older-than", age), ("cache", "prune", "--older-than", age)):
        result = project.run(*args)
        one_error(result, 2, "too large")
        assert len(result.err) < 400, result.err


LONG = "a" * 5000


@pytest.mark.parametrize(
    "args",
    [
        ("init", "narf", LONG),
        ("init", LONG, "x.bin"),
        ("pull", "narf", "--version", LONG),
        ("info", "narf", LONG),
        ("pull", f"narf@{LONG}"),
        ("tag", "narf", "1.0", LONG),
        ("lock", "--upgrade", LONG),
        ("gc", "--older-than", LONG),
        ("push", "narf", "2.0", LONG),
        ("list-versions", LONG),
        ("--config", LONG, "list"),
        ("yank", "narf", LONG),
        ("pull-list", "--from", LONG),
        ("no-such-command-" + LONG,),
    ],
    ids=lambda a: "-".join(x[:12] for x in a),
)
def test_long_input_is_cut_in_messages(kit: Workspace, args: tuple[str, ...]) -> None:
    result = kit.run(*args)
    assert result.code in (1, 2), result.all
    assert LONG not in result.all
    assert len(result.err) < 2600, len(result.err)
    assert "internal error" not in result.err, result.err


HOSTILE_TEXT = f"{ESC}]52;c;cm0gLXJmIH4K\a{ESC}[2J{ESC}[31mred\u202egnp.exe\r\nerror: forged line\x9b1m"
RAW_CONTROLS = (ESC, "\a", "\u202e", "\r", "\x9b")


def assert_no_raw_controls(result: Result) -> None:
    for ch in RAW_CONTROLS:
        assert ch not in result.out and ch not in result.err, (repr(ch), result.all)
    assert "\nerror: forged line" not in result.all


def test_control_characters_from_storage_are_escaped(kit: Workspace) -> None:
    """A note, a yank reason and who yanked, written straight into storage by whoever can write
    there, print escaped in tables, info and warnings; JSON output carries them exactly."""
    kit.ok("push", "narf", "1.1", str(kit.file("src/n11", b"eleven")), "--note", HOSTILE_TEXT)
    doc = json.loads((Path(kit.config["file"]["path"]) / "narf" / "tycho.json").read_text())
    doc["tychoreg"] = {
        "yanked": {"1.0": {"reason": HOSTILE_TEXT, "at": "2026-01-01T00:00:00+00:00", "by": HOSTILE_TEXT}}
    }
    kit.write_stored("narf/tycho.json", json.dumps(doc).encode())

    for args in (
        ("info", "narf", "1.1"),
        ("info", "narf", "1.0"),
        ("info", "narf"),
        ("list-versions", "narf"),
        ("pull", "narf", "--version", "1.0", "--outfile", "x.bin"),
        ("list",),
    ):
        result = kit.ok(*args)
        assert_no_raw_controls(result)
    info = kit.ok("info", "narf", "1.1")
    assert "\\x1b]52" in info.out  # escaped, still readable
    assert kit.ok("info", "narf", "1.1", "--json").json()["note"] == HOSTILE_TEXT
    assert kit.ok("info", "narf", "1.0", "--json").json()["yank_reason"] == HOSTILE_TEXT


def test_control_characters_in_errors_are_escaped(kit: Workspace) -> None:
    """An error message from a hostile S3 endpoint, a planted ``localname`` with escapes (a
    damaged document) and command-line arguments with them: the error says what is wrong without
    passing the sequences to the terminal. (ESC itself cannot travel in XML; the C1 CSI and the
    right-to-left override can.)"""
    original = json.loads(json.dumps(kit.config))
    with recording(status=400, code="Weird\u202eedoC", message="\x9b2J\u202e\x85forged") as server:
        kit.write_config({"s3": attacker_s3(server.url)})
        result = kit.run("list", "--json")
        assert result.code == 1 and "Weird" in result.err, result.all
        assert_no_raw_controls(result)
        assert "\x85" not in result.err and "\\u202e" in result.err
    kit.write_config(original)
    kit.write_stored("narf/tycho.json", json.dumps({"localname": f"x{ESC}[2Jy", "latest": "1.0"}).encode())
    assert_no_raw_controls(kit.run("pull", "narf"))
    assert_no_raw_controls(kit.run("pull", f"narf{ESC}[2J"))
    assert_no_raw_controls(kit.run("tag", "narf", "1.0", f"t{ESC}]0;pwned\a"))
    assert_no_raw_controls(kit.run(f"x{ESC}[2J"))
