"""Deleting a version or a whole package (docs/FORMAT.md, "Deleting a version").

The counterpart of :mod:`tychoreg.publish`, and as careful: the record's ETag is read before the
data goes (once the version is invisible, a new push of it may take the old record over, and its
claim must survive us), references are removed before and after the data (so a concurrent
promote or tag either sees the version gone or is undone by us), and the record is deleted only
if it is still the one we read.
"""

from __future__ import annotations

from . import layout, refs
from .concurrency import parallel_map
from .errors import IntegrityError, OperationError, VersionNotFound
from .models import PUSH_ID, VersionRecord
from .selector import Selector
from .store import ObjectNotFound, PreconditionFailed, Store
from .store.base import ObjectInfo


def delete_version(store: Store, package: str, selector: Selector, *, force: bool = False) -> tuple[str, list[str]]:
    """Delete one version (``latest``, a tag or an exact version); returns it and the tags
    removed with it. A version a tag points to is refused unless ``force``."""
    doc, _ = refs.read(store, package)
    version = refs.exact(store, package, doc, selector)
    info = store.head(layout.data(package, version))
    if info is None:
        raise VersionNotFound(package, version)
    record_etag, sha256 = _describing_record(store, package, version, info)
    removed = refs.drop(store, package, version, refuse_tagged=not force)
    store.delete(layout.data(package, version))
    if record_etag is not None:
        try:
            store.delete_if_match(layout.record(package, version), record_etag)
        except (ObjectNotFound, PreconditionFailed):
            pass  # a new push of this version has claimed it meanwhile: it stays
    from .chunks import forget as forget_chunks  # noqa: PLC0415 - only when a version goes

    forget_chunks(store, package, version, sha256)
    if sha256 is not None:
        from .signatures import forget  # noqa: PLC0415 - signatures, sshsig: only when a version goes

        forget(store, package, version, sha256)  # only those of these bytes: a new push's stay
    return version, sorted(set(removed) | set(refs.drop(store, package, version, yank_too=True)))


def refuse_tagged_package(package: str, tags: list[str]) -> None:
    """A package with tags is not deleted (unless forced): the one refusal of a delete and of its
    dry run."""
    if tags:
        raise OperationError(
            f"package {package} has tags ({', '.join(tags)}); not deleted",
            reason="package-tagged",
            package=package,
            tags=tags,
        )


def delete_package(store: Store, package: str, *, force: bool = False) -> list[str]:
    """Delete a package with every version; returns its tags. Refused if it has tags, unless
    ``force``. The document goes first (the package disappears and pushes to it are refused at
    once), then the data (versions vanish), then everything else under ``PKG/``."""
    doc, _ = refs.read(store, package)
    tags = sorted(doc.tags)
    if not force:
        refuse_tagged_package(package, tags)
    store.delete(layout.package_doc(package))
    keys = [info.key for info in store.list(f"{package}/") if info.key != layout.package_doc(package)]
    data = [k for k in keys if layout.version_of_data(package, k)]
    parallel_map(store.delete, data)
    parallel_map(store.delete, [k for k in keys if not layout.version_of_data(package, k)])
    return tags


def _describing_record(store: Store, package: str, version: str, info: ObjectInfo) -> tuple[str | None, str | None]:
    """The ETag of the record that describes the data we are about to delete, if there is one,
    and the SHA-256 it records (whose signatures go with the version).
    A record that describes other data (a live claim beside data another client wrote) is not
    ours to delete: its push may commit the moment the data is gone."""
    try:
        raw, etag = store.get(layout.record(package, version))
        record = VersionRecord.parse(package, version, raw)
    except (ObjectNotFound, IntegrityError):
        return None, None
    found = record.describing(info.meta.get(PUSH_ID), info.etag, keeps_metadata=store.keeps_metadata)
    return (etag, found.sha256) if found is not None else (None, None)
