"""Doing several things at once, and waiting before trying again.

A registry is many small objects behind network round trips, so most commands are one request
per package or per version, sent in parallel (:func:`parallel_map`); commands over many packages
report each package's failure as that package's outcome instead of stopping at the first
(:func:`each_package`). Retries after a lost race or a cut-off transfer wait a random, growing
while (:func:`backoff`), so clients that collided once do not collide again in step.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import TypeVar

from .errors import TychoError

#: Requests in flight at once for listings, record reads, deletes. On a server 20-80 ms away each
#: wave of requests costs a round trip, so waves are wide (the requests are small).
PARALLEL_REQUESTS = 64
#: Packages pulled at once (each may itself read ranges in parallel).
PARALLEL_PULLS = 32

_T = TypeVar("_T")
_R = TypeVar("_R")
Outcome = tuple[str, _R | TychoError]


#: Set by the command line when the user interrupts it (Ctrl-C): work still running in other
#: threads stops at its next chunk of data (:func:`check_cancelled`) and unwinds, removing its
#: temporary files, instead of running on while the command exits.
CANCELLED = threading.Event()


class Cancelled(BaseException):
    """Raised in a worker thread when the command was interrupted (see :data:`CANCELLED`); a
    ``BaseException``, like ``KeyboardInterrupt``, so no ``except Exception`` retries it."""


def check_cancelled() -> None:
    """Raise :class:`Cancelled` if the command was interrupted."""
    if CANCELLED.is_set():
        raise Cancelled


@contextmanager
def executor(workers: int) -> Iterator[ThreadPoolExecutor]:
    """A thread pool that, like ``with ThreadPoolExecutor()``, waits for its work when the block
    ends, except when the user interrupts (``KeyboardInterrupt``): then what has not started is
    cancelled and the block returns at once, without waiting for a transfer that may be stalled
    for a minute; what is running stops at its next chunk once :data:`CANCELLED` is set."""
    pool = ThreadPoolExecutor(workers)
    try:
        yield pool
    except (KeyboardInterrupt, Cancelled):
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


def parallel_map(func: Callable[[_T], _R], items: Iterable[_T], workers: int = PARALLEL_REQUESTS) -> list[_R]:
    """``func`` of each item with bounded concurrency, results in the items' order."""
    items = list(items)
    if len(items) <= 1:
        return [func(i) for i in items]
    with executor(min(workers, len(items))) as pool:
        return list(pool.map(func, items))


def each_package(
    names: Sequence[str], work: Callable[[str], _R], done: Callable[[str, _R | TychoError], None] | None = None
) -> list[tuple[str, _R | TychoError]]:
    """``work`` for each package, in parallel, in order; a failure is that package's outcome,
    not an exception. ``done`` hears of each as it finishes (one at a time, from a worker)."""
    lock = threading.Lock()

    def one(name: str) -> tuple[str, _R | TychoError]:
        outcome: _R | TychoError
        try:
            outcome = work(name)
        except TychoError as exc:
            outcome = exc
        if done:
            with lock:
                done(name, outcome)
        return name, outcome

    return parallel_map(one, names, workers=PARALLEL_PULLS)


def backoff(attempt: int, first: float, cap: float) -> None:
    """Sleep a random while up to ``first * 2**attempt`` seconds, at most ``cap`` ("full jitter")."""
    time.sleep(random.uniform(0, min(first * 2**attempt, cap)))
