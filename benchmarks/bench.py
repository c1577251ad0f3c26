"""tychoreg against its anchors (s5cmd, aws s3, tycho-station 0.4.0) on one SeaweedFS, in one run.

    python benchmarks/bench.py [--smoke] [--profile loopback|region|far] [--runs N] [--json OUT]

``python`` is any interpreter with tychoreg installed: it is the tychoreg measured. Everything
else is built here: a SeaweedFS in a temp dir (stopped by its PID at the end, whatever happens),
cached venvs under ``.ci-cache/`` for 0.4.0 and for the anchors, and the data, made through
tychoreg's public API so it is in tychoreg's current storage format.

Every tool reaches the server through the network emulator (benchmarks/netem.py) with the
chosen profile: "loopback" forwards at once, "region" adds 20 ms a round trip and caps each
connection at 40 MB/s, "far" 80 ms and 15 MB/s. The emulator counts each run's requests,
connections and round trips, which the table shows next to the time.

Why one run on one server: on small, noisy machines only numbers taken side by side mean
anything, so every case alternates the tools inside each round and reports medians and ratios.
See benchmarks/README.md for how to read the table.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from netem import PROFILES, Netem, Profile  # noqa: E402  (benchmarks/netem.py, beside this file)

import servers  # noqa: E402  (tests/servers.py: SeaweedFS and the 0.4.0 venv, shared with the tests)

NEW, OLD, S5, AWS = "tychoreg", "0.4.0", "s5cmd", "aws"
ANCHOR_REQUIREMENTS = ("s5cmd", "awscli")
MIB = 1024 * 1024

# Runs one tool, timing it with perf_counter and taking its peak RSS from os.wait4 (ru_maxrss, KiB
# on Linux). Why a launcher: at exec, Linux carries the old address space's high-water RSS into the
# child's ru_maxrss, and subprocess forks with vfork, so a tool run from this process would inherit
# this process's peak (~60 MiB with boto3 loaded). A bare `python -I -S` has a ~5 MiB peak, which
# becomes the floor instead: every tool measured here needs more than that.
LAUNCHER = """
import os, sys, time
report, argv = sys.argv[1], sys.argv[2:]
start = time.perf_counter()
pid = os.fork()
if pid == 0:
    try:
        os.execvp(argv[0], argv)
    except OSError as exc:
        print(f"launcher: cannot run {argv[0]}: {exc}", file=sys.stderr, flush=True)
    os._exit(127)
_, status, usage = os.wait4(pid, 0)
seconds = time.perf_counter() - start
code = os.waitstatus_to_exitcode(status)
if code == 0:
    with open(report, "w") as fh:
        fh.write(f"{seconds} {usage.ru_maxrss} {usage.ru_utime + usage.ru_stime}")
elif code < 0:
    print(f"launcher: {argv[0]} was killed by signal {-code}", file=sys.stderr)
