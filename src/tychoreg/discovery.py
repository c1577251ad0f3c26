"""Finding a project's ``.tychoreg.json``: in the current folder or the nearest parent.

Like git, cargo, npm and uv, a command run anywhere inside a project uses the project's config
file, found by walking up from the current folder to the filesystem root; the first folder that
holds a ``.tychoreg.json`` (a regular file, or a link to one) is the project folder.

A config in a parent folder is input from whoever could write there, not only from the user who
runs the command: ``/tmp/.tychoreg.json``, planted by another account, would otherwise send every
push made from a folder under ``/tmp`` to that account's registry. So a config found in a parent
folder is used only if it is owned by the current user or by root and no one else can write it
(neither group nor others), and, if it is reached through a symbolic link, only if that link is
owned by the user or root too; anything else is refused with a config error (exit 2) that says
how to accept it. The checks are made on the open file that is then read, so it cannot be
swapped between the check and the read. A config in the current folder itself is used as before
(the user chose to work in that folder, as with tycho-station 0.4.0), and one named by
``--config`` or ``TYCHOREG_CONFIG`` is the user's own choice.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

from .errors import ConfigError
from .names import clip

LOCAL_CONFIG = ".tychoreg.json"


def find_project_config(cwd: Path) -> Path | None:
    """The nearest ``.tychoreg.json`` in ``cwd`` or one of its parents (None: there is none)."""
    for folder in (cwd, *cwd.parents):
        candidate = folder / LOCAL_CONFIG
        if _is_file(candidate):
            return candidate
    return None


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except (OSError, ValueError):
        return False


def _owners() -> frozenset[int] | None:
    """The owners a config found in a parent folder may have (None: the system has no uids)."""
    getuid = getattr(os, "getuid", None)
    return frozenset({getuid(), 0}) if getuid is not None else None


def trust_check(path: Path) -> Callable[[os.stat_result], None]:
    """A check for the open file of the config ``path`` that was found in a parent folder:
    raises :class:`ConfigError` (``reason="untrusted-config"``) unless the file (and a link to
    it) is owned by the current user or root and is writable by no one else."""

    def check(opened: os.stat_result) -> None:
        owners = _owners()
        if owners is None:
            return
        problem = None
        try:
            link = os.lstat(path)
        except OSError as exc:
            raise ConfigError(f"cannot read config file {clip(path)}: {exc.strerror or exc}") from None
        if stat.S_ISLNK(link.st_mode) and link.st_uid not in owners:
            problem = f"it is a symbolic link owned by another user (uid {link.st_uid})"
        elif opened.st_uid not in owners:
            problem = f"it is owned by another user (uid {opened.st_uid})"
        elif opened.st_mode & 0o022:
            mode = opened.st_mode & 0o022
            who = "its group and others" if mode == 0o022 else "its group" if mode == 0o020 else "others"
            problem = f"{who} can write it (mode {stat.S_IMODE(opened.st_mode):04o})"
        if problem:
            raise ConfigError(
                f"config file {clip(path)}, found in a parent folder, is not used: {problem}, so whoever "
                "could write it would choose your registry",
                reason="untrusted-config",
                path=path,
            )

    return check
