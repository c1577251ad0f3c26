"""Copying packages from one registry to another, any backend to any backend (``mirror``).

Everything goes through the same protocols as any other client: versions are read as a pull
reads them (:func:`tychoreg.fetch.expected_for`, so signatures are checked where trust is
configured, and a version without a record is checked by size and ETag), downloaded into a
private folder of the user's cache, verified, and pushed to the destination with the publish
protocol (:func:`tychoreg.publish.publish`), so concurrent writers there stay safe. ``tycho.json``
changes on the destination only by compare-and-swap, after the versions it names are there.

Incremental: a version the destination already has with the same SHA-256 is skipped without a
byte of data read; with other bytes it is a conflict, reported and never overwritten. Resumable:
each copy pushes with a push id and record made from what it copies (not drawn at random), so a
copy killed after its claim writes the same record when it runs again and carries on where it
stopped; its partial download is resumed from the same private folder.

Delta copies (:mod:`tychoreg.delta`): a version is built from the pieces local files already
hold, the cache's copies of the package's other versions and, when the destination is a folder,
its copies of them, and only the rest is read from the source. Nothing local is trusted: a piece
is used only where its SHA-256 is the index's, and the whole file must hash to the version's
before it is pushed; on any doubt it is downloaded whole.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from threading import Lock

from . import catalog, delta, fetch, layout, refs, sshsig
from .concurrency import parallel_map
from .errors import AlreadyExists, BeingPushed, IntegrityError, OperationError, PackageNotFound, TychoError
from .integrity import Digests, Discard, HashingWriter
from .localfs import open_private_dir, pinned
from .models import PackageDoc, VersionRecord
from .names import is_valid_segment
from .publish import publish
from .signatures import Trust, statement
from .store import PreconditionFailed, Store
from .store.base import ProgressFactory
from .store.file import FileStore

#: Versions copied at once.
COPIES_AT_ONCE = 4


@dataclass(frozen=True)
class Failure:
    package: str
    version: str | None
    error: str


@dataclass
class Mirrored:
    """What a mirror did (or, ``dry_run``, would do)."""

    copied: list[tuple[str, str]] = field(default_factory=list)
    skipped: int = 0
    conflicts: list[tuple[str, str, str]] = field(default_factory=list)
    failed: list[Failure] = field(default_factory=list)
    #: Signature objects copied.
    signatures: int = 0
    #: References set on the destination (``narf latest -> 1.0``, ``narf yank 0.9``).
    refs: list[str] = field(default_factory=list)
    #: Data bytes read from the source (0 when everything was there already).
    bytes: int = 0
    dry_run: bool = False
    #: Delta copies: bytes of copied versions taken from local files, and read from the source
    #: (whole downloads and ranges) to copy versions.
    reused: int = 0
    fetched: int = 0

    def to_json(self) -> dict[str, object]:
        return {
            "copied": [{"package": p, "version": v} for p, v in self.copied],
            "skipped": self.skipped,
            "conflicts": [{"package": p, "version": v, "reason": why} for p, v, why in self.conflicts],
            "failed": [{"package": f.package, "version": f.version, "error": f.error} for f in self.failed],
            "signatures": self.signatures,
            "refs": self.refs,
            "bytes": self.bytes,
            "dry_run": self.dry_run,
            "reused_bytes": self.reused,
            "fetched_bytes": self.fetched,
        }


@dataclass
class _Package:
    name: str
    doc: PackageDoc
    dest_doc: PackageDoc | None
    sizes: dict[str, int]
    records: dict[str, catalog.Known]
    #: The destination's versions and their sizes (before copying).
    dest_sizes: dict[str, int]
    dest_records: dict[str, catalog.Known]
    signatures: set[str]
    dest_signatures: set[str]
    #: Versions on both sides with the same bytes (after copying): refs may point at them.
    same: dict[str, str | None] = field(default_factory=dict)
    copy: list[str] = field(default_factory=list)
    #: Versions on both sides whose bytes can only be compared by reading them.
    compare: list[str] = field(default_factory=list)


class _Run:
    def __init__(
        self,
        src: Store,
        dst: Store,
        *,
        trust: Trust | None,
        identity: str,
        workdir: Path,
        dry_run: bool,
        progress: ProgressFactory | None,
        cached: Callable[[str, str], list[Path]] | None,
    ) -> None:
        self.src, self.dst, self.trust, self.identity = src, dst, trust, identity
        self.workdir, self.dry_run, self.progress = workdir, dry_run, progress
        self.cached = cached
        self.out = Mirrored(dry_run=dry_run)
        self.lock = Lock()

    # -- planning ------------------------------------------------------------------------
    def plan(self, name: str) -> _Package | None:
        doc, _ = refs.read(self.src, name)
        try:
            dest_doc: PackageDoc | None = refs.read(self.dst, name)[0]
        except PackageNotFound:
            dest_doc = None
        sizes, records = catalog.scan(self.src, name)
        dest_sizes, dest_records = catalog.scan(self.dst, name) if dest_doc is not None else ({}, {})
        pkg = _Package(
            name,
            doc,
            dest_doc,
            sizes,
            records,
            dest_sizes,
            dest_records,
            {i.key for i in self.src.list(layout.signatures_prefix(name))},
            {i.key for i in self.dst.list(layout.signatures_prefix(name))} if dest_doc is not None else set(),
        )
        for version in sizes:
            record = records.get(version)
            if isinstance(record, str):
                self.fail(name, version, record)
            elif version not in dest_sizes:
                pkg.copy.append(version)
            elif dest_sizes[version] != sizes[version]:
                self.conflict(name, version, f"{dest_sizes[version]} bytes there, {sizes[version]} here")
            else:
                theirs = dest_records.get(version)
                if isinstance(record, VersionRecord) and isinstance(theirs, VersionRecord):
                    if record.sha256 == theirs.sha256:
                        pkg.same[version] = record.sha256
                        self.count_skip()
                    else:
                        self.conflict(name, version, f"sha256 {theirs.sha256} there, {record.sha256} here")
                else:
                    pkg.compare.append(version)  # one side has no record (0.4.0): compare the bytes
        return pkg

    def fail(self, package: str, version: str | None, error: str) -> None:
        with self.lock:
            self.out.failed.append(Failure(package, version, error))

    def conflict(self, package: str, version: str, why: str) -> None:
        with self.lock:
            self.out.conflicts.append((package, version, why))

    def count_skip(self) -> None:
        with self.lock:
            self.out.skipped += 1

    # -- copying -------------------------------------------------------------------------
    def ensure_package(self, pkg: _Package) -> None:
        if pkg.dest_doc is not None or self.dry_run:
            return
        try:
            self.dst.put_if_absent(layout.package_doc(pkg.name), PackageDoc(pkg.name, pkg.doc.localname).to_bytes())
        except PreconditionFailed:
            pass  # created meanwhile
        pkg.dest_doc = refs.read(self.dst, pkg.name)[0]

    def copy(self, pkg: _Package, version: str) -> None:
        try:
            expected = fetch.expected_for(self.src, pkg.name, version, trust=self.trust)
            if self.dry_run:
                with self.lock:
                    self.out.copied.append((pkg.name, version))
                    pkg.same[version] = expected.sha256
                return
            record = pkg.records.get(version)
            sha = self._push(pkg, version, expected, record if isinstance(record, VersionRecord) else None)
        except BeingPushed as exc:  # someone else's push of it is in progress there
            self.fail(pkg.name, version, str(exc))
            return
        except AlreadyExists:
            self._settle(pkg, version)  # pushed there meanwhile: the same bytes?
            return
        except TychoError as exc:
            self.fail(pkg.name, version, str(exc))
            return
        with self.lock:
            self.out.copied.append((pkg.name, version))
            pkg.same[version] = sha

    def _push(self, pkg: _Package, version: str, expected: fetch.Expected, record: VersionRecord | None) -> str:
        """Download the version (verified; a delta where local files hold pieces of it, unless
        an interrupted download is there to resume), push it to the destination; returns its
        SHA-256."""
        package = pkg.name
        local = self.workdir / f"{pkg.name}@{version}"
        if not fetch.holds(self.src, local, expected):
            watch = self.progress(f"{pkg.name} {version}", expected.size) if self.progress else None
            outcome = None
            if self.cached is not None:
                outcome = delta.assemble(
                    self.src, pkg.name, version, expected, local, lambda: self._local_copies(pkg, version), watch
                )
            fetched = (
                outcome.fetched if outcome else fetch.download(self.src, pkg.name, version, expected, local, watch)[1]
            )
            with self.lock:
                self.out.reused += outcome.reused if outcome else 0
                self.out.fetched += fetched
                self.out.bytes += fetched
        # The same copy to the same destination always has the same push id and record (below),
        # so a run that finds the claim of a killed one recognises it as its own.
        copy_id = hashlib.sha256(
            f"tychoreg-mirror\0{self.dst.identity}\0{package}\0{version}\0{expected.size}\0"
            f"{expected.sha256 or expected.pin}".encode()
        ).hexdigest()[:32]
        try:
            with open(local, "rb") as source:
                made = publish(
                    self.dst,
                    package,
                    version,
                    source,
                    identity=record.pushed_by if record else self.identity,
                    note=record.note if record else None,
                    push_id=copy_id,
                    pushed_at=record.pushed_at if record else "",
                )
        finally:
            local.unlink(missing_ok=True)
        if expected.sha256 and made.sha256 != expected.sha256:
            raise IntegrityError(
                f"{package} {version} changed on its way to the destination (sha256 {made.sha256}, expected "
                f"{expected.sha256})",
                reason="failed-verification",
                package=package,
                version=version,
            )
        return made.sha256

    def _local_copies(self, pkg: _Package, version: str) -> list[Path]:
        """Local files that may share pieces with ``version``: on a folder destination, its
        copies of the package's other versions (the nearest versions first: they share most), then
        the cache's. A file there may be anything (someone with write access to the folder): the
        delta uses only pieces whose SHA-256 is the index's, and verifies the whole file."""
        out = self.cached(pkg.name, version) if self.cached else []
        if not isinstance(self.dst, FileStore):
            return out
        from .versions import sort_versions  # noqa: PLC0415 - semver, packaging: only for deltas

        with self.lock:
            there = {v for v in (*pkg.dest_sizes, *pkg.same) if v != version}
        ordered = sort_versions([*there, version])
        at = {v: i for i, v in enumerate(ordered)}
        nearest = sorted(there, key=lambda v: (abs(at[v] - at[version]), at[v] > at[version]))
        return [self.dst.root / layout.data(pkg.name, v) for v in nearest] + out

    def _settle(self, pkg: _Package, version: str) -> None:
        """The destination has the version: same bytes (skip) or other bytes (a conflict)?"""
        try:
            theirs = fetch.expected_for(self.dst, pkg.name, version)
            ours = fetch.expected_for(self.src, pkg.name, version, trust=self.trust)
            same = self._same(ours, theirs)
        except TychoError as exc:
            self.fail(pkg.name, version, str(exc))
            return
        if not same[0]:
            self.conflict(pkg.name, version, "the destination holds other bytes")
            return
        self.count_skip()
        with self.lock:
            pkg.same[version] = same[1]

    def _same(self, ours: fetch.Expected, theirs: fetch.Expected) -> tuple[bool, str | None]:
        """Whether both sides hold the same bytes, and their SHA-256 where known. Bytes are read
        only when one side has no record (0.4.0 pushed it): the destination is hashed and compared
        with what the source says of its bytes (a SHA-256 or an ETag), or where the source says
        nothing but its size (a folder), the source is hashed and compared with the destination."""
        if ours.size != theirs.size:
            return False, None
        if ours.sha256 and theirs.sha256:
            return ours.sha256 == theirs.sha256, ours.sha256
        if ours.etag and theirs.pin and ours.etag.etag.strip('"') == theirs.pin.strip('"'):
            return True, theirs.sha256 or ours.sha256  # one ETag from the same bytes (MD5, or the same parts)
        if ours.sha256 or ours.etag:
            digests = self._hash(self.dst, theirs, ours)
            return ours.matches(digests), digests.sha256
        digests = self._hash(self.src, ours, theirs)
        if theirs.sha256 or theirs.etag:
            return theirs.matches(digests), digests.sha256
        other = self._hash(self.dst, theirs, theirs)
        return other.sha256 == digests.sha256, digests.sha256

    def _hash(self, store: Store, what: fetch.Expected, against: fetch.Expected) -> Digests:
        digests = Digests(against.etag)
        store.read(what.key, HashingWriter(Discard(), digests), size=what.size, if_match=what.pin)
        if store is self.src:
            with self.lock:
                self.out.bytes += what.size
        return digests

    # -- signatures and references -------------------------------------------------------
    def signatures(self, pkg: _Package) -> None:
        """Copy the signatures of every version both sides hold with the same bytes that the
        destination lacks; each must verify (by its own key) over its statement."""
        for key in sorted(pkg.signatures - pkg.dest_signatures):
            named = layout.signature_name(pkg.name, key)
            if named is None or named[0] not in pkg.same or pkg.same[named[0]] != named[1]:
                continue
            version, sha, _ = named
            if self.dry_run:
                with self.lock:
                    self.out.signatures += 1
                continue
            try:
                raw, _ = self.src.get(key)
                sshsig.verify(statement(pkg.name, version, pkg.sizes[version], sha), raw)
                self.dst.put_if_absent(key, raw)
            except (sshsig.BadSignature, PreconditionFailed, TychoError):
                continue  # not a valid signature of these bytes, or already there
            with self.lock:
                self.out.signatures += 1

    def references(self, pkg: _Package) -> None:
        """Point the destination's tags (``latest`` too) and yanks where the source has them, for
        versions the destination holds with the same bytes; tags of other versions stay."""
        wanted_tags = {t: v for t, v in pkg.doc.tags.items() if v in pkg.same}
        wanted_yanks = {v: pkg.doc.yanked.get(v) for v in pkg.same}
        changes: list[str] = []

        def change(doc: PackageDoc) -> None:
            changes.clear()
            for tag, version in wanted_tags.items():
                if doc.tags.get(tag) != version and not (tag == "latest" and version in pkg.doc.yanked):
                    doc.set_tag(tag, version)
                    changes.append(f"{pkg.name} {tag} -> {version}")
            for version, entry in wanted_yanks.items():
                if doc.yanked.get(version) != entry and (entry is not None or version in doc.yanked):
                    doc.set_yanked(version, entry)
                    changes.append(f"{pkg.name} {'yank' if entry is not None else 'unyank'} {version}")

        if pkg.dest_doc is None:
            if self.dry_run:
                change(PackageDoc(pkg.name, pkg.doc.localname))
                self.out.refs.extend(changes)
            return
        change(PackageDoc(pkg.name, pkg.dest_doc.localname, pkg.dest_doc.latest, dict(pkg.dest_doc.extra)))
        if not changes or self.dry_run:
            self.out.refs.extend(changes)
            return
        refs.update(self.dst, pkg.name, change)
        with self.lock:
            self.out.refs.extend(changes)
        for version in set(wanted_tags.values()):  # deleted meanwhile: no tag may name it (as refs.point)
            if self.dst.head(layout.data(pkg.name, version)) is None:
                refs.drop(self.dst, pkg.name, version)