sys.exit(code if 0 <= code <= 255 else 1)
"""


@dataclass(frozen=True)
class Sizes:
    file_mib: int
    pull_list: int
    list_packages: int
    versions: int
    sync: int = 20


FULL = Sizes(file_mib=512, pull_list=100, list_packages=500, versions=5000, sync=20)
SMOKE = Sizes(file_mib=2, pull_list=5, list_packages=10, versions=30, sync=3)

# Targets from issue 16: on loopback (2 cores) and on a network ("region"; "far" is held to the
# same). Ratios to the case's anchor; "abs" cases compare tychoreg's median (seconds).
TARGETS: dict[str, dict[str, float]] = {
    "loopback": {
        "push": 1.05,
        "pull": 1.3,
        "noop_pull": 0.3,
        "pull_list": 0.25,
        "list": 0.1,
        "list_versions": 0.5,
        "sync_cold": 0.25,
        "help": 1.0,
    },
    "network": {
        "push": 0.8,
        "pull": 0.25,
        "noop_pull": 0.3,
        "pull_list": 0.05,
        "list": 0.02,
        "list_versions": 0.3,
        "sync_cold": 0.05,
        "help": 1.0,
    },
}
SYNC_WARM_SECONDS = 0.1


def target(profile: str, key: str) -> float:
    return TARGETS["loopback" if profile == "loopback" else "network"][key]


class BenchError(Exception):
    """A tool run failed or returned incomplete data: the numbers would mean nothing."""


@dataclass
class Run:
    seconds: float
    rss_mib: float
    out: str
    traffic: dict[str, int] | None = None


@dataclass
class Case:
    """One row group of the table: every tool's measurements of one operation."""

    key: str
    title: str
    anchor: str
    target_text: str
    ratio_limit: float | None = None  # tychoreg's median / the anchor's median must be <= this
    abs_limit: float | None = None  # or tychoreg's worst value must be <= this (RSS, MiB)
    unit: str = "s"
    expected: int | None = None  # items every complete answer must hold
    zero_requests: bool = False  # tychoreg must also send no request at all
    values: dict[str, list[float]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    traffic: dict[str, list[dict[str, int]]] = field(default_factory=dict)

    def add(self, tool: str, value: float, run: Run | None = None) -> None:
        self.values.setdefault(tool, []).append(value)
        if run is not None and run.traffic is not None:
            self.traffic.setdefault(tool, []).append(run.traffic)

    def traffic_median(self, tool: str) -> dict[str, float] | None:
        runs = self.traffic.get(tool)
        if not runs:
            return None
        return {key: statistics.median(r[key] for r in runs) for key in runs[0]}

    def counted(self, tool: str, got: int) -> None:
        self.counts[tool] = got
        if got != self.expected:
            self.notes[tool] = f"incomplete: {got} of {self.expected}"

    def rows(self) -> list[dict]:
        base = statistics.median(self.values[self.anchor])
        rows = []
        for tool, vals in self.values.items():
            med = statistics.median(vals)
            ratio = med / base if base else None
            met = None
            traffic = self.traffic_median(tool)
            if tool == NEW:
                if self.abs_limit is not None:
                    met = (med if self.unit == "s" else max(vals)) <= self.abs_limit
                elif self.ratio_limit is not None and ratio is not None:
                    met = ratio <= self.ratio_limit
                if self.zero_requests:
                    met = bool(met) and traffic is not None and traffic["requests"] == 0
                if self.expected is not None:
                    met = bool(met) and self.counts.get(tool) == self.expected
                if tool in self.notes:
                    met = False
            rows.append(
                {
                    "tool": tool,
                    "median": med,
                    "min": min(vals),
                    "max": max(vals),
                    "values": vals,
                    "ratio": ratio,
                    "met": met,
                    "count": self.counts.get(tool),
                    "note": self.notes.get(tool),
                    "traffic": traffic,
                }
            )
        return rows


class Bench:
    """The server, the tools' command lines, and a scratch folder; runs tools and times them."""

    def __init__(self, seaweed: servers.Seaweed, net: Netem, tmp: Path, seed_exe: Path, anchor_venv: Path) -> None:
        self.seaweed, self.net, self.tmp = seaweed, net, tmp
        self.profile = net.profile.name
        self.buckets: set[str] = set()
        script = Path(sys.executable).parent / "tychoreg"
        # Console scripts on both sides, so --help compares the tools, not `python -m` against a script.
        self.new = [str(script)] if script.exists() else [sys.executable, "-m", "tychoreg"]
        self.old = [str(seed_exe)]
        s5_binary = next(anchor_venv.glob("lib/python*/site-packages/s5cmd/bin/s5cmd"))  # the Go binary
        self.s5 = [str(s5_binary), "--endpoint-url", net.endpoint]
        self.aws = [str(anchor_venv / "bin" / "aws"), "--endpoint-url", net.endpoint]
        home = tmp / "home"  # no tool reads or fills the user's own config, data or caches
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "TYCHOREG_", "XDG_"))}
        self.env.update(
            servers.S3_ENV,
            AWS_REGION="us-east-1",
            HOME=str(home),
            XDG_CACHE_HOME=str(home / "cache"),
            XDG_CONFIG_HOME=str(home / "config"),
            XDG_DATA_HOME=str(home / "data"),
        )

    def run(self, argv: list[str], cwd: Path | None = None, env: dict[str, str] | None = None) -> Run:
        """Run one tool to completion through :data:`LAUNCHER`; wall time and peak RSS."""
        cwd = cwd or self.tmp
        cwd.mkdir(parents=True, exist_ok=True)
        report = self.tmp / "launcher.report"
        report.unlink(missing_ok=True)
        self.net.reset()
        cpu = time.process_time()  # this process: the emulator's thread (the harness only waits)
        server_cpu = process_cpu(self.seaweed.pid)
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:  # files: no pipe to fill
            code = subprocess.run(
                [sys.executable, "-I", "-S", "-c", LAUNCHER, str(report), *argv],
                cwd=cwd,
                env={**self.env, **(env or {})},
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
            ).returncode
            out.seek(0), err.seek(0)
            text, errors = out.read().decode(errors="replace"), err.read().decode(errors="replace")
        if code != 0 or not report.exists():
            raise BenchError(
                f"{' '.join(argv)} (in {cwd}) exited {code}\n"
                f"--- stderr ---\n{errors[-4000:]}\n--- stdout ---\n{text[-2000:]}"
            )
        seconds, maxrss_kib, tool_cpu = report.read_text().split()
        traffic = self.net.reset().as_dict()
        traffic["emulator_cpu_ms"] = round((time.process_time() - cpu) * 1000)
        traffic["server_cpu_ms"] = round((process_cpu(self.seaweed.pid) - server_cpu) * 1000)
        traffic["tool_cpu_ms"] = round(float(tool_cpu) * 1000)
        return Run(float(seconds), int(maxrss_kib) / 1024, text, traffic)

    def s3_section(self, bucket: str, *, direct: bool = False) -> dict:
        return {
            "bucket": bucket,
            "region_name": "us-east-1",
            "endpoint_url": self.seaweed.endpoint if direct else self.net.endpoint,
            "aws_access_key_id": {"env": "BENCH_REG_KEY", "default": servers.ACCESS_KEY},
            "aws_secret_access_key": {"env": "BENCH_REG_SECRET", "default": servers.SECRET_KEY},
        }

    def config(self, bucket: str, *, direct: bool = False) -> Path:
        """A config file both tychoreg and 0.4.0 read: the bucket's root, no prefix; through the
        emulator unless ``direct`` (for making the data, which is not measured)."""
        path = self.tmp / "configs" / f"{bucket}{'-direct' if direct else ''}.json"
        if not path.exists():
            path.parent.mkdir(exist_ok=True)
            if bucket not in self.buckets:
                self.seaweed.client().create_bucket(Bucket=bucket)
                self.buckets.add(bucket)
            s3 = self.s3_section(bucket, direct=direct)
            path.write_text(json.dumps({"tycho": {"backend": "s3"}, "s3": s3}, indent=2))
            path.chmod(0o600)
        return path

    def registry(self, bucket: str):
        from tychoreg import Registry

        return Registry.from_config(self.config(bucket, direct=True))

    def new_cmd(self, bucket: str, *args: str) -> list[str]:
        return [*self.new, "--config", str(self.config(bucket)), *args]

    def old_cmd(self, bucket: str, *args: str) -> list[str]:
        return [*self.old, *args, "--config", str(self.config(bucket))]


