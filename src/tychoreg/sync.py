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
from typing import Protocol

from . import lockfile
from .concurrency import each_package
from .config import Project, Requirement, extract_problem
from .errors import ConfigError, OperationError, TychoError
from .lockfile import Locked
from .models import PullResult, Resolved
from .names import clip, shown
from .selector import Selector
from .store.base import ProgressFactory

Outcome = tuple[str, PullResult | TychoError]


class Registry(Protocol):
    """What sync needs of :class:`tychoreg.Registry` (it uses nothing else): resolve a
    declaration, install a pin, and where pulled files go."""

    @property
    def location(self) -> str: ...

    @property
    def outdir(self) -> Path: ...

    def resolve(self, package: str, selector: str | Selector = "latest", *, pre: bool = False) -> Resolved: ...

    def install(
        self,
        pin: Locked,
        dest: str | os.PathLike[str],
        *,
        extract: bool = False,
        force: bool = False,
        offline: bool = False,
        progress: ProgressFactory | None = None,
    ) -> PullResult: ...


def declared(project: Project | None) -> dict[str, Requirement]:
    """The project's declared packages; a :class:`ConfigError` when there are none."""
    if project is None:
        raise ConfigError(
            "sync and lock need a config file with a 'packages' section",
            'create .tychoreg.json with e.g. "packages": {"narf": "^1.2"}',
            reason="no-project",
        )
    if not project.packages:
        raise ConfigError(
            f"no packages are declared in {project.source}",
            'add a section such as "packages": {"narf": "^1.2", "gcc": {"version": "stable", "extract": "tools/gcc"}}',
            reason="no-packages",
        )
    return project.packages


def lock(
    reg: Registry, project: Project | None, *, upgrade: Collection[str] | bool = False, write: bool = True
) -> tuple[dict[str, Locked], bool]:
    """Resolve the declarations (keeping locked answers unless upgraded); write the lock if it
    changed (unless not ``write``: a dry run). Returns the entries and whether the lock file
    changed (or would)."""
    wanted = declared(project)
    assert project is not None
    path = project.lockfile
    if isinstance(upgrade, Collection):  # a bool is no Collection
        unknown = sorted(set(upgrade) - set(wanted))
        if unknown:
            raise ConfigError(
                f"packages to upgrade are not declared: {clip(', '.join(shown(n) for n in unknown))}",
                f"declared in {project.source}: {clip(', '.join(sorted(wanted)))}",
                reason="upgrade-undeclared",
            )
    existing = lockfile.read(path) or {}

    def fresh(name: str) -> bool:
        return upgrade is True or (not isinstance(upgrade, bool) and name in upgrade)

    entries = {n: e for n, e in existing.items() if n in wanted and e.answers(wanted[n]) and not fresh(n)}
    todo = [r for n, r in wanted.items() if n not in entries]

    failed: dict[str, TychoError] = {}
    for name, got in each_package(
        [r.name for r in todo], lambda name: Locked.of(reg.resolve(name, wanted[name].wanted()), wanted[name])
    ):
        if isinstance(got, TychoError):
            failed[name] = got
        else:
            entries[name] = got
    if failed:
        raise OperationError(
            "could not resolve " + "; ".join(f"{name}: {exc}" for name, exc in failed.items()),
            "the lock file was not changed",
            reason="unresolved",
            failed=failed,
        )
    changed = entries != existing or not path.exists()
    if changed and write:
        lockfile.write(path, entries, reg.location)
    return entries, changed


def sync(
    reg: Registry,
    project: Project | None,
    *,
    locked: bool = False,
    offline: bool = False,
    force: bool = False,
    progress: ProgressFactory | None = None,
    done: Callable[[str, PullResult | TychoError], None] | None = None,
) -> list[Outcome]:
    """Install every declared package as locked; lock first unless ``locked`` or ``offline``."""
    entries, _ = to_install(reg, project, locked=locked, offline=offline)
    assert project is not None
    return install(reg, entries, project.folder, offline=offline, force=force, progress=progress, done=done)


def to_install(
    reg: Registry, project: Project | None, *, locked: bool = False, offline: bool = False, write: bool = True
) -> tuple[dict[str, Locked], bool]:
    """What a sync installs: the lock as it is (``locked``, ``offline``: it must answer the
    declarations), else the lock brought up to date (written unless not ``write``). Returns the
    entries and whether the lock file changed (or would)."""
    wanted = declared(project)
    assert project is not None
    path = project.lockfile
    if not (locked or offline):
        return lock(reg, project, write=write)
    entries = lockfile.read(path)
    if entries is None:
        raise OperationError(f"there is no {path.name} in {path.parent}", reason="no-lock", offline=offline)
    problems = lockfile.mismatches(entries, wanted)
    if problems:
        raise OperationError(
            f"{path.name} does not match the declared packages: {'; '.join(problems)}", reason="stale-lock"
        )
    return entries, False


def stale(project: Project | None) -> list[str]:
    """Why the project's lock file does not answer its declarations (empty: it does). Reads only
    local files: a lock that answers every declaration is what ``lock`` would leave as it is."""
    wanted = declared(project)
    assert project is not None
    entries = lockfile.read(project.lockfile)
    if entries is None:
        return [f"there is no {project.lockfile.name} in {project.folder}"]
    return lockfile.mismatches(entries, wanted)


def destination(reg: Registry, entry: Locked, base: Path) -> Path:
    """Where a locked package is installed: its extract folder (inside ``base``) or OUTDIR/FILENAME."""
    return _destination(reg, entry, base)


def install(
    reg: Registry,
    entries: dict[str, Locked],
    base: Path,
    *,
    offline: bool = False,
    force: bool = False,
    progress: ProgressFactory | None = None,
    done: Callable[[str, PullResult | TychoError], None] | None = None,
) -> list[Outcome]:
    """Put every locked package in place, in parallel; failures are returned, not raised.
    Extract folders are relative to ``base`` (the lock's folder) and must stay inside it."""
    check_destinations(reg, entries, base)
    return each_package(
        sorted(entries),
        lambda name: _install_one(reg, entries[name], base, offline=offline, force=force, progress=progress),
        done,
    )


def check_destinations(reg: Registry, entries: dict[str, Locked], base: Path) -> None:
    """Refuse (before anything is installed) extract folders that leave ``base``, and two
    packages installed to one place."""
    for name in sorted(entries):
        _confine_extract(entries[name], base)
    _refuse_shared_destinations(reg, [entries[n] for n in entries], base)


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
        raise ConfigError(
            f"package {entry.package} would be extracted to {shown(entry.extract, 200)}: {problem}",
            f"extract folders must be real folders inside {clip(root)}",
        )


def _destination(reg: Registry, entry: Locked, base: Path) -> Path:
    return base / entry.extract if entry.extract is not None else reg.outdir / entry.localname


def _refuse_shared_destinations(reg: Registry, items: list[Locked], base: Path) -> None:
    """Two packages installed to one place would overwrite each other on every sync."""
    seen: dict[Path, str] = {}
    for entry in items:
        where = Path(os.path.abspath(_destination(reg, entry, base)))
        if where in seen:
            raise ConfigError(
                f"packages {seen[where]} and {entry.package} would both be installed to {clip(where)}",
                'give one of them an "extract" folder',
                reason="shared-destination",
            )
        seen[where] = entry.package


def _install_one(
    reg: Registry, entry: Locked, base: Path, *, offline: bool, force: bool, progress: ProgressFactory | None
) -> PullResult:
    return reg.install(
        entry,
        _destination(reg, entry, base),
        extract=entry.extract is not None,
        force=force,
        offline=offline,
        progress=progress,
    )
