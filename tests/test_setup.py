"""Set-up: the quickstart never touches the user's registries, test tools come pinned with hashes,
the packaging metadata, and zstandard as an extra that says so when it is missing."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from packaging.markers import Marker
from packaging.utils import canonicalize_name

from conftest import Result, Workspace

if sys.version_info >= (3, 11):
    import tomllib
else:  # pytest and mypy bring it there
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent


def test_quickstart_uses_a_registry_of_its_own(tmp_path: Path) -> None:
    """Run with a configured registry and a default one in place: it pushes to neither, and
    leaves nothing behind in the temporary folder."""
    copy = tmp_path / "repo"
    copy.mkdir()
    for name in ("src", "scripts", "requirements"):
        shutil.copytree(ROOT / name, copy / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, copy / name)
    user_registry = tmp_path / "user-registry"
    (user_registry / "hello").mkdir(parents=True)
    (user_registry / "hello" / "tycho.json").write_text('{"localname": "hello.txt", "latest": null}')
    before = sorted(p.relative_to(user_registry).as_posix() for p in user_registry.rglob("*"))
    (tmp_path / "user.json").write_text(f'{{"tycho": {{"backend": "file"}}, "file": {{"path": "{user_registry}"}}}}')
    (copy / ".tychoreg.json").write_text(f'{{"tycho": {{"backend": "file"}}, "file": {{"path": "{user_registry}"}}}}')
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TYCHOREG_", "XDG_", "VIRTUAL_ENV"))}
    env.update(
        HOME=str(tmp_path / "home"),
        XDG_DATA_HOME=str(tmp_path / "data"),
        XDG_CACHE_HOME=str(tmp_path / "cache"),
        TYCHOREG_CONFIG=str(tmp_path / "user.json"),
        TMPDIR=str(temp),
    )
    done = subprocess.run(
        ["bash", "scripts/quickstart.sh"], cwd=copy, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "round trip OK: bytes equal" in done.stdout and "folder round trip OK" in done.stdout
    assert sorted(p.relative_to(user_registry).as_posix() for p in user_registry.rglob("*")) == before
    assert not (tmp_path / "data" / "tychoreg").exists()  # the default registry was never made
    assert not (tmp_path / "cache" / "tychoreg").exists()
    assert list(temp.iterdir()) == []


def _pins() -> dict[str, list[tuple[str, str | None, list[str]]]]:
    """requirements/test.txt: name -> [(version, marker, hashes)]."""
    text = (ROOT / "requirements" / "test.txt").read_text()
    pins: dict[str, list[tuple[str, str | None, list[str]]]] = {}
    for block in re.split(r"\n(?=[A-Za-z0-9])", text.split("\n", 2)[2]):
        head = block.split("\\", 1)[0].strip()
        match = re.match(r"([A-Za-z0-9._-]+)==([^\s;]+)\s*(?:;\s*(.+))?$", head)
        assert match, block[:200]
        name, pinned, marker = match.groups()
        hashes = re.findall(r"--hash=sha256:([0-9a-f]{64})", block)
        pins.setdefault(canonicalize_name(name), []).append((pinned, marker, hashes))
    return pins


def test_test_tools_are_pinned_with_hashes_and_installed_as_pinned() -> None:
    pins = _pins()
    for name, entries in pins.items():
        for _, _, hashes in entries:
            assert hashes, name
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = [*project["dependencies"], *project["optional-dependencies"]["test"]]
    for requirement in wanted:
        name = canonicalize_name(re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0])
        assert name in pins, f"{name} is not pinned in requirements/test.txt"
    # What scripts/test.sh installed is exactly what the file pins (for this interpreter).
    for name, entries in pins.items():
        for pinned, marker, _ in entries:
            if marker is None or Marker(marker).evaluate():
                try:
                    assert version(name) == pinned, name
                except PackageNotFoundError:
                    raise AssertionError(f"{name} {pinned} is pinned but not installed") from None


def test_packaging_metadata() -> None:
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert any(r.replace(" ", "").startswith("setuptools>=77") for r in meta["build-system"]["requires"])
    project = meta["project"]
    assert project["license"] == "MIT"
    assert "Programming Language :: Python :: 3.10" in project["classifiers"]
    assert not any(c.startswith("License ::") for c in project["classifiers"])  # the SPDX string says it
    assert not any(d.startswith("zstandard") for d in project["dependencies"])
    extras = project["optional-dependencies"]
    assert extras["zstd"] == ["zstandard>=0.22"]
    assert extras["s3"] == ["boto3>=1.36"]  # what 0.4.0's README told people to install


NO_ZSTD = "import sys\nsys.modules['zstandard'] = None\n"


def _without_zstandard(ws: Workspace, *args: str) -> Result:
    shim = ws.root.parent / "shim-no-zstd"
    shim.mkdir(exist_ok=True)
    (shim / "sitecustomize.py").write_text(NO_ZSTD)
    proc = subprocess.run(
        [sys.executable, "-m", "tychoreg", *args],
        cwd=ws.root,
        env={**ws.base_env(), "PYTHONPATH": str(shim)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    result = Result(proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in result.all
    return result


def test_zstandard_missing_is_one_clear_line(ws: Workspace) -> None:
    tree = ws.root / "build"
    tree.mkdir()
    (tree / "a.txt").write_text("a")
    ws.ok("init", "site", "site.tar.zst")
    before = ws.stored_keys()
    refused = _without_zstandard(ws, "push", "site", "1.0", "build")
    assert refused.code == 1
    assert refused.err.splitlines() == [
        "error: packing .tar.zst needs the zstandard package, which is not installed",
        "hint: pip install 'tycho-station[zstd]', or push with --format tar.gz",
    ]
    assert ws.stored_keys() == before
    ws.ok("push", "site", "1.0", "build", "--promote-latest")  # with zstandard, as installed here
    pulled = _without_zstandard(ws, "pull", "site", "--extract", "out")
    assert pulled.code == 1 and not (ws.root / "out").exists()
    assert "zstd-compressed and the zstandard package is missing" in pulled.err
    assert pulled.err.splitlines()[-1] == "hint: pip install 'tycho-station[zstd]'"
    # Everything else works without it: gzip folders, plain files.
    ws.ok("init", "gz", "gz.tar.gz")
    assert _without_zstandard(ws, "push", "gz", "1.0", "build", "--promote-latest").code == 0
    assert _without_zstandard(ws, "pull", "gz", "--extract", "gz").code == 0
    assert (ws.root / "gz" / "a.txt").read_text() == "a"


def test_lock_script_and_test_script_agree() -> None:
    """scripts/test.sh installs from the file scripts/lock-test-tools.sh writes, with hashes."""
    test_sh = (ROOT / "scripts" / "test.sh").read_text()
    assert "--require-hashes -r requirements/test.txt" in test_sh
    assert "--no-deps ." in test_sh
    lock_sh = (ROOT / "scripts" / "lock-test-tools.sh").read_text()
    assert "--generate-hashes" in lock_sh and "-o requirements/test.txt" in lock_sh
    header = (ROOT / "requirements" / "test.txt").read_text().splitlines()[:2]
    assert header[1].strip() == "#    bash scripts/lock-test-tools.sh"
    assert textwrap.dedent(header[0]).startswith("# This file was autogenerated")
