"""The registry: packages, versions, ``latest``. The public Python API.

``Registry`` knows the rules of the game (versions are immutable, a version is visible only once
its data is complete, ``tycho.json`` changes by compare-and-swap) and nothing of boto3 or of
files: it talks to a :class:`~tychoreg.store.Store`. The two long procedures live beside it:
:mod:`tychoreg.publish` (push) and :mod:`tychoreg.fetch` (pull).
"""

from __future__ import annotations

import fnmatch
import getpass
import os
import random
import socket
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from . import deliver, fetch, layout
from .cache import Cache
from .cache import default_root as default_cache_root
from .config import DEFAULT_EXTRACT_LIMIT, Settings, load_settings
from .errors import AlreadyExists, IntegrityError, NotFound, OperationError, StorageError, TychoError, UsageError
from .known import KnownDigests
from .known import default_root as default_known_root
from .models import PackageDetails, PackageDoc, PackageInfo, PullResult, PushResult, Resolved, VersionInfo
from .names import (check_filename, check_package, check_selector, check_tag, check_version, is_constraint,
                    is_valid_segment)
from .store import ObjectNotFound, PreconditionFailed, Store, open_store
from .store.base import ProgressFactory

if TYPE_CHECKING:
    from . import catalog, upkeep

CAS_ATTEMPTS = 12
NEWEST_SHOWN = 10
PARALLEL_REQUESTS = 32
PARALLEL_PULLS = 16
_T = TypeVar("_T")
_R = TypeVar("_R")


def default_identity() -> str:
    """``user@host``, the default for who pushed a version."""
    try:
        user = getpass.getuser()
    except Exception:  # noqa: BLE001 - no login name in some containers
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def _parallel(func: Callable[[_T], _R], items: Iterable[_T], workers: int = PARALLEL_REQUESTS) -> list[_R]:
    """Map over items with bounded concurrency, keeping their order."""
    items = list(items)
    if len(items) <= 1:
        return [func(i) for i in items]
    with ThreadPoolExecutor(min(workers, len(items))) as pool:
        return list(pool.map(func, items))


def _now_iso() -> str:
    from .publish import now_iso

    return now_iso()


def each_package(names: Sequence[str], work: Callable[[str], _R],
                 done: Callable[[str, _R | TychoError], None] | None = None) -> list[tuple[str, _R | TychoError]]:
    """``work`` for each package, in parallel, in order; a failure is that package's outcome,
    not an exception. ``done`` hears of each as it finishes (one at a time, from a worker)."""
    lock = threading.Lock()

    def one(name: str) -> tuple[str, _R | TychoError]:
        outcome: _R | TychoError
        try:
            outcome = work(name)
        except TychoError as exc:
            outcome = exc
        if done:
            with lock:
                done(name, outcome)
        return name, outcome

    return _parallel(one, names, workers=PARALLEL_PULLS)


class ConfirmationNeeded(OperationError):
    """The operation would do more than asked (e.g. move ``latest``); repeat it with consent."""


