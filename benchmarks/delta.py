"""Delta pulls: bytes on the wire and time of a pull that reuses the previous version, against a
full pull of the same version, through the network emulator (benchmarks/netem.py) in front of one
SeaweedFS started here (stopped by its PID).

Cases: for each change (1 %, 5 %, 30 % of a FILE_MIB file, as an insertion, a deletion and an
overwrite of a third each, spread over the file), two versions are pushed; with ``--tree``, also a
folder of files pushed as a tar.gz (``push DIR``, packed to delta well) and pushed again with a few
files changed. The destination holds the first version; then, each a fresh process with an empty
cache, on each emulated link (``--profiles``, default loopback and region: 20 ms, 40 MB/s per
connection):

- **delta**: ``pull PKG --version 2 --json`` (the destination holds version 1);
- **full**: the same with ``--no-delta`` (version 1 put back at the destination before each run).

The two alternate, run after run, so both see the same load. Bytes fetched are what the emulator
carried from the server to the client during the pull: every response, headers and metadata
included (so a little more than the data and the chunk index). Every pull's result must be
version 2's exact bytes. Also measured, in-process: the chunker's speed (cut and SHA-256 of each
piece), and ``Registry.push`` with the chunk index (as shipped) against the same push with the
index switched off (patched out here).

    python benchmarks/delta.py [--mib 256] [--runs 3] [--profiles loopback,region] [--tree]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))
from netem import PROFILES, Netem  # noqa: E402  (the network emulator, beside this file)

import servers  # noqa: E402  (tests/servers.py: SeaweedFS, shared with the tests)

MIB = 1024 * 1024


def versions(size: int, share: float, seed: int = 11) -> tuple[bytes, bytes, int]:
    """Version 1, and version 2 with ``share`` of it changed: a third inserted, a third deleted,
    a third overwritten, each in three places; returns them and the new bytes in version 2."""
    rng = random.Random(seed)
    one = b"".join(rng.randbytes(min(16 * MIB, size - at)) for at in range(0, size, 16 * MIB))
    region = max(1, int(size * share / 9))
    two = bytearray(one)
    for k in range(3):  # overwrite, at 10 %, 40 %, 70 %
        at = int(size * (0.1 + 0.3 * k))
        two[at : at + region] = rng.randbytes(region)
    for k in range(3):  # delete, at 85 %, 55 %, 25 % (from the end, so offsets hold)
        at = int(size * (0.85 - 0.3 * k))
        del two[at : at + region]
    for k in range(3):  # insert, at 90 %, 60 %, 30 %
        at = int(size * (0.9 - 0.3 * k))
        two[at:at] = rng.randbytes(region)
    return one, bytes(two), 6 * region


@dataclass
class Case:
    """Two versions of one package in a bucket of their own; ``work/v1`` holds version 1's stored
    bytes (put back at the destination before each pull)."""

    label: str
    bucket: str
    work: Path
    filename: str
    changed: int
    want: str


def run(argv: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    took = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr}")
    return took, proc.stdout


def config(work: Path, bucket: str, endpoint: str, name: str) -> Path:
    path = work / name
    s3 = {"bucket": bucket, "endpoint_url": endpoint, "region_name": "us-east-1"}
    path.write_text(json.dumps({"tycho": {"backend": "s3", "outdir": "out"}, "s3": s3}))
    return path


def tool(cfg: Path) -> list[str]:
    return [sys.executable, "-m", "tychoreg", "--config", cfg.name]


def file_case(seaweed: servers.Seaweed, tmp: Path, env: dict[str, str], n: int, size: int, share: float) -> Case:
    bucket, work = f"delta-{n}", tmp / f"w{n}"
    seaweed.client().create_bucket(Bucket=bucket)
    (work / "out").mkdir(parents=True)
    one, two, changed = versions(size, share)
    (work / "v1").write_bytes(one)
    (work / "v2").write_bytes(two)
    direct = tool(config(work, bucket, seaweed.endpoint, "direct.json"))
    run([*direct, "init", "big", "big.bin"], work, env)
    run([*direct, "push", "big", "1", "v1"], work, env)
    run([*direct, "push", "big", "2", "v2"], work, env)
    (work / "v2").unlink()
    return Case(f"{share:.0%}", bucket, work, "big.bin", changed, hashlib.sha256(two).hexdigest())


def tree_case(seaweed: servers.Seaweed, tmp: Path, env: dict[str, str], size: int) -> Case:
    """A folder of ``size`` bytes (files of 4 MiB of random bytes and some text) pushed as a
    tar.gz, then again with three of the binary files and two text files replaced."""
    bucket, work = "delta-tree", tmp / "wtree"
    seaweed.client().create_bucket(Bucket=bucket)
    (work / "out").mkdir(parents=True)
    rng = random.Random(5)
    tree = work / "tree"
    (tree / "lib").mkdir(parents=True)
    (tree / "doc").mkdir()
    count = max(4, size // (4 * MIB))
    for i in range(count):
        (tree / "lib" / f"part{i:03}.so").write_bytes(rng.randbytes(4 * MIB))
    for i in range(40):
        (tree / "doc" / f"page{i:02}.txt").write_text(f"page {i} line\n" * rng.randrange(500, 5000))
    direct = tool(config(work, bucket, seaweed.endpoint, "direct.json"))
    run([*direct, "init", "tree", "tree.tar.gz"], work, env)
    run([*direct, "push", "tree", "1", "tree"], work, env)
    changed = 0
    replaced = sorted({1, count // 2, count - 2})
    for i in replaced:
        data = rng.randbytes(4 * MIB)
        (tree / "lib" / f"part{i:03}.so").write_bytes(data)
        changed += len(data)
    for i in (3, 17):
        text = f"page {i} rewritten\n" * 3000
        (tree / "doc" / f"page{i:02}.txt").write_text(text)
        changed += len(text)
    run([*direct, "push", "tree", "2", "tree"], work, env)
    shutil.rmtree(tree)
    run([*direct, "pull", "tree", "--version", "1", "--outfile", "v1"], work, env)
    run([*direct, "pull", "tree", "--version", "2", "--outfile", "v2"], work, env)
    want = hashlib.sha256((work / "v2").read_bytes()).hexdigest()
    (work / "v2").unlink()
    label = f"tar.gz: {len(replaced)} of {count} files + 2 texts"
    return Case(label, bucket, work, "tree.tar.gz", changed, want)


def measure(case: Case, net: Netem, profile: str, runs: int, env: dict[str, str]) -> dict[str, object]:
    """Delta and full pulls of version 2, alternating; medians of the times, and what the
    emulator carried (the same on every run)."""
    cfg = config(case.work, case.bucket, net.endpoint, f"{profile}.json")
    pkg = case.filename.split(".", 1)[0]
    dest = case.work / "out" / case.filename
    run_env = {**env, "TYCHOREG_CACHE_DIR": str(case.work / "cache"), "HOME": str(case.work)}
    times: dict[str, list[float]] = {"delta": [], "full": []}
    wire: dict[str, dict[str, int]] = {}
    for _ in range(runs):
        for mode in ("delta", "full"):
            shutil.copyfile(case.work / "v1", dest)
            shutil.rmtree(case.work / "cache", ignore_errors=True)
            extra = ["--no-delta"] if mode == "full" else []
            net.reset()
            took, out = run([*tool(cfg), "pull", pkg, "--version", "2", "--json", *extra], case.work, run_env)
            stats = net.reset()
            got = json.loads(out)
            if got["sha256"] != case.want or hashlib.sha256(dest.read_bytes()).hexdigest() != case.want:
                raise SystemExit("a pull did not produce version 2's bytes")
            times[mode].append(took)
            wire[mode] = {
                "bytes": stats.bytes_down,
                "requests": stats.requests,
                "connections": stats.connections,
                "serial": stats.serial_round_trips,
                "fetched": got["fetched_bytes"],
            }
    index = len(seaweed_get(case, f"{pkg}/.tycho/chunks/2.cdx"))
    delta_s, full_s = statistics.median(times["delta"]), statistics.median(times["full"])
    return {
        "link": profile,
        "change": case.label,
        "changed_mib": round(case.changed / MIB, 2),
        "index_kib": round(index / 1024, 1),
        "delta_fetched_mib": round(wire["delta"]["bytes"] / MIB, 2),
        "fetched_over_changed_plus_index": round(wire["delta"]["bytes"] / (case.changed + index), 3),
        "full_fetched_mib": round(wire["full"]["bytes"] / MIB, 2),
        "delta_requests": wire["delta"]["requests"],
        "delta_serial_round_trips": wire["delta"]["serial"],
        "full_requests": wire["full"]["requests"],
        "full_connections": wire["full"]["connections"],
        "full_serial_round_trips": wire["full"]["serial"],
        "delta_s": round(delta_s, 3),
        "full_s": round(full_s, 3),
        "delta_runs_s": [round(t, 2) for t in times["delta"]],
        "full_runs_s": [round(t, 2) for t in times["full"]],
        "time_ratio": round(delta_s / full_s, 3),
    }


_SEAWEED: list[servers.Seaweed] = []


def seaweed_get(case: Case, key: str) -> bytes:
    return bytes(_SEAWEED[0].client().get_object(Bucket=case.bucket, Key=key)["Body"].read())


def chunker_speed(path: Path) -> float:
    from tychoreg import chunks

    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        best = []
        for _ in range(3):
            start = time.perf_counter()
            chunks.build(fh.fileno(), size, "0" * 64)
            best.append(time.perf_counter() - start)
    return size / statistics.median(best) / 1e6


class _NoIndex:
    def __init__(self, fd: int) -> None:
        pass

    def result(self, size: int, sha256: str) -> None:
        return None


def push_overhead(config: Path, data: Path, runs: int) -> tuple[float, float]:
    """Median seconds of ``Registry.push`` with the chunk index and without it."""
    from tychoreg import Registry, publish

    reg = Registry.from_config(config)
    shipped = publish.chunks.Background
    times: dict[bool, list[float]] = {True: [], False: []}
    for r in range(runs):
        for with_index in (True, False):
            publish.chunks.Background = shipped if with_index else _NoIndex  # type: ignore[misc]
            try:
                start = time.perf_counter()
                reg.push("big", f"p{r}-{int(with_index)}", data)
                times[with_index].append(time.perf_counter() - start)
            finally:
                publish.chunks.Background = shipped  # type: ignore[misc]
    return statistics.median(times[True]), statistics.median(times[False])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--shares", default="0.01,0.05,0.30")
    parser.add_argument("--profiles", default="loopback,region", help="emulated links, of benchmarks/netem.py")
    parser.add_argument("--tree", action="store_true", help="also a folder pushed as tar.gz, a few files changed")
    parser.add_argument("--no-push", action="store_true", help="skip the push and chunker measurements")
    args = parser.parse_args()
    size = args.mib * MIB
    profiles = [p for p in args.profiles.split(",") if p]
    tmp = Path(tempfile.mkdtemp(prefix="tycho-delta-bench-"))
    rows = []
    try:
        (tmp / "weed").mkdir()
        with servers.running_seaweed(tmp / "weed") as seaweed:
            _SEAWEED.append(seaweed)
            env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "TYCHOREG_"))}
            env.update(servers.S3_ENV)
            host, _, port = seaweed.endpoint.split("://", 1)[1].rstrip("/").rpartition(":")
            cases = [file_case(seaweed, tmp, env, n, size, float(s)) for n, s in enumerate(args.shares.split(","))]
            if args.tree:
                cases.append(tree_case(seaweed, tmp, env, size))
            for profile in profiles:
                with Netem((host, int(port)), PROFILES[profile]) as net:
                    for case in cases:
                        row = measure(case, net, profile, args.runs, env)
                        rows.append(row)
                        print(json.dumps(row), flush=True)
            if not args.no_push:
                speed = chunker_speed(cases[0].work / "v1")
                os.environ.update(servers.S3_ENV)
                with_index, without = push_overhead(cases[0].work / "direct.json", cases[0].work / "v1", args.runs)
                extra = {
                    "chunk_and_hash_mb_s": round(speed),
                    "push_with_index_s": round(with_index, 3),
                    "push_without_index_s": round(without, 3),
                }
                print(json.dumps(extra), flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(
        "| link | change | new bytes | index | fetched (delta) | fetched / (new + index) | fetched (full) "
        "| delta pull | full pull | time ratio |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(
            f"| {r['link']} | {r['change']} | {r['changed_mib']} MiB | {r['index_kib']} KiB | "
            f"{r['delta_fetched_mib']} MiB | {r['fetched_over_changed_plus_index']}x | {r['full_fetched_mib']} MiB | "
            f"{r['delta_s']} s | {r['full_s']} s | {r['time_ratio']}x |"
        )


if __name__ == "__main__":
    main()
