"""Project discovery and config hygiene (issue 15, first half; CONTRACT.md "Configuration").

A ``.tychoreg.json`` in the current folder or the nearest parent is the project's config; its
relative paths are relative to its own folder; one found in a parent folder that someone else
could have written is refused; unknown keys are warned about with the key they most likely
meant; the config file's JSON Schema ships in the package and every README example follows it;
a write to the embedded default registry says where it went. Everything through the real CLI.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import pytest

from conftest import Result, Workspace

ROOT = Path(__file__).resolve().parent.parent
DATA = b"project payload\n" * 50


def write_config(folder: Path, config: dict, name: str = ".tychoreg.json") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(json.dumps(config, indent=2))
    path.chmod(0o644)
    return path


def names(result: Result) -> list[str]:
    assert result.code == 0, result.all
    return [p["name"] for p in result.json()]


@pytest.fixture
def project(tmp_path: Path) -> Workspace:
    """A project folder whose config names everything relatively: a registry folder, outdir,
    dotenv and declared packages (one extracted); ``root/src/deep`` is a folder inside it."""
    root = tmp_path / "project"
    config = {
        "tycho": {"backend": "file", "outdir": "vendor", "dotenv": ".env"},
        "file": {"path": {"env": "PROJ_REG_PATH", "default": "missing-registry"}},
        "packages": {"narf": "^1.0", "tools": {"version": "latest", "extract": "tools/x"}},
    }
    space = Workspace(root, "file", config)
    write_config(root, config)
    (root / ".env").write_text("PROJ_REG_PATH=reg\n")
    (root / "src" / "deep").mkdir(parents=True)
    return space


def publish(space: Workspace, cwd: Path) -> None:
    import io
    import tarfile

    space.ok("init", "narf", "narf.bin", cwd=cwd)
    space.ok("init", "tools", "tools.tar", cwd=cwd)
    space.ok("push", "narf", "1.0.0", str(space.file("in/narf.bin", DATA)), "--promote-latest", cwd=cwd)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("bin/tool")
        info.size = len(DATA)
        tar.addfile(info, io.BytesIO(DATA))
    space.ok("push", "tools", "2.0", str(space.file("in/tools.tar", buf.getvalue())), "--promote-latest", cwd=cwd)


# -- discovery ------------------------------------------------------------------------------------
def test_sync_in_a_nested_folder_installs_into_the_project(project: Workspace) -> None:
    """`tychoreg sync` in project/src/deep uses project/.tychoreg.json, and every relative path
    in it (dotenv, file.path through the dotenv, outdir, extract, the lock) is the project's."""
    deep = project.root / "src" / "deep"
    publish(project, deep)
    assert (project.root / "reg" / "narf" / "tycho.json").is_file()  # dotenv and file.path: the project's
    result = project.ok("sync", cwd=deep)
    assert (project.root / "vendor" / "narf.bin").read_bytes() == DATA, result.all
    assert (project.root / "tools" / "x" / "bin" / "tool").read_bytes() == DATA
    assert (project.root / "tycho.lock").is_file()
    leftovers = sorted(str(p.relative_to(project.root)) for p in deep.parent.rglob("*"))
    assert leftovers == ["src/deep"], leftovers  # nothing landed beside the current folder
    # the same from the project's root: already in place, nothing to do
    again = project.ok("sync", "--json")
    assert [p["downloaded"] for p in again.json()] == [False, False]


def test_the_nearest_config_wins_and_folders_named_like_it_are_skipped(tmp_path: Path) -> None:
    outer, inner = tmp_path / "outer", tmp_path / "outer" / "inner"
    write_config(outer, {"tycho": {"backend": "file"}, "file": {"path": "reg-outer"}})
    write_config(inner, {"tycho": {"backend": "file"}, "file": {"path": "reg-inner"}})
    space = Workspace(outer, "file", {})
    deeper = inner / "a" / "b"
    deeper.mkdir(parents=True)
    space.ok("init", "innerpkg", "x.bin", cwd=deeper)
    assert (inner / "reg-inner" / "innerpkg" / "tycho.json").is_file()
    # a folder (not a file) called .tychoreg.json is no config: the search goes on upwards
    (inner / ".tychoreg.json").unlink()
    (inner / ".tychoreg.json").mkdir()
    assert names(space.run("list", "--json", cwd=deeper)) == []
    space.ok("init", "outerpkg", "x.bin", cwd=deeper)
    assert (outer / "reg-outer" / "outerpkg" / "tycho.json").is_file()


def test_without_any_config_up_the_tree_the_embedded_default_is_used(tmp_path: Path) -> None:
    space = Workspace(tmp_path / "nowhere", "file", {})
    deep = space.root / "a" / "b"
    deep.mkdir(parents=True)
    space.ok("init", "narf", "narf.bin", cwd=deep)
    assert (space.root / "xdg-data" / "tychoreg" / "registry" / "narf" / "tycho.json").is_file()


