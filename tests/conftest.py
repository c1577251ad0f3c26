"""Shared fixtures: a real SeaweedFS S3 server, tycho-station 0.4.0 in its own venv, a
``Workspace`` that runs the real CLI (``python -m tychoreg``) against either backend, and a
fault-injecting proxy in front of SeaweedFS (``through_proxy``, ``proxied_s3``)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from faultproxy import FaultProxy
from servers import ACCESS_KEY, CACHE, S3_ENV, SECRET_KEY, Seaweed, running_seaweed, seed_venv
from servers import counter as _counter

# A suite started in the background by a non-interactive shell (`cmd &`, nohup) inherits SIGINT
# ignored, and every tychoreg it starts would too (an ignored signal stays ignored across exec):
# the Ctrl-C tests would send a signal nobody hears. A handler of our own is reset to the
# default at exec, so the commands the tests start hear Ctrl-C again.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory: pytest.TempPathFactory):
    """One SeaweedFS (`weed mini`) for the session, on free loopback ports, stopped by its PID."""
    with running_seaweed(tmp_path_factory.mktemp("seaweed")) as server:
        yield server


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def all(self) -> str:
        return self.out + self.err

    def json(self):
        return json.loads(self.out)


@dataclass
class Workspace:
    """A project folder with a config for one backend; ``run`` invokes the real CLI there."""

    root: Path
    backend: str
    config: dict
    env: dict[str, str] = field(default_factory=dict)
    seaweed: Seaweed | None = None
    bucket: str | None = None

    def write_config(self, config: dict | None = None, name: str = ".tychoreg.json") -> Path:
        if config is not None:
            self.config = config
        path = self.root / name
        path.write_text(json.dumps(self.config, indent=2))
        path.chmod(0o600)  # it holds the test secret as a default: readable by others means a warning
        return path

    def base_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "TYCHOREG_", "XDG_"))}
        env.update(S3_ENV)
        env["HOME"] = str(self.root / "home")
        env["XDG_DATA_HOME"] = str(self.root / "xdg-data")
        env["XDG_CACHE_HOME"] = str(self.root / "home" / ".cache")  # the download cache: one per workspace
        env.pop("AWS_ACCESS_KEY_ID")  # credentials come from the config file, as users do
        env.pop("AWS_SECRET_ACCESS_KEY")
        env.update(self.env)
        return env

    def run(
        self, *args: str, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 120
    ) -> Result:
        proc = subprocess.run(
            [sys.executable, "-m", "tychoreg", *args],
            cwd=cwd or self.root,
            env={**self.base_env(), **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        result = Result(proc.returncode, proc.stdout, proc.stderr)
        assert "Traceback" not in result.all, result.all
        assert SECRET_KEY not in result.all
        return result

    def spawn(self, *args: str) -> subprocess.Popen:
        """Start the CLI without waiting (for races); collect with :func:`finish`."""
        return subprocess.Popen(
            [sys.executable, "-m", "tychoreg", *args],
            cwd=self.root,
            env=self.base_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def ok(self, *args: str, **kw) -> Result:
        result = self.run(*args, **kw)
        assert result.code == 0, result.all
        return result

    def ok_all(self, *commands: list[str] | tuple[str, ...]) -> Result:
        """Run several commands, each as ``ok`` would, one after the other in one Python process
        (``tychoreg.cli.main`` per command, in this workspace's environment): for fixtures that
        set a registry up, whose every command would otherwise pay Python's start-up and
        boto3's import again. The first command that fails stops the rest and fails the test."""
        script = (
            "import json, sys\n"
            "from tychoreg.cli import main\n"
            "for args in json.loads(sys.argv[1]):\n"
            "    code = main(args)\n"
            "    sys.stdout.flush()\n"
            "    if code:\n"
            "        print(f'{args} exited {code}', file=sys.stderr)\n"
            "        sys.exit(code)\n"
        )
        proc = subprocess.run(
            [sys.executable, "-c", script, json.dumps([list(c) for c in commands])],
            cwd=self.root,
            env=self.base_env(),
            capture_output=True,
            text=True,
            timeout=300,
        )
        result = Result(proc.returncode, proc.stdout, proc.stderr)
        assert "Traceback" not in result.all, result.all
        assert SECRET_KEY not in result.all
        assert result.code == 0, result.all
        return result

    def file(self, name: str, data: bytes) -> Path:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return path

    # -- direct access to what is stored, to damage it or check it -------------------------
    def stored_keys(self, *, catalog: bool = False) -> set[str]:
        """Every key stored; the static catalog's (pages, machine indexes) only with ``catalog``."""
        if self.backend == "file":
            base = Path(self.config["file"]["path"])
            keys = {p.relative_to(base).as_posix() for p in base.rglob("*") if p.is_file()}
        else:
            assert self.seaweed and self.bucket
            prefix = self.config["s3"].get("prefix", "")
            pages = self.seaweed.client().get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
            found = {o["Key"] for page in pages for o in page.get("Contents", ())}
            keys = {k[len(prefix) + 1 :] if prefix else k for k in found}
        return keys if catalog else {k for k in keys if not is_catalog_key(k)}

    def read_stored(self, key: str) -> bytes:
        if self.backend == "file":
            return (Path(self.config["file"]["path"]) / key).read_bytes()
        prefix = self.config["s3"].get("prefix", "")
        full = f"{prefix}/{key}" if prefix else key
        return self.seaweed.client().get_object(Bucket=self.bucket, Key=full)["Body"].read()

    def write_stored(self, key: str, data: bytes) -> None:
        if self.backend == "file":
            path = Path(self.config["file"]["path"]) / key
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            return
        prefix = self.config["s3"].get("prefix", "")
        full = f"{prefix}/{key}" if prefix else key
        self.seaweed.client().put_object(Bucket=self.bucket, Key=full, Body=data)


def is_catalog_key(key: str) -> bool:
    """A key of the static catalog (docs/FORMAT.md, "The static catalog")."""
    return key in ("index.html", ".tycho-catalog.json") or key.endswith(("/index.html", "/.tycho/catalog.json"))


def finish(procs: list[subprocess.Popen]) -> list[subprocess.CompletedProcess]:
    """Wait for spawned CLI processes; none may print a traceback."""
    done = []
    for proc in procs:
        out, err = proc.communicate(timeout=180)
        assert "Traceback" not in out + err, out + err
        done.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return done


def s3_config(seaweed: Seaweed, bucket: str, prefix: str = "") -> dict:
    s3 = {
        "bucket": bucket,
        "region_name": "us-east-1",
        "endpoint_url": seaweed.endpoint,
        "aws_access_key_id": {"env": "TEST_REG_KEY", "default": ACCESS_KEY},
        "aws_secret_access_key": {"env": "TEST_REG_SECRET", "default": SECRET_KEY},
    }
    if prefix:
        s3["prefix"] = prefix
    return {"tycho": {"backend": "s3"}, "s3": s3}


@pytest.fixture(scope="session")
def shared_bucket(seaweed: Seaweed) -> str:
    return seaweed.new_bucket()


@pytest.fixture(params=["file", "s3"])
def ws(request: pytest.FixtureRequest, tmp_path: Path) -> Workspace:
    """A workspace on each backend: a registry folder, or a fresh prefix in a SeaweedFS bucket."""
    root = tmp_path / "project"
    root.mkdir()
    if request.param == "file":
        config = {"tycho": {"backend": "file"}, "file": {"path": str(tmp_path / "registry")}}
        space = Workspace(root, "file", config)
    else:
        seaweed = request.getfixturevalue("seaweed")
        bucket = request.getfixturevalue("shared_bucket")
        config = s3_config(seaweed, bucket, prefix=f"t{next(_counter)}-{os.getpid()}")
        space = Workspace(root, "s3", config, seaweed=seaweed, bucket=bucket)
    space.write_config()
    return space


@pytest.fixture
def s3_ws(seaweed: Seaweed, tmp_path: Path) -> Workspace:
    """An S3 workspace on a bucket of its own, no prefix (the layout tycho-station 0.4.0 uses)."""
    root = tmp_path / "project"
    root.mkdir()
    bucket = seaweed.new_bucket()
    space = Workspace(root, "s3", s3_config(seaweed, bucket), seaweed=seaweed, bucket=bucket)
    space.write_config()
    return space


@pytest.fixture
def through_proxy(s3_ws: Workspace) -> Iterator[Callable[..., FaultProxy]]:
    """Route ``s3_ws`` through a :class:`FaultProxy`: ``through_proxy(**options)`` (as FaultProxy
    takes them) starts one, points the config's endpoint at it (the config file is written) and
    returns it; it is closed after the test."""
    proxies: list[FaultProxy] = []

    def route(**options: Any) -> FaultProxy:
        proxy = FaultProxy(s3_ws.seaweed.endpoint, **options)
        proxies.append(proxy)
        s3_ws.config["s3"]["endpoint_url"] = proxy.endpoint
        s3_ws.write_config()
        return proxy

    yield route
    for proxy in proxies:
        proxy.close()


@pytest.fixture
def proxied_s3(s3_ws: Workspace, through_proxy: Callable[..., FaultProxy]) -> tuple[Workspace, FaultProxy]:
    """``s3_ws`` with every request going through a :class:`FaultProxy` (no faults until the test
    adds rules); the proxy records what it forwards."""
    return s3_ws, through_proxy()


@pytest.fixture(scope="session")
def seed_tychoreg() -> Path:
    """The real tycho-station 0.4.0 in its own virtual environment (click<8.1, as it needs)."""
    return seed_venv(CACHE)


def _backend(kind: str, request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from interleave import Backend

    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("TYCHOREG_CACHE_DIR", raising=False)
    if kind == "file":
        from tychoreg.store.file import FileStore

        return Backend("file", lambda: FileStore(tmp_path / "registry"), tmp_path)
    from tychoreg.store.s3 import S3Store

    seaweed = request.getfixturevalue("seaweed")
    options = {
        "bucket": request.getfixturevalue("shared_bucket"),
        "prefix": f"i{next(_counter)}-{os.getpid()}",
        "endpoint_url": seaweed.endpoint,
        "region_name": "us-east-1",
        "aws_access_key_id": ACCESS_KEY,
        "aws_secret_access_key": SECRET_KEY,
    }
    return Backend("s3", lambda: S3Store(dict(options)), tmp_path)


@pytest.fixture(params=["file", "s3"])
def backend(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """One registry on each backend, for in-process tests that run several actors against it
    (each with its own store instance); the user's cache and data folders are private."""
    return _backend(request.param, request, tmp_path, monkeypatch)


@pytest.fixture
def s3_backend(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """As ``backend``, for cases that exist only on S3 (server clocks, ETags, catalogs)."""
    return _backend("s3", request, tmp_path, monkeypatch)


@pytest.fixture
def file_backend(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """As ``backend``, for cases that exist only in a folder."""
    return _backend("file", request, tmp_path, monkeypatch)


@pytest.fixture
def narf(backend):
    """Package narf on each backend (see ``backend``)."""
    from interleave import with_narf

    return with_narf(backend)


@pytest.fixture
def s3_narf(s3_backend):
    from interleave import with_narf

    return with_narf(s3_backend)


@pytest.fixture
def file_narf(file_backend):
    from interleave import with_narf

    return with_narf(file_backend)


# -- reading over HTTP: a static web server, `tychoreg serve`, a client workspace -----------------------
@dataclass
class Served:
    """A running HTTP server in front of a registry: its URL and process (stopped by its PID)."""

    url: str
    proc: subprocess.Popen


@contextlib.contextmanager
def static_server(folder: Path) -> Iterator[Served]:
    """The standard library's HTTP server (``python -m http.server``) over a registry folder."""
    from servers import free_ports, stop

    port = free_ports(1)[0]
    proc = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(folder)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        _wait_for_port(port, proc)
        yield Served(f"http://127.0.0.1:{port}/", proc)
    finally:
        stop(proc)


def _wait_for_port(port: int, proc: subprocess.Popen, timeout: float = 20) -> None:
    import socket
    import time

    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the server did not start") from None
            time.sleep(0.05)


@contextlib.contextmanager
def serving(ws: Workspace, *args: str) -> Iterator[Served]:
    """``tychoreg serve --port 0`` on the workspace's registry; its first line is the URL. Stopped
    with SIGINT (Ctrl-C) by its PID; ``proc.stderr`` then holds its log."""
    from servers import stop

    proc = subprocess.Popen(
        [sys.executable, "-m", "tychoreg", "serve", "--port", "0", *args],
        cwd=ws.root,
        env=ws.base_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        assert line.strip(), (proc.poll(), proc.stderr.read() if proc.stderr else "")
        yield Served(line.strip() if not line.startswith("{") else json.loads(line)["url"], proc)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                stop(proc)


def http_client(tmp_path: Path, url: str, **http: Any) -> Workspace:
    """A project that reads the registry at ``url`` over HTTP (backend ``http``)."""
    root = tmp_path / f"client-{next(_counter)}"
    root.mkdir()
    space = Workspace(root, "http", {"tycho": {"backend": "http"}, "http": {"url": url, **http}})
    space.write_config()
    return space
