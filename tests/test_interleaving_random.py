"""Randomized interleavings of push, promote, tag, untag, yank, unyank, delete, gc, list and pull,
with the invariants checked after every step.

Each operation runs in its own thread, but a thread may only make its next store request when
the scheduler says so, and the scheduler lets exactly one through at a time, picked by a seeded
RNG: a "step" is one request of one operation. So the order comes from the seed, and
orders that real timing would almost never produce come up all the time. Every claim counts as
stale (claim timeout 0) and gc removes whatever is not visible (age 0), which makes takeovers
and gc races as frequent as possible.

Checked after every step that wrote something (``data`` checks), with the store at rest:
  * every visible version resolves, as a pull would, to a SHA-256 and size that its stored bytes
    have: never to a record that does not describe them. While a push of that version is still
    running, an integrity error is allowed (a record that gc removed is being put back); the
    bytes are never mistaken.
Checked whenever no operation is running (``quiet`` checks), every 40 steps or so:
  * every visible version resolves and matches, strictly;
  * ``latest`` and every tag name a visible version, and ``latest`` is not yanked.
Checked when each pull ends: what it wrote is exactly what some push of that version pushed,
verified by SHA-256.
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import pytest

import tychoreg.concurrency as concurrency_module
from interleave import Backend
from tychoreg import layout
from tychoreg.errors import IntegrityError, TychoError
from tychoreg.fetch import expected_for
from tychoreg.integrity import Digests, Discard, HashingWriter
from tychoreg.models import PackageDoc
from tychoreg.registry import Registry

PACKAGE = "narf"
VERSIONS = ("1.0", "1.1", "1.2", "2.0")
TAGS = ("stable", "beta")
WRITES = {"put_if_absent", "put_if_match", "delete", "delete_if_match", "commit", "remove_leftover"}
STEPS = {"file": 3000, "s3": 3000}
#: Fixed, so a failure is reproducible; each found a defect of the earlier protocol within its steps.
SEEDS = {"file": (1, 2, 3), "s3": (20261202, 7)}
CONCURRENT = 4
QUIET_EVERY = 40


class _Inline:
    """A ThreadPoolExecutor stand-in that runs each task at once in the calling thread, so one
    operation is one thread and the scheduler sees all of its requests."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __enter__(self) -> _Inline:
        return self

    def __exit__(self, *exc: Any) -> None:
        pass

    def submit(self, fn: Any, *args: Any, **kwargs: Any) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # noqa: BLE001 - delivered through the future
            future.set_exception(exc)
        return future

    def map(self, fn: Any, items: Any) -> Any:
        return [fn(i) for i in items]

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        pass


@dataclass
class Op:
    ident: int
    kind: str
    args: tuple
    version: str | None = None
    finished: bool = False
    result: Any = None
    error: BaseException | None = None
    thread: threading.Thread | None = None


@dataclass
class Scheduler:
    rng: random.Random
    cond: threading.Condition = field(default_factory=threading.Condition)
    at_gate: dict[int, str] = field(default_factory=dict)
    turn: int | None = None

    def gate(self, op: Op, what: str) -> None:
        with self.cond:
            self.at_gate[op.ident] = what
            self.cond.notify_all()
            while self.turn != op.ident:
                self.cond.wait()
            self.turn = None
            del self.at_gate[op.ident]

    def settle(self, live: dict[int, Op]) -> None:
        """Until every live operation waits at a gate or has finished."""
        with self.cond:
            ok = self.cond.wait_for(
                lambda: self.turn is None and all(o.finished or i in self.at_gate for i, o in live.items()), timeout=60
            )
        assert ok, "an operation neither finished nor reached its next request"

    def release(self, ident: int) -> None:
        with self.cond:
            self.turn = ident
            self.cond.notify_all()


class Stepped:
    """The store as one operation sees it: each request waits for its turn."""

    def __init__(self, inner: Any, scheduler: Scheduler, op: Op) -> None:
        self._inner, self._scheduler, self._op = inner, scheduler, op

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if name.startswith("_") or not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            self._scheduler.gate(self._op, name)
            result = attr(*args, **kwargs)
            if name == "list":  # gather the listing within this step
                result = iter(list(result))
            if name == "stage":
                result = _SteppedStage(result, self)
            return result

        return call


