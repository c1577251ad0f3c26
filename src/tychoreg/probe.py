"""Does the store really enforce conditional writes? Asked once per registry and machine.

Some S3-compatible stores accept ``If-None-Match``/``If-Match`` and ignore them. On such a store
two concurrent pushes of one version could both "win", and concurrent promotes could lose an
update. We create a probe object twice with create-if-absent: the second must be refused. The
answer is remembered in the user's cache directory so the check costs three requests, once.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from .errors import StorageError
from .store import PreconditionFailed, Store

PROBE_PREFIX = ".tycho-probe-"  # a top-level object, never a folder: 0.4.0 does not list it
WEAKER = ("{location} ignores conditional writes (If-None-Match): concurrent pushes of one version "
          "may overwrite each other and concurrent promotes may lose an update; "
          "push from one place at a time, or move to a store that enforces them")


def _cache_file() -> Path:
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("tychoreg", appauthor=False)) / "conditional-writes.json"


def _load() -> dict[str, bool]:
    try:
        data = json.loads(_cache_file().read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def enforces_conditional_writes(store: Store) -> bool:
    """True when the store refuses a second create of the same key (cached per location)."""
    if not getattr(store, "probe_conditional_writes", False):
        return True
    known = _load()
    if store.location in known:
        return bool(known[store.location])
    key = f"{PROBE_PREFIX}{uuid.uuid4().hex}"
    try:
        store.put_if_absent(key, b"first")
        try:
            store.put_if_absent(key, b"second")
            enforced = False
        except PreconditionFailed:
            enforced = True
    except StorageError:
        return True  # cannot tell (e.g. no write access); the push itself will say what is wrong
    finally:
        try:
            store.delete(key)
        except StorageError:
            pass
    known[store.location] = enforced
    try:
        path = _cache_file()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(known, indent=2, sort_keys=True))
    except OSError:
        pass
    return enforced