@pytest.mark.parametrize("how", ["--config", "TYCHOREG_CONFIG"])
def test_an_explicit_config_keeps_outdir_and_dotenv_relative_to_the_current_folder(
    project: Workspace, how: str
) -> None:
    """As tycho-station 0.4.0: with --config or TYCHOREG_CONFIG, outdir and dotenv are relative to
    the current folder (file.path to the config's own folder)."""
    deep = project.root / "src" / "deep"
    publish(project, project.root)
    (deep / ".env").write_text(f"PROJ_REG_PATH={project.root / 'reg'}\n")  # the dotenv read: the cwd's
    config = str(project.root / ".tychoreg.json")
    args, env = (["--config", config], None) if how == "--config" else ([], {"TYCHOREG_CONFIG": config})
    project.ok("pull", "narf", *args, cwd=deep, env=env)
    assert (deep / "vendor" / "narf.bin").read_bytes() == DATA
    assert not (project.root / "vendor").exists()


def test_a_discovered_config_reads_a_dotenv_only_inside_its_folder(project: Workspace, tmp_path: Path) -> None:
    (tmp_path / "outside.env").write_text("PROJ_REG_PATH=/\n")
    config = json.loads((project.root / ".tychoreg.json").read_text())
    config["tycho"]["dotenv"] = "../outside.env"
    write_config(project.root, config)
    result = project.run("list", cwd=project.root / "src" / "deep")
    assert result.code == 2, result.all
    assert "outside" in result.err and "dotenv" in result.err
    assert result.out == ""


# -- a config in a parent folder that someone else could write ------------------------------------
OTHER, ME, GROUP = 23461, 23462, 23460
RUN_CLI = """
import os, runpy, sys
os.umask(0o022)
sys.argv[0] = "tychoreg"
runpy.run_module("tychoreg", run_name="__main__", alter_sys=True)
"""


@pytest.fixture
def shared_tree() -> Iterator[Path]:
    """A world-writable sticky folder (like /tmp) with a project folder in it; the test's own
    uids exist only for the test (setpriv, as root)."""
    if os.geteuid() != 0:
        pytest.skip("a second account needs root (setpriv to a uid that exists only for the test)")
    if not shutil.which("setpriv"):
        pytest.skip("setpriv (util-linux) is not installed")
    base = Path(tempfile.mkdtemp(prefix="tycho-discovery-"))
    try:
        base.chmod(0o755)
        tmp = base / "tmp"
        tmp.mkdir()
        tmp.chmod(0o1777)
        home = base / "home"
        home.mkdir()
        os.chown(home, ME, ME)
        work = tmp / "work" / "sub"
        work.mkdir(parents=True)
        for p in (work, work.parent):
            os.chown(p, ME, ME)
        probe = as_user(ME, base, work, "--version")
        if probe.code != 0:
            pytest.skip(f"another account cannot run tychoreg with {sys.executable}: {probe.err.strip()}")
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


