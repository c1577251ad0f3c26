"""Reliability under random network faults, killed pushes and heavy concurrency.

Each test reports one line of figures, starting with ``FIGURES``, on the real stderr (so that it
shows with ``-s`` also under pytest-xdist, whose workers' stdout is not relayed).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import pytest

from conftest import Workspace, finish
from faultproxy import FaultProxy, Rule
from tychoreg import Registry, TychoError

KiB, MiB = 1024, 1024 * 1024


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(MiB):
            h.update(chunk)
    return h.hexdigest()


def report(line: str) -> None:
    sys.__stderr__.write(f"\n{line}\n")
    sys.__stderr__.flush()


# -- 1. random network faults, in-process through the Python API ------------------------------

_client_lock = threading.Lock()  # boto3's default session is not safe to build clients from in parallel


def test_random_faults_figures(s3_ws: Workspace, through_proxy: Callable[..., FaultProxy]) -> None:
    ws = s3_ws
    proxy = through_proxy(rate=0.0, seed=20240611, stall_seconds=1.5)
    ws.config["s3"]["config"] = {
        "connect_timeout": 1,
        "read_timeout": 1,
        "retries": {"mode": "standard", "max_attempts": 8},
    }
    config = ws.write_config()

    def registry() -> Registry:
        # One client per operation, as every CLI run has (boto3's retry quota is per client).
        with _client_lock:
            return Registry.from_config(config)

    rng = random.Random(7)
    packages = [f"pkg{i}" for i in range(10)]
    sources: dict[tuple[str, str], str] = {}  # (package, version) -> sha256 of what was pushed
    files: dict[tuple[str, str], Path] = {}
    setup = registry()
    for name in packages:
        setup.init(name, f"{name}.bin")
        for version in ("1.0", "1.1"):
            data = rng.randbytes(rng.randint(200 * KiB, 2 * MiB))
            path = ws.file(f"src/{name}-{version}.bin", data)
            setup.push(name, version, path)
            sources[(name, version)] = sha(data)
            files[(name, version)] = path
    base = list(sources)

    pushes = []
    for i in range(50):
        key = (packages[i % 10], f"2.{i}")
        data = rng.randbytes(rng.randint(100 * KiB, 1 * MiB))
        files[key] = ws.file(f"src/{key[0]}-{key[1]}.bin", data)
        sources[key] = sha(data)
        pushes.append(("push", key, None))
    pulls = [("pull", rng.choice(base), ws.root / "out" / f"p{i:03}" / "file.bin") for i in range(200)]
    ops = pulls + pushes
    rng.shuffle(ops)

    unclean: list[str] = []
    errors: list[str] = []
    corrupt: list[str] = []
    outcome: dict[str, list[int]] = {"pull": [0, 0], "push": [0, 0]}
    pushed_ok: set[tuple[str, str]] = set()
    pull_failed: set[Path] = set()
    resumes = 0
    lock = threading.Lock()

    def run(op: tuple[str, tuple[str, str], Path | None]) -> None:
        nonlocal resumes
        kind, (name, version), out = op
        try:
            reg = registry()
            if kind == "push":
                reg.push(name, version, files[(name, version)])
            else:
                result = reg.pull(name, version, outfile=out, force=True)
                if sha_file(out) != sources[(name, version)]:
                    with lock:
                        corrupt.append(f"{out}: {name} {version}")
                with lock:
                    resumes += result.resumes
        except TychoError as exc:
            with lock:
                errors.append(f"{kind} {name} {version}: {type(exc).__name__}: {exc}")
                outcome[kind][1] += 1
                if kind == "pull":
                    pull_failed.add(out)
            return
        except Exception as exc:  # noqa: BLE001 - anything but a TychoError is a bug
            with lock:
                unclean.append(f"{kind} {name} {version}: {type(exc).__name__}: {exc}")
                outcome[kind][1] += 1
            return
        with lock:
            outcome[kind][0] += 1
            if kind == "push":
                pushed_ok.add((name, version))

    proxy.rate = 0.2
    started = time.monotonic()
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(run, ops))
    elapsed = time.monotonic() - started
    proxy.rate = 0.0

    # Destinations: a complete, verified file, or nothing; .part files only beside failed pulls.
    partial = []
    for _, key, out in pulls:
        if out.exists():
            if sha_file(out) != sources[key]:
                corrupt.append(f"{out} (at the end)")
        elif out not in pull_failed:
            partial.append(f"{out} missing after a successful pull")
        for leftover in out.parent.iterdir() if out.parent.exists() else ():
            if leftover != out and (out not in pull_failed or not leftover.name.endswith(".part")):
                partial.append(str(leftover))

    # The registry: every visible version holds exactly what was pushed, with its record.
    check = registry()
    visible = {(name, v.version): v.sha256 for name in packages for v in check.versions(name)}
    wrong = {k: s for k, s in visible.items() if s != sources.get(k)}
    missing = (set(base) | pushed_ok) - set(visible)
    failed_but_visible = set(visible) - set(base) - pushed_ok
    verified = check.verify()
    bad = [r for r in verified if not r.ok]
    debris = check.gc(older_than=timedelta(0))
    truncated_doc = [e for e in errors if "IncompleteRead" in e]  # see the next test

    parts_left = sum(1 for _, _, o in pulls if o.parent.exists() for _ in o.parent.glob(".*.part"))
    report(
        f"FIGURES random faults: pulls ok {outcome['pull'][0]} failed {outcome['pull'][1]}; "
        f"pushes ok {outcome['push'][0]} failed {outcome['push'][1]} "
        f"(failed but visible {len(failed_but_visible)}); "
        f"failures from one truncated metadata read {len(truncated_doc)}; "
        f"faults injected {dict(sorted(proxy.injected.items()))} of {len(proxy.seen)} requests; "
        f"resumes {resumes}; corrupt {len(corrupt)}; partial {len(partial)}; "
        f"leftover .part {parts_left}; verify {len(verified) - len(bad)}/{len(verified)} ok; "
        f"debris {len(debris)}; {elapsed:.1f}s"
    )
    for e in sorted(set(errors) - set(truncated_doc)):
        report(f"  other failure: {e}")
    assert not unclean, unclean
    assert not corrupt, corrupt
    assert not partial, partial
    assert not wrong, wrong
    assert not missing, missing
    assert not bad, bad
    assert len(verified) == len(visible)
    assert sum(proxy.injected.values()) > 100
    total_ok = outcome["pull"][0] + outcome["push"][0]
    assert total_ok >= 0.9 * len(ops), (outcome, errors)


@pytest.mark.parametrize(
    "target", ["narf/tycho.json", "narf/.tycho/versions/1.0.json"], ids=["package-doc", "version-record"]
)
def test_one_truncated_metadata_read_does_not_fail_the_pull(
    proxied_s3: tuple[Workspace, FaultProxy], target: str
) -> None:
    """One interrupted response body of a small document should be retried like any other fault.

    boto3 retries failed requests, and data downloads resume, but ``S3Store.get`` turns an
    interrupted body read of tycho.json or a version record straight into a StorageError: a single
    truncated response fails the whole pull (or push). In the random-fault test above this causes
    nearly all failed operations (~10% of them at a 20% fault rate)."""
    ws, proxy = proxied_s3
    ws.ok("init", "narf", "narf.bin")
    ws.ok("push", "narf", "1.0", str(ws.file("a.bin", b"payload")), "--promote-latest")
    proxy.rules.append(Rule("GET", target, "truncate", times=1))
    result = ws.run("pull", "narf")
    assert proxy.injected["truncate"] == 1
    assert result.code == 0, result.all
    assert (ws.root / "tycho_packages/narf.bin").read_bytes() == b"payload"


# -- 2. pushes killed at random moments ---------------------------------------------------------


def _stored_debris(ws: Workspace) -> list[str]:
    """Staged uploads nobody will commit: .tmp files, or multipart uploads under our prefix."""
    if ws.backend == "file":
        base = Path(ws.config["file"]["path"])
        return sorted(str(p) for p in base.rglob("*.tmp"))
    prefix = ws.config["s3"]["prefix"] + "/"
    pages = ws.seaweed.client().get_paginator("list_multipart_uploads").paginate(Bucket=ws.bucket, Prefix=prefix)
    return sorted(u["Key"] for page in pages for u in page.get("Uploads", ()) if u["Key"].startswith(prefix))


def test_killed_pushes_leave_nothing_visible_that_does_not_verify(ws: Workspace) -> None:
    ws.ok("init", "narf", "narf.bin")
    rng = random.Random(1234)
    base = os.urandom(20 * MiB)
    pushed: dict[str, str] = {}
    completed, killed, failed = [], [], []
    running: list[tuple[str, subprocess.Popen, float, Path]] = []

    def reap() -> None:
        for item in list(running):
            version, proc, deadline, path = item
            if proc.poll() is None and time.monotonic() >= deadline:
                proc.send_signal(signal.SIGKILL)
            if proc.poll() is None:
                continue
            proc.wait(60)
            out, err = proc.communicate()
            assert "Traceback" not in out + err, out + err
            (completed if proc.returncode == 0 else killed if proc.returncode == -signal.SIGKILL else failed).append(
                (version, err)
            )
            path.unlink()
            running.remove(item)

    # Calibrate the kill window to this machine and backend: one push, uncontended, then kills
    # spread from "at once" to "well after it would have finished" (3 run at once, 2 cores).
    t0 = time.monotonic()
    ws.ok("push", "narf", "0.0", str(ws.file("v0.bin", base)))
    pushed["0.0"] = sha(base)
    window = max(1.5, 3 * (time.monotonic() - t0))
    started = time.monotonic()
    for i in range(30):
        while len(running) >= 3:
            reap()
            time.sleep(0.01)
        version = f"1.{i}"
        data = i.to_bytes(4, "big") + base[4:]
        pushed[version] = sha(data)
        path = ws.file(f"v{i}.bin", data)
        proc = ws.spawn("push", "narf", version, str(path))
        running.append((version, proc, time.monotonic() + rng.uniform(0, window), path))
    while running:
        reap()
        time.sleep(0.01)
    assert not failed, failed  # pushes that were not killed all worked

    listed = ws.ok("list-versions", "narf", "--json").json()
    assert all(v["sha256"] is not None for v in listed), listed
    assert all(v["sha256"] == pushed[v["version"]] for v in listed), listed
    assert {v for v, _ in completed} | {"0.0"} <= {v["version"] for v in listed}
    ws.ok("verify", "narf")
    before = _stored_debris(ws)
    gc = ws.ok("gc", "--older-than", "0s", "--yes")
    removed = [line for line in gc.out.splitlines() if line.startswith("removed")]
    again = ws.ok("gc", "--older-than", "0s")
    after = _stored_debris(ws)
    report(
        f"FIGURES killed pushes ({ws.backend}): {len(completed)} completed, {len(killed)} killed, "
        f"{len(listed) - 1} of them visible (kill window 0-{window:.1f}s); gc removed {len(removed)} "
        f"({sum('unfinished upload' in r for r in removed)} unfinished uploads, "
        f"{sum('orphaned claim' in r for r in removed)} orphaned claims; {len(before)} staged before); "
        f"{time.monotonic() - started:.1f}s"
    )
    assert again.out.strip() == "" and "No debris found" in again.err, again.all
    assert after == [], after
    # gc did not touch the versions
    assert [v["version"] for v in ws.ok("list-versions", "narf", "--json").json()] == [v["version"] for v in listed]


# -- 3. many processes at once ------------------------------------------------------------------


def test_many_pushes_and_promotes_at_once(ws: Workspace) -> None:
    ws.ok("init", "narf", "narf.bin")
    reg = Registry.from_config(ws.root / ".tychoreg.json")
    old = [f"0.{i}" for i in range(8)]
    new = [f"1.{i}" for i in range(16)]
    files = {v: ws.file(f"v{v}.bin", os.urandom(random.Random(v).randint(1, 300 * KiB))) for v in old + new}
    for v in old:
        reg.push("narf", v, files[v])
    started = time.monotonic()
    procs = [ws.spawn("push", "narf", v, str(files[v]), "--promote-latest") for v in new]
    procs += [ws.spawn("promote", "narf", v) for v in old]
    results = finish(procs)
    elapsed = time.monotonic() - started
    assert [r.returncode for r in results] == [0] * 24, [r.stderr for r in results if r.returncode]
    listed = ws.ok("list-versions", "narf", "--json").json()
    assert sorted(v["version"] for v in listed) == sorted(old + new)
    for row in listed:
        assert row["sha256"] == sha(files[row["version"]].read_bytes()), row
    ws.ok("verify", "narf")
    doc = json.loads(ws.read_stored("narf/tycho.json"))
    assert doc["localname"] == "narf.bin"
    assert doc["latest"] in old + new
    assert not any(k.endswith(".tmp") for k in ws.stored_keys())
    report(f"FIGURES 16 pushes + 8 promotes ({ws.backend}): all exit 0, latest {doc['latest']}, {elapsed:.1f}s")


def test_same_version_from_eight_processes(ws: Workspace) -> None:
    ws.ok("init", "narf", "narf.bin")
    files = [ws.file(f"c{i}.bin", random.Random(i).randbytes(2 * MiB + i)) for i in range(8)]
    results = finish([ws.spawn("push", "narf", "1.0", str(f)) for f in files])
    codes = [r.returncode for r in results]
    assert codes.count(0) == 1, [r.stderr for r in results]
    assert sorted(codes) == [0] + [1] * 7, [r.stderr for r in results]
    for r in results:
        if r.returncode:
            assert "already exists" in r.stderr or "being pushed" in r.stderr, r.stderr
    winner = files[codes.index(0)].read_bytes()
    assert ws.read_stored("narf/tycho_1.0.pkg") == winner
    listed = ws.ok("list-versions", "narf", "--json").json()
    assert [(v["version"], v["sha256"]) for v in listed] == [("1.0", sha(winner))]
    ws.ok("verify", "narf")
