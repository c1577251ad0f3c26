"""Configuration: which file is used, what its values mean, and how bad configs are reported.

Everything runs the real command line in a subprocess (see ``conftest.Workspace``).
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import SECRET_KEY, Result, Seaweed, Workspace, s3_config

DATA = b"config test payload\n" * 7
WRONG_SECRET = "wrong-SECRET-zz9-plural-z-alpha"


# -- helpers ------------------------------------------------------------------------------
@pytest.fixture
def fws(tmp_path: Path) -> Workspace:
    """A file-backend workspace (most configuration rules do not depend on the backend)."""
    root = tmp_path / "project"
    root.mkdir()
    space = Workspace(root, "file", file_config(tmp_path / "registry"))
    space.write_config()
    return space


def file_config(path: Path | str, **tycho) -> dict:
    return {"tycho": {"backend": "file", **tycho}, "file": {"path": str(path)}}


def write_json(path: Path, doc) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2))
    return path


def names(result: Result) -> list[str]:
    assert result.code == 0, result.all
    return [p["name"] for p in result.json()]


def run_raw(
    ws: Workspace,
    *args: str,
    env: dict[str, str] | None = None,
    drop: tuple[str, ...] = (),
    cwd: Path | None = None,
    allow_traceback: bool = False,
    timeout: float = 120,
) -> Result:
    """Like ``ws.run`` but can remove variables from the environment (``drop``) and, for
    ``--debug``, allows a traceback. Secrets are checked by the callers."""
    full = {**ws.base_env(), **(env or {})}
    for name in drop:
        full.pop(name, None)
    proc = subprocess.run(
        [sys.executable, "-m", "tychoreg", *args],
        cwd=cwd or ws.root,
        env=full,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    result = Result(proc.returncode, proc.stdout, proc.stderr)
    if not allow_traceback:
        assert "Traceback" not in result.all, result.all
    assert SECRET_KEY not in result.all
    return result


def assert_short_error(result: Result, code: int, *mentions: str) -> None:
    """Exit ``code``, nothing on stdout, one or two lines on stderr naming each of ``mentions``."""
    assert result.code == code, result.all
    assert result.out == "", result.all
    lines = [line for line in result.err.splitlines() if line.strip()]
    assert 1 <= len(lines) <= 2, result.err
    for text in mentions:
        assert text.lower() in result.err.lower(), (text, result.err)


def push_file(ws: Workspace, pkg: str, version: str, data: bytes, *extra: str, **kw) -> Result:
    src = ws.file(f"src/{pkg}-{version}.bin", data)
    return ws.run("push", pkg, version, str(src), *extra, **kw)


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# -- 1. resolution order --------------------------------------------------------------------
def test_resolution_order(fws: Workspace, tmp_path: Path) -> None:
    root = fws.root
    local = fws.write_config(file_config(tmp_path / "reg-local"))
    from_env = write_json(tmp_path / "cfgs" / "env.json", file_config(tmp_path / "reg-env"))
    explicit = write_json(tmp_path / "cfgs" / "explicit.json", file_config(tmp_path / "reg-explicit"))

    fws.ok("init", "pkglocal", "a.bin")
    fws.ok("init", "pkgenv", "b.bin", env={"TYCHOREG_CONFIG": str(from_env)})
    fws.ok("--config", str(explicit), "init", "pkgexplicit", "c.bin")
    assert (tmp_path / "reg-local/pkglocal/tycho.json").is_file()
    assert (tmp_path / "reg-env/pkgenv/tycho.json").is_file()
    assert (tmp_path / "reg-explicit/pkgexplicit/tycho.json").is_file()

    # embedded default: a folder without any config file
    bare = tmp_path / "bare"
    bare.mkdir()
    fws.ok("init", "pkgdefault", "d.bin", cwd=bare)
    assert (root / "xdg-data/tychoreg/registry/pkgdefault/tycho.json").is_file()

    env = {"TYCHOREG_CONFIG": str(from_env)}
    # --config beats TYCHOREG_CONFIG and ./.tychoreg.json, before or after the command
    assert names(fws.run("--config", str(explicit), "list", "--json", env=env)) == ["pkgexplicit"]
    assert names(fws.run("list", "--json", "--config", str(explicit), env=env)) == ["pkgexplicit"]
    assert names(fws.run("list", "--config", str(explicit), "--json", env=env)) == ["pkgexplicit"]
    assert names(fws.run(f"--config={explicit}", "list", "--json", env=env)) == ["pkgexplicit"]
    # TYCHOREG_CONFIG beats ./.tychoreg.json
    assert names(fws.run("list", "--json", env=env)) == ["pkgenv"]
    # ./.tychoreg.json beats the embedded default
    assert names(fws.run("list", "--json")) == ["pkglocal"]
    # nothing at all: the embedded default
    assert names(fws.run("list", "--json", cwd=bare)) == ["pkgdefault"]
    # TYCHOREG_CONFIG works without a local file too, and --config without either
    assert names(fws.run("list", "--json", cwd=bare, env=env)) == ["pkgenv"]
    assert names(fws.run("list", "--json", "--config", str(explicit), cwd=bare)) == ["pkgexplicit"]
    assert local.is_file()


def test_relative_config_paths_are_relative_to_cwd(fws: Workspace, tmp_path: Path) -> None:
    write_json(fws.root / "cfgs" / "other.json", file_config(tmp_path / "reg-other"))
    fws.ok("init", "mine", "a.bin")
    fws.ok("--config", "cfgs/other.json", "init", "other", "b.bin")
    sub = fws.root / "sub"
    sub.mkdir()
    assert names(fws.run("list", "--json", "--config", "../cfgs/other.json", cwd=sub)) == ["other"]
    assert names(fws.run("list", "--json", env={"TYCHOREG_CONFIG": "../cfgs/other.json"}, cwd=sub)) == ["other"]
    assert names(fws.run("list", "--json", "--config", "../.tychoreg.json", cwd=sub)) == ["mine"]
    # without --config, the nearest .tychoreg.json in a parent folder is the project's config
    assert names(fws.run("list", "--json", cwd=sub)) == ["mine"]


def test_explicit_config_wins_over_broken_env_config(fws: Workspace, tmp_path: Path) -> None:
    """--config applies first, so a TYCHOREG_CONFIG naming a missing file is never consulted."""
    fws.ok("init", "narf", "narf.bin")
    env = {"TYCHOREG_CONFIG": str(tmp_path / "nope.json")}
    assert names(fws.run("list", "--json", "--config", ".tychoreg.json", env=env)) == ["narf"]


# -- 2. missing config files ------------------------------------------------------------------
@pytest.mark.parametrize("where", ["before", "after"])
def test_missing_explicit_config_is_exit_2(fws: Workspace, tmp_path: Path, where: str) -> None:
    missing = tmp_path / "no-such-dir" / "missing-config.json"
    args = (
        ["--config", str(missing), "list", "--json"]
        if where == "before"
        else ["list", "--json", "--config", str(missing)]
    )
    result = fws.run(*args)
    assert_short_error(result, 2, str(missing))
    # a local .tychoreg.json exists, yet it is not used as a fallback
    assert not (tmp_path / "registry").exists()


def test_missing_explicit_config_relative(fws: Workspace) -> None:
    result = fws.run("init", "narf", "narf.bin", "--config", "missing-rel.json")
    assert_short_error(result, 2, "missing-rel.json")
    assert names(fws.run("list", "--json")) == []


def test_explicit_config_that_is_a_folder_is_exit_2(fws: Workspace) -> None:
    (fws.root / "cfgdir").mkdir()
    assert_short_error(fws.run("list", "--json", "--config", "cfgdir"), 2, "cfgdir")


def test_missing_env_config_is_exit_2(fws: Workspace, tmp_path: Path) -> None:
    missing = tmp_path / "missing-env-config.json"
    result = fws.run("list", "--json", env={"TYCHOREG_CONFIG": str(missing)})
    assert_short_error(result, 2, str(missing))
    result = fws.run("init", "narf", "narf.bin", env={"TYCHOREG_CONFIG": str(missing)})
    assert_short_error(result, 2, str(missing))
    # no fallback to ./.tychoreg.json happened
    assert names(fws.run("list", "--json")) == []


# -- 3. the embedded default --------------------------------------------------------------------
def test_embedded_default_uses_xdg_data_home(fws: Workspace) -> None:
    (fws.root / ".tychoreg.json").unlink()
    fws.ok("init", "narf", "narf.tar.gz")
    assert push_file(fws, "narf", "1.0", DATA, "--promote-latest").code == 0
    fws.ok("pull", "narf")
    assert (fws.root / "tycho_packages" / "narf.tar.gz").read_bytes() == DATA

    registry = fws.root / "xdg-data" / "tychoreg" / "registry"
    assert (registry / "narf" / "tycho.json").is_file()
    assert (registry / "narf" / "tycho_1.0.pkg").read_bytes() == DATA
    assert not (fws.root / "home" / ".local").exists()
    assert fws.ok("list", "--json").json() == [{"name": "narf", "latest": "1.0"}]

    # outdir is relative to the current directory, wherever that is
    sub = fws.root / "deep" / "er"
    sub.mkdir(parents=True)
    fws.ok("pull", "narf", cwd=sub)
    assert (sub / "tycho_packages" / "narf.tar.gz").read_bytes() == DATA


def test_embedded_default_without_xdg_data_home(fws: Workspace) -> None:
    (fws.root / ".tychoreg.json").unlink()
    drop = ("XDG_DATA_HOME",)
    assert run_raw(fws, "init", "narf", "narf.tar.gz", drop=drop).code == 0
    src = fws.file("src/narf.bin", DATA)
    result = run_raw(fws, "push", "narf", "2.0", str(src), "--promote-latest", drop=drop)
    assert result.code == 0, result.all
    result = run_raw(fws, "pull", "narf", drop=drop)
    assert result.code == 0, result.all
    assert (fws.root / "tycho_packages" / "narf.tar.gz").read_bytes() == DATA

    registry = fws.root / "home" / ".local" / "share" / "tychoreg" / "registry"
    assert (registry / "narf" / "tycho.json").is_file()
    assert (registry / "narf" / "tycho_2.0.pkg").read_bytes() == DATA
    assert not (fws.root / "xdg-data").exists()
    result = run_raw(fws, "list", "--json", drop=drop)
    assert result.code == 0 and result.json() == [{"name": "narf", "latest": "2.0"}], result.all


# -- 4. defaults inside a config file, relative paths ----------------------------------------
def test_backend_defaults_to_s3_and_outdir_to_tycho_packages(s3_ws: Workspace) -> None:
    config = {"s3": s3_ws.config["s3"]}
    s3_ws.write_config(config)
    s3_ws.ok("init", "narf", "narf.tar.gz")
    assert push_file(s3_ws, "narf", "1.0", DATA, "--promote-latest").code == 0
    s3_ws.ok("pull", "narf")
    assert (s3_ws.root / "tycho_packages" / "narf.tar.gz").read_bytes() == DATA
    assert {"narf/tycho.json", "narf/tycho_1.0.pkg"} <= s3_ws.stored_keys()
    assert s3_ws.read_stored("narf/tycho_1.0.pkg") == DATA
    assert s3_ws.ok("list", "--json").json() == [{"name": "narf", "latest": "1.0"}]
    # nothing went to a file registry
    assert not (s3_ws.root / "xdg-data").exists()


def test_empty_tycho_section_defaults_too(s3_ws: Workspace) -> None:
    s3_ws.write_config({"tycho": {}, "s3": s3_ws.config["s3"]})
    s3_ws.ok("init", "narf", "narf.tar.gz")
    assert "narf/tycho.json" in s3_ws.stored_keys()


def test_outdir_relative_to_cwd_and_file_path_relative_to_config(fws: Workspace) -> None:
    config = {"tycho": {"backend": "file", "outdir": "out/pkgs"}, "file": {"path": "reg"}}
    fws.write_config(config)
    sub = fws.root / "sub"
    sub.mkdir()
    cfg = "../.tychoreg.json"
    fws.ok("init", "narf", "narf.tar.gz", "--config", cfg, cwd=sub)
    assert (fws.root / "reg" / "narf" / "tycho.json").is_file()
    assert not (sub / "reg").exists()
    src = fws.file("src/narf.bin", DATA)
    fws.ok("push", "narf", "1.0", str(src), "--promote-latest", "--config", cfg, cwd=sub)
    fws.ok("pull", "narf", "--config", cfg, cwd=sub)
    assert (sub / "out" / "pkgs" / "narf.tar.gz").read_bytes() == DATA
    assert not (fws.root / "out").exists()
    # the same config from its own folder: same registry, outdir now under the root
    assert names(fws.run("list", "--json")) == ["narf"]
    fws.ok("pull", "narf")
    assert (fws.root / "out" / "pkgs" / "narf.tar.gz").read_bytes() == DATA
    # and through TYCHOREG_CONFIG from a folder elsewhere
    elsewhere = fws.root.parent / "elsewhere"
    elsewhere.mkdir()
    env = {"TYCHOREG_CONFIG": str(fws.root / ".tychoreg.json")}
    assert names(fws.run("list", "--json", env=env, cwd=elsewhere)) == ["narf"]
    fws.ok("pull", "narf", env=env, cwd=elsewhere)
    assert (elsewhere / "out" / "pkgs" / "narf.tar.gz").read_bytes() == DATA


def test_default_outdir_in_a_file_config(fws: Workspace) -> None:
    sub = fws.root / "sub"
    sub.mkdir()
    fws.ok("init", "narf", "narf.tar.gz")
    assert push_file(fws, "narf", "1.0", DATA, "--promote-latest").code == 0
    fws.ok("pull", "narf", "--config", "../.tychoreg.json", cwd=sub)
    assert (sub / "tycho_packages" / "narf.tar.gz").read_bytes() == DATA
    assert not (fws.root / "tycho_packages").exists()


# -- 5. {"env": NAME, "default": VALUE} -----------------------------------------------------------
def test_env_reference_for_file_path(fws: Workspace, tmp_path: Path) -> None:
    reg_default, reg_env = tmp_path / "reg-default", tmp_path / "reg-env"
    fws.write_config(
        {"tycho": {"backend": "file"}, "file": {"path": {"env": "TYCHO_TEST_REG_PATH", "default": str(reg_default)}}}
    )
    fws.ok("init", "fromdefault", "a.bin")
    env = {"TYCHO_TEST_REG_PATH": str(reg_env)}
    fws.ok("init", "fromenv", "b.bin", env=env)
    assert (reg_default / "fromdefault" / "tycho.json").is_file()
    assert (reg_env / "fromenv" / "tycho.json").is_file()
    assert names(fws.run("list", "--json")) == ["fromdefault"]
    assert names(fws.run("list", "--json", env=env)) == ["fromenv"]


def test_env_reference_for_outdir(fws: Workspace) -> None:
    fws.write_config(
        file_config(fws.config["file"]["path"], outdir={"env": "TYCHO_TEST_OUTDIR", "default": "default-out"})
    )
    fws.ok("init", "narf", "narf.tar.gz")
    assert push_file(fws, "narf", "1.0", DATA, "--promote-latest").code == 0
    fws.ok("pull", "narf")
    assert (fws.root / "default-out" / "narf.tar.gz").read_bytes() == DATA
    fws.ok("pull", "narf", env={"TYCHO_TEST_OUTDIR": "env-out"})
    assert (fws.root / "env-out" / "narf.tar.gz").read_bytes() == DATA
    absolute = fws.root.parent / "abs-out"
    fws.ok("pull", "narf", env={"TYCHO_TEST_OUTDIR": str(absolute)})
    assert (absolute / "narf.tar.gz").read_bytes() == DATA


def test_env_reference_for_backend(fws: Workspace, tmp_path: Path) -> None:
    fws.write_config(
        {
            "tycho": {"backend": {"env": "TYCHO_TEST_BACKEND", "default": "file"}},
            "file": {"path": str(tmp_path / "registry")},
        }
    )
    fws.ok("init", "narf", "narf.bin")
    assert names(fws.run("list", "--json")) == ["narf"]
    result = fws.run("list", "--json", env={"TYCHO_TEST_BACKEND": "ftp"})
    assert_short_error(result, 2, "ftp")


def test_env_reference_without_default_and_unset_is_exit_2(fws: Workspace, tmp_path: Path) -> None:
    fws.write_config({"tycho": {"backend": "file"}, "file": {"path": {"env": "TYCHO_TEST_UNSET_VAR"}}})
    for args in (("list", "--json"), ("init", "narf", "narf.bin")):
        assert_short_error(fws.run(*args), 2, "TYCHO_TEST_UNSET_VAR")
    # once set, it works
    env = {"TYCHO_TEST_UNSET_VAR": str(tmp_path / "reg-set")}
    fws.ok("init", "narf", "narf.bin", env=env)
    assert (tmp_path / "reg-set" / "narf" / "tycho.json").is_file()


def test_env_reference_without_default_in_s3_section(s3_ws: Workspace) -> None:
    s3 = dict(s3_ws.config["s3"], aws_secret_access_key={"env": "TYCHO_TEST_NO_SUCH_SECRET"})
    s3_ws.write_config({"tycho": {"backend": "s3"}, "s3": s3})
    assert_short_error(s3_ws.run("list", "--json"), 2, "TYCHO_TEST_NO_SUCH_SECRET")
    s3_ws.ok("init", "narf", "narf.bin", env={"TYCHO_TEST_NO_SUCH_SECRET": SECRET_KEY})
    assert "narf/tycho.json" in s3_ws.stored_keys()


# -- 6. dotenv -----------------------------------------------------------------------------------
def test_dotenv_supplies_env_references(fws: Workspace, tmp_path: Path) -> None:
    reg_dotenv, reg_env = tmp_path / "reg-dotenv", tmp_path / "reg-env"
    (fws.root / ".env").write_text(f"TYCHO_TEST_DOTENV_REG={reg_dotenv}\n")
    fws.write_config(
        {"tycho": {"backend": "file", "dotenv": ".env"}, "file": {"path": {"env": "TYCHO_TEST_DOTENV_REG"}}}
    )
    fws.ok("init", "fromdotenv", "a.bin")
    assert (reg_dotenv / "fromdotenv" / "tycho.json").is_file()
    assert names(fws.run("list", "--json")) == ["fromdotenv"]

    # an already-set variable wins over the .env file
    env = {"TYCHO_TEST_DOTENV_REG": str(reg_env)}
    fws.ok("init", "fromenv", "b.bin", env=env)
    assert (reg_env / "fromenv" / "tycho.json").is_file()
    assert names(fws.run("list", "--json", env=env)) == ["fromenv"]
    assert names(fws.run("list", "--json")) == ["fromdotenv"]


def test_dotenv_relative_to_cwd(fws: Workspace, tmp_path: Path) -> None:
    reg_root, reg_sub = tmp_path / "reg-root", tmp_path / "reg-sub"
    (fws.root / ".env").write_text(f"TYCHO_TEST_DOTENV_REG={reg_root}\n")
    sub = fws.root / "sub"
    sub.mkdir()
    (sub / ".env").write_text(f"TYCHO_TEST_DOTENV_REG={reg_sub}\n")
    fws.write_config(
        {"tycho": {"backend": "file", "dotenv": ".env"}, "file": {"path": {"env": "TYCHO_TEST_DOTENV_REG"}}}
    )
    fws.ok("init", "rootpkg", "a.bin")
    fws.ok("init", "subpkg", "b.bin", "--config", "../.tychoreg.json", cwd=sub)
    assert (reg_root / "rootpkg" / "tycho.json").is_file()
    assert (reg_sub / "subpkg" / "tycho.json").is_file()


def test_dotenv_supplies_s3_secret(s3_ws: Workspace) -> None:
    (s3_ws.root / ".env").write_text(f"TYCHO_TEST_DOTENV_SECRET={SECRET_KEY}\n")
    s3 = dict(s3_ws.config["s3"], aws_secret_access_key={"env": "TYCHO_TEST_DOTENV_SECRET"})
    s3_ws.write_config({"tycho": {"dotenv": ".env"}, "s3": s3})
    s3_ws.ok("init", "narf", "narf.tar.gz")
    assert push_file(s3_ws, "narf", "1.0", DATA, "--promote-latest").code == 0
    s3_ws.ok("pull", "narf")
    assert (s3_ws.root / "tycho_packages" / "narf.tar.gz").read_bytes() == DATA
    # the environment wins: a wrong secret there is used (and refused by the server)
    result = s3_ws.run("list", "--json", env={"TYCHO_TEST_DOTENV_SECRET": WRONG_SECRET})
    assert result.code == 1, result.all
    assert WRONG_SECRET not in result.all


# -- 7. bad configs ------------------------------------------------------------------------------
BAD_CONFIGS = {
    "unknown-backend": ('{"tycho": {"backend": "ftp"}, "file": {"path": "reg"}}', ["ftp"]),
    "invalid-json": ('{"tycho": {"backend": "file",}, "file": {"path": "reg"}', []),
    "truncated-json": ('{"tycho": {"backend": "file"', []),
    "empty-file": ("", []),
    "json-list": ('[{"tycho": {"backend": "file"}}]', []),
    "json-string": ('"file"', []),
    "s3-no-bucket": ('{"tycho": {"backend": "s3"}, "s3": {"region_name": "us-east-1"}}', ["bucket"]),
    "s3-no-section": ('{"tycho": {"backend": "s3"}}', ["bucket"]),
    "empty-object": ("{}", ["bucket"]),
    "s3-empty-bucket": ('{"s3": {"bucket": ""}}', ["bucket"]),
    "file-no-path": ('{"tycho": {"backend": "file"}, "file": {}}', ["path"]),
    "file-no-section": ('{"tycho": {"backend": "file"}}', ["path"]),
    "tycho-not-object": ('{"tycho": ["file"], "file": {"path": "reg"}}', ["tycho"]),
    "file-not-object": ('{"tycho": {"backend": "file"}, "file": "reg"}', ["file"]),
    "outdir-empty": ('{"tycho": {"backend": "file", "outdir": ""}, "file": {"path": "reg"}}', ["outdir"]),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
@pytest.mark.parametrize("command", [("list", "--json"), ("init", "narf", "narf.bin")])
def test_bad_config_is_exit_2(fws: Workspace, case: str, command: tuple[str, ...]) -> None:
    text, mentions = BAD_CONFIGS[case]
    (fws.root / ".tychoreg.json").write_text(text)
    result = fws.run(*command)
    assert_short_error(result, 2, *mentions)
    assert not (fws.root / "reg").exists()
    # the same file named by --config and by TYCHOREG_CONFIG, from elsewhere
    path = fws.root / "cfg" / f"{case}.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    other = fws.root.parent / "other"
    other.mkdir(exist_ok=True)
    assert_short_error(fws.run(*command, "--config", str(path), cwd=other), 2, *mentions)
    assert_short_error(fws.run(*command, env={"TYCHOREG_CONFIG": str(path)}, cwd=other), 2, *mentions)


def test_bad_s3_config_option_type_is_exit_2(s3_ws: Workspace) -> None:
    """``s3.config`` must be an object of botocore Config options: anything else is a bad config."""
    s3_ws.write_config({"tycho": {"backend": "s3"}, "s3": dict(s3_ws.config["s3"], config="fast")})
    assert_short_error(s3_ws.run("list", "--json"), 2, "config")


def test_unknown_s3_client_option_is_exit_2(s3_ws: Workspace) -> None:
    """A key boto3.client does not accept (a typo) is a bad config, not an operation failure."""
    s3_ws.write_config({"tycho": {"backend": "s3"}, "s3": dict(s3_ws.config["s3"], regoin_name="us-east-1")})
    assert_short_error(s3_ws.run("list", "--json"), 2, "regoin_name")


# -- 8. S3 credentials and reachability ---------------------------------------------------------
def test_wrong_credentials_exit_1_and_never_print_secrets(s3_ws: Workspace) -> None:
    s3_ws.ok("init", "narf", "narf.tar.gz")
    assert push_file(s3_ws, "narf", "1.0", DATA, "--promote-latest").code == 0
    env = {"TEST_REG_SECRET": WRONG_SECRET}
    src = s3_ws.file("src/other.bin", DATA)
    commands = [
        ("list", "--json"),
        ("list-versions", "narf", "--json"),
        ("init", "other", "o.bin"),
        ("push", "narf", "2.0", str(src)),
        ("pull", "narf"),
        ("promote", "narf", "1.0"),
    ]
    for args in commands:
        result = s3_ws.run(*args, env=env)
        assert result.code == 1, (args, result.all)
        assert WRONG_SECRET not in result.all and SECRET_KEY not in result.all
        lines = [line for line in result.err.splitlines() if line.strip()]
        assert 1 <= len(lines) <= 2, result.err
        assert "access" in result.err.lower() or "credential" in result.err.lower(), result.err
    assert not (s3_ws.root / "tycho_packages").exists()

    # --debug may show a traceback, but still no secret
    for args in (("--debug", "list", "--json"), ("pull", "narf", "--debug")):
        result = run_raw(s3_ws, *args, env=env, allow_traceback=True)
        assert result.code == 1, result.all
        assert WRONG_SECRET not in result.all and SECRET_KEY not in result.all
        assert "access" in result.err.lower() or "credential" in result.err.lower(), result.err

    # a wrong access key id is refused the same way
    result = s3_ws.run("list", "--json", env={"TEST_REG_KEY": "AKIANOSUCHKEY0000000"})
    assert result.code == 1, result.all
    assert "access" in result.err.lower() or "credential" in result.err.lower(), result.err


def test_unreachable_endpoint_is_exit_1(s3_ws: Workspace) -> None:
    port = closed_port()
    s3 = dict(
        s3_ws.config["s3"],
        endpoint_url=f"http://127.0.0.1:{port}",
        config={"connect_timeout": 1, "read_timeout": 2, "retries": {"max_attempts": 1}},
    )
    s3_ws.write_config({"tycho": {"backend": "s3"}, "s3": s3})
    for args in (("list", "--json"), ("init", "narf", "narf.bin"), ("pull", "narf")):
        started = time.monotonic()
        result = s3_ws.run(*args, timeout=60)
        assert time.monotonic() - started < 30
        assert_short_error(result, 1)
        assert "reach" in result.err.lower() or "connect" in result.err.lower(), result.err
    result = run_raw(s3_ws, "list", "--json", "--debug", allow_traceback=True, timeout=60)
    assert result.code == 1 and SECRET_KEY not in result.all


def test_missing_bucket_is_exit_1(s3_ws: Workspace) -> None:
    s3_ws.write_config({"tycho": {"backend": "s3"}, "s3": dict(s3_ws.config["s3"], bucket="tycho-no-such-bucket-x1")})
    result = s3_ws.run("list", "--json")
    assert_short_error(result, 1, "tycho-no-such-bucket-x1")


# -- 9. s3.prefix ----------------------------------------------------------------------------
def test_prefixes_are_independent_registries(s3_ws: Workspace, seaweed: Seaweed) -> None:
    bucket = s3_ws.bucket
    a = write_json(s3_ws.root / "a.json", s3_config(seaweed, bucket, prefix="team-a"))
    b = write_json(s3_ws.root / "b.json", s3_config(seaweed, bucket, prefix="org/team-b"))
    s3_ws.ok("--config", str(a), "init", "alpha", "alpha.bin")
    s3_ws.ok("--config", str(b), "init", "beta", "beta.bin")
    src = s3_ws.file("src/alpha.bin", DATA)
    s3_ws.ok("--config", str(a), "push", "alpha", "1.0", str(src), "--promote-latest")

    assert s3_ws.ok("--config", str(a), "list", "--json").json() == [{"name": "alpha", "latest": "1.0"}]
    assert s3_ws.ok("--config", str(b), "list", "--json").json() == [{"name": "beta", "latest": None}]
    # the same package name in both prefixes does not collide
    s3_ws.ok("--config", str(b), "init", "alpha", "other.bin")
    assert names(s3_ws.run("--config", str(b), "list", "--json")) == ["alpha", "beta"]
    assert s3_ws.ok("--config", str(a), "list", "--json").json() == [{"name": "alpha", "latest": "1.0"}]
    result = s3_ws.run("--config", str(b), "pull", "alpha")
    assert result.code == 1, result.all
    assert not (s3_ws.root / "tycho_packages" / "other.bin").exists()

    keys = {o["Key"] for o in seaweed.client().list_objects_v2(Bucket=bucket).get("Contents", ())}
    assert {
        "team-a/alpha/tycho.json",
        "team-a/alpha/tycho_1.0.pkg",
        "org/team-b/beta/tycho.json",
        "org/team-b/alpha/tycho.json",
    } <= keys
    assert all(k.startswith(("team-a/", "org/team-b/")) for k in keys), keys
    # the bucket root (no prefix) holds no packages of its own
    assert s3_ws.ok("list", "--json").json() == []
    # the prefix names a folder: a trailing or leading slash means the same one
    c = write_json(s3_ws.root / "c.json", s3_config(seaweed, bucket, prefix="/team-a/"))
    assert names(s3_ws.run("--config", str(c), "list", "--json")) == ["alpha"]


@pytest.mark.parametrize(
    "change",
    [
        {"bucket": "bad bucket"},
        {"bucket": "s3://my-bucket"},
        {"aws_access_key_id": 123},
        {"endpoint_url": ["x"]},
        {"config": {"retries": 5}},
        {"config": {"bogus_option": 1}},
        {"config": "fast"},
    ],
    ids=["space", "url", "key-int", "endpoint-list", "retries-int", "bogus", "config-str"],
)
def test_malformed_s3_values_are_config_errors(s3_ws, change) -> None:
    s3_ws.config["s3"].update(change)
    s3_ws.write_config()
    result = s3_ws.run("list", "--json")
    assert result.code == 2, result.all
    assert result.out == ""
    assert 1 <= len(result.err.strip().splitlines()) <= 2, result.err


def test_warns_about_literal_secrets_readable_by_others(s3_ws) -> None:
    from conftest import SECRET_KEY

    s3_ws.config["s3"]["aws_secret_access_key"] = SECRET_KEY  # a literal, not {"env": ...}
    path = s3_ws.write_config()
    path.chmod(0o644)
    result = s3_ws.ok("list", "--json")
    assert "chmod 600" in result.err and "s3.aws_secret_access_key" in result.err
    assert result.json() == []
    path.chmod(0o600)
    assert "chmod" not in s3_ws.ok("list", "--json").err


def test_warns_about_env_defaults_holding_secrets_readable_by_others(s3_ws) -> None:
    """A default is written in the file as much as a plain value is: ``{"env": .., "default":
    SECRET}`` in a file others can read gets the same warning."""
    s3_ws.config["s3"]["aws_secret_access_key"] = {"env": "TYCHO_TEST_UNSET_SECRET", "default": SECRET_KEY}
    path = s3_ws.write_config()
    path.chmod(0o644)
    result = s3_ws.ok("list", "--json")
    assert "chmod 600" in result.err and "s3.aws_secret_access_key (its default)" in result.err, result.err
    assert result.json() == []
    path.chmod(0o600)
    assert "chmod" not in s3_ws.ok("list", "--json").err
    # without a default there is nothing to protect in the file
    s3_ws.config["s3"]["aws_secret_access_key"] = {"env": "TYCHO_TEST_SET_SECRET"}
    s3_ws.write_config().chmod(0o644)
    assert "chmod" not in s3_ws.ok("list", "--json", env={"TYCHO_TEST_SET_SECRET": SECRET_KEY}).err


def test_warns_about_a_readable_dotenv_file_holding_secrets(s3_ws: Workspace) -> None:
    dotenv = s3_ws.root / ".env"
    dotenv.write_text(f"TYCHO_TEST_DOTENV_SECRET={SECRET_KEY}\nHARMLESS=1\n")
    s3 = dict(s3_ws.config["s3"], aws_secret_access_key={"env": "TYCHO_TEST_DOTENV_SECRET"})
    s3_ws.write_config({"tycho": {"dotenv": ".env"}, "s3": s3})  # the config itself is 0600
    dotenv.chmod(0o644)
    result = s3_ws.ok("list", "--json")
    assert f"chmod 600 {dotenv}" in result.err and "TYCHO_TEST_DOTENV_SECRET" in result.err, result.err
    assert "HARMLESS" not in result.err
    dotenv.chmod(0o600)
    assert "chmod" not in s3_ws.ok("list", "--json").err
    # a readable .env without secrets is fine
    dotenv.write_text("HARMLESS=1\n")
    dotenv.chmod(0o644)
    s3_ws.write_config({"tycho": {"dotenv": ".env"}, "s3": s3_ws.config["s3"] | {"aws_secret_access_key": SECRET_KEY}})
    assert "chmod" not in s3_ws.ok("list", "--json").err