def as_user(uid: int, base: Path, cwd: Path, *args: str) -> Result:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "TYCHOREG_", "XDG_"))}
    env["HOME"] = str(base / "home")
    command = ["setpriv", f"--reuid={uid}", f"--regid={uid}", f"--groups={GROUP}", "--", sys.executable, "-c"]
    proc = subprocess.run([*command, RUN_CLI, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    result = Result(proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in result.all, result.all
    return result


def plant(path: Path, registry: Path, owner: int, mode: int) -> None:
    path.write_text(json.dumps({"tycho": {"backend": "file"}, "file": {"path": str(registry)}}))
    os.chown(path, owner, owner)
    path.chmod(mode)


def test_a_config_planted_in_a_parent_folder_by_another_user_is_refused(shared_tree: Path) -> None:
    """Another account's /tmp/.tychoreg.json would send every push made under /tmp to its
    registry: a parent folder's config must be the user's (or root's) and writable by no one else."""
    tmp, work = shared_tree / "tmp", shared_tree / "tmp" / "work" / "sub"
    planted, theirs = tmp / ".tychoreg.json", shared_tree / "theirs"
    theirs.mkdir(mode=0o777)
    theirs.chmod(0o777)
    plant(planted, theirs, OTHER, 0o644)
    src = work / "secret.bin"
    src.write_bytes(DATA)
    os.chown(src, ME, ME)

    refused = as_user(ME, shared_tree, work, "init", "narf", "narf.bin")
    assert refused.code == 2, refused.all
    assert refused.out == ""
    lines = refused.err.strip().splitlines()
    assert lines[0].startswith("error: ") and str(planted) in lines[0] and f"uid {OTHER}" in lines[0], lines
    assert lines[1].startswith("hint: ") and "--config" in lines[1], lines
    assert len(lines) == 2
    assert list(theirs.iterdir()) == []  # nothing was written to their registry

    # writable by the group or by others: refused too, whoever owns it
    for owner, mode, why in ((ME, 0o664, "its group"), (0, 0o646, "others"), (ME, 0o666, "its group and others")):
        plant(planted, theirs, owner, mode)
        result = as_user(ME, shared_tree, work, "list", "--json")
        assert result.code == 2 and f"{why} can write it" in result.err, (mode, result.all)

    # a link owned by the other user, to a file of ours: refused (they chose which file)
    mine = shared_tree / "home" / "mine.json"
    plant(mine, theirs, ME, 0o644)
    planted.unlink()
    subprocess.run(
        ["setpriv", f"--reuid={OTHER}", f"--regid={OTHER}", "--clear-groups", "ln", "-s", str(mine), str(planted)],
        check=True,
    )
    linked = as_user(ME, shared_tree, work, "list", "--json")
    assert linked.code == 2 and "symbolic link owned by another user" in linked.err, linked.all

    # ours, or root's, and writable by no one else: used
    for owner in (ME, 0):
        planted.unlink()
        plant(planted, theirs, owner, 0o644)
        used = as_user(ME, shared_tree, work, "list", "--json")
        assert used.code == 0 and json.loads(used.out) == [], used.all
    # naming the planted file explicitly is the user's choice
    plant(planted, theirs, OTHER, 0o666)
    explicit = as_user(ME, shared_tree, work, "--config", str(planted), "list", "--json")
    assert explicit.code == 0, explicit.all


def test_a_config_in_the_current_folder_is_used_as_before(shared_tree: Path) -> None:
    """The folder the user works in is the user's choice (tycho-station 0.4.0 used any
    ./.tychoreg.json): a group-writable one there is used."""
    work = shared_tree / "tmp" / "work"
    reg = shared_tree / "home" / "reg"
    plant(work / ".tychoreg.json", reg, OTHER, 0o666)
    result = as_user(ME, shared_tree, work, "list", "--json")
    assert result.code == 0 and json.loads(result.out) == [], result.all


# -- unknown keys ---------------------------------------------------------------------------------
def test_unknown_keys_are_warned_about_with_the_key_they_most_likely_meant(tmp_path: Path) -> None:
    space = Workspace(tmp_path / "p", "file", {})
    write_config(
        space.root,
        {
            "tycho": {"backend": "file", "outdri": "out", "cache_limt": "1GiB", "Dotenv": ".env"},
            "file": {"path": "reg", "pth": "x"},
            "pakages": {"narf": "^1"},
            "zzzqqq": 1,
        },
    )
    result = space.run("list", "--json")
    assert result.code == 0 and result.json() == [], result.all
    warnings = [line for line in result.err.splitlines() if line.startswith("warning: ")]
    expected = {
        "'tycho.outdri'": "did you mean tycho.outdir?",
        "'tycho.cache_limt'": "did you mean tycho.cache_limit?",
        "'tycho.Dotenv'": "did you mean tycho.dotenv?",
        "'file.pth'": "did you mean file.path?",
        "'pakages'": "did you mean packages?",
    }
    for key, advice in expected.items():
        assert any(key in w and advice in w for w in warnings), (key, warnings)
    assert any("'zzzqqq'" in w and "known here:" in w and "packages" in w for w in warnings), warnings
    assert len(warnings) == len(expected) + 1


def test_a_typo_in_the_s3_section_or_a_declared_package_is_a_config_error_that_says_what_was_meant(
    s3_ws: Workspace,
) -> None:
    """Keys of the s3 section go to boto3.client, which refuses what it does not take: a key close
    to a known one is refused with the one meant. A declared package's keys are checked too."""
    base = dict(s3_ws.config["s3"])
    typo = {("regoin_name" if k == "region_name" else k): v for k, v in base.items()}
    s3_ws.write_config({"tycho": {"backend": "s3"}, "s3": typo})
    result = s3_ws.run("list")
    assert result.code == 2 and "regoin_name" in result.err and "did you mean s3.region_name?" in result.err
    s3_ws.write_config({"tycho": {"backend": "s3"}, "s3": base, "packages": {"narf": {"versoin": "^1"}}})
    result = s3_ws.run("sync")
    assert result.code == 2 and "versoin" in result.err and "did you mean version?" in result.err, result.all
    s3_ws.write_config({"tycho": {"backend": "fille"}, "s3": base})
    result = s3_ws.run("list")
    assert result.code == 2 and "did you mean file?" in result.err, result.all
    for bad in (typo, base):
        assert len([line for line in result.err.splitlines() if line.strip()]) <= 2, bad


def test_a_config_with_only_known_keys_gets_no_warning(project: Workspace) -> None:
    publish(project, project.root)
    result = project.ok("list", "--json")
    assert "warning" not in result.err, result.err


# -- the JSON Schema ------------------------------------------------------------------------------
def schema() -> dict:
    import importlib.resources

    return json.loads((importlib.resources.files("tychoreg") / "config.schema.json").read_text())


def readme_configs() -> list[dict]:
    """Every ```json block of the README that is a config file (an object with a config section)."""
    blocks = re.findall(r"```json\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    found = []
    for block in blocks:
        try:
            doc = json.loads(block)
        except json.JSONDecodeError:
            continue
        if isinstance(doc, dict) and {"tycho", "s3", "file", "packages"} & set(doc):
            found.append(doc)
    return found


def test_the_schema_ships_in_the_installed_package_and_is_published_in_the_docs() -> None:
    shipped = schema()
    jsonschema.Draft202012Validator.check_schema(shipped)
    assert json.loads((ROOT / "docs" / "config.schema.json").read_text()) == shipped
    assert json.loads((ROOT / "src" / "tychoreg" / "config.schema.json").read_text()) == shipped


def test_every_config_in_the_readme_follows_the_schema() -> None:
    configs = readme_configs()
    assert len(configs) >= 3, "the README's config examples were not found"
    validator = jsonschema.Draft202012Validator(schema())
    for config in configs:
        errors = [e.message for e in validator.iter_errors(config)]
        assert not errors, (config, errors)


@pytest.mark.parametrize(
    "config",
    [
        {"tycho": {"backend": "s3", "outdri": "x"}, "s3": {"bucket": "b"}},
        {"pakages": {}, "s3": {"bucket": "b"}},
        {"tycho": {"backend": "ftp"}},
        {"tycho": {"backend": "file"}},
        {"s3": {"region_name": "x"}},
        {"s3": {"bucket": "b"}, "packages": {"../x": "1.0"}},
        {"s3": {"bucket": "b"}, "packages": {"narf": {"versoin": "1"}}},
        {"s3": {"bucket": "b"}, "tycho": {"concurrency": 100}},
    ],
    ids=["typo", "top-typo", "backend", "file-without-path", "no-bucket", "bad-name", "entry-typo", "concurrency"],
)
def test_the_schema_refuses_what_tychoreg_refuses_or_warns_about(config: dict) -> None:
    assert list(jsonschema.Draft202012Validator(schema()).iter_errors(config))


def test_the_schema_knows_every_key_the_readme_documents() -> None:
    """The README's configuration table and the schema list the same keys."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("\n## Configuration\n") :]
    section = section[: section.index("\n## ", 1)]
    table = re.findall(r"^\| `([a-z0-9_]+(?:\.[a-z_*]+)?)` \|", section, re.M)
    assert "tycho.backend" in table and "s3.bucket" in table
    props = schema()["properties"]
    for key in table:
        section, _, name = key.partition(".")
        assert section in props, key
        if name and name != "*":
            assert name in props[section]["properties"], key


# -- writes to the embedded default registry --------------------------------------------------------
def test_a_write_to_the_embedded_default_registry_says_where_it_went(tmp_path: Path) -> None:
    space = Workspace(tmp_path / "bare", "file", {})
    space.root.mkdir()
    registry = space.root / "xdg-data" / "tychoreg" / "registry"
    src = str(space.file("a.bin", DATA))

    def notes(result: Result) -> list[str]:
        assert result.code == 0, result.all
        return [line for line in result.err.splitlines() if "default registry" in line]

    for args in (
        ("init", "narf", "narf.bin"),
        ("push", "narf", "1.0", src, "--promote-latest"),
        ("tag", "narf", "1.0", "stable"),
        ("untag", "narf", "stable"),
        ("push", "narf", "1.1", src, "--json"),
        ("promote", "narf", "1.1"),
        ("yank", "narf", "1.0"),
        ("unyank", "narf", "1.0"),
        ("delete", "narf", "1.0", "--yes"),
    ):
        said = notes(space.run(*args))
        assert said == [f"Wrote to the default registry in {registry} (no config file found here or above)"], args
    for args in (("list",), ("info", "narf"), ("pull", "narf"), ("delete", "narf", "--dry-run", "--force")):
        assert notes(space.run(*args)) == [], args
    # with a config file there is nothing to say
    write_config(space.root, {"tycho": {"backend": "file"}, "file": {"path": "reg"}})
    assert notes(space.run("init", "other", "o.bin")) == []


def test_discovery_is_documented(project: Workspace) -> None:
    readme = (ROOT / "README.md").read_text()
    assert "nearest parent" in readme and "config.schema.json" in readme
    reliability = (ROOT / "docs" / "RELIABILITY.md").read_text()
    assert "found in a parent folder" in reliability
