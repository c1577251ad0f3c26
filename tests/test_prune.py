"""tychoreg prune: what a policy keeps (latest, tags, the newest N, the young), consent, dry runs,
JSON, the config's retention section, and deletes that stay safe beside pushes, tags and
promotes (the delete protocol, driven in-process at chosen moments and by racing processes)."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from conftest import Workspace, finish
from tychoreg import retention
from tychoreg.config import Retention
from tychoreg.errors import ConfirmationNeeded, UsageError

VERSIONS = ["1.0.0", "1.1.0", "1.2.0", "1.10.0", "2.0.0", "2.1.0", "3.0.0-rc.1"]


def versions(ws: Workspace, package: str = "narf") -> list[str]:
    return [v["version"] for v in ws.ok("list-versions", package, "--json").json()]


@pytest.fixture
def narf_ws(ws: Workspace) -> Workspace:
    ws.ok_all(
        ["init", "narf", "narf.bin"],
        *(["push", "narf", v, str(ws.file(f"src/{v}", f"narf {v}".encode())), "-q"] for v in VERSIONS),
        ["promote", "narf", "1.10.0"],
        ["tag", "narf", "1.0.0", "lts"],
        ["yank", "narf", "2.1.0", "--reason", "broken"],
    )
    return ws


def test_keep_spares_latest_tags_and_the_newest(narf_ws: Workspace) -> None:
    narf = narf_ws
    before = narf.stored_keys()
    refused = narf.run("prune", "narf", "--keep", "2")  # not a terminal, no --yes
    assert refused.code == 1 and "--yes" in refused.err and "--dry-run" in refused.err
    assert narf.stored_keys() == before
    dry = narf.ok("prune", "narf", "--keep", "2", "--dry-run")
    assert [line.split()[3] for line in dry.out.splitlines()] == ["1.1.0", "1.2.0", "2.1.0"]
    assert "Dry run" in dry.err
    assert narf.stored_keys() == before
    done = narf.ok("prune", "narf", "--keep", "2", "--yes")
    assert [line.split()[2] for line in done.out.splitlines()] == ["1.1.0", "1.2.0", "2.1.0"]
    # kept: lts (1.0.0), latest (1.10.0), the newest 2 that are not yanked (3.0.0-rc.1, 2.0.0);
    # 2.1.0 is yanked, so it is not counted among the newest, and goes.
    assert versions(narf) == ["1.0.0", "1.10.0", "2.0.0", "3.0.0-rc.1"]


def test_yanked_versions_do_not_count_and_go_first(narf_ws: Workspace) -> None:
    narf = narf_ws
    out = narf.ok("prune", "narf", "--keep", "2", "--json", "--yes").json()
    assert [d["version"] for d in out[0]["deleted"]] == ["1.1.0", "1.2.0", "2.1.0"]
    assert {k["version"]: k["why"] for k in out[0]["kept"]} == {
        "1.0.0": "tag lts",
        "1.10.0": "latest",
        "2.0.0": "among the newest 2",
        "3.0.0-rc.1": "among the newest 2",
    }
    assert versions(narf) == ["1.0.0", "1.10.0", "2.0.0", "3.0.0-rc.1"]
    assert out[0]["policy"] == {"keep": 2, "older_than": None}
    assert out[0]["dry_run"] is False and out[0]["failed"] == []
    assert narf.read_stored("narf/tycho.json")  # the package stays
    for v in ("1.1.0", "1.2.0", "2.1.0"):
        assert not any(k.endswith((f"tycho_{v}.pkg", f"{v}.json")) for k in narf.stored_keys()), v
    assert "2.1.0" not in json.loads(narf.read_stored("narf/tycho.json")).get("tychoreg", {}).get("yanked", {})


def test_keep_zero_leaves_only_latest_and_tags(narf_ws: Workspace) -> None:
    narf = narf_ws
    narf.ok("prune", "narf", "--keep", "0", "--yes")
    assert versions(narf) == ["1.0.0", "1.10.0"]
    assert narf.ok("prune", "narf", "--keep", "0", "--yes").out == ""  # nothing left to delete: exit 0


def test_older_than_by_the_stores_times(ws: Workspace) -> None:
    ws.ok_all(
        ["init", "narf", "narf.bin"],
        *(["push", "narf", v, str(ws.file(f"src/{v}", v.encode())), "-q"] for v in ("1", "2", "3", "4")),
        ["promote", "narf", "1"],
    )
    if ws.backend == "file":  # age the data files as the store reports them
        registry = Path(ws.config["file"]["path"])
        old = time.time() - 200 * 86400
        for v in ("1", "2", "3"):
            os.utime(registry / "narf" / f"tycho_{v}.pkg", (old, old))
        out = ws.ok("prune", "narf", "--older-than", "180d", "--yes", "--json").json()[0]
        assert [d["version"] for d in out["deleted"]] == ["2", "3"]
        assert {k["version"]: k["why"] for k in out["kept"]} == {"1": "latest", "4": "younger than 180d"}
        assert 199 < out["deleted"][0]["age_days"] < 201
        assert versions(ws) == ["1", "4"]
    else:  # S3 times cannot be set: nothing is 180 days old, and 0s makes everything old
        assert ws.ok("prune", "narf", "--older-than", "180d", "--yes").out == ""
        out = ws.ok("prune", "narf", "--older-than", "0s", "--keep", "1", "--yes", "--json").json()[0]
        assert [d["version"] for d in out["deleted"]] == ["2", "3"]
        assert versions(ws) == ["1", "4"]


def test_plan_ages_on_s3_by_the_listing(s3_backend) -> None:
    """A plan measured as of 200 days from now: by the stores' own modification times."""
    from interleave import with_narf, write

    backend = with_narf(s3_backend)
    reg, _ = backend.registry()
    for v in ("1", "2", "3"):
        reg.push("narf", v, write(backend.tmp, v, v.encode()))
    reg.promote("narf", "3")
    later = datetime.now(timezone.utc) + timedelta(days=200)
    plan = retention.plan(reg.store, "narf", Retention(keep=1, older_than=timedelta(days=180)), now=later)
    assert [c.version for c in plan.delete] == ["1", "2"]
    assert all(199 < (c.age or 0) / 86400 < 201 for c in plan.delete)
    plan = retention.plan(reg.store, "narf", Retention(older_than=timedelta(days=180)))
    assert plan.delete == ()