def parallel(func: Callable, items, workers: int = 16) -> None:
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(func, items))  # list() re-raises the first failure


def measure(
    b: Bench,
    runs: int,
    name: str,
    commands: dict[str, Callable[[int, Path], list[str]]],
    record: Callable[[str, int, Path, Run], None],
    fresh: bool = True,
) -> None:
    """Round r runs every tool once, the order rotated by r so no tool always goes first; ``record``
    checks the run and keeps it. A ``fresh`` run has a new folder and an empty tychoreg download
    cache (else a second pull would copy the first one's file, not download); otherwise each tool
    keeps its own folder and the shared cache."""
    names = list(commands)
    for r in range(runs):
        for tool in names[r % len(names) :] + names[: r % len(names)]:
            cwd = b.tmp / name / (f"{tool}-{r}" if fresh else tool)
            env = {"TYCHOREG_CACHE_DIR": str(cwd / ".tychoreg-cache")} if fresh else None
            record(tool, r, cwd, b.run(commands[tool](r, cwd), cwd=cwd, env=env))
            if fresh:
                shutil.rmtree(cwd)


def random_file(path: Path, mib: int) -> Path:
    with open(path, "wb") as fh:
        for _ in range(mib):
            fh.write(os.urandom(MIB))
    return path


# -- cases ---------------------------------------------------------------------------------
def case_push(b: Bench, data: Path, runs: int, mib: int) -> list[Case]:
    from tychoreg import layout

    limit = target(b.profile, "push")
    push = Case("push", f"push {mib} MiB", S5, f"<= {limit}x s5cmd", ratio_limit=limit)
    rss = Case("rss_push", "peak RSS push (MiB)", S5, "<= 150 MiB", abs_limit=150, unit="MiB")
    for bucket in ("bench-push-new", "bench-push-old"):
        b.registry(bucket).init("big", "big.bin")
    b.config("bench-push-raw")
    commands = {
        NEW: lambda r, _: b.new_cmd("bench-push-new", "push", "big", f"1.{r}", str(data)),
        S5: lambda r, _: [*b.s5, "cp", str(data), f"s3://bench-push-raw/s5cmd-{r}.bin"],
        AWS: lambda r, _: [*b.aws, "s3", "cp", "--only-show-errors", str(data), f"s3://bench-push-raw/aws-{r}.bin"],
        OLD: lambda r, _: b.old_cmd("bench-push-old", "push", "big", f"1.{r}", str(data)),
    }
    stored = {
        NEW: lambda r: ("bench-push-new", layout.data("big", f"1.{r}")),
        S5: lambda r: ("bench-push-raw", f"s5cmd-{r}.bin"),
        AWS: lambda r: ("bench-push-raw", f"aws-{r}.bin"),
        OLD: lambda r: ("bench-push-old", layout.data("big", f"1.{r}")),
    }

    def record(tool: str, r: int, cwd: Path, run: Run) -> None:
        bucket, key = stored[tool](r)  # exit 0 is not enough: 0.4.0 exits 0 when it refuses a push
        size = b.seaweed.client().head_object(Bucket=bucket, Key=key)["ContentLength"]
        if size != data.stat().st_size:
            raise BenchError(f"{tool} push stored {size} bytes at {bucket}/{key}, expected {data.stat().st_size}")
        push.add(tool, run.seconds, run)
        rss.add(tool, run.rss_mib)

    measure(b, runs, "push", commands, record)
    return [push, rss]


