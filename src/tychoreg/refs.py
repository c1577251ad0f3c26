"""A package's references: ``PKG/tycho.json`` (``localname``, ``latest``, tags, yanks) and what a
selector names (docs/FORMAT.md, "Changing tycho.json" and "Tags, yanks and deletes").

The document changes only by compare-and-swap, retried on conflict, so concurrent promotes, tags
and yanks never lose an update. A reference to a version is written only after its data was
seen, and checked again after writing: a delete removes the data first and the references
after, so of a delete and a promote running at once one always sees the other.
"""

from __future__ import annotations

from collections.abc import Callable

from . import layout
from .concurrency import backoff
from .errors import (
    AlreadyExists,
    ConfirmationNeeded,
    NoLatest,
    NoMatch,
    NotFound,
    OperationError,
    PackageNotFound,
    StorageError,
    TagNotFound,
    VersionNotFound,
)
from .models import PackageDoc
from .names import is_valid_segment
from .selector import Selector
from .store import ObjectNotFound, PreconditionFailed, Store

CAS_ATTEMPTS = 12


def read(store: Store, package: str) -> tuple[PackageDoc, str]:
    """The package document and its etag; :class:`PackageNotFound` when there is none."""
    try:
        raw, etag = store.get(layout.package_doc(package))
    except ObjectNotFound:
        raise PackageNotFound(package, store.location) from None
    return PackageDoc.parse(package, raw), etag


def update(store: Store, package: str, change: Callable[[PackageDoc], None]) -> PackageDoc:
    """Read, change and write back the document with compare-and-swap, retrying on conflict.
    ``change`` may raise to give up; it is called again on every attempt."""
    for attempt in range(CAS_ATTEMPTS):
        doc, etag = read(store, package)
        change(doc)
        try:
            store.put_if_match(layout.package_doc(package), doc.to_bytes(), etag)
            return doc
        except PreconditionFailed:
            backoff(attempt, 0.02, 1.0)
    raise StorageError(
        f"could not update package {package}: it kept changing under us",
        "try again; if it persists, another client is rewriting it in a loop",
        package=package,
    )


def visible(store: Store, package: str) -> dict[str, int]:
    """Visible versions (data present) and their sizes, from one complete listing."""
    sizes: dict[str, int] = {}
    for info in store.list(layout.data_prefix(package)):
        version = layout.version_of_data(package, info.key)
        if version and is_valid_segment(version):
            sizes[version] = info.size
    return sizes


def select(store: Store, package: str, doc: PackageDoc, selector: Selector, *, pre: bool = False) -> str:
    """The one version ``selector`` names now: ``latest``, a tag, an exact version (whether it
    exists is the caller's to check), or the highest match of a range."""
    if selector.kind == "latest":
        latest = doc.checked_latest()
        if not latest:
            raise NoLatest(package)
        return latest
    tags = doc.tags
    if selector.text in tags:
        return tags[selector.text]
    if selector.kind == "name":
        return selector.text
    from .ranges import resolve  # noqa: PLC0415 - ranges, semver, packaging: ~7 ms, only for ranges

    assert selector.constraint is not None
    versions = visible(store, package)
    if selector.text in versions:  # a version named like a range ("1.x") is itself
        return selector.text
    match = resolve(selector.constraint, versions, yanked=doc.yanked, pre=pre)
    if match is None:
        raise NoMatch(package, selector.text, pre)
    return match


def point(store: Store, package: str, tag: str, version: str) -> None:
    """Set ``tag`` (``latest`` included) to ``version``, safely against a concurrent delete: the
    data is checked, the tag written, the data checked again (and the tag undone if it is gone)."""
    read(store, package)
    if store.head(layout.data(package, version)) is None:
        raise VersionNotFound(package, version)

    def change(doc: PackageDoc) -> None:
        if tag == "latest" and version in doc.yanked:
            raise OperationError(
                f"{package} {version} is yanked; latest never means a yanked version",
                reason="yanked-latest",
                package=package,
                version=version,
            )
        doc.set_tag(tag, version)

    update(store, package, change)
    if store.head(layout.data(package, version)) is None:
        drop(store, package, version)
        raise VersionNotFound(package, version)


def refuse_tagged_version(package: str, version: str, tags: list[str]) -> None:
    """A tagged version is not deleted (unless forced): the one refusal of a delete and of its
    dry run."""
    if tags:
        raise OperationError(
            f"{package} {version} is tagged {', '.join(tags)}; not deleted",
            reason="tagged",
            package=package,
            version=version,
            tags=list(tags),
        )


