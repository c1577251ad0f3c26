"""The static catalog: every write keeps it current, `index` repairs it, `index --check` finds
what is stale, concurrent writers lose no entry, a failed update never fails a write, and pages
escape what the registry holds. Real CLI on both backends, real 0.4.0, forced interleavings."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess

import pytest

from conftest import Result, Workspace, finish
from faultproxy import Rule
from interleave import Actor, Backend, Gate, write

ROOT_INDEX = ".tycho-catalog.json"


def root_index(ws: Workspace) -> dict:
    return json.loads(ws.read_stored(ROOT_INDEX))


def package_index(ws: Workspace, package: str) -> dict:
    return json.loads(ws.read_stored(f"{package}/.tycho/catalog.json"))


def page(ws: Workspace, key: str) -> str:
    return ws.read_stored(key).decode()


def versions(ws: Workspace, package: str) -> list[str]:
    return [v["version"] for v in package_index(ws, package)["versions"]]


def fresh(ws: Workspace) -> None:
    check = ws.run("index", "--check", "--json")
    assert check.code == 0, check.all
    assert check.json()["fresh"] is True


def test_every_write_keeps_the_catalog_current(ws: Workspace) -> None:
    one, two = os.urandom(3000), os.urandom(5000)
    ws.ok("init", "narf", "narf.bin")
    assert root_index(ws)["packages"]["narf"]["latest"] is None
    assert 'href="narf/index.html"' in page(ws, "index.html")
    assert versions(ws, "narf") == []
    fresh(ws)

    ws.ok("push", "narf", "1.0", str(ws.file("one.bin", one)), "--promote-latest", "--note", "first")
    row = package_index(ws, "narf")["versions"][0]
    assert (row["version"], row["size"], row["note"]) == ("1.0", 3000, "first")
    assert row["sha256"] == hashlib.sha256(one).hexdigest()
    assert root_index(ws)["packages"]["narf"]["latest"] == "1.0"
    assert hashlib.sha256(one).hexdigest() in page(ws, "narf/index.html")
    fresh(ws)

    ws.ok("push", "narf", "1.1", str(ws.file("two.bin", two)))
    assert versions(ws, "narf") == ["1.0", "1.1"]
    assert root_index(ws)["packages"]["narf"]["versions"] == 2
    ws.ok("promote", "narf", "1.1")
    assert package_index(ws, "narf")["latest"] == "1.1"
    assert root_index(ws)["packages"]["narf"]["latest"] == "1.1"
    fresh(ws)

    ws.ok("tag", "narf", "1.0", "stable")
    assert package_index(ws, "narf")["tags"] == {"latest": "1.1", "stable": "1.0"}
    assert "stable &rarr; 1.0" in page(ws, "index.html")
    ws.ok("untag", "narf", "stable")
    assert root_index(ws)["packages"]["narf"]["tags"] == {"latest": "1.1"}
    fresh(ws)

    ws.ok("yank", "narf", "1.1", "--reason", "broken build", "--yes")
    index = package_index(ws, "narf")
    assert index["latest"] == "1.0"
    assert index["yanked"]["1.1"]["reason"] == "broken build"
    assert "yanked: broken build" in page(ws, "narf/index.html")
    ws.ok("unyank", "narf", "1.1")
    assert package_index(ws, "narf")["yanked"] == {}
    fresh(ws)

    ws.ok("delete", "narf", "1.1", "--yes")
    assert versions(ws, "narf") == ["1.0"]
    assert 'id="v-1.1"' not in page(ws, "narf/index.html")
    fresh(ws)

    ws.ok("init", "other", "o.bin")
    ws.ok("delete", "narf", "--yes", "--force")
    assert list(root_index(ws)["packages"]) == ["other"]
    assert 'href="narf/index.html"' not in page(ws, "index.html")
    assert not [k for k in ws.stored_keys(catalog=True) if k.startswith("narf/")]  # no ghost folder for 0.4.0
    fresh(ws)


def test_index_check_finds_what_other_writers_left_out_and_index_repairs_it(ws: Workspace) -> None:
    ws.ok("init", "narf", "narf.bin")
    ws.ok("push", "narf", "1.0", str(ws.file("one.bin", b"one")))
    fresh(ws)
    ws.write_stored("narf/tycho_2.0.pkg", b"pushed by a tool that keeps no catalog")

    stale = ws.run("index", "--check")
    assert stale.code == 1, stale.all
    assert "stale  narf/.tycho/catalog.json" in stale.out
    assert "hint: bring it up to date with: tychoreg index" in stale.err
    as_json = ws.run("index", "--check", "--json")
    assert as_json.code == 1
    assert as_json.json()["fresh"] is False
    assert "narf/.tycho/catalog.json" in as_json.json()["stale"]
    assert versions(ws, "narf") == ["1.0"]  # checking writes nothing

    repaired = ws.ok("index", "--json").json()
    assert {"narf/.tycho/catalog.json", "narf/index.html", ROOT_INDEX} <= set(repaired["written"])
    assert repaired["packages"] == 1 and repaired["problems"] == []
    assert versions(ws, "narf") == ["1.0", "2.0"]
    assert package_index(ws, "narf")["versions"][1]["sha256"] is None
    fresh(ws)
    assert ws.ok("index", "--json").json()["written"] == []  # nothing to do the second time


def test_index_writes_a_catalog_for_a_registry_that_never_had_one(ws: Workspace) -> None:
    ws.write_stored("narf/tycho.json", b'{"localname": "narf.bin", "latest": "1.0"}')
    ws.write_stored("narf/tycho_1.0.pkg", b"0.4.0 bytes")
    ws.write_stored("notapackage/readme.txt", b"other files in a shared bucket")
    assert ws.run("index", "--check").code == 1
    ws.ok("index")
    assert list(root_index(ws)["packages"]) == ["narf"]
    assert versions(ws, "narf") == ["1.0"]
    assert "notapackage/index.html" not in ws.stored_keys(catalog=True)
    fresh(ws)


def test_concurrent_pushes_to_different_packages_lose_no_entry(ws: Workspace) -> None:
    names = [f"pkg{i}" for i in range(6)]
    for name in names:
        ws.ok("init", name, f"{name}.bin")
    for name in names:
        ws.file(f"{name}.bin", name.encode() * 100)
    procs = [ws.spawn("push", name, "1.0", f"{name}.bin", "--promote-latest") for name in names]
    done = finish(procs)
    assert all(p.returncode == 0 for p in done), [p.stderr for p in done]
    assert not any("warning" in p.stderr for p in done), [p.stderr for p in done]
    packages = root_index(ws)["packages"]
    assert {n: packages[n]["latest"] for n in names} == dict.fromkeys(names, "1.0")
    for name in names:
        assert versions(ws, name) == ["1.0"]
        assert f'href="{name}/index.html"' in page(ws, "index.html")
    fresh(ws)


def test_a_stale_catalog_writer_loses_its_swap_and_rebuilds(backend: Backend) -> None:
    """A's rebuild of narf's index listed the versions before B's 2.0 was committed; A is held
    just before it writes. B pushes 2.0 (and brings the index up to date). A's swap must fail on
    B's newer index and A rebuild, or 2.0 would vanish from the catalog."""
    reg_a, store_a = backend.registry()
    reg_a.init("narf", "narf.bin")
    reg_b, _ = backend.registry()
    gate = Gate()
    index_key = "narf/.tycho/catalog.json"
    store_a.on("put_if_match", index_key, gate)
    a = Actor(lambda: reg_a.push("narf", "1.0", write(backend.tmp, "a", b"a" * 10)))
    gate.wait(a)  # A's listing is made: it holds 1.0 only
    reg_b.push("narf", "2.0", write(backend.tmp, "b", b"b" * 20))
    gate.release()
    assert a.done().error is None
    store = backend.raw()
    index = json.loads(store.get(index_key)[0])
    assert [v["version"] for v in index["versions"]] == ["1.0", "2.0"]