class _SteppedStage:
    def __init__(self, inner: Any, store: Stepped) -> None:
        self._inner, self._store = inner, store

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def commit(self, guard: Any = None) -> Any:
        self._store._scheduler.gate(self._store._op, "commit")
        return self._inner.commit(guard) if guard is not None else self._inner.commit()


class World:
    """The registry under test, what was pushed, and the checks."""

    def __init__(self, backend: Backend, seed: int) -> None:
        self.backend = backend
        self.inner = backend.make()  # shared by all operations (the stores are thread-safe)
        self.raw = backend.make()  # for the checks: never waits for a turn
        self.scheduler = Scheduler(random.Random(seed))
        self.rng = random.Random(seed + 1)
        self.payloads: dict[str, set[bytes]] = {v: set() for v in VERSIONS}
        self.live: dict[int, Op] = {}
        self.counter = 0
        self.stats: Counter[str] = Counter()
        Registry(self.raw, outdir=backend.tmp / "out").init(PACKAGE, "narf.bin")

    # -- operations ---------------------------------------------------------------------
    def start(self) -> None:
        self.counter += 1
        r = self.rng
        kind = r.choices(
            ["push", "pull", "promote", "tag", "untag", "yank", "unyank", "delete", "gc", "list"],
            [30, 25, 8, 8, 3, 6, 3, 10, 4, 3],
        )[0]
        version = r.choice(VERSIONS)
        if kind == "push":
            payload = f"{version} push {self.counter} ".encode() * r.randint(1, 40)
            self.payloads[version].add(payload)
            args: tuple = (payload, r.random() < 0.3)
        elif kind == "pull":
            args = (r.choice(["latest", version, version, "stable", "*"]),)
        elif kind in ("tag", "untag"):
            args = (r.choice(TAGS),)
        else:
            args = ()
        op = Op(self.counter, kind, args, version)
        self.live[op.ident] = op
        op.thread = threading.Thread(target=self._run, args=(op,), daemon=True)
        op.thread.start()

    def _run(self, op: Op) -> None:
        reg = Registry(Stepped(self.inner, self.scheduler, op), outdir=self.backend.tmp / "out")  # type: ignore[arg-type]
        try:
            op.result = self._do(reg, op)
        except BaseException as exc:  # noqa: BLE001 - judged by the main thread
            op.error = exc
        finally:
            with self.scheduler.cond:
                op.finished = True
                self.scheduler.cond.notify_all()

    def _do(self, reg: Registry, op: Op) -> Any:
        v = op.version
        if op.kind == "push":
            payload, promote = op.args
            src = self.backend.tmp / "src" / f"{op.ident}"
            src.parent.mkdir(parents=True, exist_ok=True)
            src.write_bytes(payload)
            return reg.push(PACKAGE, v, src, promote_latest=promote)
        if op.kind == "pull":
            dest = self.backend.tmp / "pulled" / f"{op.ident}"
            result = reg.pull(PACKAGE, op.args[0], outfile=dest)
            return result, dest.read_bytes()
        if op.kind == "promote":
            return reg.promote(PACKAGE, v)
        if op.kind == "tag":
            return reg.tag(PACKAGE, v, op.args[0])
        if op.kind == "untag":
            return reg.untag(PACKAGE, op.args[0])
        if op.kind == "yank":
            return reg.yank(PACKAGE, v, "sim", move_latest=True)
        if op.kind == "unyank":
            return reg.unyank(PACKAGE, v)
        if op.kind == "delete":
            return reg.delete(PACKAGE, v, force=True)
        if op.kind == "gc":
            from datetime import timedelta

            return reg.gc(older_than=timedelta(0), remove=True)
        return reg.versions(PACKAGE)

    def reap(self) -> None:
        for ident in [i for i, o in self.live.items() if o.finished]:
            op = self.live.pop(ident)
            self.stats[f"{op.kind} {'ok' if op.error is None else type(op.error).__name__}"] += 1
            if op.error is not None and not isinstance(op.error, TychoError):
                raise AssertionError(
                    f"{op.kind} {op.version} {op.args[1:] if op.kind == 'push' else op.args}: unexpected {op.error!r}"
                ) from op.error
            if op.kind == "pull" and op.error is None:
                result, data = op.result
                assert result.checked_by == "sha256", (op, result)
                assert data in self.payloads[result.version], f"pull of {result.version} wrote bytes no push pushed"
                self.stats["pull verified"] += 1

    # -- checks ---------------------------------------------------------------------------
    def _stored(self, version: str) -> tuple[str, int]:
        digests = Digests()
        self.raw.read(layout.data(PACKAGE, version), HashingWriter(Discard(), digests))  # type: ignore[arg-type]
        return digests.sha256, digests.size

    def visible(self) -> list[str]:
        found = [layout.version_of_data(PACKAGE, i.key) for i in self.raw.list(layout.data_prefix(PACKAGE))]
        return [v for v in found if v]

    def check_data(self, strict: bool) -> None:
        pushing = {o.version for o in self.live.values() if o.kind == "push"}
        for version in self.visible():
            self.stats["version checks"] += 1
            try:
                expected = expected_for(self.raw, PACKAGE, version)
            except IntegrityError as exc:
                assert not strict and version in pushing, f"{version}: {exc} (no push of it is running)"
                self.stats["transient: record being put back"] += 1
                continue
            assert expected.sha256 is not None, f"{version} has no record"
            assert (expected.sha256, expected.size) == self._stored(version), (
                f"{version}: the record that resolves does not describe the stored bytes"
            )

    def check_refs(self) -> None:
        doc = PackageDoc.parse(PACKAGE, self.raw.get(layout.package_doc(PACKAGE))[0])
        visible = set(self.visible())
        for tag, version in doc.tags.items():
            assert version in visible, f"tag {tag} names {version}, which is not visible"
        assert doc.latest is None or doc.latest not in doc.yanked, f"latest names yanked {doc.latest}"
        self.stats["quiet checks"] += 1

    # -- the run --------------------------------------------------------------------------
    def step(self) -> bool:
        """Let one waiting operation make one request; False when none is waiting."""
        self.scheduler.settle(self.live)
        self.reap()
        waiting = sorted(self.scheduler.at_gate)
        if not waiting:
            return False
        ident = self.scheduler.rng.choice(waiting)
        what = self.scheduler.at_gate[ident]
        self.scheduler.release(ident)
        self.scheduler.settle(self.live)
        self.stats["steps"] += 1
        if what in WRITES:
            self.check_data(strict=False)
            self.stats["data checks"] += 1
        return True

    def run(self, steps: int) -> None:
        while self.stats["steps"] < steps:
            if self.stats["steps"] and self.stats["steps"] % QUIET_EVERY == 0 and self.live:
                while self.live:  # drain: no new operations until all have finished
                    if not self.step():
                        self.reap()
                self.check_data(strict=True)
                self.check_refs()
            while len(self.live) < CONCURRENT:
                self.start()
            self.step()
        while self.live:
            if not self.step():
                self.reap()
        self.check_data(strict=True)
        self.check_refs()


@pytest.fixture
def inline_pools(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(concurrency_module, "ThreadPoolExecutor", _Inline)
    monkeypatch.setenv("TYCHOREG_CLAIM_TIMEOUT", "0")


@pytest.mark.parametrize("run", range(3))
def test_random_interleavings_keep_every_version_described(backend: Backend, inline_pools: None, run: int) -> None:
    seeds = SEEDS[backend.name]
    if run >= len(seeds):
        return  # fewer runs on S3, where each step costs a round trip
    world = World(backend, seeds[run])
    world.run(STEPS[backend.name])
    summary = ", ".join(f"{k}: {n}" for k, n in sorted(world.stats.items()))
    print(f"FIGURES interleavings {backend.name} seed {seeds[run]}: {summary}")
    assert world.stats["pull verified"] > 20
    assert world.stats["push ok"] > 20
    assert world.stats["quiet checks"] >= STEPS[backend.name] // QUIET_EVERY // 2
