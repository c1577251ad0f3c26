"""The registry: packages, versions, ``latest``, integrity. The public Python API.

``Registry`` knows the layout of keys and the rules of the game (versions are immutable, a
version is visible only once its data is complete, ``tycho.json`` changes by compare-and-swap)
and nothing of boto3 or of files: it talks to a :class:`~tychoreg.store.Store`.

Publishing a version, in order: stage the data (hashing it in the same pass), claim the version
by creating its record with create-if-absent, then commit the data with create-if-absent. The
record is the claim, so of two concurrent pushes exactly one wins; the data key is what makes a
version visible (to us and to tycho-station 0.4.0), and it appears complete or not at all.
"""

from __future__ import annotations

import getpass
import os
import random
import socket
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from . import layout
from .config import Settings, load_settings
from .errors import AlreadyExists, IntegrityError, NotFound, StorageError, TychoError, UsageError
from .integrity import Digests, EtagPlan, HashingReader, HashingWriter, digest_file, etag_plan
from .localfs import atomic_write, check_destination
from .models import PackageDoc, PackageInfo, PullResult, VersionInfo, VersionRecord
from .names import check_filename, check_package, check_version, is_valid_segment
from .store import ObjectNotFound, PreconditionFailed, Store, open_store
from .store.base import ObjectInfo, Progress
from .versions import version_sort_key

CAS_ATTEMPTS = 12
PARALLEL_REQUESTS = 16
#: A claim (record without data) older than this belongs to a push that died; it may be taken over.
STALE_CLAIM = timedelta(hours=1)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def default_identity() -> str:
    """``user@host``, the default for who pushed a version."""
    try:
        user = getpass.getuser()
    except Exception:  # noqa: BLE001 - no login name in some containers
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


@dataclass(frozen=True)
class _Expected:
    """What a version's bytes must be, and how we know."""

    size: int
    sha256: str | None
    etag: EtagPlan | None

    @property
    def checked_by(self) -> str:
        return "sha256" if self.sha256 else "etag" if self.etag else "size"

    def matches(self, digests: Digests) -> bool:
        if digests.size != self.size:
            return False
        if self.sha256:
            return digests.sha256 == self.sha256
        if self.etag:
            return digests.etag == self.etag.etag
        return True


