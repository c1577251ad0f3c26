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
import functools
import os
import stat
import threading
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Concatenate, ParamSpec, Protocol, TypeVar

from . import ahead, catalog, delete, deliver, fetch, layout, portable, refs
from .cache import Cache
from .cache import default_root as default_cache_root
from .concurrency import each_package, parallel_map
from .config import Project, Retention, Settings, load_settings
from .errors import (
    AlreadyExists,
    ConfigError,
    ConfirmationNeeded,
    IntegrityError,
    NotFound,
    OperationError,
    PackageExists,
    StorageError,
    TychoError,
    UsageError,
    VersionNotFound,
)
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
from .store.base import LocalStore, ProgressFactory
from .store.snapshot import ReadOnly, SnapshotStore
from .units import DEFAULT_EXTRACT_LIMIT

if TYPE_CHECKING:
    from .lockfile import Locked
    from .mirror import Mirrored
    from .plan import DeletePlan, SyncPlan
    from .retention import Plan, Pruned
    from .signatures import SignResult, Trust
    from .upkeep import Debris, Verified
    from .webindex import IndexReport

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


# -- writes keep the static catalog current (reading over HTTP) ---------------------------------------
_P = ParamSpec("_P")
_R = TypeVar("_R")
#: Errors a write raises before it changed anything: no catalog to bring up to date after them.
_UNCHANGED = (UsageError, ConfigError, NotFound, AlreadyExists, ConfirmationNeeded)