def case_pull(b: Bench, runs: int, mib: int, size: int) -> list[Case]:
    """Every tool downloads the same stored object (tychoreg's data key of big 1.0) to a new path."""
    from tychoreg import layout

    limit = target(b.profile, "pull")
    pull = Case("pull", f"pull {mib} MiB", S5, f"<= {limit}x s5cmd", ratio_limit=limit)
    rss = Case("rss_pull", "peak RSS pull (MiB)", S5, "<= 150 MiB", abs_limit=150, unit="MiB")
    url = f"s3://bench-pull/{layout.data('big', '1.0')}"
    commands = {
        NEW: lambda r, cwd: b.new_cmd(
            "bench-pull", "pull", "big", "--version", "1.0", "--outfile", str(cwd / "big.bin"), "--force"
        ),
        S5: lambda r, cwd: [*b.s5, "cp", url, str(cwd / "big.bin")],
        AWS: lambda r, cwd: [*b.aws, "s3", "cp", "--only-show-errors", url, str(cwd / "big.bin")],
        OLD: lambda r, cwd: b.old_cmd(
            "bench-pull", "pull", "big", "--version", "1.0", "--outfile", str(cwd / "big.bin"), "--force"
        ),
    }

    def record(tool: str, r: int, cwd: Path, run: Run) -> None:
        got = (cwd / "big.bin").stat().st_size
        if got != size:
            raise BenchError(f"{tool} pulled {got} bytes, expected {size}")
        pull.add(tool, run.seconds, run)
        rss.add(tool, run.rss_mib)

    measure(b, runs, "pull", commands, record)
    return [pull, rss]


def case_noop(b: Bench, runs: int, mib: int) -> list[Case]:
    """``pull big`` when the destination already holds it (after one warm-up pull each)."""
    limit = target(b.profile, "noop_pull")
    case = Case("noop_pull", f"no-op pull ({mib} MiB pkg)", OLD, f"<= {limit}x 0.4.0", ratio_limit=limit)
    commands = {
        NEW: lambda r, cwd: b.new_cmd("bench-pull", "pull", "big"),
        OLD: lambda r, cwd: b.old_cmd("bench-pull", "pull", "big"),
    }
    dest = {tool: b.tmp / "noop" / tool / "tycho_packages" / "big.bin" for tool in commands}
    for tool, command in commands.items():
        b.run(command(-1, b.tmp / "noop" / tool), cwd=b.tmp / "noop" / tool)
    # tychoreg trusts its note of what a file hashed to only when the note was made more than
    # 2 s (cache.RACY) after the file last changed (coarse timestamps could hide a write), so a
    # no-op pull within 2 s of the download hashes the file again. A user's no-op pull comes
    # later than that: wait, and let one unmeasured no-op pull each make the settled note.
    time.sleep(2.5)
    for tool, command in commands.items():
        b.run(command(-1, b.tmp / "noop" / tool), cwd=b.tmp / "noop" / tool)
    seen = {tool: (path.stat().st_ino, path.stat().st_mtime_ns) for tool, path in dest.items()}

    def record(tool: str, r: int, cwd: Path, run: Run) -> None:
        case.add(tool, run.seconds, run)
        if (dest[tool].stat().st_ino, dest[tool].stat().st_mtime_ns) != seen[tool]:
            case.notes[tool] = "downloaded again: not a no-op"

    measure(b, runs, "noop", commands, record, fresh=False)
    shutil.rmtree(b.tmp / "noop")
    return [case]