class Registry:
    """A registry of versioned files in a :class:`~tychoreg.store.Store`."""

    def __init__(self, store: Store, *, outdir: str | os.PathLike[str] = "tycho_packages",
                 identity: str | None = None) -> None:
        self.store = store
        self.outdir = Path(outdir)
        self.identity = identity

    @classmethod
    def from_config(cls, config: str | os.PathLike[str] | None = None, *,
                    cwd: Path | None = None) -> Registry:
        """Open the registry the CLI would use (``--config``, ``$TYCHOREG_CONFIG``, ...)."""
        return cls.from_settings(load_settings(config, cwd=cwd))

    @classmethod
    def from_settings(cls, settings: Settings) -> Registry:
        return cls(open_store(settings.backend, settings.options), outdir=settings.outdir,
                   identity=settings.identity)

    @property
    def location(self) -> str:
        return self.store.location

    # -- packages ------------------------------------------------------------------------
    def init(self, package: str, filename: str) -> None:
        """Create ``package``, whose pulls are saved as ``filename``."""
        check_package(package)
        check_filename(filename)
        try:
            self.store.put_if_absent(layout.package_doc(package), PackageDoc(filename).to_bytes())
        except PreconditionFailed:
            raise AlreadyExists(f"package {package} already exists",
                                f"see it with: tychoreg list-versions {package}") from None

    def packages(self) -> list[PackageInfo]:
        """Every package (a folder with a ``tycho.json``), sorted by name."""
        names = sorted(n for n in self.store.list_folders("") if is_valid_segment(n))

        def load(name: str) -> PackageInfo | None:
            try:
                doc, _ = self._doc(name)
            except NotFound:
                return None
            except IntegrityError as exc:
                return PackageInfo(name, None, None, problem=str(exc))
            return PackageInfo(name, doc.latest, doc.localname)

        return [info for info in self._parallel(load, names) if info is not None]

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
    def versions(self, package: str) -> list[VersionInfo]:
        """Every visible version of ``package``, ascending by version precedence."""
        check_package(package)
        self._doc(package)
        data: dict[str, ObjectInfo] = {}
        for info in self.store.list(layout.data_prefix(package)):
            version = layout.version_of_data(package, info.key)
            if version and is_valid_segment(version):
                data[version] = info
        recorded = {layout.version_of_record(package, info.key)
                    for info in self.store.list(layout.records_prefix(package))}

        def describe(version: str) -> VersionInfo:
            size = data[version].size
            if version not in recorded:
                return VersionInfo(version, size)
            try:
                rec = self._record(package, version)
            except (NotFound, IntegrityError):
                return VersionInfo(version, size)
            return VersionInfo(version, size, rec.sha256, rec.pushed_at or None, rec.pushed_by, rec.note)

        key = version_sort_key(data)
        return sorted(self._parallel(describe, list(data)), key=lambda v: key(v.version))

    def _record(self, package: str, version: str) -> VersionRecord:
        try:
            raw, _ = self.store.get(layout.record(package, version))
        except ObjectNotFound:
            raise NotFound(f"no record of {package} {version}") from None
        return VersionRecord.parse(package, version, raw)

    def _resolve(self, package: str, doc: PackageDoc, version: str) -> str:
        if version == "latest":
            if not doc.latest:
                raise NotFound(f"package {package} has no latest version yet",
                               f"pull one with --version, or set it: tychoreg promote {package} VERSION")
            return doc.latest
        return version

    def _expected(self, package: str, version: str) -> tuple[_Expected, ObjectInfo]:
        """What ``version``'s bytes must be; NotFound unless the version is visible."""
        def record() -> VersionRecord | None:
            try:
                return self._record(package, version)
            except NotFound:
                return None

        with ThreadPoolExecutor(2) as pool:
            rec_future = pool.submit(record)
            info = self.store.head(layout.data(package, version))
            rec = rec_future.result()
        if info is None:
            raise NotFound(f"no version {version} of package {package}",
                           f"see the versions with: tychoreg list-versions {package}")
        if rec is not None:
            if rec.size != info.size:
                raise IntegrityError(f"{package} {version} is damaged: stored size {info.size} bytes, "
                                     f"recorded {rec.size}", "re-push it as a new version")
            return _Expected(rec.size, rec.sha256, None), info
        plan = etag_plan(info.etag, info.size)
        if plan is None and info.etag and "-" in info.etag:
            plan = etag_plan(info.etag, info.size, self.store.first_part_size(info.key))
        return _Expected(info.size, None, plan), info

    def push(self, package: str, version: str, file: str | os.PathLike[str], *,
             promote_latest: bool = False, note: str | None = None,
             progress: Progress | None = None) -> VersionInfo:
        """Upload ``file`` as ``version`` of ``package``; versions are immutable."""
        check_package(package)
        check_version(version, for_push=True)
        path = Path(file)
        try:
            source = open(path, "rb")  # noqa: SIM115 - closed below, opened first to fail before any request
        except OSError as exc:
            raise UsageError(f"cannot read {path}: {exc.strerror or exc}",
                             "name an existing, readable file to push") from None
        with source:
            if not path.is_file():
                raise UsageError(f"cannot push {path}: not a regular file", "name a file to push")
            self._doc(package)
            if self.store.head(layout.data(package, version)) is not None:
                raise self._exists(package, version)
            digests = Digests()
            staged = self.store.stage(layout.data(package, version), HashingReader(source, digests), progress)
        try:
            rec = VersionRecord(version, digests.size, digests.sha256, _now(),
                                self.identity or default_identity(), note)
            if staged.size != digests.size:
                raise StorageError(f"upload of {path} was incomplete ({staged.size} of {digests.size} bytes)")
            self._claim(package, rec)
        except BaseException:
            staged.abort()
            raise
        try:
            staged.commit()
        except PreconditionFailed:
            # Someone without claims (tycho-station 0.4.0) created the data meanwhile: theirs stands.
            self.store.delete(layout.record(package, version))
            raise self._exists(package, version) from None
        if promote_latest:
            self._set_latest(package, version)
        return VersionInfo(version, rec.size, rec.sha256, rec.pushed_at, rec.pushed_by, rec.note)

    def _exists(self, package: str, version: str) -> AlreadyExists:
        return AlreadyExists(f"version {version} of package {package} already exists; versions are immutable",
                             "push a new version number")

    def _claim(self, package: str, rec: VersionRecord) -> None:
        """Create the version's record: the step that decides which of concurrent pushes wins."""
        key = layout.record(package, rec.version)
        try:
            self.store.put_if_absent(key, rec.to_bytes())
            return
        except PreconditionFailed:
            pass
        # A record exists. Without data it is the claim of a push that is running or died.
        if self.store.head(layout.data(package, rec.version)) is None:
            try:
                raw, etag = self.store.get(key)
                old = VersionRecord.parse(package, rec.version, raw)
                started = datetime.fromisoformat(old.pushed_at)
            except (ObjectNotFound, IntegrityError, ValueError):
                started = None
            if started is not None and datetime.now(timezone.utc) - started > STALE_CLAIM:
                try:
                    self.store.put_if_match(key, rec.to_bytes(), etag)
                    return
                except PreconditionFailed:
                    pass
            raise AlreadyExists(f"version {rec.version} of package {package} is being pushed by someone else",
                                "wait and check with: tychoreg list-versions " + package)
        raise self._exists(package, rec.version)

    def promote(self, package: str, version: str) -> None:
        """Make ``version`` the one that ``latest`` means."""
        check_package(package)
        check_version(version, for_push=True)
        self._doc(package)
        if self.store.head(layout.data(package, version)) is None:
            raise NotFound(f"no version {version} of package {package}",
                           f"see the versions with: tychoreg list-versions {package}")
        self._set_latest(package, version)

    def _set_latest(self, package: str, version: str) -> None:
        def change(doc: PackageDoc) -> None:
            doc.latest = version

        self._update_doc(package, change)

    # -- pulling -------------------------------------------------------------------------
    def pull(self, package: str, version: str = "latest", *, outfile: str | os.PathLike[str] | None = None,
             force: bool = False, progress: Progress | None = None) -> PullResult:
        """Download a version to ``outfile`` or ``OUTDIR/localname``, verified, atomically."""
        check_package(package)
        check_version(version)
        if outfile is not None and Path(outfile).is_dir():
            raise UsageError(f"--outfile {outfile} is a folder", "name a file path, e.g. DIR/FILENAME")
        doc, _ = self._doc(package)
        version = self._resolve(package, doc, version)
        dest = Path(outfile) if outfile is not None else self.outdir / doc.localname
        expected, info = self._expected(package, version)
        check_destination(dest)
        if not force and self._holds(dest, expected):
            return PullResult(package, version, dest, downloaded=False, checked_by=expected.checked_by)
        digests = Digests(expected.etag)
        with atomic_write(dest) as out:
            self.store.read(info.key, HashingWriter(out, digests), progress=progress)
            if not expected.matches(digests):
                raise IntegrityError(
                    f"{package} {version} failed verification: got {digests.size} bytes with "
                    f"{expected.checked_by} {digests.sha256 if expected.sha256 else digests.etag}, "
                    f"expected {expected.size} bytes"
                    + (f" with sha256 {expected.sha256}" if expected.sha256 else ""),
                    f"{dest} was left untouched; the stored copy is damaged: re-push it as a new version")
        return PullResult(package, version, dest, downloaded=True, checked_by=expected.checked_by)

    def _holds(self, dest: Path, expected: _Expected) -> bool:
        """True when ``dest`` already has exactly the version's bytes (content decides)."""
        if expected.checked_by == "size":
            return False  # nothing to compare the content with
        try:
            if not dest.is_file() or dest.stat().st_size != expected.size:
                return False
            return expected.matches(digest_file(dest, expected.etag))
        except OSError:
            return False

    def pull_many(self, packages: Sequence[str], *, force: bool = False,
                  on_done: Callable[[str, PullResult | TychoError], None] | None = None,
                  ) -> list[tuple[str, PullResult | TychoError]]:
        """Pull the latest of each package, in parallel; failures are returned, not raised."""
        for name in packages:
            check_package(name)
        unique = list(dict.fromkeys(packages))

        def one(name: str) -> tuple[str, PullResult | TychoError]:
            try:
                outcome: PullResult | TychoError = self.pull(name, force=force)
            except TychoError as exc:
                outcome = exc
            if on_done:
                on_done(name, outcome)
            return name, outcome

        return self._parallel(one, unique, workers=8)

    @staticmethod
    def _parallel(func: Callable[[str], object], items: Iterable[str], workers: int = PARALLEL_REQUESTS) -> list:
        items = list(items)
        if len(items) <= 1:
            return [func(i) for i in items]
        with ThreadPoolExecutor(min(workers, len(items))) as pool:
            return list(pool.map(func, items))