def test_concurrent_writers_to_the_registry_index_lose_no_package(backend: Backend) -> None:
    reg_a, store_a = backend.registry()
    reg_b, _ = backend.registry()
    reg_a.init("alpha", "a.bin")
    gate = Gate()
    store_a.on("put_if_match", ROOT_INDEX, gate)
    a = Actor(lambda: reg_a.push("alpha", "1.0", write(backend.tmp, "a", b"a")))
    gate.wait(a)
    reg_b.init("beta", "b.bin")  # its entry goes in while A holds an older registry index
    gate.release()
    assert a.done().error is None
    packages = json.loads(backend.raw().get(ROOT_INDEX)[0])["packages"]
    assert sorted(packages) == ["alpha", "beta"]
    assert packages["alpha"]["versions"] == 1


def test_a_catalog_that_cannot_be_written_never_fails_the_write(proxied_s3) -> None:
    ws, proxy = proxied_s3
    ws.ok("init", "narf", "narf.bin")
    data = os.urandom(2000)
    proxy.rules.append(Rule("PUT", ".tycho/catalog.json", "503", times=999))
    pushed = ws.run("push", "narf", "1.0", str(ws.file("a.bin", data)), "--promote-latest")
    assert pushed.code == 0, pushed.all
    assert "warning: the web catalog was not brought up to date after the change to narf" in pushed.err
    assert "hint: repair it with: tychoreg index" in pushed.err
    ws.ok("pull", "narf")
    assert (ws.root / "tycho_packages/narf.bin").read_bytes() == data
    assert ws.run("index", "--check").code == 1
    proxy.rules.clear()
    ws.ok("index")
    fresh(ws)
    assert versions(ws, "narf") == ["1.0"]


