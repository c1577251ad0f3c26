"""Deleting old versions by policy (``tychoreg prune``).

A policy (:class:`~tychoreg.config.Retention`) keeps the ``keep`` highest versions by the
package's version order (yanked versions are not counted: they are not handed out), and of the
others deletes only those older than ``older_than``; either condition may be left out. Never
deleted, whatever the policy says: the version ``latest`` names and every version a tag names.

A plan is made from one listing of the package's data (sizes, and ages by the store's own
modification times, so versions pushed by tycho-station 0.4.0 have one too; a version whose age
the store does not tell is never old) and its ``tycho.json`` (tags, yanks). Each planned version
is then deleted by the delete protocol (:mod:`tychoreg.delete`), one at a time: a version that a
tag or ``latest`` came to name since the plan was made is refused by it and kept, a version
deleted meanwhile is skipped, and a new version pushed meanwhile was never planned. So a prune
is safe to run beside pushes, promotes and other prunes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from . import delete, layout, refs
from .concurrency import each_package
from .config import Retention
from .errors import ConfirmationNeeded, NotFound, OperationError, TychoError, UsageError
from .names import check_package, is_valid_segment
from .selector import Selector
from .store import Store
from .units import age_text

#: The config's policy for every package that has none of its own.
EVERY_PACKAGE = "*"


@dataclass(frozen=True)
class Candidate:
    """A version as a plan sees it: its size, and its age in seconds (None: unknown)."""

    version: str
    size: int
    age: float | None

    def to_json(self) -> dict[str, Any]:
        return {"version": self.version, "size": self.size, "age_days": None if self.age is None else self.age / 86400}


@dataclass(frozen=True)
class Plan:
    """What a policy means for one package now: the versions to delete (oldest first by
    version order) and every kept version with why it stays."""

    package: str
    policy: Retention
    delete: tuple[Candidate, ...]
    kept: dict[str, str]


@dataclass(frozen=True)
class Pruned:
    """What a prune did to one package (``dry_run``: what it would do). ``deleted`` lists what
    went (would go); ``spared`` what the plan meant to delete but the delete protocol kept or
    found gone (a tag moved onto it, it was deleted meanwhile), with why; ``failed`` what could
    not be deleted (a storage error), with the error."""

    package: str
    policy: Retention
    deleted: tuple[Candidate, ...]
    kept: dict[str, str]
    spared: dict[str, str] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    dry_run: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "package": self.package,
            "policy": self.policy.to_json(),
            "dry_run": self.dry_run,
            "deleted": [c.to_json() for c in self.deleted],
            "kept": [{"version": v, "why": why} for v, why in self.kept.items()],
            "spared": [{"version": v, "why": why} for v, why in self.spared.items()],
            "failed": [{"version": v, "error": why} for v, why in self.failed.items()],
        }


def policies(
    names: Sequence[str], configured: dict[str, Retention], given: Retention, *, named: bool
) -> dict[str, Retention]:
    """The policy for each package: ``given`` when it says anything (options win), else the
    package's own config entry, else the config's ``*``. Packages without one are left out;
    a package the user ``named`` that has none, or nothing at all to go by, is a
    :class:`UsageError`."""
    if not given.empty:
        return dict.fromkeys(names, given)
    found: dict[str, Retention] = {}
    for name in names:
        policy = configured.get(name, configured.get(EVERY_PACKAGE))
        if policy is not None and not policy.empty:
            found[name] = policy
        elif named:
            raise UsageError(
                f"no retention policy for {name}: nothing says which of its versions may go",
                "give how many versions to keep and/or how old a version must be to go",
                reason="no-retention",
                package=name,
            )
    if not found and not configured:
        raise UsageError(
            "no retention policy: nothing says which versions may go",
            "give how many versions to keep and/or how old a version must be to go",
            reason="no-retention",
        )
    return found


def plan(store: Store, package: str, policy: Retention, *, now: datetime | None = None) -> Plan:
    """Which versions of ``package`` the policy deletes now, and why each other one stays."""
    from .versions import version_sort_key  # noqa: PLC0415 - semver, packaging: ~6 ms, only to sort

    check_package(package)
    doc, _ = refs.read(store, package)
    now = now or datetime.now(timezone.utc)
    listed: dict[str, Candidate] = {}
    for info in store.list(layout.data_prefix(package)):
        version = layout.version_of_data(package, info.key)
        if version and is_valid_segment(version):
            listed[version] = Candidate(version, info.size, _age(info.modified, now))
    order = sorted(listed, key=version_sort_key(listed))
    kept: dict[str, str] = {}
    for tag, version in doc.tags.items():
        if version in listed:
            kept[version] = (
                f"{kept[version]}, {tag}" if version in kept else ("latest" if tag == "latest" else f"tag {tag}")
            )
    if policy.keep is not None:
        newest = [v for v in reversed(order) if v not in doc.yanked][: policy.keep]
        for version in newest:
            kept.setdefault(version, f"among the newest {policy.keep}")
    doomed: list[Candidate] = []
    for version in order:
        if version in kept:
            continue
        age = listed[version].age
        if policy.older_than is not None and (age is None or age < policy.older_than.total_seconds()):
            kept[version] = "its age is unknown" if age is None else f"younger than {age_text(policy.older_than)}"
            continue
        doomed.append(listed[version])
    return Plan(package, policy, tuple(doomed), {v: kept[v] for v in order if v in kept})


def _age(modified: datetime | None, now: datetime) -> float | None:
    if modified is None:
        return None
    if modified.tzinfo is None:
        modified = modified.replace(tzinfo=timezone.utc)
    return max(0.0, (now - modified).total_seconds())


def carry_out(store: Store, plan: Plan) -> Pruned:
    """Delete what ``plan`` says, one version at a time, by the delete protocol."""
    deleted: list[Candidate] = []
    spared: dict[str, str] = {}
    failed: dict[str, str] = {}
    for candidate in plan.delete:
        try:
            delete.delete_version(store, plan.package, Selector.exact(candidate.version), force=False)
            deleted.append(candidate)
        except OperationError as exc:
            if exc.reason == "tagged":
                spared[candidate.version] = f"tagged meanwhile ({', '.join(exc.details.get('tags', []))})"
            elif isinstance(exc, NotFound):
                spared[candidate.version] = "deleted meanwhile"
            else:
                failed[candidate.version] = str(exc)
        except TychoError as exc:
            failed[candidate.version] = str(exc)
    return Pruned(plan.package, plan.policy, tuple(deleted), plan.kept, spared, failed)


def prune(
    store: Store,
    names: Sequence[str],
    chosen: dict[str, Retention],
    *,
    dry_run: bool = False,
    confirm: Callable[[list[Plan]], bool] | None = None,
) -> list[tuple[str, Pruned | TychoError]]:
    """Plan every package (in parallel), ask ``confirm`` once if anything would be deleted,
    then delete package by package. Failures are each package's outcome, not raised; a refused
    confirmation raises :class:`ConfirmationNeeded` before anything is deleted."""
    planned = each_package([n for n in names if n in chosen], lambda name: plan(store, name, chosen[name]))
    plans = [p for _, p in planned if isinstance(p, Plan)]
    doomed = sum(len(p.delete) for p in plans)
    if not dry_run and doomed and confirm is not None and not confirm(plans):
        packages = sum(bool(p.delete) for p in plans)
        raise ConfirmationNeeded(
            f"not pruning without confirmation: {doomed} version{'s' if doomed != 1 else ''} of "
            f"{packages} package{'s' if packages != 1 else ''} would be deleted",
            "confirm, or look first with a dry run",
            planned=doomed,
        )
    results: list[tuple[str, Pruned | TychoError]] = []
    for name, outcome in planned:
        if isinstance(outcome, TychoError):
            results.append((name, outcome))
        elif dry_run:
            results.append((name, Pruned(name, outcome.policy, outcome.delete, outcome.kept, dry_run=True)))
        else:
            results.append((name, carry_out(store, outcome)))
    return results
