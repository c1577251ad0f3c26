"""What this machine has seen: the SHA-256 of each version it pushed or pulled verified.

A version's record is what lets a pull verify it; a version without one pulls "unverified", as
tycho-station 0.4.0's versions must. So a removed record (and data swapped after it) must not turn
a version this machine once verified into an unverified one that pulls by size. Like SSH's
``known_hosts`` or a ``go.sum``, this remembers what was seen first; it is consulted only when a
version has no record, so a planted or stale entry can at worst refuse a pull, never admit bytes.

One small JSON file per registry and package, in the user's own cache folder (Linux:
``~/.cache/tychoreg/known``), never in a download cache other accounts may share
(``$TYCHOREG_CACHE_DIR``). Losing it loses only this extra check. Best effort: a failure to read
or write it never fails a pull.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from contextlib import suppress
from pathlib import Path

from . import portable
from .portable import O_BINARY, O_CLOEXEC, O_NOFOLLOW, O_NONBLOCK

_SHA = re.compile(r"[0-9a-f]{64}\Z")


def default_root() -> Path:
    from platformdirs import user_cache_dir  # noqa: PLC0415 - platformdirs: ~3 ms, only to find the folder

    return Path(user_cache_dir("tychoreg", appauthor=False)) / "known"


class KnownDigests:
    """``root/<hash of the registry>/<package>.json``: ``{version: sha256}``."""

    def __init__(self, root: Path, registry: str) -> None:
        self._folder = Path(root) / hashlib.sha256(registry.encode()).hexdigest()[:32]

    def _file(self, package: str) -> Path:
        return self._folder / f"{package}.json"

    def _load(self, package: str) -> dict[str, str]:
        try:
            fd = os.open(self._file(package), os.O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC | O_BINARY)
        except OSError:
            return {}
        with os.fdopen(fd, "rb") as fh:
            st = os.fstat(fh.fileno())
            if st.st_uid != portable.geteuid() or st.st_size > 4 << 20:
                return {}  # not ours (a shared cache folder), or not what we write
            try:
                data = json.loads(fh.read())
            except (ValueError, RecursionError, OSError):
                return {}
        if not isinstance(data, dict):
            return {}
        return {v: d for v, d in data.items() if isinstance(v, str) and isinstance(d, str) and _SHA.match(d)}

    def recall(self, package: str, version: str) -> str | None:
        """The SHA-256 this machine saw for ``version``, if it saw one."""
        return self._load(package).get(version)

    def remember(self, package: str, version: str, sha256: str) -> None:
        """Note a verified SHA-256 (nothing is written when it is already known)."""
        if not _SHA.match(sha256):
            return
        known = self._load(package)
        if known.get(version) == sha256:
            return
        known[version] = sha256
        with suppress(OSError):
            self._folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            tmp = self._folder / f".{package}.{os.urandom(6).hex()}.tmp"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | O_NOFOLLOW | O_CLOEXEC | O_BINARY, 0o600)
            try:
                with os.fdopen(fd, "w") as fh:
                    json.dump(known, fh, sort_keys=True)
                os.replace(tmp, self._file(package))
            except OSError:
                tmp.unlink(missing_ok=True)
                raise

    # -- delta pulls -------------------------------------------------------------------------
    def versions(self, package: str) -> dict[str, str]:
        """Every version of ``package`` this machine verified, with its SHA-256 (where a delta
        pull looks for local copies of the package's other versions in the cache)."""
        return self._load(package)