class Registry:
    """A registry of versioned files in a :class:`~tychoreg.store.Store`."""

    def __init__(self, store: Store, *, outdir: str | os.PathLike[str] = "tycho_packages",
                 identity: str | None = None, warn: Callable[[str], None] | None = None,
                 cache: Cache | None = None, extract_limit: int = DEFAULT_EXTRACT_LIMIT,
                 known: KnownDigests | None = None) -> None:
        self.store = store
        self.outdir = Path(outdir)
        self.identity = identity
        self._warn = warn
        #: The shared download cache (None: download straight to the destination).
        self.cache = cache
        self.extract_limit = extract_limit
        #: The digests this machine verified before (None: remember nothing).
        self.known = known

    @classmethod
    def from_config(cls, config: str | os.PathLike[str] | None = None, *,
                    cwd: Path | None = None) -> Registry:
        """Open the registry the CLI would use (``--config``, ``$TYCHOREG_CONFIG``, ...)."""
        return cls.from_settings(load_settings(config, cwd=cwd))

    @classmethod
    def from_settings(cls, settings: Settings, *, warn: Callable[[str], None] | None = None) -> Registry:
        tuning = {k: v for k, v in (("part_size", settings.part_size), ("concurrency", settings.concurrency))
                  if v is not None}
        cache = Cache(default_cache_root(), settings.cache_limit) if settings.cache else None
        store = open_store(settings.backend, settings.options, **tuning)
        known = KnownDigests(default_known_root(), getattr(store, "identity", store.location))
        return cls(store, outdir=settings.outdir, identity=settings.identity, warn=warn, cache=cache,
                   extract_limit=settings.extract_limit, known=known)

    @property
    def location(self) -> str:
        return self.store.location

    # -- packages ------------------------------------------------------------------------
    def init(self, package: str, filename: str) -> None:
        """Create ``package``, whose pulls are saved as ``filename``."""
        check_package(package)
        check_filename(filename)
        try:
            self.store.put_if_absent(layout.package_doc(package), PackageDoc(package, filename).to_bytes())
        except PreconditionFailed:
            raise AlreadyExists(f"package {package} already exists",
                                f"see it with: tychoreg list-versions {package}") from None

    def packages(self, pattern: str | None = None) -> list[PackageInfo]:
        """Every package (a folder with a ``tycho.json``), sorted by name; ``pattern`` is a glob."""
        names = sorted(n for n in self.store.list_folders("") if is_valid_segment(n)
                       and (pattern is None or fnmatch.fnmatchcase(n, pattern)))

        def load(name: str) -> PackageInfo | None:
            try:
                doc, _ = self._doc(name)
                return PackageInfo(name, doc.checked_latest(), doc.localname)
            except NotFound:
                return None
            except IntegrityError as exc:  # damaged or planted (too large, too deep, a link): this one only
                return PackageInfo(name, None, None, problem=str(exc))

        return [info for info in _parallel(load, names) if info is not None]

    def _doc(self, package: str) -> tuple[PackageDoc, str]:
        try:
            raw, etag = self.store.get(layout.package_doc(package))
        except ObjectNotFound:
            raise NotFound(f"no package {package} in {self.location}",
                           f"create it with: tychoreg init {package} FILENAME") from None
        return PackageDoc.parse(package, raw), etag

    def _update_doc(self, package: str, change: Callable[[PackageDoc], None]) -> PackageDoc:
        """Read, change and write back ``tycho.json`` with compare-and-swap, retrying on conflict."""
        for attempt in range(CAS_ATTEMPTS):
            doc, etag = self._doc(package)
            change(doc)
            try:
                self.store.put_if_match(layout.package_doc(package), doc.to_bytes(), etag)
                return doc
            except PreconditionFailed:
                time.sleep(random.uniform(0, min(0.02 * 2 ** attempt, 1.0)))
        raise StorageError(f"could not update package {package}: it kept changing under us",
                           "try again; if it persists, another client is rewriting it in a loop")

    # -- versions ------------------------------------------------------------------------
    def _visible(self, package: str) -> dict[str, int]:
        """Visible versions (data present) and their sizes, from one complete listing."""
        sizes: dict[str, int] = {}
        for info in self.store.list(layout.data_prefix(package)):
            version = layout.version_of_data(package, info.key)
            if version and is_valid_segment(version):
                sizes[version] = info.size
        return sizes

    def versions(self, package: str) -> list[VersionInfo]:
        """Every visible version of ``package``, ascending by version precedence."""
        check_package(package)
        doc, _ = self._doc(package)
        from . import catalog
        from .versions import version_sort_key

        sizes, known = catalog.scan(self.store, package, _parallel)
        key = version_sort_key(sizes)
        return sorted((self._describe(doc, v, sizes[v], known[v]) for v in sizes), key=lambda v: key(v.version))

    def _describe(self, doc: PackageDoc, version: str, size: int, record: catalog.Known) -> VersionInfo:
        """A version as listings show it: record, tags pointing to it, yank state."""
        tags = tuple(t for t, v in doc.tags.items() if v == version)
        yank = doc.yanked.get(version)
        extra = {"tags": tags, "yanked": yank is not None,
                 "yank_reason": yank.get("reason") if yank else None}
        if record is None:
            return VersionInfo(version, size, **extra)
        if isinstance(record, str):
            return VersionInfo(version, size, problem=record, **extra)
        if record.size != size:
            return VersionInfo(version, size, problem=f"{doc.package} {version} is damaged: stored size {size} "
                               f"bytes, recorded {record.size}", **extra)
        return VersionInfo(version, record.size, record.sha256, record.pushed_at or None, record.pushed_by,
                           record.note, **extra)

    def info(self, package: str, version: str | None = None, *, pre: bool = False) -> PackageDetails | VersionInfo:
        """``info PKG``: the package and its newest versions; ``info PKG VERSION``: one version."""
        check_package(package)
        if version is not None:
            check_selector(version)
            doc, _ = self._doc(package)
            exact = self._select(package, doc, version, pre=pre)
            head = self.store.head(layout.data(package, exact))
            if head is None:
                raise NotFound(f"no version {exact} of package {package}",
                               f"see the versions with: tychoreg list-versions {package}")
            try:
                record: catalog.Known = fetch.read_record(self.store, package, exact)
                if record is not None:
                    record = fetch.describing(package, exact, record, head)
            except IntegrityError as exc:
                record = str(exc)
            return self._describe(doc, exact, head.size, record)
        listed = self.versions(package)
        doc, _ = self._doc(package)
        localname = doc.localname if is_valid_segment(doc.localname) else None
        return PackageDetails(package, localname, doc.tags,
                              {v: e.get("reason") for v, e in doc.yanked.items()}, len(listed),
                              list(reversed(listed[-NEWEST_SHOWN:])))

    def _select(self, package: str, doc: PackageDoc, selector: str, *, pre: bool = False) -> str:
        """Turn ``latest``, a tag, an exact version or a range into one version name."""
        if selector == "latest":
            latest = doc.checked_latest()
            if not latest:
                raise NotFound(f"package {package} has no latest version yet",
                               f"pull one with --version, or set it: tychoreg promote {package} VERSION")
            return latest
        tags = doc.tags
        if selector in tags:
            return tags[selector]
        if is_valid_segment(selector) and not is_constraint(selector):
            return selector  # an exact version; whether it exists is checked by the caller
        from .ranges import resolve

        visible = self._visible(package)
        if selector in visible:
            return selector
        match = resolve(selector, visible, yanked=doc.yanked, pre=pre)
        if match is None:
            raise NotFound(f"no version of package {package} matches {selector!r}"
                           + ("" if pre else " (pre-releases and yanked versions are not considered)"),
                           f"see the versions with: tychoreg list-versions {package}"
                           + ("" if pre else "; --pre admits pre-releases"))
        return match

    def push(self, package: str, version: str, file: str | os.PathLike[str], *,
             promote_latest: bool = False, note: str | None = None, skip_existing: bool = False,
             progress: ProgressFactory | None = None) -> PushResult:
        """Upload ``file`` as ``version`` of ``package``; versions are immutable.

        With ``skip_existing``, a version that already holds exactly these bytes is success
        (idempotent CI pushes); one that holds other bytes is still an error.
        """
        check_package(package)
        check_version(version, for_push=True)
        from .probe import WEAKER, enforces_conditional_writes
        from .publish import open_source, publish

        path = Path(file)
        skipped = False
        with open_source(path) as source:
            doc, _ = self._doc(package)
            if self._warn and not enforces_conditional_writes(self.store):
                self._warn(WEAKER.format(location=self.location))
            if version in doc.tags:
                raise UsageError(f"{version} is a tag of package {package}; a version cannot share its name",
                                 "push under another version number")
            try:
                size = os.fstat(source.fileno()).st_size
                rec = publish(self.store, package, version, source, identity=self.identity or default_identity(),
                              note=note, progress=progress(f"{package} {version}", size) if progress else None)
                info = VersionInfo(version, rec.size, rec.sha256, rec.pushed_at, rec.pushed_by, rec.note)
                if self.known:
                    self.known.remember(package, version, rec.sha256)
            except AlreadyExists:
                if not skip_existing:
                    raise
                info = self._same_bytes(package, version, path)
                skipped = True
        if not skipped and self.store.head(layout.package_doc(package)) is None:
            # The package was deleted while we pushed: do not leave a version behind without it.
            from .publish import withdraw

            withdraw(self.store, package, rec)
            raise NotFound(f"package {package} was deleted while {version} was being pushed; nothing was kept",
                           f"create it again with: tychoreg init {package} FILENAME")
        if promote_latest:
            try:
                self._point(package, "latest", version)
            except TychoError as exc:
                raise OperationError(f"pushed {package} {version}, but could not make it latest: {exc}",
                                     f"run: tychoreg promote {package} {version}") from None
        return PushResult(info, skipped=skipped, promoted=promote_latest)

    def _same_bytes(self, package: str, version: str, path: Path) -> VersionInfo:
        """The existing version if it holds exactly ``path``'s bytes, else AlreadyExists."""
        try:
            expected = fetch.expected_for(self.store, package, version)
        except NotFound:
            raise AlreadyExists(f"version {version} of package {package} is being pushed by someone else",
                                "wait, then push again with --skip-existing") from None
        if not fetch.holds(self.store, path, expected):
            raise AlreadyExists(f"version {version} of package {package} already exists with other bytes",
                                "versions are immutable: push a new version number")
        return VersionInfo(version, expected.size, expected.sha256)

    def promote(self, package: str, version: str) -> None:
        """Make ``version`` the one that ``latest`` means."""
        check_package(package)
        check_version(version, for_push=True)
        self._point(package, "latest", version)

    def tag(self, package: str, version: str, tag: str, *, pre: bool = False) -> str:
        """Point ``tag`` at a version (any selector); returns the exact version tagged."""
        check_package(package)
        check_selector(version)
        check_tag(tag)
        doc, _ = self._doc(package)
        exact = self._select(package, doc, version, pre=pre)
        if tag != "latest" and self.store.head(layout.data(package, tag)) is not None:
            raise AlreadyExists(f"{tag} is a version of package {package}; a tag cannot share its name",
                                "choose another tag name")
        self._point(package, tag, exact)
        return exact

    def untag(self, package: str, tag: str) -> str:
        """Remove ``tag``; returns the version it pointed to."""
        check_package(package)
        check_tag(tag)
        old: list[str] = []

        def change(doc: PackageDoc) -> None:
            old.clear()
            if tag not in doc.tags:
                raise NotFound(f"package {package} has no tag {tag}",
                               f"see its tags with: tychoreg info {package}")
            old.append(doc.tags[tag])
            doc.set_tag(tag, None)

        self._update_doc(package, change)
        return old[0]

    def _point(self, package: str, tag: str, version: str) -> None:
        """Set ``tag`` to ``version`` safely against a concurrent delete of that version.

        We check the data exists, write the tag, then check again: a delete removes the data and
        then re-reads the tags, so one of the two always sees the other (and the tag is undone).
        """
        missing = NotFound(f"no version {version} of package {package}",
                           f"see the versions with: tychoreg list-versions {package}")
        self._doc(package)
        if self.store.head(layout.data(package, version)) is None:
            raise missing

        def change(doc: PackageDoc) -> None:
            if tag == "latest" and version in doc.yanked:
                raise OperationError(f"{package} {version} is yanked; latest never means a yanked version",
                                     f"unyank it first: tychoreg unyank {package} {version}")
            doc.set_tag(tag, version)

        self._update_doc(package, change)
        if self.store.head(layout.data(package, version)) is None:
            self._drop_refs(package, version)
            raise missing

    def _drop_refs(self, package: str, version: str, *, yank_too: bool = False,
                   refuse_tagged: bool = False) -> list[str]:
        """Remove every tag (and with ``yank_too`` the yank entry) naming ``version``."""
        removed: list[str] = []

        def change(doc: PackageDoc) -> None:
            removed[:] = [t for t, v in doc.tags.items() if v == version]
            if removed and refuse_tagged:
                raise OperationError(f"{package} {version} is tagged {', '.join(removed)}; not deleted",
                                     "move the tags first, or pass --force to delete it and its tags")
            for t in removed:
                doc.set_tag(t, None)
            if yank_too:
                doc.set_yanked(version, None)

        self._update_doc(package, change)
        return removed

    def _exact(self, package: str, doc: PackageDoc, version: str) -> str:
        """An exact version for commands that change one: a version, ``latest`` or a tag; no ranges."""
        check_selector(version)
        if version in doc.tags or version == "latest":
            return self._select(package, doc, version)
        if is_constraint(version) or not is_valid_segment(version):
            raise UsageError(f"{version!r} is a range; this command needs one exact version",
                             f"see the versions with: tychoreg list-versions {package}")
        return version

    # -- yank and delete -----------------------------------------------------------------
    def yank(self, package: str, version: str, reason: str | None = None, *,
             move_latest: bool = False) -> str | None:
        """Hide ``version`` from ``latest`` and range resolution; pulls by exact version still work.

        Yanking the version ``latest`` points to moves ``latest`` to the highest remaining
        release; that needs ``move_latest`` (the CLI's ``--yes``). Returns the new ``latest``.
        """
        check_package(package)
        doc, _ = self._doc(package)
        version = self._exact(package, doc, version)
        missing = NotFound(f"no version {version} of package {package}",
                           f"see the versions with: tychoreg list-versions {package}")
        from .ranges import resolve

        by = self.identity or default_identity()
        moved: list[str | None] = []

        def change(doc: PackageDoc) -> None:
            # Listed inside the compare-and-swap loop: a version deleted since an earlier attempt
            # is never chosen (and the check after writing catches one deleted during it).
            visible = self._visible(package)
            if version not in visible:
                raise missing
            successor = resolve("*", visible, yanked={*doc.yanked, version})
            if doc.latest == version or (moved and doc.latest == moved[-1] and doc.latest not in visible):
                if not move_latest:
                    raise ConfirmationNeeded(f"{package} {version} is what latest means; yanking it moves latest "
                                             f"to {successor or 'nothing (unset)'}", "pass --yes to go ahead")
                doc.latest = successor
                moved.append(successor)
            old_reason = doc.yanked.get(version, {}).get("reason")
            doc.set_yanked(version, {"reason": reason if reason is not None else old_reason,
                                     "at": _now_iso(), "by": by})

        for _ in range(CAS_ATTEMPTS):
            latest = self._update_doc(package, change).latest
            # Like promote (see _point): check after writing. A delete removes the data and then
            # the references, so one of the two sees the other.
            if self.store.head(layout.data(package, version)) is None:
                self._drop_refs(package, version, yank_too=True)
                raise missing
            if latest is None or latest != (moved[-1] if moved else None):
                return latest
            if self.store.head(layout.data(package, latest)) is not None:
                return latest
        raise StorageError(f"could not yank {package} {version}: versions kept disappearing under us",
                           "try again")

    def unyank(self, package: str, version: str) -> None:
        """Make a yanked version resolvable again (``latest`` is left as it is)."""
        check_package(package)
        version = self._exact(package, self._doc(package)[0], version)

        def change(doc: PackageDoc) -> None:
            if version not in doc.yanked:
                raise NotFound(f"{package} {version} is not yanked")
            doc.set_yanked(version, None)

        self._update_doc(package, change)

    def delete(self, package: str, version: str | None = None, *, force: bool = False) -> list[str]:
        """Delete one version, or (``version`` None) the whole package; returns tags removed.

        A version a tag points to is refused unless ``force``. Tags go first, then the data (the
        version is invisible at once), then its record (only if unchanged), then the yank entry;
        tags are re-checked afterwards (see :meth:`_point`).
        """
        check_package(package)
        if version is None:
            return self._delete_package(package, force=force)
        doc, _ = self._doc(package)
        version = self._exact(package, doc, version)
        if self.store.head(layout.data(package, version)) is None:
            raise NotFound(f"no version {version} of package {package}",
                           f"see the versions with: tychoreg list-versions {package}")
        # The record's ETag is read before the data goes: once the version is invisible, a new
        # push of it may take the old record over, and its claim must survive our delete.
        try:
            _, record_etag = self.store.get(layout.record(package, version))
        except ObjectNotFound:
            record_etag = None
        except IntegrityError:
            record_etag = None
        removed = self._drop_refs(package, version, refuse_tagged=not force)
        self.store.delete(layout.data(package, version))
        if record_etag is not None:
            try:
                self.store.delete_if_match(layout.record(package, version), record_etag)
            except (ObjectNotFound, PreconditionFailed):
                pass  # a new push of this version has claimed it meanwhile: it stays
        return sorted(set(removed) | set(self._drop_refs(package, version, yank_too=True)))

    def _delete_package(self, package: str, *, force: bool) -> list[str]:
        doc, _ = self._doc(package)
        tags = sorted(doc.tags)
        if tags and not force:
            raise OperationError(f"package {package} has tags ({', '.join(tags)}); not deleted",
                                 "pass --force to delete it with all its versions and tags")
        # The document goes first: the package disappears and new pushes are refused at once.
        self.store.delete(layout.package_doc(package))
        keys = [info.key for info in self.store.list(f"{package}/") if info.key != layout.package_doc(package)]
        data = [k for k in keys if layout.version_of_data(package, k)]
        _parallel(self.store.delete, data)  # data first: versions vanish before their records
        _parallel(self.store.delete, [k for k in keys if not layout.version_of_data(package, k)])
        return tags

    # -- upkeep -------------------------------------------------------------------------
    def verify(self, package: str | None = None, version: str | None = None, *, pre: bool = False,
               ) -> list[upkeep.Verified]:
        """Re-read stored versions (all, one package's, or one) and check them against their records."""
        if package is None:
            targets = [(p.name, v) for p in self.packages() for v in self._visible(p.name)]
        else:
            check_package(package)
            doc, _ = self._doc(package)
            if version is None:
                targets = [(package, v) for v in self._visible(package)]
            else:
                check_selector(version)
                targets = [(package, self._select(package, doc, version, pre=pre))]
        from . import upkeep

        results = _parallel(lambda t: upkeep.verify_one(self.store, *t), targets, workers=4)
        return sorted(results, key=lambda r: r.package)

    def gc(self, *, older_than: timedelta | None = None, remove: bool = False) -> list[upkeep.Debris]:
        """Find (and with ``remove``, delete) what dead pushes left: invisible, older than
        ``older_than`` (default 24 hours)."""
        from . import upkeep

        names = [n for n in self.store.list_folders("") if is_valid_segment(n)]
        found = upkeep.find_debris(self.store, names, upkeep.DEFAULT_GC_AGE if older_than is None else older_than)
        if remove:
            found = [d for d in found if upkeep.remove_debris(self.store, d)]
        return found

    # -- pulling -------------------------------------------------------------------------
    def pull(self, package: str, version: str = "latest", *, outfile: str | os.PathLike[str] | None = None,
             force: bool = False, pre: bool = False, progress: ProgressFactory | None = None,
             extract: str | os.PathLike[str] | None = None, allow_unverified: bool = False) -> PullResult:
        """Download a version (exact, ``latest``, a tag or a range) to ``outfile`` or
        ``OUTDIR/localname``, verified, atomically; with ``extract``, unpack it into that folder.

        ``allow_unverified`` takes a version whose record is missing although it once had one
        (see :func:`tychoreg.fetch.expected_for`) by size and ETag, as a 0.4.0 version."""
        check_package(package)
        check_selector(version)
        if outfile is not None and Path(outfile).is_dir():
            raise UsageError(f"--outfile {outfile} is a folder", "name a file path, e.g. DIR/FILENAME")
        doc, _ = self._doc(package)
        exact = self._select(package, doc, version, pre=pre)
        if extract is None:
            dest = Path(outfile) if outfile is not None else self.outdir / doc.checked_localname()
        else:
            dest = Path(extract)
        expected = fetch.expected_for(self.store, package, exact, allow_unverified=allow_unverified, known=self.known)
        yank = doc.yanked.get(exact)
        marks = {"yanked": yank is not None, "yank_reason": yank.get("reason") if yank else None}
        return self.install(package, exact, expected, dest, extract=extract is not None, force=force,
                            progress=progress, **marks)

    def install(self, package: str, version: str, expected: fetch.Expected, dest: Path, *, extract: bool = False,
                force: bool = False, offline: bool = False, progress: ProgressFactory | None = None,
                **marks: Any) -> PullResult:
        """Put a resolved version at ``dest`` (a file, or with ``extract`` a folder), from the
        destination itself, the cache or the store; ``offline`` forbids the store."""
        source = deliver.Source(self.store, package, version, expected, self.cache, offline)
        watch = progress(f"{package} {version}", expected.size) if progress else None
        if extract:
            done = deliver.to_folder(source, dest, limit=self.extract_limit, force=force, progress=watch)
        else:
            done = deliver.to_file(source, dest, force=force, progress=watch)
        if self.known and expected.sha256:
            self.known.remember(package, version, expected.sha256)
        return PullResult(package, version, dest, downloaded=done.downloaded, checked_by=expected.checked_by,
                          resumes=done.resumes, from_cache=done.from_cache, extracted=extract, **marks)

    def resolve(self, package: str, selector: str = "latest", *, pre: bool = False) -> Resolved:
        """What ``selector`` means for ``package`` right now: version, digest, size, file name."""
        check_package(package)
        check_selector(selector)
        doc, _ = self._doc(package)
        exact = self._select(package, doc, selector, pre=pre)
        expected = fetch.expected_for(self.store, package, exact, known=self.known)
        return Resolved(package, exact, expected.sha256, expected.size, doc.checked_localname())

    def pull_many(self, packages: Sequence[str], *, force: bool = False, progress: ProgressFactory | None = None,
                  done: Callable[[str, PullResult | TychoError], None] | None = None,
                  ) -> list[tuple[str, PullResult | TychoError]]:
        """Pull the latest of each package, in parallel; failures are returned, not raised.

        ``done`` hears of each package as it finishes (from a worker thread, one at a time)."""
        for name in packages:
            check_package(name)
        return each_package(list(dict.fromkeys(packages)),
                            lambda name: self.pull(name, force=force, progress=progress), done)