def case_pull_list(b: Bench, runs: int, n: int) -> list[Case]:
    limit = target(b.profile, "pull_list")
    case = Case("pull_list", f"pull-list {n} cold", OLD, f"<= {limit}x 0.4.0", ratio_limit=limit, expected=n)
    names = [f"p{i}" for i in range(n)]
    commands = {
        NEW: lambda r, cwd: b.new_cmd("bench-plist", "pull-list", *names),
        OLD: lambda r, cwd: b.old_cmd("bench-plist", "pull-list", *names),
    }

    def record(tool: str, r: int, cwd: Path, run: Run) -> None:
        case.add(tool, run.seconds, run)
        got = sum((cwd / "tycho_packages" / f"{name}.bin").is_file() for name in names)
        if got != n:
            raise BenchError(f"{tool} pull-list left {got} of {n} files in {cwd}")
        case.counted(tool, got)

    measure(b, runs, "plist", commands, record)
    return [case]


def case_list(b: Bench, runs: int, n: int) -> list[Case]:
    limit = target(b.profile, "list")
    case = Case("list", f"list {n}", OLD, f"<= {limit}x 0.4.0", ratio_limit=limit, expected=n)
    commands = {
        NEW: lambda r, cwd: b.new_cmd("bench-list", "list"),
        OLD: lambda r, cwd: b.old_cmd("bench-list", "list"),
    }

    def record(tool: str, r: int, cwd: Path, run: Run) -> None:
        case.add(tool, run.seconds, run)
        case.counted(tool, len(set(re.findall(r"\bl\d{4}\b", run.out))))

    measure(b, runs, "list", commands, record)
    return [case]


def case_list_versions(b: Bench, runs: int, n: int) -> list[Case]:
    """Completeness is checked by counting: 0.4.0 reads one page (1,000 keys) and stops."""
    limit = target(b.profile, "list_versions")
    case = Case(
        "list_versions", f"list-versions {n}", AWS, f"complete, <= {limit}x aws s3 ls", ratio_limit=limit, expected=n
    )
    commands = {
        NEW: lambda r, cwd: b.new_cmd("bench-versions", "list-versions", "many", "--json"),
        AWS: lambda r, cwd: [*b.aws, "s3", "ls", "s3://bench-versions/many/"],
        S5: lambda r, cwd: [*b.s5, "ls", "s3://bench-versions/many/*"],  # recursive: lists the records too
        OLD: lambda r, cwd: b.old_cmd("bench-versions", "list-versions", "many"),
    }
    count = {
        NEW: lambda out: len(json.loads(out)),
        AWS: lambda out: sum(line.endswith(".pkg") for line in out.splitlines()),
        S5: lambda out: sum(line.endswith(".pkg") for line in out.splitlines()),
        OLD: lambda out: sum(line.startswith("  - ") for line in out.splitlines()),
    }

    def record(tool: str, r: int, cwd: Path, run: Run) -> None:
        case.add(tool, run.seconds, run)
        case.counted(tool, count[tool](run.out))

    measure(b, runs, "versions", commands, record)
    return [case]