def drop(store: Store, package: str, version: str, *, yank_too: bool = False, refuse_tagged: bool = False) -> list[str]:
    """Remove every tag (and with ``yank_too`` the yank entry) naming ``version``; returns the
    tags removed. ``refuse_tagged`` raises instead of removing any."""
    removed: list[str] = []

    def change(doc: PackageDoc) -> None:
        removed[:] = [t for t, v in doc.tags.items() if v == version]
        if refuse_tagged:
            refuse_tagged_version(package, version, removed)
        for t in removed:
            doc.set_tag(t, None)
        if yank_too:
            doc.set_yanked(version, None)

    update(store, package, change)
    return removed


def tag(store: Store, package: str, selector: Selector, name: str, *, pre: bool = False) -> str:
    """Point tag ``name`` at what ``selector`` names; returns that version."""
    doc, _ = read(store, package)
    version = select(store, package, doc, selector, pre=pre)
    if name != "latest" and store.head(layout.data(package, name)) is not None:
        raise AlreadyExists(
            f"{name} is a version of package {package}; a tag cannot share its name",
            "choose another tag name",
            reason="tag-is-version",
            package=package,
            tag=name,
        )
    point(store, package, name, version)
    return version


def untag(store: Store, package: str, name: str) -> str:
    """Remove tag ``name``; returns the version it pointed to."""
    old: list[str] = []

    def change(doc: PackageDoc) -> None:
        old.clear()
        if name not in doc.tags:
            raise TagNotFound(package, name)
        old.append(doc.tags[name])
        doc.set_tag(name, None)

    update(store, package, change)
    return old[0]


def yank(
    store: Store, package: str, selector: Selector, reason: str | None, *, by: str, when: str, move_latest: bool = False
) -> tuple[str, str | None]:
    """Hide a version from ``latest`` and ranges; returns it and the new ``latest``.

    Yanking the version ``latest`` names moves ``latest`` to the highest remaining release; that
    needs ``move_latest`` (:class:`ConfirmationNeeded` otherwise). The versions are listed inside
    the compare-and-swap loop, and after writing both the yanked version and the new ``latest``
    are checked to still exist (as :func:`point` does): a new ``latest`` deleted meanwhile is
    replaced by the next one, a yanked version deleted meanwhile loses its yank entry."""
    doc, _ = read(store, package)
    version = exact(store, package, doc, selector)
    from .ranges import everything, resolve  # noqa: PLC0415 - ranges, semver, packaging: ~7 ms, only here

    moved: list[str | None] = []

    def change(doc: PackageDoc) -> None:
        versions = visible(store, package)
        if version not in versions:
            raise VersionNotFound(package, version)
        successor = resolve(everything(), versions, yanked={*doc.yanked, version})
        if doc.latest == version or (moved and doc.latest == moved[-1] and doc.latest not in versions):
            if not move_latest:
                raise ConfirmationNeeded(
                    f"{package} {version} is what latest means; yanking it moves latest "
                    f"to {successor or 'nothing (unset)'}",
                    package=package,
                    version=version,
                    successor=successor,
                )
            doc.latest = successor
            moved.append(successor)
        old_reason = doc.yanked.get(version, {}).get("reason")
        doc.set_yanked(version, {"reason": reason if reason is not None else old_reason, "at": when, "by": by})

    for _ in range(CAS_ATTEMPTS):
        latest = update(store, package, change).latest
        if store.head(layout.data(package, version)) is None:
            drop(store, package, version, yank_too=True)
            raise VersionNotFound(package, version)
        if latest is None or latest != (moved[-1] if moved else None):
            return version, latest
        if store.head(layout.data(package, latest)) is not None:
            return version, latest
    raise StorageError(
        f"could not yank {package} {version}: versions kept disappearing under us",
        "try again",
        package=package,
        version=version,
    )


def unyank(store: Store, package: str, selector: Selector) -> str:
    """Make a yanked version resolvable again (``latest`` is left as it is); returns it."""
    version = exact(store, package, read(store, package)[0], selector)

    def change(doc: PackageDoc) -> None:
        if version not in doc.yanked:
            raise NotFound(f"{package} {version} is not yanked", reason="not-yanked", package=package, version=version)
        doc.set_yanked(version, None)

    update(store, package, change)
    return version


def exact(store: Store, package: str, doc: PackageDoc, selector: Selector) -> str:
    """The one version a command that changes a version means: ``latest``, a tag or a version."""
    return select(store, package, doc, Selector.exact(selector))