def test_config_retention_applies_without_options(ws: Workspace) -> None:
    ws.config["retention"] = {"*": {"keep": 1}, "big": {"keep": 2, "older_than": "0s"}, "firmware": {}}
    ws.write_config()
    setup = []
    for package in ("narf", "big", "firmware"):
        setup.append(["init", package, f"{package}.bin"])
        for v in ("1", "2", "3", "4"):
            setup.append(["push", package, v, str(ws.file(f"src/{package}{v}", f"{package}{v}".encode())), "-q"])
    ws.ok_all(*setup, ["promote", "narf", "2"])
    out = ws.ok("prune", "--yes", "--json").json()
    assert {p["package"]: [d["version"] for d in p["deleted"]] for p in out} == {"big": ["1", "2"], "narf": ["1", "3"]}
    assert versions(ws, "narf") == ["2", "4"]
    assert versions(ws, "big") == ["3", "4"]
    assert versions(ws, "firmware") == ["1", "2", "3", "4"]  # {} exempts it from "*"
    # Options win over the config; a named package without a policy is a usage error.
    ws.ok("prune", "firmware", "--keep", "3", "--yes")
    assert versions(ws, "firmware") == ["2", "3", "4"]
    result = ws.run("prune", "firmware")
    assert result.code == 2 and "no retention policy" in result.err and "hint:" in result.err


@pytest.mark.parametrize(
    "section,words",
    [
        ({"*": {"keep": -1}}, "keep"),
        ({"*": {"keep": True}}, "keep"),
        ({"*": {"older_than": "soon"}}, "older_than"),
        ({"*": {"older_than": 5}}, "older_than"),
        ({"*": {"keep": 1, "max": 3}}, "keep and/or older_than"),
        ({"../x": {"keep": 1}}, "retention"),
        ([1, 2], "retention"),
    ],
)
def test_bad_retention_sections_are_config_errors(ws: Workspace, section, words: str) -> None:
    ws.config["retention"] = section
    ws.write_config()
    result = ws.run("prune", "--dry-run")
    assert result.code == 2, result.all
    assert words in result.err


def test_no_policy_at_all_is_a_usage_error(ws: Workspace) -> None:
    ws.ok("init", "narf", "narf.bin")
    for args in (("prune",), ("prune", "narf"), ("prune", "narf", "--yes")):
        result = ws.run(*args)
        assert result.code == 2 and "no retention policy" in result.err
    assert ws.run("prune", "narf", "--keep", "-1").code == 2
    assert ws.run("prune", "narf", "--older-than", "soon").code == 2
    assert ws.run("prune", "../x", "--keep", "1").code == 2
    result = ws.run("prune", "nothere", "--keep", "1", "--yes")
    assert result.code == 1 and "nothere" in result.err


