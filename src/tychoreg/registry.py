"""The registry: packages, versions, tags, pulls. The public Python API, and only a façade.

:class:`Registry` checks what callers give it (names, selectors: parsed once, here, at the edge)
and hands each operation to the module that owns its protocol; it holds what they share (the
store, the download cache, the digests this machine verified, where pulls go). Nothing here knows
of boto3 or of files, and no protocol step lives here:

=====================  ==================================================================
``refs``               ``tycho.json``: read, compare-and-swap, promote, tag, yank, selection
``publish``            push: stage, claim, commit, confirm
``delete``             deleting a version or a package
``fetch``, ``deliver``  what a version's bytes must be; getting them onto the disk
``catalog``            every version of a package with its record
``sync``               declared packages, ``tycho.lock``
``upkeep``             verify, gc
=====================  ==================================================================
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from . import catalog, delete, deliver, fetch, layout, refs
from .cache import Cache
from .cache import default_root as default_cache_root
from .concurrency import each_package, parallel_map
from .config import Project, Settings, load_settings
from .errors import IntegrityError, NotFound, PackageExists, TychoError, UsageError, VersionNotFound
from .known import KnownDigests
from .known import default_root as default_known_root
from .models import (
    PUSH_ID,
    PackageDetails,
    PackageDoc,
    PackageInfo,
    PullResult,
    PushResult,
    Resolved,
    VersionInfo,
    record_for_data,
)
from .names import check_filename, check_package, check_tag, check_version, is_valid_segment
from .selector import PackageSpec, Selector
from .store import PreconditionFailed, Store, open_store
from .store.base import ProgressFactory
from .units import DEFAULT_EXTRACT_LIMIT

if TYPE_CHECKING:
    from .lockfile import Locked
    from .plan import DeletePlan, SyncPlan
    from .upkeep import Debris, Verified

#: How many of a package's newest versions ``info`` shows.
NEWEST_SHOWN = 10
Done = Callable[[str, "PullResult | TychoError"], None]


class Pin(Protocol):
    """An exact version and the digest it must have: what a lock file entry or
    :meth:`Registry.resolve` gives."""

    @property
    def package(self) -> str: ...

    @property
    def version(self) -> str: ...

    @property
    def sha256(self) -> str | None: ...

    @property
    def size(self) -> int: ...


class Registry:
    """A registry of versioned files in a :class:`~tychoreg.store.Store`."""

    def __init__(
        self,
        store: Store,
        *,
        outdir: str | os.PathLike[str] = "tycho_packages",
        identity: str | None = None,
        warn: Callable[[str], None] | None = None,
        cache: Cache | None = None,
        extract_limit: int = DEFAULT_EXTRACT_LIMIT,
        known: KnownDigests | None = None,
        project: Project | None = None,
    ) -> None:
        self.store = store
        self.outdir = Path(outdir)
        self.identity = identity
        self._warn = warn
        #: The shared download cache pulls use (None: download straight to the destination).
        self.cache = cache
        self.extract_limit = extract_limit
        #: The digests this machine verified before (None: remember nothing).
        self.known = known
        #: The declared packages and lock file of the project, for :meth:`lock` and :meth:`sync`.
        self.project = project

    @classmethod
    def from_config(cls, config: str | os.PathLike[str] | None = None, *, cwd: Path | None = None) -> Registry:
        """Open the registry the command line would use (an explicit file, ``$TYCHOREG_CONFIG``,
        ``.tychoreg.json``, else the embedded default).

        Raises :class:`ConfigError` for a missing or malformed configuration."""
        return cls.from_settings(load_settings(config, cwd=cwd))

    @classmethod
    def from_settings(cls, settings: Settings, *, warn: Callable[[str], None] | None = None) -> Registry:
        tuning = {
            k: v for k, v in (("part_size", settings.part_size), ("concurrency", settings.concurrency)) if v is not None
        }
        store = open_store(settings.backend, settings.options, **tuning)
        return cls(
            store,
            outdir=settings.outdir,
            identity=settings.identity,
            warn=warn,
            cache=cls.download_cache(settings) if settings.cache else None,
            extract_limit=settings.extract_limit,
            known=KnownDigests(default_known_root(), store.identity),
            project=settings.declared,
        )

    @staticmethod
    def download_cache(settings: Settings | None = None) -> Cache:
        """The shared download cache (whether or not pulls use it), to inspect or prune it."""
        return Cache(default_cache_root(), settings.cache_limit if settings else None)

    @property
    def location(self) -> str:
        return self.store.location

    # -- packages ------------------------------------------------------------------------
    def init(self, package: str, filename: str) -> None:
        """Create ``package``, whose pulls are saved as ``filename``.

        Raises :class:`UsageError` for an invalid name, :class:`PackageExists`."""
        check_package(package)
        check_filename(filename)
        try:
            self.store.put_if_absent(layout.package_doc(package), PackageDoc(package, filename).to_bytes())
        except PreconditionFailed:
            raise PackageExists(package) from None

    def packages(self, pattern: str | None = None) -> list[PackageInfo]:
        """Every package (a folder with a ``tycho.json``), sorted by name; ``pattern`` is a glob.
        A package whose document is damaged is listed with its ``problem``."""
        names = sorted(
            n
            for n in self.store.list_folders("")
            if is_valid_segment(n) and (pattern is None or fnmatch.fnmatchcase(n, pattern))
        )

        def load(name: str) -> PackageInfo | None:
            try:
                doc, _ = refs.read(self.store, name)
                return PackageInfo(name, doc.checked_latest(), doc.localname)
            except NotFound:
                return None
            except IntegrityError as exc:  # damaged or planted (too large, too deep, a link): this one only
                return PackageInfo(name, None, None, problem=str(exc))

        return [info for info in parallel_map(load, names) if info is not None]

    def versions(self, package: str) -> list[VersionInfo]:
        """Every visible version of ``package``, ascending by version precedence.

        Raises :class:`PackageNotFound`."""
        check_package(package)
        doc, _ = refs.read(self.store, package)
        return catalog.versions(self.store, package, doc)

    def info(
        self, package: str, version: str | Selector | None = None, *, pre: bool = False
    ) -> PackageDetails | VersionInfo:
        """The package (its file name, tags, yanks and newest versions); with ``version``, that
        version, as :meth:`version_info` gives it."""
        if version is not None:
            return self.version_info(package, version, pre=pre)
        listed = self.versions(package)
        doc, _ = refs.read(self.store, package)
        localname = doc.localname if is_valid_segment(doc.localname) else None
        return PackageDetails(
            package,
            localname,
            doc.tags,
            {v: e.get("reason") for v, e in doc.yanked.items()},
            len(listed),
            list(reversed(listed[-NEWEST_SHOWN:])),
        )

    def version_info(self, package: str, selector: str | Selector, *, pre: bool = False) -> VersionInfo:
        """One version (any selector): size, SHA-256, who pushed it when, note, tags, yank.

        Raises :class:`VersionNotFound`, :class:`NoLatest`, :class:`NoMatch`."""
        check_package(package)
        selector = Selector.parse(selector)
        doc, _ = refs.read(self.store, package)
        exact = refs.select(self.store, package, doc, selector, pre=pre)
        head = self.store.head(layout.data(package, exact))
        if head is None:
            raise VersionNotFound(package, exact)
        record: catalog.Known
        try:
            record = fetch.read_record(self.store, package, exact)
            if record is not None:
                record = record_for_data(
                    package, exact, record, head.meta.get(PUSH_ID), head.etag, keeps_metadata=self.store.keeps_metadata
                )
        except IntegrityError as exc:
            record = str(exc)
        return catalog.describe(doc, exact, head.size, record)

    # -- pushing and changing references --------------------------------------------------
    def push(
        self,
        package: str,
        version: str,
        file: str | os.PathLike[str],
        *,
        promote_latest: bool = False,
        note: str | None = None,
        skip_existing: bool = False,
        progress: ProgressFactory | None = None,
    ) -> PushResult:
        """Upload ``file`` as ``version`` of ``package``; versions are immutable.

        With ``skip_existing``, a version that already holds exactly these bytes is success
        (idempotent CI pushes); one that holds other bytes is still an error.

        Raises :class:`UsageError` (a name, a file that cannot be read), :class:`PackageNotFound`,
        :class:`VersionExists`, :class:`BeingPushed`, :class:`StorageError`."""
        check_package(package)
        check_version(version, for_push=True)
        from .publish import push  # noqa: PLC0415 - socket, getpass: ~4 ms; push and yank

        return push(
            self.store,
            package,
            version,
            Path(file),
            identity=self.identity,
            note=note,
            promote_latest=promote_latest,
            skip_existing=skip_existing,
            progress=progress,
            known=self.known,
            warn=self._warn,
        )

    def promote(self, package: str, version: str) -> None:
        """Make ``version`` the one that ``latest`` means.

        Raises :class:`VersionNotFound`, :class:`OperationError` (``reason="yanked-latest"``)."""
        check_package(package)
        check_version(version, for_push=True)
        refs.point(self.store, package, "latest", version)

    def tag(self, package: str, selector: str | Selector, tag: str, *, pre: bool = False) -> str:
        """Point ``tag`` at a version (any selector); returns the exact version tagged."""
        check_package(package)
        selector = Selector.parse(selector)
        check_tag(tag)
        return refs.tag(self.store, package, selector, tag, pre=pre)

    def untag(self, package: str, tag: str) -> str:
        """Remove ``tag``; returns the version it pointed to. Raises :class:`TagNotFound`."""
        check_package(package)
        check_tag(tag)
        return refs.untag(self.store, package, tag)

    def yank(
        self, package: str, version: str | Selector, reason: str | None = None, *, move_latest: bool = False
    ) -> str | None:
        """Hide a version from ``latest`` and range resolution; pulls by exact version still work.
        Returns what ``latest`` is afterwards.

        Raises :class:`ConfirmationNeeded` when the version is what ``latest`` means and
        ``move_latest`` is not given (``latest`` would move to the highest remaining release)."""
        check_package(package)
        from .publish import default_identity, now_iso  # noqa: PLC0415 - socket, getpass: ~4 ms; push and yank

        _, latest = refs.yank(
            self.store,
            package,
            Selector.exact(version),
            reason,
            by=self.identity or default_identity(),
            when=now_iso(),
            move_latest=move_latest,
        )
        return latest

    def unyank(self, package: str, version: str | Selector) -> None:
        """Make a yanked version resolvable again (``latest`` is left as it is)."""
        check_package(package)
        refs.unyank(self.store, package, Selector.exact(version))

    def delete(self, package: str, version: str | Selector | None = None, *, force: bool = False) -> list[str]:
        """Delete one version, or (``version`` None) the whole package; returns the tags removed.

        Raises :class:`OperationError` (``reason="tagged"`` or ``"package-tagged"``) for a
        version or package that tags point to, unless ``force``."""
        check_package(package)
        if version is None:
            return delete.delete_package(self.store, package, force=force)
        return delete.delete_version(self.store, package, Selector.exact(version), force=force)[1]

    # -- upkeep -------------------------------------------------------------------------
    def verify(
        self, package: str | None = None, version: str | Selector | None = None, *, pre: bool = False
    ) -> list[Verified]:
        """Re-read stored versions (all, one package's, or one) and check them against their records."""
        from . import upkeep  # noqa: PLC0415 - upkeep: ~1 ms, only verify and gc

        if package is None:
            targets = [(p.name, v) for p in self.packages() for v in refs.visible(self.store, p.name)]
        else:
            check_package(package)
            doc, _ = refs.read(self.store, package)
            if version is None:
                targets = [(package, v) for v in refs.visible(self.store, package)]
            else:
                targets = [(package, refs.select(self.store, package, doc, Selector.parse(version), pre=pre))]
        results = parallel_map(lambda t: upkeep.verify_one(self.store, *t), targets, workers=4)
        return sorted(results, key=lambda r: r.package)

    def gc(self, *, older_than: timedelta | None = None, remove: bool = False) -> list[Debris]:
        """Find (and with ``remove``, delete) what dead pushes left: invisible, older than
        ``older_than`` (default 24 hours)."""
        from . import upkeep  # noqa: PLC0415 - upkeep: ~1 ms, only verify and gc

        names = [n for n in self.store.list_folders("") if is_valid_segment(n)]
        found = upkeep.find_debris(self.store, names, upkeep.DEFAULT_GC_AGE if older_than is None else older_than)
        if remove:
            found = [d for d in found if upkeep.remove_debris(self.store, d)]
        return found

    # -- pulling -------------------------------------------------------------------------
    def resolve(self, package: str, selector: str | Selector = "latest", *, pre: bool = False) -> Resolved:
        """What ``selector`` means for ``package`` right now: version, digest, size, file name."""
        check_package(package)
        doc, _ = refs.read(self.store, package)
        exact = refs.select(self.store, package, doc, Selector.parse(selector), pre=pre)
        expected = fetch.expected_for(self.store, package, exact, known=self.known)
        return Resolved(package, exact, expected.sha256, expected.size, doc.checked_localname())

    def pull(
        self,
        package: str,
        version: str | Selector = "latest",
        *,
        outfile: str | os.PathLike[str] | None = None,
        force: bool = False,
        pre: bool = False,
        progress: ProgressFactory | None = None,
        extract: str | os.PathLike[str] | None = None,
        allow_unverified: bool = False,
    ) -> PullResult:
        """Download a version (exact, ``latest``, a tag or a range) to ``outfile`` or
        ``OUTDIR/localname``, verified, atomically; with ``extract``, unpack it into that folder.

        ``allow_unverified`` takes a version whose record is missing although it once had one
        (see docs/FORMAT.md, "Reading a version") by size and ETag, as a 0.4.0 version.

        Raises :class:`PackageNotFound`, :class:`VersionNotFound`, :class:`NoLatest`,
        :class:`NoMatch`, :class:`IntegrityError` (nothing is written then), :class:`StorageError`."""
        check_package(package)
        selector = Selector.parse(version)
        if outfile is not None and Path(outfile).is_dir():
            raise UsageError(f"{outfile} is a folder", "name a file path, e.g. DIR/FILENAME", reason="dest-is-folder")
        doc, _ = refs.read(self.store, package)
        exact = refs.select(self.store, package, doc, selector, pre=pre)
        if extract is None:
            dest = Path(outfile) if outfile is not None else self.outdir / doc.checked_localname()
        else:
            dest = Path(extract)
        expected = fetch.expected_for(self.store, package, exact, allow_unverified=allow_unverified, known=self.known)
        yank = doc.yanked.get(exact)
        done = self._deliver(
            package, exact, expected, dest, extract=extract is not None, force=force, progress=progress
        )
        return PullResult(
            package,
            exact,
            dest,
            downloaded=done.downloaded,
            checked_by=expected.checked_by,
            resumes=done.resumes,
            from_cache=done.from_cache,
            extracted=extract is not None,
            yanked=yank is not None,
            yank_reason=yank.get("reason") if yank else None,
            size=expected.size,
            sha256=expected.sha256,
        )

    def pull_many(
        self,
        packages: Sequence[str | PackageSpec],
        *,
        force: bool = False,
        progress: ProgressFactory | None = None,
        done: Done | None = None,
    ) -> list[tuple[str, PullResult | TychoError]]:
        """Pull each package, in parallel: a name pulls its latest, a :class:`PackageSpec`
        (``narf@^1.2``, parsed by the caller) what its selector names. Failures are returned,
        not raised; a package named twice with different selectors is a :class:`UsageError`.

        ``done`` hears of each package as it finishes (from a worker thread, one at a time)."""
        wanted: dict[str, PackageSpec] = {}
        for item in packages:
            spec = item if isinstance(item, PackageSpec) else PackageSpec(item)
            check_package(spec.package)
            if str(wanted.setdefault(spec.package, spec).wanted()) != str(spec.wanted()):
                raise UsageError(
                    f"{spec.package} is named twice, as {wanted[spec.package]} and {spec}",
                    "name each package once",
                    reason="package-twice",
                    package=spec.package,
                )
        return each_package(
            list(wanted), lambda name: self.pull(name, wanted[name].wanted(), force=force, progress=progress), done
        )

    def pull_list(
        self,
        packages: Sequence[str | PackageSpec] = (),
        *,
        from_file: str | os.PathLike[str] | None = None,
        force: bool = False,
        offline: bool = False,
        progress: ProgressFactory | None = None,
        done: Done | None = None,
    ) -> list[tuple[str, PullResult | TychoError]]:
        """Pull each package (its latest, or what a :class:`PackageSpec`'s selector names), and
        what ``from_file`` names: a lock file (exact versions, verified against their pinned
        digests; extract folders inside its folder) or a list of packages, one per line (``PKG``
        or ``PKG@SELECTOR``). Failures are returned per package, not raised.

        Raises :class:`UsageError` when nothing is named, or when ``offline`` is asked without a
        lock file (only a lock pins what may come from the cache)."""
        from .lockfile import read_pull_list  # noqa: PLC0415 - lockfile: ~1 ms, only pull lists, lock and sync

        names: list[str | PackageSpec] = list(packages)
        entries = None
        if from_file is not None:
            more, entries = read_pull_list(Path(from_file))
            names += more
        if not names and not entries:
            raise UsageError("name at least one package, or a file to pull from", reason="nothing-to-pull")
        if offline and (names or entries is None):
            raise UsageError("pulling offline needs a lock file (it pins exact versions)", reason="offline-needs-lock")
        results: list[tuple[str, PullResult | TychoError]] = []
        if entries:
            assert from_file is not None
            results += self.install_locked(
                entries, Path(from_file).parent, offline=offline, force=force, progress=progress, done=done
            )
        if names:
            results += self.pull_many(names, force=force, progress=progress, done=done)
        return results

    def install(
        self,
        pin: Pin,
        dest: str | os.PathLike[str],
        *,
        extract: bool = False,
        force: bool = False,
        offline: bool = False,
        progress: ProgressFactory | None = None,
    ) -> PullResult:
        """Put exactly the pinned version at ``dest`` (a file, or with ``extract`` a folder): from
        the destination itself or the cache when they hold its digest (no request at all), else
        from the store, whose copy must still be what the pin says.

        Raises :class:`NotCached` when ``offline`` forbids the store, :class:`IntegrityError`
        (``reason="repushed"``) when the version was deleted and pushed again with other bytes."""
        dest = Path(dest)
        if pin.sha256 and not force:
            local = fetch.Expected.pinned(pin.package, pin.version, pin.sha256, pin.size)
            try:
                done = self._deliver(pin.package, pin.version, local, dest, extract=extract, offline=True)
                return PullResult(
                    pin.package,
                    pin.version,
                    dest,
                    downloaded=False,
                    checked_by="sha256",
                    from_cache=done.from_cache,
                    extracted=extract,
                    size=pin.size,
                    sha256=pin.sha256,
                )
            except deliver.NotCached:
                if offline:
                    raise
        elif offline:
            raise deliver.NotCached(
                f"{pin.package} {pin.version} has no recorded SHA-256, so it cannot be installed without the registry",
                reason="offline-no-digest",
                package=pin.package,
                version=pin.version,
            )
        expected = fetch.expected_for(self.store, pin.package, pin.version, known=self.known)
        if (pin.sha256 and expected.sha256 != pin.sha256) or expected.size != pin.size:
            raise IntegrityError(
                f"{pin.package} {pin.version} in {self.location} is not what the lock file pinned "
                f"(sha256 {expected.sha256}, {expected.size} bytes; pinned {pin.sha256}, "
                f"{pin.size} bytes): it was deleted and pushed again",
                reason="repushed",
                package=pin.package,
                version=pin.version,
            )
        done = self._deliver(pin.package, pin.version, expected, dest, extract=extract, force=force, progress=progress)
        return PullResult(
            pin.package,
            pin.version,
            dest,
            downloaded=done.downloaded,
            checked_by=expected.checked_by,
            resumes=done.resumes,
            from_cache=done.from_cache,
            extracted=extract,
            size=expected.size,
            sha256=expected.sha256,
        )

    def _deliver(
        self,
        package: str,
        version: str,
        expected: fetch.Expected,
        dest: Path,
        *,
        extract: bool,
        force: bool = False,
        offline: bool = False,
        progress: ProgressFactory | None = None,
    ) -> deliver.Delivered:
        source = deliver.Source(self.store, package, version, expected, self.cache, offline)
        watch = progress(f"{package} {version}", expected.size) if progress and not offline else None
        if extract:
            done = deliver.to_folder(source, dest, limit=self.extract_limit, force=force, progress=watch)
        else:
            done = deliver.to_file(source, dest, force=force, progress=watch)
        if self.known and expected.sha256:
            self.known.remember(package, version, expected.sha256)
        return done

    # -- declared packages -----------------------------------------------------------------
    def lock(self, *, upgrade: Sequence[str] | bool = False) -> tuple[dict[str, Locked], bool]:
        """Resolve the project's declared packages into its lock file (entries already locked
        stay unless upgraded); returns the entries and whether the file changed."""
        from . import sync  # noqa: PLC0415 - sync, lockfile: ~1 ms, only lock and sync

        return sync.lock(self, self._project(), upgrade=upgrade)

    def sync(
        self,
        *,
        locked: bool = False,
        offline: bool = False,
        force: bool = False,
        progress: ProgressFactory | None = None,
        done: Done | None = None,
    ) -> list[tuple[str, PullResult | TychoError]]:
        """Install every declared package as the lock file pins it (locking first unless
        ``locked`` or ``offline``); failures are returned per package, not raised."""
        from . import sync  # noqa: PLC0415 - sync, lockfile: ~1 ms, only lock and sync

        return sync.sync(
            self, self._project(), locked=locked, offline=offline, force=force, progress=progress, done=done
        )

    def install_locked(
        self,
        entries: dict[str, Locked],
        base: Path,
        *,
        offline: bool = False,
        force: bool = False,
        progress: ProgressFactory | None = None,
        done: Done | None = None,
    ) -> list[tuple[str, PullResult | TychoError]]:
        """Install what a lock file (read with :func:`tychoreg.lockfile.read`) pins, its extract
        folders inside ``base``; failures are returned per package, not raised."""
        from . import sync  # noqa: PLC0415 - sync, lockfile: ~1 ms, only lock and sync

        return sync.install(self, entries, base, offline=offline, force=force, progress=progress, done=done)

    def _project(self) -> Project | None:
        return self.project

    # -- everyday use (issue 15a): dry runs, the lock check, names for shell completion ---------
    def plan_sync(self, *, locked: bool = False, offline: bool = False, force: bool = False) -> SyncPlan:
        """What :meth:`sync` would do with the same options (the lock it would write, and for each
        package the version, the destination and whether it is in place, in the cache or to be
        downloaded), with nothing written. Fails as :meth:`sync` fails before it installs."""
        from . import plan  # noqa: PLC0415 - plan, sync, lockfile: ~1 ms, only dry runs

        return plan.sync_plan(
            self,
            self._project(),
            store=self.store,
            cache=self.cache,
            known=self.known,
            locked=locked,
            offline=offline,
            force=force,
        )

    def plan_lock(self, *, upgrade: Sequence[str] | bool = False) -> tuple[dict[str, Locked], bool]:
        """What :meth:`lock` would pin, and whether the lock file would change; nothing is written."""
        from . import sync  # noqa: PLC0415 - sync, lockfile: ~1 ms, only lock and sync

        return sync.lock(self, self._project(), upgrade=upgrade, write=False)

    def lock_problems(self) -> list[str]:
        """Why the project's lock file does not answer its declared packages (empty: it does, and
        :meth:`lock` would leave it as it is). Reads local files only."""
        from . import sync  # noqa: PLC0415 - sync, lockfile: ~1 ms, only lock and sync

        return sync.stale(self._project())

    def plan_delete(self, package: str, version: str | Selector | None = None, *, force: bool = False) -> DeletePlan:
        """What :meth:`delete` would remove (the version, or every version of the package, and the
        tags that go with it), refused as :meth:`delete` refuses it; nothing is deleted."""
        from . import plan  # noqa: PLC0415 - plan, sync, lockfile: ~1 ms, only dry runs

        check_package(package)
        return plan.delete_plan(self.store, package, None if version is None else Selector.exact(version), force=force)

    def package_names(self, prefix: str = "") -> list[str]:
        """The names of the packages starting with ``prefix``, from one listing (no document is
        read): cheap enough for shell completion."""
        return sorted(n for n in self.store.list_folders("") if is_valid_segment(n) and n.startswith(prefix))

    def selectors(self, package: str) -> list[str]:
        """What may follow ``PKG@``: ``latest``, the package's tags and its versions (highest first)."""
        from .versions import sort_versions  # noqa: PLC0415 - semver, packaging: ~5 ms, only completion

        check_package(package)
        doc, _ = refs.read(self.store, package)
        return list(dict.fromkeys(["latest", *doc.tags, *reversed(sort_versions(refs.visible(self.store, package)))]))