def case_sync(b: Bench, runs: int, n: int) -> list[Case]:
    """``sync`` of n declared packages (p0 ... in the pull-list bucket) from a project's
    .tychoreg.json: cold (no lock, empty cache, empty folder), then warm (everything in place).
    The anchor is 0.4.0's ``pull-list`` of the same packages (it has no sync): cold into an empty
    folder, warm where it pulled them before (with its .etag files)."""
    limit = target(b.profile, "sync_cold")
    cold = Case("sync_cold", f"sync {n} cold", OLD, f"<= {limit}x 0.4.0 pull-list", ratio_limit=limit, expected=n)
    warm = Case(
        "sync_warm",
        f"sync {n} warm",
        OLD,
        f"0 requests, <= {SYNC_WARM_SECONDS} s",
        abs_limit=SYNC_WARM_SECONDS,
        zero_requests=True,
        expected=n,
    )
    names = [f"p{i}" for i in range(n)]
    project = {
        "tycho": {"backend": "s3"},
        "s3": b.s3_section("bench-plist"),
        "packages": dict.fromkeys(names, "latest"),
    }

    def prepare(cwd: Path) -> None:
        cwd.mkdir(parents=True, exist_ok=True)
        path = cwd / ".tychoreg.json"
        if not path.exists():
            path.write_text(json.dumps(project, indent=2))
            path.chmod(0o600)

    def command(r: int, cwd: Path, tool: str) -> list[str]:
        prepare(cwd)
        return [*b.new, "sync"] if tool == NEW else b.old_cmd("bench-plist", "pull-list", *names)

    commands = {tool: (lambda r, cwd, tool=tool: command(r, cwd, tool)) for tool in (NEW, OLD)}

    def recorder(case: Case) -> Callable[[str, int, Path, Run], None]:
        def record(tool: str, r: int, cwd: Path, run: Run) -> None:
            case.add(tool, run.seconds, run)
            got = sum((cwd / "tycho_packages" / f"{name}.bin").is_file() for name in names)
            if got != n:
                raise BenchError(f"{tool} sync left {got} of {n} files in {cwd}")
            case.counted(tool, got)

        return record

    measure(b, runs, "sync-cold", commands, recorder(cold))
    for tool in commands:  # the warm runs' folders: one install each, not measured
        cwd = b.tmp / "sync-warm" / tool
        b.run(commands[tool](-1, cwd), cwd=cwd)
    measure(b, runs, "sync-warm", commands, recorder(warm), fresh=False)
    shutil.rmtree(b.tmp / "sync-warm")
    return [cold, warm]


def case_help(b: Bench, runs: int) -> list[Case]:
    case = Case("help", "--help", OLD, "<= 1.0x 0.4.0", ratio_limit=target(b.profile, "help"))
    commands = {NEW: lambda r, cwd: [*b.new, "--help"], OLD: lambda r, cwd: [*b.old, "--help"]}
    measure(b, runs, "help", commands, lambda tool, r, cwd, run: case.add(tool, run.seconds))
    return [case]


# -- data ----------------------------------------------------------------------------------
def make_data(b: Bench, data: Path, sizes: Sizes, chosen: set[str]) -> None:
    """Packages and versions through tychoreg's own API, so they are in its current format (only
    what the ``chosen`` cases read)."""
    small = b.tmp / "small.bin"
    small.write_bytes(os.urandom(16 * 1024))

    if chosen & {"pull", "noop"}:
        pull = b.registry("bench-pull")
        pull.init("big", "big.bin")
        pull.push("big", "1.0", data)
        pull.promote("big", "1.0")

    def one_package(reg, name: str) -> None:
        reg.init(name, f"{name}.bin")
        reg.push(name, "1.0", small)
        reg.promote(name, "1.0")

    if chosen & {"pull-list", "sync"}:
        plist = b.registry("bench-plist")
        parallel(lambda i: one_package(plist, f"p{i}"), range(max(sizes.pull_list, sizes.sync)))
    if "list" in chosen:
        listing = b.registry("bench-list")
        parallel(lambda i: one_package(listing, f"l{i:04}"), range(sizes.list_packages))
    if "list-versions" not in chosen:
        return
    versions = b.registry("bench-versions")
    versions.init("many", "many.bin")
    with catalog_once(versions, "many"):
        parallel(lambda i: versions.push("many", f"1.{i}.0", small), range(sizes.versions), workers=32)
    # Listed once, as any registry in use has been: the first reader after many pushes writes the
    # catalog that later listings use (a one-time cost that is not what this case measures).
    versions.versions("many")


@contextlib.contextmanager
def catalog_once(reg, package: str):
    """Many pushes to one package, with the static web catalog brought up to date once at the end
    instead of after each push (each refresh reads every version: thousands of pushes would take
    quadratic time). What is stored at the end is the same."""
    reg._after_write = lambda _package, **_: None
    try:
        yield
    finally:
        del reg._after_write
        reg._after_write(package)


# -- report --------------------------------------------------------------------------------
def tool_output(argv: list[str]) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True)
    return (proc.stdout or proc.stderr).strip().splitlines()[0] if (proc.stdout or proc.stderr).strip() else "?"