def test_a_terminal_is_asked_and_a_no_deletes_nothing(narf_ws: Workspace) -> None:
    narf = narf_ws
    before = narf.stored_keys()
    for answer, code in ((b"n\n", 1), (b"y\n", 0)):
        main, child = pty.openpty()
        proc = subprocess.Popen(
            [sys.executable, "-m", "tychoreg", "prune", "narf", "--keep", "2"],
            cwd=narf.root,
            env=narf.base_env(),
            stdin=child,
            stdout=subprocess.PIPE,
            stderr=child,
        )
        os.close(child)
        seen = b""
        deadline = time.monotonic() + 60
        while b"cannot be undone" not in seen and time.monotonic() < deadline:
            try:
                seen += os.read(main, 4096)
            except OSError:
                break
        assert b"would delete  narf 1.1.0" in seen, seen
        os.write(main, answer)
        proc.communicate(timeout=60)
        while True:
            try:
                if not os.read(main, 4096):
                    break
            except OSError:
                break
        os.close(main)
        assert proc.returncode == code
        if code == 1:
            assert narf.stored_keys() == before
    assert versions(narf) == ["1.0.0", "1.10.0", "2.0.0", "3.0.0-rc.1"]


def test_a_version_tagged_or_deleted_after_the_plan_is_spared(narf) -> None:  # conftest's: both backends
    """The plan is made, then another client tags one planned version and deletes another: the
    delete protocol refuses the tagged one (it stays, with its tag) and skips the gone one."""
    reg, _ = narf.registry()
    for v in ("1", "2", "3", "4"):
        reg.push("narf", v, _src(narf.tmp, v))
    reg.promote("narf", "4")
    plan = retention.plan(reg.store, "narf", Retention(keep=0))
    assert [c.version for c in plan.delete] == ["1", "2", "3"]
    other, _ = narf.registry()
    other.tag("narf", "2", "stable")
    other.delete("narf", "3")
    other.push("narf", "0.5", _src(narf.tmp, "0.5"))  # pushed after the plan: not in it
    done = retention.carry_out(reg.store, plan)
    assert [c.version for c in done.deleted] == ["1"]
    assert done.spared == {"2": "tagged meanwhile (stable)", "3": "deleted meanwhile"}
    assert done.failed == {}
    assert sorted(v.version for v in reg.versions("narf")) == ["0.5", "2", "4"]
    assert reg.info("narf").tags == {"latest": "4", "stable": "2"}  # type: ignore[union-attr]


def test_refused_confirmation_deletes_nothing(narf) -> None:
    reg, _ = narf.registry()
    for v in ("1", "2"):
        reg.push("narf", v, _src(narf.tmp, v))
    asked = []
    with pytest.raises(ConfirmationNeeded):
        reg.prune(["narf"], keep=0, confirm=lambda plans: asked.append(plans) or False)
    assert [[c.version for c in p.delete] for p in asked[0]] == [["1", "2"]]
    assert sorted(v.version for v in reg.versions("narf")) == ["1", "2"]
    with pytest.raises(UsageError):
        reg.prune(["narf"])  # no options, no configured policy


def _src(tmp: Path, v: str) -> Path:
    path = tmp / "src" / f"v{v}"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(f"narf {v}".encode())
    return path


def test_prune_racing_promotes_and_pushes_leaves_no_dangling_reference(ws: Workspace) -> None:
    """Prunes, promotes and pushes as separate processes at once: afterwards every reference
    names a version that exists (or is unset), and every version that exists verifies."""
    ws.ok_all(
        ["init", "narf", "narf.bin"],
        *(["push", "narf", f"1.{i}", str(ws.file(f"src/{i}", f"narf {i}".encode())), "-q"] for i in range(8)),
        ["promote", "narf", "1.7"],
    )
    procs = [ws.spawn("prune", "narf", "--keep", "1", "--yes") for _ in range(2)]
    procs += [ws.spawn("promote", "narf", f"1.{i}") for i in (2, 4, 6)]
    procs += [ws.spawn("push", "narf", f"2.{i}", str(ws.file(f"src/2{i}", f"two {i}".encode()))) for i in range(3)]
    for proc in finish(procs):
        assert proc.returncode in (0, 1), proc.stderr
    listed = ws.ok("list-versions", "narf", "--json").json()
    present = {v["version"] for v in listed}
    doc = json.loads(ws.read_stored("narf/tycho.json"))
    assert doc["latest"] is None or doc["latest"] in present
    for tag, version in doc.get("tychoreg", {}).get("tags", {}).items():
        assert version in present, tag
    assert all(v["sha256"] for v in listed)
    ws.ok("verify", "narf")


def test_prune_keeps_the_static_catalog_current(narf_ws: Workspace) -> None:
    """What prune deletes leaves the package's machine index and page without an `index` run."""
    narf = narf_ws
    narf.ok("prune", "narf", "--keep", "2", "--yes")
    catalog = json.loads(narf.read_stored("narf/.tycho/catalog.json"))
    listed = sorted(v["version"] for v in catalog["versions"])
    assert listed == sorted(versions(narf)) == ["1.0.0", "1.10.0", "2.0.0", "3.0.0-rc.1"]
    assert "1.1.0" not in narf.read_stored("narf/index.html").decode()
    assert narf.run("index", "--check").code == 0
