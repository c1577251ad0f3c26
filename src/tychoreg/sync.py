"""``sync`` and ``lock``: declared packages, resolved once, installed the same everywhere.

The config file's ``packages`` section says what a project needs (``"narf": "^1.2"``); ``lock``
pins each to an exact version and SHA-256 in ``tycho.lock``; ``sync`` installs what the lock says,
resolving only what is new or changed since (like ``npm install``), or with ``locked`` nothing at
all (like ``npm ci`` / ``cargo --locked``). Installing looks at the destination first, then the
shared cache, then the registry, so a second sync with nothing changed sends no request at all.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection
from pathlib import Path

from . import layout, lockfile
from .config import Requirement, Settings, extract_problem
from .errors import ConfigError, IntegrityError, OperationError, TychoError
from .fetch import Expected, expected_for
from .deliver import NotCached
from .lockfile import Locked
from .models import PullResult
from .names import clip, shown
from .registry import Registry, each_package
from .store.base import ProgressFactory

Outcome = tuple[str, PullResult | TychoError]


def declared(settings: Settings) -> dict[str, Requirement]:
    if settings.lockfile is None:
        raise ConfigError("sync and lock need a config file with a 'packages' section",
                          'create .tychoreg.json with e.g. "packages": {"narf": "^1.2"}')
    if not settings.packages:
        raise ConfigError(f"no packages are declared in {settings.source}",
                          'add a section such as "packages": {"narf": "^1.2", '
                          '"gcc": {"version": "stable", "extract": "tools/gcc"}}')
    return settings.packages


def lock(reg: Registry, settings: Settings, *, upgrade: Collection[str] | bool = False,
         ) -> tuple[dict[str, Locked], bool]:
    """Resolve the declarations (keeping locked answers unless upgraded); write the lock if it
    changed. Returns the entries and whether the lock file changed."""
    wanted = declared(settings)
    path = settings.lockfile
    assert path is not None
    if isinstance(upgrade, Collection) and not isinstance(upgrade, bool):
        unknown = sorted(set(upgrade) - set(wanted))
        if unknown:
            raise ConfigError(f"--upgrade names packages that are not declared: "
                              f"{clip(', '.join(shown(n) for n in unknown))}",
                              f"declared in {settings.source}: {clip(', '.join(sorted(wanted)))}")
    existing = lockfile.read(path) or {}

    def fresh(name: str) -> bool:
        return upgrade is True or (not isinstance(upgrade, bool) and name in upgrade)

    entries = {n: e for n, e in existing.items() if n in wanted and e.answers(wanted[n]) and not fresh(n)}
    todo = [r for n, r in wanted.items() if n not in entries]

    failed = []
    for name, got in each_package([r.name for r in todo],
                                  lambda name: Locked.of(reg.resolve(name, wanted[name].version), wanted[name])):
        if isinstance(got, TychoError):
            failed.append(f"{name}: {got}")
        else:
            entries[name] = got
    if failed:
        raise OperationError("could not resolve " + "; ".join(failed), "the lock file was not changed")
    changed = entries != existing or not path.exists()
    if changed:
        lockfile.write(path, entries, reg.location)
    return entries, changed


def sync(reg: Registry, settings: Settings, *, locked: bool = False, offline: bool = False, force: bool = False,
         progress: ProgressFactory | None = None, done: Callable[[str, PullResult | TychoError], None] | None = None,
         ) -> list[Outcome]:
    """Install every declared package as locked; lock first unless ``locked`` or ``offline``."""
    wanted = declared(settings)
    path = settings.lockfile
    assert path is not None and settings.project is not None
    if locked or offline:
        entries = lockfile.read(path)
        if entries is None:
            raise OperationError(f"there is no {path.name} in {path.parent}",
                                 "create it with: tychoreg lock" + (" (needs the registry)" if offline else ""))
        problems = lockfile.mismatches(entries, wanted)
        if problems:
            raise OperationError(f"{path.name} does not match the declared packages: {'; '.join(problems)}",
                                 "run: tychoreg lock, then commit the updated lock file")
    else:
        entries, _ = lock(reg, settings)
    return install(reg, entries, settings.project, offline=offline, force=force, progress=progress, done=done)


def install(reg: Registry, entries: dict[str, Locked], base: Path, *, offline: bool = False, force: bool = False,
            progress: ProgressFactory | None = None, done: Callable[[str, PullResult | TychoError], None] | None = None,
            ) -> list[Outcome]:
    """Put every locked package in place, in parallel; failures are returned, not raised.
    Extract folders are relative to ``base`` (the lock's folder) and must stay inside it."""
    for name in sorted(entries):
        _confine_extract(entries[name], base)
    _refuse_shared_destinations(reg, [entries[n] for n in entries], base)
    return each_package(sorted(entries), lambda name: _install_one(reg, entries[name], base, offline=offline,
                                                                   force=force, progress=progress), done)


def _confine_extract(entry: Locked, base: Path) -> None:
    """Refuse (exit 2, before anything is installed) an extract folder that leaves the project.

    The lock and the config are checked for ``..`` and absolute paths when read; what is left is
    the file system: a folder on the way that is a symbolic link to elsewhere (a repository can
    commit ``tools -> /home/me``), so the real path decides.
    """
    if entry.extract is None:
        return
    problem = extract_problem(entry.extract)
    root = os.path.realpath(base)
    target = os.path.realpath(os.path.join(root, entry.extract))
    if problem is None and not (target != root and os.path.commonpath([target, root]) == root):
        problem = f"through a symbolic link it leads to {clip(target)}, outside the project folder"
    if problem:
        raise ConfigError(f"package {entry.package} would be extracted to {shown(entry.extract, 200)}: {problem}",
                          f"extract folders must be real folders inside {clip(root)}")


def _destination(reg: Registry, entry: Locked, base: Path) -> Path:
    return base / entry.extract if entry.extract is not None else reg.outdir / entry.localname


def _refuse_shared_destinations(reg: Registry, items: list[Locked], base: Path) -> None:
    """Two packages installed to one place would overwrite each other on every sync."""
    seen: dict[Path, str] = {}
    for entry in items:
        where = Path(os.path.abspath(_destination(reg, entry, base)))
        if where in seen:
            raise ConfigError(f"packages {seen[where]} and {entry.package} would both be installed to {clip(where)}",
                              'give one of them an "extract" folder, or pull it with --outfile instead')
        seen[where] = entry.package


def _install_one(reg: Registry, entry: Locked, base: Path, *, offline: bool, force: bool,
                 progress: ProgressFactory | None) -> PullResult:
    extract = entry.extract is not None
    dest = _destination(reg, entry, base)
    if entry.sha256 and not force:  # the destination or the cache may have it: no request at all
        local = Expected(layout.data(entry.package, entry.version), entry.size, entry.sha256, None)
        try:
            return reg.install(entry.package, entry.version, local, dest, extract=extract, offline=True)
        except NotCached:
            if offline:
                raise
    elif offline:
        raise NotCached(f"{entry.package} {entry.version} has no recorded SHA-256 in the lock, so it cannot "
                        "be installed offline", "run without --offline")
    expected = expected_for(reg.store, entry.package, entry.version)
    if entry.sha256 and expected.sha256 != entry.sha256 or expected.size != entry.size:
        raise IntegrityError(f"{entry.package} {entry.version} in {reg.location} is not what the lock file "
                             f"pinned (sha256 {expected.sha256}, {expected.size} bytes; locked "
                             f"{entry.sha256}, {entry.size} bytes): it was deleted and pushed again",
                             f"if you trust the new bytes: tychoreg lock --upgrade {entry.package}")
    return reg.install(entry.package, entry.version, expected, dest, extract=extract, force=force,
                       progress=progress)