def machine(b: Bench, mode: str, runs: int, sizes: Sizes) -> dict:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or "?",
    )
    mem_kib = next(
        int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal")
    )
    weed = re.search(r"version \S+ (\S+)", tool_output([servers.weed_binary(), "version"]))
    return {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "ram_gib": round(mem_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "weed": weed.group(1) if weed else "?",
        "tychoreg": tool_output([*b.new, "--version"]),
        "tycho-station-0.4.0": tool_output(
            [
                str(Path(b.old[0]).parent / "python"),
                "-c",
                "import importlib.metadata as m; print(m.version('tycho-station'))",
            ]
        ),
        "s5cmd": tool_output([b.s5[0], "version"]),
        "aws": tool_output([b.aws[0], "--version"]),
        "mode": mode,
        "runs": runs,
        "profile": b.net.profile.describe(),
        "sizes": "/".join(str(v) for v in vars(sizes).values()) + " (MiB/pull-list/list/versions/sync)",
    }


def fmt(value: float | None, unit: str = "s") -> str:
    if value is None:
        return "-"
    return f"{value:.0f}" if unit == "MiB" else f"{value:.3f}"


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system, all threads) a running process has used so far (Linux)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_text(traffic: dict[str, float] | None) -> str:
    """The CPU a run took, in seconds: the tool's / the server's / the emulator's, and that sum
    over the machine's cores, which is a floor of the wall time when they all ran at once."""
    if not traffic or "tool_cpu_ms" not in traffic:
        return ""
    parts = [traffic["tool_cpu_ms"], traffic["server_cpu_ms"], traffic["emulator_cpu_ms"]]
    return f"{' / '.join(f'{p / 1000:.2f}' for p in parts)} ({sum(parts) / 1000 / (os.cpu_count() or 1):.2f})"


def floor(traffic: dict[str, float] | None, profile: Profile) -> float | None:
    """A physical lower bound of a run's wall time on the emulated link: the round trips it waited
    for one after another times the RTT, or its bytes over all its connections at full bandwidth,
    whichever is larger (CPU and the server are free in this bound)."""
    if not traffic or not profile.rtt:
        return None
    waits = traffic["serial_round_trips"] * profile.rtt
    if not profile.bandwidth or not traffic["connections"]:
        return waits
    moving = max(traffic["bytes_up"], traffic["bytes_down"]) / (profile.bandwidth * traffic["connections"])
    return max(waits, moving)