def _is_folder(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` names a folder (to pack); a name the system cannot even look up (too long)
    is not one, and reading it as a file says what is wrong with it."""
    try:
        return stat.S_ISDIR(os.stat(path).st_mode)
    except (OSError, ValueError):
        return False


def _writes(method: Callable[Concatenate[Registry, _P], _R]) -> Callable[Concatenate[Registry, _P], _R]:
    """A method that changes a package (named by its first argument): refused on a read-only
    store, and followed by bringing the static catalog up to date (best effort: see
    :meth:`Registry._after_write`), also when it failed part way."""

    @functools.wraps(method)
    def write(self: Registry, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        self.ensure_writable()
        package = args[0] if args else kwargs.get("package")
        if not isinstance(package, str):
            return method(self, *args, **kwargs)
        if method.__name__ == "init":
            self._make_room(package)
        try:
            result = method(self, *args, **kwargs)
        except _UNCHANGED:
            raise
        except TychoError:
            self._after_write(package, quiet=True)
            raise
        fresh: tuple[str, ...] = ()
        pushed: object = result
        if isinstance(pushed, PushResult) and not pushed.skipped:  # read with the listing, not after it
            fresh = (layout.data(package, pushed.version.version), layout.record(package, pushed.version.version))
        self._after_write(package, fresh=fresh)
        return result

    return write


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
        trust: Trust | None = None,
        signing_key: Path | None = None,
        retention: dict[str, Retention] | None = None,
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
        #: The trusted signers every read checks signatures against (None: signatures are not checked).
        self.trust = trust
        #: The key pushes sign with (``tycho.signing_key``), if any.
        self.signing_key = signing_key

        #: Retention policies by package (``*``: the rest), for :meth:`prune` without options.
        self.retention = retention or {}

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
        trust = None
        if settings.trusted_signers is not None:
            from .signatures import Trust  # noqa: PLC0415 - signatures, sshsig: only where trust is configured

            trust = Trust.load(
                settings.trusted_signers, revoked=settings.revoked_signers, required=settings.require_signatures
            )
        return cls(
            store,
            outdir=settings.outdir,
            identity=settings.identity,
            warn=warn,
            cache=cls.download_cache(settings) if settings.cache and portable.DIR_FDS else None,
            extract_limit=settings.extract_limit,
            known=KnownDigests(default_known_root(), store.identity),
            project=settings.declared,
            trust=trust,
            signing_key=settings.signing_key,
            retention=settings.retention,
        )

    @staticmethod
    def download_cache(settings: Settings | None = None) -> Cache:
        """The shared download cache (whether or not pulls use it), to inspect or prune it."""
        return Cache(default_cache_root(), settings.cache_limit if settings else None)

    @property
    def location(self) -> str:
        return self.store.location

    # -- packages ------------------------------------------------------------------------
    @_writes
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
        ahead.warm(self.store, 8)  # handshakes while the folders are listed
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
        ahead.warm(self.store, 4)  # tycho.json, and the two listings and the catalog at once
        doc, scanned = ahead.both(lambda: refs.read(self.store, package)[0], lambda: catalog.scan(self.store, package))
        return catalog.versions(self.store, package, doc, scanned)

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
        described = catalog.describe(doc, exact, head.size, record)
        if self.trust is None:
            return described
        from . import signatures  # noqa: PLC0415 - signatures, sshsig: only where trust is configured

        sha = described.sha256
        try:
            signed = signatures.check(self.store, package, exact, head.size, sha, self.trust)
        except IntegrityError as exc:
            return replace(described, signers=(), problem=described.problem or str(exc))
        return replace(described, signers=signed.signers)

    # -- pushing and changing references --------------------------------------------------
    @_writes
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
        sign: str | os.PathLike[str] | None = None,
        format: str | None = None,
    ) -> PushResult:
        """Upload ``file`` as ``version`` of ``package``; versions are immutable. A folder is
        packed into an archive first (reproducibly: see :mod:`tychoreg.pack`; ``format`` is for
        folders only).

        With ``skip_existing``, a version that already holds exactly these bytes is success
        (idempotent CI pushes); one that holds other bytes is still an error.

        With ``sign`` (an SSH key; default ``tycho.signing_key``), the version is signed once
        pushed (see :meth:`sign`).

        Raises :class:`UsageError` (a name, a file that cannot be read), :class:`PackageNotFound`,
        :class:`VersionExists`, :class:`BeingPushed`, :class:`StorageError`."""
        check_package(package)
        check_version(version, for_push=True)
        key = None
        chosen = sign if sign is not None else self.signing_key
        if chosen is not None:
            from .signatures import key_path  # noqa: PLC0415 - signatures, sshsig: only when signing

            key = key_path(chosen)
        if _is_folder(file):
            result = self._pack_and_push(
                package,
                version,
                file,
                format=format,
                promote_latest=promote_latest,
                note=note,
                skip_existing=skip_existing,
                progress=progress,
            )
        elif format is not None:
            raise UsageError(
                f"{file} is a file, pushed as it is: an archive format applies only to a folder",
                reason="format-needs-folder",
            )
        else:
            result = self._publish(package, version, Path(file), note, promote_latest, skip_existing, progress)
        if key is None:
            return result
        try:
            signed = self._sign_exact(package, version, key)
        except TychoError as exc:
            raise OperationError(
                f"pushed {package} {version}, but could not sign it: {exc}",
                reason="not-signed",
                package=package,
                version=version,
                key=key,
            ) from None
        return replace(result, signed_by=signed.fingerprint)

    @_writes
    def promote(self, package: str, version: str) -> None:
        """Make ``version`` the one that ``latest`` means.

        Raises :class:`VersionNotFound`, :class:`OperationError` (``reason="yanked-latest"``)."""
        check_package(package)
        check_version(version, for_push=True)
        refs.point(self.store, package, "latest", version)

    @_writes
    def tag(self, package: str, selector: str | Selector, tag: str, *, pre: bool = False) -> str:
        """Point ``tag`` at a version (any selector); returns the exact version tagged."""
        check_package(package)
        selector = Selector.parse(selector)
        check_tag(tag)
        return refs.tag(self.store, package, selector, tag, pre=pre)

    @_writes
    def untag(self, package: str, tag: str) -> str:
        """Remove ``tag``; returns the version it pointed to. Raises :class:`TagNotFound`."""
        check_package(package)
        check_tag(tag)
        return refs.untag(self.store, package, tag)

    @_writes
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

    @_writes
    def unyank(self, package: str, version: str | Selector) -> None:
        """Make a yanked version resolvable again (``latest`` is left as it is)."""
        check_package(package)
        refs.unyank(self.store, package, Selector.exact(version))

    @_writes
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
        results = parallel_map(lambda t: upkeep.verify_one(self.store, *t, trust=self.trust), targets, workers=4)
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
        expected = fetch.expected_for(self.store, package, exact, known=self.known, trust=self.trust)
        signed = expected.signed
        return Resolved(
            package,
            exact,
            expected.sha256,
            expected.size,
            doc.checked_localname(),
            signed.signer if signed else None,
            signed.armored if signed else None,
        )

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
        ahead.warm(self.store, 3)  # tycho.json, then (or at once) the record and the data's HEAD
        read_doc: list[PackageDoc] = []

        def name() -> str:
            doc, _ = refs.read(self.store, package)
            read_doc.append(doc)
            return refs.select(self.store, package, doc, selector, pre=pre)

        exact, expected = ahead.resolve(
            ahead.guess(self.known, package, selector),
            name,
            lambda v: fetch.expected_for(
                self.store, package, v, allow_unverified=allow_unverified, known=self.known, trust=self.trust
            ),
        )
        doc = read_doc[0]
        if extract is None:
            dest = Path(outfile) if outfile is not None else self.outdir / doc.checked_localname()
        else:
            dest = Path(extract)
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
            reused=done.reused,
            fetched=done.fetched,
            yanked=yank is not None,
            yank_reason=yank.get("reason") if yank else None,
            signers=expected.signed.signers if expected.signed else None,
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
        signers = self._pinned_signers(pin)
        if pin.sha256 and not force and (self.trust is None or signers or (offline and not self.trust.required)):
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
                    signers=signers,
                    size=pin.size,
                    sha256=pin.sha256,
                )
            except deliver.NotCached:
                if offline:
                    raise
        elif offline and pin.sha256 and self.trust is not None:
            raise deliver.NotCached(
                f"{pin.package} {pin.version}: the lock file holds no signature that the trusted signers "
                "accept, so it cannot be installed without the registry",
                reason="offline-miss",
                package=pin.package,
                version=pin.version,
            )
        elif offline:
            raise deliver.NotCached(
                f"{pin.package} {pin.version} has no recorded SHA-256, so it cannot be installed without the registry",
                reason="offline-no-digest",
                package=pin.package,
                version=pin.version,
            )
        expected = fetch.expected_for(self.store, pin.package, pin.version, known=self.known, trust=self.trust)
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
            reused=done.reused,
            fetched=done.fetched,
            signers=expected.signed.signers if expected.signed else None,
            size=expected.size,
            sha256=expected.sha256,
        )

    def _pinned_signers(self, pin: Pin) -> tuple[str, ...] | None:
        """Who signed a pinned version, by the signature its lock entry recorded, checked against
        the trusted signers without asking the registry: None with no trust configured, empty when
        the lock holds no signature they accept (then the registry is asked, or offline, the
        version is installed as unsigned where signatures are not required)."""
        if self.trust is None:
            return None
        armored = getattr(pin, "signature", None)
        if not (pin.sha256 and isinstance(armored, str)):
            return ()
        from . import signatures  # noqa: PLC0415 - signatures, sshsig: only where trust is configured

        signed = signatures.check_pinned(pin.package, pin.version, pin.size, pin.sha256, armored, self.trust)
        return signed.signers if signed else ()

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
        source = deliver.Source(
            self.store,
            package,
            version,
            expected,
            self.cache,
            offline,
            self.delta,
            self._delta_siblings(package, version),
        )
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

    # -- signatures and mirroring (the supply-chain feature) -----------------------------------
    @_writes
    def sign(self, package: str, version: str | Selector, *, key: str | os.PathLike[str] | None = None) -> SignResult:
        """Sign an existing version (``latest``, a tag or a version) with ``key`` (default
        ``tycho.signing_key``): an SSH signature of its statement (package, version, size,
        SHA-256), stored beside its record. A version pushed without a record (0.4.0) is read and
        checked by size and ETag first, and its SHA-256 signed.

        Raises :class:`UsageError` (no key, or an unreadable one), :class:`OperationError`
        (``reason="signing-failed"``)."""
        check_package(package)
        selector = Selector.exact(version)
        chosen = key if key is not None else self.signing_key
        if chosen is None:
            raise UsageError(
                "no key to sign with", "name an SSH private key (or tycho.signing_key)", reason="no-signing-key"
            )
        from .signatures import key_path  # noqa: PLC0415 - signatures, sshsig: only when signing

        path = key_path(chosen)
        doc, _ = refs.read(self.store, package)
        return self._sign_exact(package, refs.exact(self.store, package, doc, selector), path)

    def _sign_exact(self, package: str, version: str, key: Path) -> SignResult:
        from . import signatures  # noqa: PLC0415 - signatures, sshsig: only when signing

        expected = fetch.expected_for(self.store, package, version, known=self.known)
        sha256 = expected.sha256
        if sha256 is None:
            from .integrity import Digests, Discard, HashingWriter  # noqa: PLC0415 - only for 0.4.0 versions

            digests = Digests(expected.etag)
            self.store.read(expected.key, HashingWriter(Discard(), digests), size=expected.size, if_match=expected.pin)
            if not expected.matches(digests):
                raise IntegrityError(
                    f"{package} {version} does not match its {expected.checked_by}: not signed",
                    reason="failed-verification",
                    package=package,
                    version=version,
                )
            sha256 = digests.sha256
        return signatures.sign(self.store, package, version, expected.size, sha256, key)

    def mirror(
        self,
        to: Registry,
        packages: Sequence[str] = (),
        *,
        dry_run: bool = False,
        progress: ProgressFactory | None = None,
    ) -> Mirrored:
        """Copy ``packages`` (all when none are named) with their versions, records, signatures,
        notes, tags, yanks and ``latest`` to the registry ``to``: verified, incremental (a
        version there with the same SHA-256 is skipped), never overwriting (other bytes there are
        a conflict). Signatures are checked on the way where this registry has trusted signers.
        Failures and conflicts are returned, not raised."""
        for name in packages:
            check_package(name)
        from . import mirror  # noqa: PLC0415 - mirror: only this command
        from .publish import default_identity  # noqa: PLC0415 - socket, getpass: ~4 ms; push and yank

        if not dry_run:
            to.ensure_writable()
        root = default_known_root().parent / "mirror"
        done = mirror.mirror(
            self.store,
            to.store,
            packages,
            trust=self.trust,
            identity=to.identity or default_identity(),
            workdir=mirror.workdir(root, self.store, to.store) if not dry_run else root,
            dry_run=dry_run,
            progress=progress,
            cached=self._sibling_copies if self.delta else None,
        )
        if not dry_run:  # the destination's static catalog, as after any write there
            changed = {package for package, _ in done.copied} | {line.split(" ", 1)[0] for line in done.refs}
            for package in sorted(changed):
                to._after_write(package)
        return done

    # -- reading over HTTP: the static catalog, serve ---------------------------------------------
    #: Hears when the static catalog could not be brought up to date after a write (which itself
    #: succeeded); None: the ``warn`` callback gets the message.
    catalog_problem: Callable[[TychoError], None] | None = None

    def ensure_writable(self) -> None:
        """Raise :class:`ReadOnly` when the registry can only be read (reached over HTTP)."""
        if isinstance(self.store, SnapshotStore):
            raise ReadOnly(
                f"this registry is read-only over HTTP ({self.location})",
                "write to it through a config that names its bucket or folder",
            )

    def index(self, *, check: bool = False) -> IndexReport:
        """Write the static catalog (every package's machine index and page, and the registry's);
        with ``check``, only say what of it is stale. Writes keep it current by themselves; this is
        for registries written by tycho-station 0.4.0 or older versions, or after a warning."""
        from . import webindex  # noqa: PLC0415 - webindex, pages: ~2 ms, only writes, index and serve

        if isinstance(self.store, SnapshotStore):
            if check:
                raise StorageError(
                    f"the catalog of {self.location} can only be checked against the registry's bucket or "
                    "folder: over HTTP it is all there is to see",
                    reason="index-over-http",
                )
            self.ensure_writable()
        if check:
            return webindex.check(self.store)
        report = webindex.rebuild(self.store)
        self._index_chunks(report)
        return report

    def serve(
        self,
        host: str = "127.0.0.1",
        port: int = 8080,
        *,
        ready: Callable[[str], None],
        log: Callable[[str], None],
        stop: threading.Event | None = None,
    ) -> None:
        """Serve the registry read-only over HTTP (its pages, machine indexes and data) until
        interrupted or ``stop`` is set; ``ready`` hears the URL, ``log`` one line per request."""
        from . import serve as serving  # noqa: PLC0415 - http.server: ~10 ms, only serve

        if isinstance(self.store, SnapshotStore):
            raise UsageError(
                f"{self.location} is reached over HTTP already; serving needs its bucket or folder", reason="serve-http"
            )
        if self.store.head(layout.ROOT_INDEX) is None:
            self._report_catalog(
                StorageError(
                    f"{self.location} has no catalog yet: its pages and the http backend need one", reason="no-catalog"
                )
            )
        serving.serve(self.store, host, port, ready=ready, log=log, stop=stop)

    def _make_room(self, package: str) -> None:
        from . import webindex  # noqa: PLC0415 - webindex, pages: ~2 ms, only writes, index and serve

        try:
            webindex.make_room(self.store, package)
        except TychoError:
            pass  # the write says what is wrong, if anything

    def _after_write(self, package: str, *, quiet: bool = False, fresh: Sequence[str] = ()) -> None:
        """Bring the static catalog up to date after a write to ``package``: never fails the
        write; a failure is reported (``index`` repairs it), except with ``quiet``: after a write
        that failed, whose own error says what is wrong (a catalog warning for the same lost
        connection or refused credentials would only repeat it)."""
        from . import webindex  # noqa: PLC0415 - webindex, pages: ~2 ms, only writes, index and serve

        try:
            webindex.keep_current(self.store, package, fresh)
        except Exception as exc:  # noqa: BLE001 - best effort by design: the write itself is done
            if quiet:
                return
            self._report_catalog(
                exc
                if isinstance(exc, TychoError)
                else webindex.CatalogNotUpdated(
                    f"the web catalog was not brought up to date after the change to {package} "
                    f"(the change itself is done): {type(exc).__name__}: {exc}",
                    package=package,
                )
            )

    def _report_catalog(self, exc: TychoError) -> None:
        if self.catalog_problem is not None:
            self.catalog_problem(exc)
        elif self._warn is not None:
            self._warn(str(exc))

    # -- folders as packages, retention (issue 15: everyday use) -----------------------------
    def _pack_and_push(
        self,
        package: str,
        version: str,
        folder: str | os.PathLike[str],
        *,
        format: str | None = None,
        promote_latest: bool = False,
        note: str | None = None,
        skip_existing: bool = False,
        progress: ProgressFactory | None = None,
    ) -> PushResult:
        """Pack ``folder`` reproducibly (the same tree gives the same bytes, see
        :mod:`tychoreg.pack`) and push the archive as ``version``. ``format`` is ``tar.gz``,
        ``tar.zst`` or ``zip``; by default the one the package's file name ends in, else
        ``tar.gz``. The package's file name must end in the format's suffix.

        Raises :class:`UsageError` (``reason="folder-format"``: the file name says another
        format; ``"cannot-pack"``: a special file, a link leaving the folder, an unreadable file,
        the registry inside), :class:`OperationError` (``"changed-while-packing"``), and what
        :meth:`push` raises (it is what :meth:`push` does with a folder)."""
        check_package(package)
        check_version(version, for_push=True)
        from . import pack  # noqa: PLC0415 - tarfile, zipfile: ~4 ms, only for folders

        doc, _ = refs.read(self.store, package)
        fmt = pack.format_for(doc.checked_localname(), format, package)
        root = self.store.root if isinstance(self.store, LocalStore) else None
        with pack.packed(Path(folder), fmt, root) as (archive, packed):
            if self._warn and packed.content_bytes > self.extract_limit:
                self._warn(
                    f"{folder} holds {packed.content_bytes} bytes, more than this configuration lets "
                    f"an archive expand to ({self.extract_limit}): pulls with that limit refuse to extract it"
                )
            result = self._publish(package, version, archive, note, promote_latest, skip_existing, progress)
        return replace(result, packed=packed)

    def _publish(
        self,
        package: str,
        version: str,
        file: Path,
        note: str | None,
        promote_latest: bool,
        skip_existing: bool,
        progress: ProgressFactory | None,
    ) -> PushResult:
        """The push protocol (:func:`tychoreg.publish.push`) with this registry's identity."""
        from .publish import push  # noqa: PLC0415 - socket, getpass: ~4 ms; push and yank

        return push(
            self.store,
            package,
            version,
            file,
            identity=self.identity,
            note=note,
            promote_latest=promote_latest,
            skip_existing=skip_existing,
            progress=progress,
            known=self.known,
            warn=self._warn,
        )

    def prune(
        self,
        packages: Sequence[str] = (),
        *,
        keep: int | None = None,
        older_than: timedelta | None = None,
        dry_run: bool = False,
        confirm: Callable[[list[Plan]], bool] | None = None,
    ) -> list[tuple[str, Pruned | TychoError]]:
        """Delete old versions by policy: of each package (every package if none is named),
        the ``keep`` highest versions that are not yanked stay, and of the others those older
        than ``older_than`` go; never the version ``latest`` names or a tagged one. With
        neither option, each package's policy from the configuration's ``retention`` section
        applies (its own entry, else ``*``). Each version goes by the delete protocol, so a
        prune is safe beside concurrent pushes and promotes (see :mod:`tychoreg.retention`).

        ``dry_run`` deletes nothing and says what would go. ``confirm`` is asked once, with
        every package's plan, before anything is deleted; if it says no,
        :class:`ConfirmationNeeded` is raised. Failures are returned per package, not raised.

        Raises :class:`UsageError` (``reason="no-retention"``) when nothing says what may go."""
        from . import retention  # noqa: PLC0415 - retention, versions: ~6 ms, only prune

        if keep is not None and keep < 0:
            raise UsageError(f"cannot keep {keep} versions", "keep 0 or more versions")
        for name in packages:
            check_package(name)
        names = list(dict.fromkeys(packages)) or [p.name for p in self.packages()]
        chosen = retention.policies(names, self.retention, Retention(keep, older_than), named=bool(packages))
        if not dry_run:
            self.ensure_writable()
        done = retention.prune(self.store, names, chosen, dry_run=dry_run, confirm=confirm)
        if not dry_run:  # the static catalog, as after any delete
            for package, outcome in done:
                if not isinstance(outcome, TychoError) and outcome.deleted:
                    self._after_write(package)
        return done

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

    # -- delta pulls (docs/FORMAT.md, "Chunk indexes") ---------------------------------------
    #: Pulls reuse the pieces of a version that local files already hold (:mod:`tychoreg.delta`);
    #: False downloads every version whole.
    delta: bool = True

    def _delta_siblings(self, package: str, version: str) -> tuple[str, ...]:
        """The SHA-256s of the package's other versions this machine verified (their cache
        entries may hold pieces of ``version``), the most recently remembered first."""
        if not (self.delta and self.cache and self.known):
            return ()
        seen = self.known.versions(package)
        return tuple(dict.fromkeys(sha for v, sha in reversed(seen.items()) if v != version))

    def _sibling_copies(self, package: str, version: str) -> list[Path]:
        """The cache's copies of the package's other versions (where a mirror finds pieces)."""
        if self.cache is None:
            return []
        return [self.cache.path(sha) for sha in self._delta_siblings(package, version)]

    def _index_chunks(self, report: IndexReport) -> None:
        """Write the chunk indexes that versions lack (pushed by tycho-station 0.4.0 or before
        indexes were written), adding what was written and what failed to ``report``."""
        from . import chunks  # noqa: PLC0415 - only the index command

        for name in sorted(n for n in self.store.list_folders("") if is_valid_segment(n)):
            written, problems = chunks.backfill(self.store, name)
            report.written += written
            report.problems += problems