def test_a_page_that_is_not_ours_is_never_overwritten(ws: Workspace) -> None:
    site = b"<!doctype html><title>our team's own site</title>"
    ws.write_stored("index.html", site)
    created = ws.run("init", "narf", "narf.bin")
    assert created.code == 0, created.all
    assert "is not a page tychoreg made; it was left as it is" in created.err
    assert ws.read_stored("index.html") == site
    assert list(root_index(ws)["packages"]) == ["narf"]  # the machine index is still written
    repair = ws.run("index")
    assert repair.code == 1
    assert "index.html is not a page tychoreg made" in repair.err
    assert ws.read_stored("index.html") == site


def test_a_package_named_like_the_root_page_wins_over_the_page(ws: Workspace) -> None:
    ws.ok("init", "narf", "narf.bin")
    assert "index.html" in ws.stored_keys(catalog=True)
    ws.ok("init", "index.html", "page.bin")  # a folder on the file backend: the page makes room
    ws.ok("push", "index.html", "1.0", str(ws.file("p.bin", b"page")))
    assert sorted(root_index(ws)["packages"]) == ["index.html", "narf"]
    assert "index.html" not in ws.stored_keys(catalog=True)
    assert json.loads(ws.ok("list", "--json").out) == [
        {"name": "index.html", "latest": None},
        {"name": "narf", "latest": None},
    ]
    fresh(ws)
    deleted = ws.ok("delete", "index.html", "--yes")
    assert "warning" not in deleted.err  # (a folder, and SeaweedFS, keep an empty folder there)
    assert list(root_index(ws)["packages"]) == ["narf"]


def test_pages_escape_every_stored_string(ws: Workspace) -> None:
    evil = '<script>alert(1)</script><img src=x onerror="alert(2)">'
    ws.ok("init", "narf", "narf.bin")
    ws.ok(
        "push",
        "narf",
        "1.0",
        str(ws.file("a.bin", b"a")),
        "--note",
        evil,
        env={"TYCHOREG_IDENTITY": '"><svg onload=alert(3)>'},
    )
    ws.ok("yank", "narf", "1.0", "--reason", "</td><script>alert(4)</script>")
    html = page(ws, "narf/index.html")
    for raw in ("<script>alert", "<img src=x", "<svg onload", "</td><script>"):
        assert raw not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&quot;&gt;&lt;svg onload=alert(3)&gt;" in html
    assert html.count("<script>") == 0  # the package page has no script at all
    root = page(ws, "index.html")
    assert root.count("<script>") == 1  # only the filter


@pytest.fixture
def seed(seed_tychoreg, s3_ws: Workspace):
    def run(*args: str) -> Result:
        env = s3_ws.base_env()
        proc = subprocess.run([str(seed_tychoreg), *args], cwd=s3_ws.root, env=env, capture_output=True, text=True)
        assert "Traceback" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr
        return Result(proc.returncode, proc.stdout, proc.stderr)

    return run


def test_seed_is_blind_to_the_catalog_and_index_catches_up_with_it(s3_ws: Workspace, seed) -> None:
    s3_ws.ok("init", "narf", "narf.bin")
    s3_ws.ok("push", "narf", "1.0", str(s3_ws.file("one.bin", b"one")), "--promote-latest")
    assert {"index.html", ROOT_INDEX, "narf/index.html", "narf/.tycho/catalog.json"} <= s3_ws.stored_keys(catalog=True)
    listed = seed("list")
    assert listed.code == 0
    assert listed.out.splitlines() == ["narf -- Latest Version: 1.0"]  # no folder of the catalog's
    assert [line.strip() for line in seed("list-versions", "narf").out.splitlines()] == ["narf Versions", "- 1.0"]

    s3_ws.file("two.bin", b"two")
    assert seed("push", "narf", "2.0", "two.bin", "--promote-latest").code == 0
    assert s3_ws.run("index", "--check").code == 1  # 0.4.0 keeps no catalog
    s3_ws.ok("index")
    index = package_index(s3_ws, "narf")
    assert (index["latest"], [v["version"] for v in index["versions"]]) == ("2.0", ["1.0", "2.0"])
    assert seed("pull", "narf").code == 0
    assert (s3_ws.root / "tycho_packages/narf.bin").read_bytes() == b"two"
