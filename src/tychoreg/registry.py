"""The registry: packages, versions, ``latest``. The public Python API.

``Registry`` knows the rules of the game (versions are immutable, a version is visible only once
its data is complete, ``tycho.json`` changes by compare-and-swap) and nothing of boto3 or of
files: it talks to a :class:`~tychoreg.store.Store`. The two long procedures live beside it:
:mod:`tychoreg.publish` (push) and :mod:`tychoreg.fetch` (pull).
"""

from __future__ import annotations

import getpass
import os
import random
import socket
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from . import fetch, layout
from .config import Settings, load_settings
from .errors import AlreadyExists, IntegrityError, NotFound, OperationError, StorageError, TychoError, UsageError
from .localfs import check_destination
from .models import PackageDoc, PackageInfo, PullResult, VersionInfo
from .names import check_filename, check_package, check_version, is_valid_segment
from .publish import open_source, publish
from .store import ObjectNotFound, PreconditionFailed, Store, open_store
from .store.base import Progress
from .versions import version_sort_key

CAS_ATTEMPTS = 12
PARALLEL_REQUESTS = 16
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
            self.store.put_if_absent(layout.package_doc(package), PackageDoc(package, filename).to_bytes())
        except PreconditionFailed:
            raise AlreadyExists(f"package {package} already exists",
                                f"see it with: tychoreg list-versions {package}") from None

    def packages(self) -> list[PackageInfo]:
        """Every package (a folder with a ``tycho.json``), sorted by name."""
        names = sorted(n for n in self.store.list_folders("") if is_valid_segment(n))

        def load(name: str) -> PackageInfo | None:
            try:
                doc, _ = self._doc(name)
                return PackageInfo(name, doc.checked_latest(), doc.localname)
            except NotFound:
                return None
            except IntegrityError as exc:
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
    def versions(self, package: str) -> list[VersionInfo]:
        """Every visible version of ``package``, ascending by version precedence."""
        check_package(package)
        self._doc(package)
        sizes: dict[str, int] = {}
        for info in self.store.list(layout.data_prefix(package)):
            version = layout.version_of_data(package, info.key)
            if version and is_valid_segment(version):
                sizes[version] = info.size
        recorded = {layout.version_of_record(package, info.key)
                    for info in self.store.list(layout.records_prefix(package))}

        def describe(version: str) -> VersionInfo:
            if version not in recorded:
                return VersionInfo(version, sizes[version])
            try:
                rec = fetch.read_record(self.store, package, version)
            except IntegrityError as exc:
                return VersionInfo(version, sizes[version], problem=str(exc))
            if rec is None:
                return VersionInfo(version, sizes[version])
            if rec.size != sizes[version]:
                return VersionInfo(version, sizes[version], problem=f"{package} {version} is damaged: stored "
                                   f"size {sizes[version]} bytes, recorded {rec.size}")
            return VersionInfo(version, rec.size, rec.sha256, rec.pushed_at or None, rec.pushed_by, rec.note)

        key = version_sort_key(sizes)
        return sorted(_parallel(describe, list(sizes)), key=lambda v: key(v.version))

    def push(self, package: str, version: str, file: str | os.PathLike[str], *,
             promote_latest: bool = False, note: str | None = None,
             progress: Progress | None = None) -> VersionInfo:
        """Upload ``file`` as ``version`` of ``package``; versions are immutable."""
        check_package(package)
        check_version(version, for_push=True)
        with open_source(Path(file)) as source:
            self._doc(package)
            rec = publish(self.store, package, version, source, identity=self.identity or default_identity(),
                          note=note, progress=progress)
        if promote_latest:
            try:
                self._set_latest(package, version)
            except TychoError as exc:
                raise OperationError(f"pushed {package} {version}, but could not make it latest: {exc}",
                                     f"run: tychoreg promote {package} {version}") from None
        return VersionInfo(version, rec.size, rec.sha256, rec.pushed_at, rec.pushed_by, rec.note)

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
        if version == "latest":
            version = doc.checked_latest() or ""
            if not version:
                raise NotFound(f"package {package} has no latest version yet",
                               f"pull one with --version, or set it: tychoreg promote {package} VERSION")
        dest = Path(outfile) if outfile is not None else self.outdir / doc.checked_localname()
        expected = fetch.expected_for(self.store, package, version)
        check_destination(dest)
        if not force and fetch.holds(self.store, dest, expected):
            return PullResult(package, version, dest, downloaded=False, checked_by=expected.checked_by)
        fetch.download(self.store, package, version, expected, dest, progress)
        return PullResult(package, version, dest, downloaded=True, checked_by=expected.checked_by)

    def pull_many(self, packages: Sequence[str], *, force: bool = False,
                  ) -> list[tuple[str, PullResult | TychoError]]:
        """Pull the latest of each package, in parallel; failures are returned, not raised."""
        for name in packages:
            check_package(name)

        def one(name: str) -> tuple[str, PullResult | TychoError]:
            try:
                return name, self.pull(name, force=force)
            except TychoError as exc:
                return name, exc

        return _parallel(one, dict.fromkeys(packages), workers=8)