def table(cases: list[Case], profile: Profile) -> str:
    header = "| case | tool | median | min | max | ratio to anchor | target | met? | requests | connections |"
    lines = [
        header + " round trips (serial) | floor | CPU s: tool / server / emulator (sum per core) |",
        "| --- | --- | ---: | ---: | ---: | ---: | --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for case in cases:
        for row in case.rows():
            tool = row["tool"] + (" (anchor)" if row["tool"] == case.anchor else "")
            if row["note"]:
                tool += f" [{row['note']}]"
            met = {None: "", True: "yes", False: "NO"}[row["met"]]
            ratio = "-" if row["ratio"] is None else f"{row['ratio']:.2f}x"
            t = row["traffic"] if case.unit == "s" else None
            counts = (
                f"{t['requests']:g} | {t['connections']:g} | {t['round_trips']:g} ({t['serial_round_trips']:g})"
                if t
                else " |  | "
            )
            counts += f" | {fmt(floor(t, profile))}" if floor(t, profile) is not None else " | "
            counts += f" | {cpu_text(t)}"
            lines.append(
                f"| {case.title} | {tool} | {fmt(row['median'], case.unit)} | {fmt(row['min'], case.unit)} "
                f"| {fmt(row['max'], case.unit)} | {ratio} | {case.target_text if row['tool'] == NEW else ''} "
                f"| {met} | {counts} |"
            )
    return "\n".join(lines)


CASE_NAMES = ("push", "pull", "noop", "pull-list", "list", "list-versions", "sync", "help")


def upstream(endpoint: str) -> tuple[str, int]:
    host, _, port = endpoint.split("://", 1)[1].rstrip("/").rpartition(":")
    return host, int(port)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, 1 round: checks the benchmark works")
    parser.add_argument("--runs", type=int, help="rounds per case (default 3; smoke 1)")
    parser.add_argument("--json", type=Path, help="also write the results here as JSON")
    parser.add_argument(
        "--profile", choices=sorted(PROFILES), default="loopback", help="the network emulator's profile"
    )
    parser.add_argument("--file-mib", type=int, help="size of the push/pull file (default 512; smoke 2)")
    parser.add_argument("--pull-list", type=int, help="packages in pull-list (default 100)")
    parser.add_argument("--list", type=int, dest="list_packages", help="packages in list (default 500)")
    parser.add_argument("--versions", type=int, help="versions in list-versions (default 5000)")
    parser.add_argument("--sync", type=int, help="declared packages in sync (default 20)")
    parser.add_argument("--cases", help=f"comma-separated subset of: {','.join(CASE_NAMES)}")
    args = parser.parse_args(argv)
    sizes = SMOKE if args.smoke else FULL
    sizes = Sizes(
        **{key: getattr(args, key) if getattr(args, key) is not None else value for key, value in vars(sizes).items()}
    )
    chosen = set(args.cases.split(",")) if args.cases else set(CASE_NAMES)
    if chosen - set(CASE_NAMES):
        parser.error(f"unknown cases: {', '.join(sorted(chosen - set(CASE_NAMES)))}")
    runs = args.runs or (1 if args.smoke else 3)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the finally blocks stop the server

    print("preparing venvs (cached in .ci-cache/) ...", file=sys.stderr, flush=True)
    seed_exe = servers.seed_venv()
    anchors = servers.cached_venv(servers.CACHE / "anchor-venv", ANCHOR_REQUIREMENTS, "aws")
    tmp = Path(tempfile.mkdtemp(prefix="tychoreg-bench-"))
    try:
        (tmp / "seaweed").mkdir()
        with (
            servers.running_seaweed(tmp / "seaweed") as seaweed,
            Netem(upstream(seaweed.endpoint), PROFILES[args.profile]) as net,
        ):
            b = Bench(seaweed, net, tmp, seed_exe, anchors)
            info = machine(b, "smoke" if args.smoke else "full", runs, sizes)
            print(
                "machine: " + " ".join(f"{k}={v!r}" if " " in str(v) else f"{k}={v}" for k, v in info.items()),
                flush=True,
            )
            print("making data ...", file=sys.stderr, flush=True)
            data = random_file(tmp / "data.bin", sizes.file_mib)
            make_data(b, data, sizes, chosen)
            cases: list[Case] = []
            for label, run_case in [
                ("push", lambda: case_push(b, data, runs, sizes.file_mib)),
                ("pull", lambda: case_pull(b, runs, sizes.file_mib, data.stat().st_size)),
                ("noop", lambda: case_noop(b, runs, sizes.file_mib)),
                ("pull-list", lambda: case_pull_list(b, runs, sizes.pull_list)),
                ("list", lambda: case_list(b, runs, sizes.list_packages)),
                ("list-versions", lambda: case_list_versions(b, runs, sizes.versions)),
                ("sync", lambda: case_sync(b, runs, sizes.sync)),
                ("help", lambda: case_help(b, runs)),
            ]:
                if label not in chosen:
                    continue
                print(f"case {label} ...", file=sys.stderr, flush=True)
                cases.extend(run_case())
    except BenchError as exc:
        print(f"benchmark FAILED: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    order = [
        "push",
        "pull",
        "rss_push",
        "rss_pull",
        "noop_pull",
        "pull_list",
        "list",
        "list_versions",
        "sync_cold",
        "sync_warm",
        "help",
    ]
    cases.sort(key=lambda c: order.index(c.key))
    print(table(cases, PROFILES[args.profile]))
    if args.json:
        report = {
            "machine": info,
            "sizes": vars(sizes),
            "cases": {
                c.key: {
                    "title": c.title,
                    "unit": c.unit,
                    "anchor": c.anchor,
                    "target": c.target_text,
                    "expected": c.expected,
                    "tools": {row.pop("tool"): row for row in c.rows()},
                }
                for c in cases
            },
        }
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    # 0.4.0's short list-versions is the finding, not a failure; anyone else's short answer is.
    incomplete = [
        f"{c.title}: {tool} {note}"
        for c in cases
        for tool, note in c.notes.items()
        if note.startswith("incomplete") and tool != OLD
    ]
    for line in incomplete:
        print(f"INCOMPLETE DATA: {line}", file=sys.stderr)
    return 1 if incomplete else 0


if __name__ == "__main__":
    sys.exit(main())