def mirror(
    src: Store,
    dst: Store,
    packages: Sequence[str] = (),
    *,
    trust: Trust | None,
    identity: str,
    workdir: Path,
    dry_run: bool = False,
    progress: ProgressFactory | None = None,
    cached: Callable[[str, str], list[Path]] | None = None,
) -> Mirrored:
    """Copy ``packages`` (all when empty) from ``src`` to ``dst`` (see the module's text).
    ``cached(package, version)`` names the cache's copies of the package's other versions; None
    turns delta copies off (every version is downloaded whole)."""
    run = _Run(
        src, dst, trust=trust, identity=identity, workdir=workdir, dry_run=dry_run, progress=progress, cached=cached
    )
    names = list(dict.fromkeys(packages)) or sorted(
        n for n in src.list_folders("") if is_valid_segment(n) and src.head(layout.package_doc(n)) is not None
    )

    def plan(name: str) -> _Package | None:
        try:
            return run.plan(name)
        except TychoError as exc:
            run.fail(name, None, str(exc))
            return None

    planned = [p for p in parallel_map(plan, names) if p is not None]
    for pkg in planned:
        try:
            run.ensure_package(pkg)
        except TychoError as exc:
            run.fail(pkg.name, None, str(exc))
    ready = [p for p in planned if p.dest_doc is not None or dry_run]
    tasks = [(p, v) for p in ready for v in p.copy] + [(p, v) for p in ready for v in p.compare]

    def work(task: tuple[_Package, str]) -> None:
        pkg, version = task
        if version in pkg.compare:
            if dry_run:
                with run.lock:
                    run.out.copied.append((pkg.name, version))  # may turn out to be the same bytes
                return
            run._settle(pkg, version)
        else:
            run.copy(pkg, version)

    parallel_map(work, tasks, workers=COPIES_AT_ONCE)
    for pkg in ready:
        try:
            run.signatures(pkg)
            run.references(pkg)
        except TychoError as exc:
            run.fail(pkg.name, None, str(exc))
    run.out.copied.sort()
    run.out.conflicts.sort()
    return run.out


def workdir(root: Path, src: Store, dst: Store) -> Path:
    """A private folder (0700, ours) in the user's cache for the downloads of a mirror from
    ``src`` to ``dst``; the same one every run, so an interrupted download is resumed."""
    name = hashlib.sha256(f"{src.identity}\0{dst.identity}".encode()).hexdigest()[:24]
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    top = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fd = open_private_dir(name, top, create=True, tighten=True)
    except OSError as exc:
        raise OperationError(f"cannot use {root / name} for the mirror's downloads: {exc.strerror or exc}") from None
    finally:
        os.close(top)
    return pinned(fd, root / name)
