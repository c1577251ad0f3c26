"""Delta pulls: bytes fetched and time of a pull that reuses the previous version, against a full
pull of the same version, on one SeaweedFS on loopback (started here, stopped by its PID).

For each change (1 %, 5 %, 30 % of a FILE_MIB file, as an insertion, a deletion and an overwrite
of a third each, spread over the file), two versions are pushed; the destination holds the first;
then, each a fresh process with an empty cache:

- **delta**: ``pull PKG --version 2 --json`` (the destination holds version 1);
- **full**: the same with ``--no-delta`` (version 1 put back at the destination before each run).

Bytes fetched are counted on the wire by a proxy in front of SeaweedFS (GET bodies of the data
object and the chunk index). Every pull's result must be version 2's exact bytes. Also measured,
in-process: the chunker's speed (cut and SHA-256 of each piece), and ``Registry.push`` with the
chunk index (as shipped) against the same push with the index switched off (patched out here).

    python benchmarks/delta.py [--mib 256] [--runs 3]
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
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
import servers  # noqa: E402  (tests/servers.py: SeaweedFS, shared with the tests)
from faultproxy import FaultProxy  # noqa: E402  (counts the bytes each GET returns)

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


def throttle(proxy: FaultProxy, mbit: float, rtt: float) -> None:
    """A shared link of ``mbit`` Mbit/s with ``rtt`` seconds of latency per request, as a crude
    stand-in for a real network: every response waits ``rtt``, then its body takes its share of
    the one link (bodies are sent one after another, whatever the number of connections)."""
    import threading

    link = threading.Lock()
    rate = mbit * 1e6 / 8

    def slow(method: str, path: str, body: bytes) -> bytes:
        time.sleep(rtt)
        if body:
            with link:
                time.sleep(len(body) / rate)
        return body

    proxy.transform = slow


def run(argv: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    took = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr}")
    return took, proc.stdout


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
    parser.add_argument("--mbit", type=float, default=0, help="emulate a link of this speed (0: loopback)")
    parser.add_argument("--rtt-ms", type=float, default=20, help="latency per request on the emulated link")
    parser.add_argument("--no-push", action="store_true", help="skip the push and chunker measurements")
    args = parser.parse_args()
    size = args.mib * MIB
    tmp = Path(tempfile.mkdtemp(prefix="tycho-delta-bench-"))
    rows = []
    try:
        (tmp / "weed").mkdir()
        with servers.running_seaweed(tmp / "weed") as seaweed:
            proxy = FaultProxy(seaweed.endpoint)
            if args.mbit:
                throttle(proxy, args.mbit, args.rtt_ms / 1000)
            env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "TYCHOREG_"))}
            env.update(servers.S3_ENV)
            for n, share in enumerate(float(s) for s in args.shares.split(",")):
                bucket = f"delta-{n}"
                seaweed.client().create_bucket(Bucket=bucket)
                work = tmp / f"w{n}"
                (work / "out").mkdir(parents=True)
                (work / "tycho.json").write_text(
                    json.dumps(
                        {
                            "tycho": {"backend": "s3", "outdir": "out"},
                            "s3": {"bucket": bucket, "endpoint_url": proxy.endpoint, "region_name": "us-east-1"},
                        }
                    )
                )
                one, two, changed = versions(size, share)
                (work / "v1").write_bytes(one)
                (work / "v2").write_bytes(two)
                want = hashlib.sha256(two).hexdigest()
                tool = [sys.executable, "-m", "tychoreg", "--config", "tycho.json"]
                run_env = {**env, "TYCHOREG_CACHE_DIR": str(work / "cache"), "HOME": str(work)}
                run([*tool, "init", "big", "big.bin"], work, run_env)
                run([*tool, "push", "big", "1", "v1"], work, run_env)
                run([*tool, "push", "big", "2", "v2"], work, run_env)
                times: dict[str, list[float]] = {"delta": [], "full": []}
                fetched: dict[str, int] = {}
                for _ in range(args.runs):
                    for mode in ("delta", "full"):
                        shutil.copyfile(work / "v1", work / "out" / "big.bin")
                        shutil.rmtree(work / "cache", ignore_errors=True)
                        proxy.sent.clear()
                        extra = ["--no-delta"] if mode == "full" else []
                        took, out = run([*tool, "pull", "big", "--version", "2", "--json", *extra], work, run_env)
                        got = json.loads(out)
                        if (
                            got["sha256"] != want
                            or hashlib.sha256((work / "out" / "big.bin").read_bytes()).hexdigest() != want
                        ):
                            raise SystemExit("a pull did not produce version 2's bytes")
                        times[mode].append(took)
                        fetched[mode] = sum(v for k, v in proxy.sent.items() if k.endswith(("/tycho_2.pkg", "/2.cdx")))
                index = len(seaweed.client().get_object(Bucket=bucket, Key="big/.tycho/chunks/2.cdx")["Body"].read())
                row = {
                    "change": f"{share:.0%}",
                    "changed_mib": round(changed / MIB, 2),
                    "index_kib": round(index / 1024, 1),
                    "delta_fetched_mib": round(fetched["delta"] / MIB, 2),
                    "fetched_over_changed_plus_index": round(fetched["delta"] / (changed + index), 3),
                    "full_fetched_mib": round(fetched["full"] / MIB, 2),
                    "delta_s": round(statistics.median(times["delta"]), 3),
                    "full_s": round(statistics.median(times["full"]), 3),
                    "time_ratio": round(statistics.median(times["delta"]) / statistics.median(times["full"]), 3),
                }
                rows.append(row)
                print(json.dumps(row), flush=True)
                if n == 0 and not args.no_push:
                    speed = chunker_speed(work / "v1")
                    direct = work / "direct.json"
                    cfg = json.loads((work / "tycho.json").read_text())
                    cfg["s3"]["endpoint_url"] = seaweed.endpoint
                    direct.write_text(json.dumps(cfg))
                    os.environ.update(servers.S3_ENV)
                    with_index, without = push_overhead(direct, work / "v1", args.runs)
                    extra = {
                        "chunk_and_hash_mb_s": round(speed),
                        "push_with_index_s": round(with_index, 3),
                        "push_without_index_s": round(without, 3),
                    }
                    print(json.dumps(extra), flush=True)
                shutil.rmtree(work)
            proxy.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(
        "| change | new bytes | index | fetched (delta) | fetched / (new + index) | fetched (full) "
        "| delta pull | full pull | time ratio |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(
            f"| {r['change']} | {r['changed_mib']} MiB | {r['index_kib']} KiB | {r['delta_fetched_mib']} MiB | "
            f"{r['fetched_over_changed_plus_index']}x | {r['full_fetched_mib']} MiB | {r['delta_s']} s | "
            f"{r['full_s']} s | {r['time_ratio']}x |"
        )


if __name__ == "__main__":
    main()
