"""Work sent ahead of need, so that a command waits for fewer round trips on a real network.

On a server 20-80 ms away, what a command costs is the number of round trips it waits for one
after the other, not the bytes of its small documents. Two things are done ahead here, both
without changing what is read or what is believed:

* **Connections** (:func:`warm`): a store that keeps connections (the S3 store's lean client)
  opens the ones a command is about to need in parallel, before its first request, so their TCP
  (and TLS) handshakes overlap instead of each costing a round trip when its request is due.
* **Reading a version before knowing it is the one** (:func:`resolve`): a pull reads the
  package's ``tycho.json`` and only then the version it names (its record and a HEAD of its
  data). When the version can be guessed (an exact version, or for ``latest`` the newest one
  this machine verified before, from :mod:`tychoreg.known`), both are read at once: one round
  trip instead of two. A wrong guess costs a request and no time: the version ``tycho.json``
  names is then read as before. Every answer used is one the store gave for this pull.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from .concurrency import executor
from .errors import TychoError
from .selector import Selector

if TYPE_CHECKING:
    from .known import KnownDigests
    from .store import Store

_T = TypeVar("_T")
_U = TypeVar("_U")


def warm(store: Store, connections: int) -> None:
    """Have ``store`` open up to ``connections`` connections now, if it keeps any (best effort)."""
    opener = getattr(store, "warm_connections", None)
    if opener is not None and connections > 0:
        opener(connections)


def guess(known: KnownDigests | None, package: str, selector: Selector) -> str | None:
    """The version ``selector`` most likely names, from what this machine verified before; None
    when there is nothing to go on (a range, a tag, a package never pulled here)."""
    if known is None or selector.kind == "range":
        return None
    seen = known.versions(package)
    if not seen:
        return None
    if selector.kind == "name":
        return selector.text if selector.text in seen else None
    if len(seen) == 1:  # the usual case; sorting would import semver and packaging (~15 ms)
        return next(iter(seen))
    from .versions import sort_versions  # noqa: PLC0415 - semver, packaging: only with a guess to make

    return sort_versions(list(seen))[-1]


def resolve(guessed: str | None, name: Callable[[], str], read: Callable[[str], _T]) -> tuple[str, _T]:
    """``(version, read(version))`` where ``name()`` says which version (it reads ``tycho.json``):
    with a ``guessed`` version, ``read(guessed)`` runs meanwhile and is kept if the guess was
    right. Errors of ``name()`` are raised; an error of the early read only if it was the version
    named (then it is the answer), else the named version is read now."""
    if guessed is None:
        exact = name()
        return exact, read(exact)
    with executor(1) as pool:
        early = pool.submit(read, guessed)
        try:
            exact = name()
        except BaseException:
            early.cancel()
            raise
        try:
            found = early.result()
        except TychoError:
            if exact == guessed:
                raise
            return exact, read(exact)
    if exact == guessed:
        return exact, found
    return exact, read(exact)


def both(first: Callable[[], _T], second: Callable[[], _U]) -> tuple[_T, _U]:
    """``(first(), second())``, run at once (two independent reads: one round trip, not two).
    ``first``'s error is raised before ``second``'s."""
    with executor(1) as pool:
        early = pool.submit(first)
        try:
            other = second()
        except BaseException:
            early.result()  # its error, if it has one, says more (e.g. no such package)
            raise
        return early.result(), other
