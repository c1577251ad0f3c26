"""Does the store really enforce conditional writes? Asked once per registry and machine.

Some S3-compatible stores accept ``If-None-Match``/``If-Match`` and ignore them. On such a store
two concurrent pushes of one version could both "win", concurrent promotes could lose an update,
and a conditional delete could remove someone else's claim. We create a probe object, then try
to create it again, replace it and delete it with a wrong ETag: all three must be refused. The
answer is remembered in the user's cache directory so the check costs a few requests, once.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable
from pathlib import Path

from .errors import StorageError
from .localfs import fresh_temp
from .store import PreconditionFailed, Store

PROBE_PREFIX = ".tycho-probe-"  # a top-level object, never a folder: 0.4.0 does not list it
WEAKER = (
    "{location} ignores conditional writes (If-None-Match): concurrent pushes of one version "
    "may overwrite each other and concurrent promotes may lose an update; "
    "push from one place at a time, or move to a store that enforces them"
)


def _cache_file() -> Path:
    from platformdirs import user_cache_dir  # noqa: PLC0415 - platformdirs: ~3 ms, only to find the folder

    return Path(user_cache_dir("tychoreg", appauthor=False)) / "conditional-writes.json"


def _load() -> dict[str, bool]:
    try:
        data = json.loads(_cache_file().read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def enforces_conditional_writes(store: Store) -> bool:
    """True when the store refuses a second create of one key, a replace with a wrong ETag and a
    delete with a wrong ETag (cached per store: endpoint and location, since two servers may
    hold buckets of one name)."""
    if not store.probe_conditional_writes:
        return True
    where = store.identity
    known = _load()
    if where in known:
        return bool(known[where])
    key = f"{PROBE_PREFIX}{uuid.uuid4().hex}"
    wrong = '"00000000000000000000000000000000"'
    try:
        store.put_if_absent(key, b"first")
        enforced = (
            _refused(lambda: store.put_if_absent(key, b"second"))
            and _refused(lambda: store.put_if_match(key, b"third", wrong))
            and _refused(lambda: store.delete_if_match(key, wrong))
            and store.get(key)[0] == b"first"
        )
    except StorageError:
        return True  # cannot tell (e.g. no write access); the push itself will say what is wrong
    finally:
        try:
            store.delete(key)
        except StorageError:
            pass
    known[where] = enforced
    try:  # a fresh file renamed into place: never written through a link planted at its name
        path = _cache_file()
        path.parent.mkdir(parents=True, exist_ok=True)
        fh, tmp = fresh_temp(path)
        with fh:
            fh.write(json.dumps(known, indent=2, sort_keys=True).encode())
        os.replace(tmp, path)
    except OSError:
        pass
    return enforced


def _refused(write: Callable[[], object]) -> bool:
    try:
        write()
    except PreconditionFailed:
        return True
    return False
