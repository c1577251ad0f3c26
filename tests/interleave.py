"""Tools to force one order of the project's own steps: a store wrapper that runs hooks around
chosen calls, gates that hold a thread at such a point, and actors (threads) that run one
operation each. Every actor gets its own store instance, as separate processes would.

A *killed* actor is modelled by a gate that never opens: its thread sends no more requests and
runs none of its cleanup, exactly what the store sees of a process killed with SIGKILL.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tychoreg.registry import Registry
from tychoreg.store.base import Store

WAIT = 60.0  # seconds; a gate not reached by then is a test failure, not a hang


class Killed(BaseException):
    """Raised by a hook to end an operation where it stands (see :meth:`Gate.kill`)."""


class Gate:
    """Holds the thread that reaches it until the test releases it (or forever: frozen)."""

    def __init__(self) -> None:
        self.reached = threading.Event()
        self._go = threading.Event()
        self._kill = False

    def __call__(self, *_: Any) -> None:
        self.reached.set()
        self._go.wait()
        if self._kill:
            raise Killed()

    def wait(self, actor: threading.Thread | None = None) -> None:
        """Until the gate is reached; fails at once if ``actor`` ends without reaching it."""
        deadline = time.monotonic() + WAIT
        while not self.reached.wait(0.02):
            if actor is not None and not actor.is_alive():
                raise AssertionError(f"the actor ended before the gate: {getattr(actor, 'error', None)!r}")
            assert time.monotonic() < deadline, "the actor never reached the gate"

    def release(self) -> None:
        self._go.set()

    def kill(self) -> None:
        """Let the held thread go on only to raise :class:`Killed` where it stands."""
        self._kill = True
        self._go.set()


class Actor(threading.Thread):
    """Runs one operation in its own thread; ``result`` or ``error`` afterwards."""

    def __init__(self, work: Callable[[], Any]) -> None:
        super().__init__(daemon=True)
        self._work = work
        self.result: Any = None
        self.error: BaseException | None = None
        self.start()

    def run(self) -> None:
        try:
            self.result = self._work()
        except BaseException as exc:  # noqa: BLE001 - the test inspects it
            self.error = exc

    def done(self) -> Actor:
        self.join(WAIT)
        assert not self.is_alive(), "the actor did not finish"
        return self


Matcher = str | Callable[[str], bool] | None


def _matches(matcher: Matcher, key: str | None) -> bool:
    if matcher is None:
        return True
    if key is None:
        return False
    return matcher(key) if callable(matcher) else matcher == key


class Hooked:
    """A store that runs ``hooks`` before (or after) chosen calls of the store it wraps.

    ``on("commit", key)`` hooks the commit of a staged upload of ``key``. Each hook fires
    ``times`` times (default once), then is gone."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self._hooks: list[list[Any]] = []
        self._lock = threading.Lock()

    def on(
        self,
        method: str,
        key: Matcher = None,
        do: Callable[..., Any] = lambda *a: None,
        *,
        after: bool = False,
        times: int = 1,
    ) -> None:
        with self._lock:
            self._hooks.append([method, key, after, do, times])

    def fire(self, method: str, key: str | None, after: bool) -> None:
        todo = []
        with self._lock:
            for hook in self._hooks:
                if hook[0] == method and hook[2] == after and hook[4] and _matches(hook[1], key):
                    hook[4] -= 1
                    todo.append(hook[3])
        for action in todo:
            action(key)

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if name.startswith("_") or not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            key = args[0] if args and isinstance(args[0], str) else kwargs.get("key")
            self.fire(name, key, False)
            result = attr(*args, **kwargs)
            if name == "stage":
                result = _HookedStage(self, result, key)
            self.fire(name, key, True)
            return result

        return call


class _HookedStage:
    def __init__(self, store: Hooked, inner: Any, key: str | None) -> None:
        self._store, self._inner, self._key = store, inner, key

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def commit(self, guard: Any = None) -> Any:
        self._store.fire("commit", self._key, False)
        result = self._inner.commit(guard) if guard is not None else self._inner.commit()
        self._store.fire("commit", self._key, True)
        return result


@dataclass
class Backend:
    """One registry, reachable by as many independent store instances as there are actors."""

    name: str
    make: Callable[[], Store]
    tmp: Path

    def registry(self, **kwargs: Any) -> tuple[Registry, Hooked]:
        store = Hooked(self.make())
        return Registry(store, outdir=self.tmp / "out", **kwargs), store  # type: ignore[arg-type]

    def raw(self) -> Store:
        return self.make()

    def put_raw(self, key: str, data: bytes) -> None:
        """Write an object as another tool would: no metadata, not through our protocol (on the
        file backend a new file renamed into place, so not the same inode)."""
        if self.name == "file":
            path = self.tmp / "registry" / key
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.x")
            tmp.write_bytes(data)
            os.replace(tmp, path)
            return
        store = self.make()
        store.client.put_object(Bucket=store.bucket, Key=store._full(key), Body=data)  # type: ignore[attr-defined]


def write(tmp: Path, name: str, data: bytes) -> Path:
    path = tmp / "src" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def pulled(backend: Backend, version: str = "1.0", **kwargs: Any) -> tuple[bytes, str]:
    """Pull narf as a fresh machine would: the bytes written and how they were checked."""
    reg, _ = backend.registry()
    dest = backend.tmp / "pulled" / os.urandom(4).hex()
    result = reg.pull("narf", version, outfile=dest, **kwargs)
    return dest.read_bytes(), result.checked_by


def with_narf(backend: Backend) -> Backend:
    """The backend with package narf created."""
    backend.registry()[0].init("narf", "narf.bin")
    return backend
