"""Bad orders of concurrent steps, each forced deterministically: a hook holds one actor at a
chosen step of ours while another runs. The promise under test is the one docs/FORMAT.md makes:
a visible version's data is always described by its record, and no pull ever writes bytes that
were not verified against it. Each case here failed on the protocol before it was fixed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from interleave import Actor, Backend, Gate, Killed, pulled, sha, write
from tychoreg import layout
from tychoreg.errors import AlreadyExists, IntegrityError, NotFound, StorageError
from tychoreg.models import VersionRecord
from tychoreg.registry import Registry
from tychoreg.store.base import TransferInterrupted

MiB = 1 << 20
DATA = layout.data("narf", "1.0")
RECORD = layout.record("narf", "1.0")
A_BYTES, B_BYTES = b"A" * 3000, b"B" * 5000


def record_of(backend: Backend, version: str = "1.0") -> VersionRecord:
    raw, _ = backend.raw().get(layout.record("narf", version))
    return VersionRecord.parse("narf", version, raw)


# -- 1. a stale claim taken over while its push is still alive ---------------------------------
def test_takeover_of_a_live_push_then_a_failed_commit(narf: Backend, monkeypatch) -> None:
    """A claims; B finds the claim stale and takes it over; A, alive after all, commits; B's
    commit then fails. Before: B deleted "its" record, so A's data was visible with no record
    and pulled unverified. Now A confirms its record after committing, and B deletes nothing."""
    monkeypatch.setenv("TYCHOREG_CLAIM_TIMEOUT", "0")  # every claim looks dead
    a_reg, a_store = narf.registry()
    b_reg, b_store = narf.registry()
    a_gate, b_gate = Gate(), Gate()
    a_store.on("commit", DATA, a_gate)
    b_store.on("commit", DATA, b_gate)
    a = Actor(lambda: a_reg.push("narf", "1.0", write(narf.tmp, "a", A_BYTES)))
    a_gate.wait(a)
    b = Actor(lambda: b_reg.push("narf", "1.0", write(narf.tmp, "b", B_BYTES)))
    b_gate.wait(b)  # B holds the claim now
    a_gate.release()
    assert a.done().error is None
    b_gate.release()
    assert isinstance(b.done().error, AlreadyExists)
    assert pulled(narf) == (A_BYTES, "sha256")
    assert record_of(narf).sha256 == sha(A_BYTES)


def test_takeover_by_a_push_that_is_then_killed(narf: Backend, monkeypatch) -> None:
    """B takes A's claim over and dies before committing; A commits. Before: A's data sat under
    B's record (B's sha256) for ever, every pull failed and nothing could repair it."""
    monkeypatch.setenv("TYCHOREG_CLAIM_TIMEOUT", "0")
    a_reg, a_store = narf.registry()
    b_reg, b_store = narf.registry()
    a_gate, b_dies = Gate(), Gate()
    a_store.on("commit", DATA, a_gate)
    b_store.on("commit", DATA, b_dies)  # never released: B was killed here
    a = Actor(lambda: a_reg.push("narf", "1.0", write(narf.tmp, "a", A_BYTES)))
    a_gate.wait(a)
    b = Actor(lambda: b_reg.push("narf", "1.0", write(narf.tmp, "b", B_BYTES)))
    b_dies.wait(b)
    a_gate.release()
    assert a.done().error is None
    assert pulled(narf) == (A_BYTES, "sha256")
    assert record_of(narf).sha256 == sha(A_BYTES)


def test_push_killed_between_commit_and_confirm_after_a_takeover(narf: Backend, monkeypatch) -> None:
    """The narrowest window: B took A's claim over; A commits and is killed before it can put
    its record back. Readers must still verify A's data: B's record kept A's claim. When B
    then tries to commit, it loses and puts A's record back (S3). On the file backend A's
    commit is refused while B holds the claim, so A's data never becomes visible at all."""
    monkeypatch.setenv("TYCHOREG_CLAIM_TIMEOUT", "0")
    a_reg, a_store = narf.registry()
    b_reg, b_store = narf.registry()
    a_gate, a_dies, b_gate = Gate(), Gate(), Gate()
    a_store.on("commit", DATA, a_gate)
    b_store.on("commit", DATA, b_gate)
    a = Actor(lambda: a_reg.push("narf", "1.0", write(narf.tmp, "a", A_BYTES)))
    a_gate.wait(a)
    b = Actor(lambda: b_reg.push("narf", "1.0", write(narf.tmp, "b", B_BYTES)))
    b_gate.wait(b)
    a_store.on("get", RECORD, a_dies)  # A's next look at the record: it dies there
    a_gate.release()
    a_dies.wait(a)
    if narf.name == "s3":
        assert pulled(narf) == (A_BYTES, "sha256")  # B's record remembers A's claim
    else:
        assert narf.raw().head(DATA) is None  # refused atomically: nothing visible
    b_gate.release()
    b.done()
    if narf.name == "s3":
        assert isinstance(b.error, AlreadyExists)
        assert record_of(narf).sha256 == sha(A_BYTES)  # B put A's record back
        assert pulled(narf) == (A_BYTES, "sha256")
    else:
        assert b.error is None
        assert pulled(narf) == (B_BYTES, "sha256")


def test_a_client_whose_clock_is_ahead_does_not_take_over_a_fresh_claim(s3_narf: Backend, monkeypatch) -> None:
    """Claim age is measured by the store's clock (its Date header against the claim's
    Last-Modified). Before: a client two hours ahead took every fresh claim for a dead one.
    (A folder has one clock, the file system's.)"""
    narf = s3_narf
    import tychoreg.publish as publish
    import tychoreg.store.base as base

    class Ahead(datetime):
        @classmethod
        def now(cls, tz=None):  # type: ignore[override]
            return datetime.now(tz) + timedelta(hours=2)

    a_reg, a_store = narf.registry()
    a_gate = Gate()
    a_store.on("commit", DATA, a_gate)
    a = Actor(lambda: a_reg.push("narf", "1.0", write(narf.tmp, "a", A_BYTES)))
    a_gate.wait(a)
    with monkeypatch.context() as m:
        m.setattr(publish, "datetime", Ahead)
        m.setattr(base, "datetime", Ahead)
        with pytest.raises(AlreadyExists, match="being pushed"):
            narf.registry()[0].push("narf", "1.0", write(narf.tmp, "b", B_BYTES))
    a_gate.release()
    assert a.done().error is None
    assert pulled(narf) == (A_BYTES, "sha256")


# -- 2. delete and gc must not remove the claim of a push that took over meanwhile --------------
class Claimer:
    """Push B of 1.0, started from inside another actor's hook: ``claim`` runs it up to its
    commit (so it has claimed, taking any old record over), ``commit`` lets it finish."""

    def __init__(self, narf: Backend) -> None:
        self._reg, store = narf.registry()
        self._gate, self._narf = Gate(), narf
        store.on("commit", DATA, self._gate)
        self._actor: Actor | None = None

    def claim(self, _key: str) -> None:
        self._actor = Actor(lambda: self._reg.push("narf", "1.0", write(self._narf.tmp, "b", B_BYTES)))
        self._gate.wait(self._actor)

    def commit(self) -> None:
        assert self._actor is not None, "B never started"
        self._gate.release()
        assert self._actor.done().error is None


def test_delete_does_not_remove_the_claim_of_a_new_push(narf: Backend, monkeypatch) -> None:
    """delete removes the data, then the record. A new push of that version, taking the old
    record over in between, must keep its claim. Before: delete read the record's ETag after
    removing the data, so it deleted the new claim; the new data then had no record."""
    monkeypatch.setenv("TYCHOREG_CLAIM_TIMEOUT", "0")
    narf.registry()[0].push("narf", "1.0", write(narf.tmp, "old", b"old bytes"))
    d_reg, d_store = narf.registry()
    b = Claimer(narf)
    d_store.on("delete", DATA, b.claim, after=True)
    d_reg.delete("narf", "1.0")
    b.commit()
    assert pulled(narf) == (B_BYTES, "sha256")


def test_gc_does_not_remove_a_claim_taken_over_after_its_listing(narf: Backend, monkeypatch) -> None:
    """gc lists an orphaned claim (a push died after claiming), then reads it to delete it. A
    retried push that takes the claim over in between must keep it. Before: gc deleted the new
    claim by its fresh ETag; the retried push's data then had no record."""
    monkeypatch.setenv("TYCHOREG_CLAIM_TIMEOUT", "0")
    dead_reg, dead_store = narf.registry()
    dies = Gate()
    dead_store.on("commit", DATA, dies)
    dead = Actor(lambda: dead_reg.push("narf", "1.0", write(narf.tmp, "dead", b"never committed")))
    dies.wait(dead)
    if narf.name == "file":  # the dead push claimed two days ago
        old = time.time() - 2 * 86400
        os.utime(narf.tmp / "registry" / RECORD, (old, old))
        age = timedelta(hours=24)
    else:  # S3 times are the server's own; let the claim grow older than gc's threshold
        time.sleep(3.2)
        age = timedelta(seconds=2)
    g_reg, g_store = narf.registry()
    b = Claimer(narf)
    g_store.on("get", RECORD, b.claim)
    removed = g_reg.gc(older_than=age, remove=True)
    assert [d.key for d in removed if d.kind == "orphaned claim"] == []
    b.commit()
    assert pulled(narf) == (B_BYTES, "sha256")


# -- 3. resuming must never mix two objects' bytes ---------------------------------------------
class _CutAfter:
    """A sink that stops a download after ``limit`` bytes, as a kill or a reset would
    (``then`` runs just before it stops)."""

    def __init__(self, inner, limit: int, error: BaseException, then=lambda: None) -> None:
        self._inner, self._left, self._error, self._then = inner, limit, error, then

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def write(self, data: bytes) -> int:
        if len(data) > self._left:
            self._then()
            raise self._error
        self._left -= len(data)
        return self._inner.write(data)


def test_a_record_less_download_is_never_resumed_by_another_version(file_narf: Backend) -> None:
    """Versions without a record on a folder (copied from a 0.4.0 bucket) have no ETag to name
    their bytes by. Before: their part file was named by size only, so a pull of 2.0 resumed what
    a killed pull of 1.0 left (2 MiB of 1.0, then 1 MiB of 2.0), exit 0. Now a part file is named
    after the exact file it was read from (device, inode, size, mtime), and every read of it is
    conditional on that: 2.0 is downloaded whole, and 1.0 resumes only from its own bytes.
    (S3 objects are named and pinned by their ETag: next test.)"""
    narf = file_narf
    narf.put_raw(layout.data("narf", "1.0"), b"1" * 3 * MiB)
    narf.put_raw(layout.data("narf", "2.0"), b"2" * 3 * MiB)
    reg, store = narf.registry()
    dest = narf.tmp / "out" / "narf.bin"
    real_read = store.inner.read
    store.inner.read = lambda key, sink, **kw: real_read(key, _CutAfter(sink, 2 * MiB, Killed()), **kw)
    with pytest.raises(Killed):
        reg.pull("narf", "1.0", outfile=dest)
    store.inner.read = real_read
    result = reg.pull("narf", "2.0", outfile=dest)
    assert dest.read_bytes() == b"2" * 3 * MiB
    assert result.checked_by == "size"
    assert reg.pull("narf", "1.0", outfile=dest).resumes == 0
    assert dest.read_bytes() == b"1" * 3 * MiB
    assert sorted(p.name for p in dest.parent.iterdir()) == ["narf.bin"]  # the part file was used up


def test_a_resumed_read_is_pinned_to_the_object_it_started_on(s3_narf: Backend) -> None:
    """An interrupted download resumes with a ranged read conditional on the ETag the pull
    started with: an object replaced meanwhile (deleted and pushed again) is reported as that,
    never mixed into the first object's bytes. Before: the resumed read took whatever was
    there, and the mix failed verification as a "damaged stored copy". (A file is read whole
    from one open descriptor: nothing is resumed mid-run.)"""
    narf = s3_narf
    narf.put_raw(DATA, b"1" * 3 * MiB)
    reg, store = narf.registry()
    dest = narf.tmp / "out" / "narf.bin"
    real_read = store.inner.read
    calls = []

    def read(key, sink, **kw):
        calls.append(kw.get("start", 0))
        if len(calls) == 1:  # replaced while the first read is under way, which is then cut
            sink = _CutAfter(sink, 1 * MiB, TransferInterrupted("reset"), lambda: narf.put_raw(DATA, b"2" * 3 * MiB))
        return real_read(key, sink, **kw)

    store.inner.read = read
    with pytest.raises(NotFound, match="replaced while it was being downloaded"):
        reg.pull("narf", "1.0", outfile=dest)
    assert calls[1] > 0  # it did resume, and the condition refused the other object
    assert not dest.exists()


# -- 4. a version that had a record must not quietly pull unverified ---------------------------
def test_a_removed_record_is_an_integrity_error_when_the_data_says_tychoreg_pushed_it(narf: Backend) -> None:
    """Before: removing PKG/.tycho/versions/V.json turned a verified version into one that
    pulls "checked by size" with a warning. Now the data names its push, so a missing record
    is an integrity error; --allow-unverified takes it as a 0.4.0 version would be taken."""
    narf.registry()[0].push("narf", "1.0", write(narf.tmp, "a", A_BYTES))
    narf.raw().delete(RECORD)
    with pytest.raises(IntegrityError, match="no record"):
        pulled(narf)
    assert pulled(narf, allow_unverified=True) == (A_BYTES, "etag" if narf.name == "s3" else "size")


def test_a_removed_record_and_swapped_data_are_refused_where_the_version_was_verified(narf: Backend) -> None:
    """Record removed and data replaced by a tool that writes no metadata: the store alone
    cannot tell this from a version 0.4.0 pushed. The machine that verified it before can
    (like known_hosts): there, the pull is an integrity error and nothing is written."""
    from tychoreg.known import KnownDigests

    reg, _ = narf.registry(known=KnownDigests(narf.tmp / "known", "the registry"))
    reg.push("narf", "1.0", write(narf.tmp, "a", A_BYTES))
    narf.raw().delete(RECORD)
    narf.put_raw(DATA, b"X" * len(A_BYTES))
    dest = narf.tmp / "mine.bin"
    with pytest.raises(IntegrityError, match="verified it before"):
        reg.pull("narf", "1.0", outfile=dest)
    assert not dest.exists()
    # A machine that never saw it takes it as what it looks like: a 0.4.0 version, unverified.
    assert pulled(narf)[1] in ("etag", "size")


def test_a_removed_record_is_refused_when_the_catalog_kept_a_copy(s3_narf: Backend) -> None:
    """On S3, readers keep a catalog of records; its copy is evidence the record existed. (A
    folder's listings carry no ETags, so it keeps no catalog.)"""
    narf = s3_narf
    reg, _ = narf.registry()
    for i in range(20):
        reg.push("narf", f"1.{i}", write(narf.tmp, f"v{i}", f"version {i}".encode()))
    reg.versions("narf")  # reads 20 records one by one, so it writes the catalog
    assert narf.raw().head(layout.catalog("narf")) is not None
    narf.raw().delete(layout.record("narf", "1.3"))
    narf.put_raw(layout.data("narf", "1.3"), b"version X")
    with pytest.raises(IntegrityError, match="catalog knew"):
        pulled(narf, "1.3")


# -- 5. yank must not move latest to a version deleted meanwhile --------------------------------
def test_yank_does_not_point_latest_at_a_version_deleted_meanwhile(narf: Backend) -> None:
    """yank 1.2 --yes moves latest to the highest remaining release, 1.1; 1.1 is deleted while
    yank writes. Before: the successor came from a listing taken before the compare-and-swap
    loop, so latest named a deleted version. Now it is listed inside the loop and checked after
    writing, as promote does."""
    reg, _ = narf.registry()
    for v in ("1.0", "1.1", "1.2"):
        reg.push("narf", v, write(narf.tmp, v, v.encode()))
    reg.promote("narf", "1.2")
    y_reg, y_store = narf.registry()
    y_store.on("put_if_match", layout.package_doc("narf"), lambda _k: narf.registry()[0].delete("narf", "1.1"))
    assert y_reg.yank("narf", "1.2", "broken", move_latest=True) == "1.0"
    doc = json.loads(narf.raw().get(layout.package_doc("narf"))[0])
    assert doc["latest"] == "1.0"
    assert narf.raw().head(layout.data("narf", "1.1")) is None


def test_yank_of_a_version_deleted_meanwhile_leaves_no_yank_entry(narf: Backend) -> None:
    reg, _ = narf.registry()
    for v in ("1.0", "1.1"):
        reg.push("narf", v, write(narf.tmp, v, v.encode()))
    y_reg, y_store = narf.registry()
    y_store.on("put_if_match", layout.package_doc("narf"), lambda _k: narf.registry()[0].delete("narf", "1.1"))
    with pytest.raises(NotFound):
        y_reg.yank("narf", "1.1", "broken")
    doc = json.loads(narf.raw().get(layout.package_doc("narf"))[0])
    assert "1.1" not in doc.get("tychoreg", {}).get("yanked", {})


# -- 6. the file backend's lock ---------------------------------------------------------------
def test_file_backend_delete_waits_for_a_compare_and_swap_in_progress(tmp_path: Path, monkeypatch) -> None:
    """A promote has compared tycho.json and is about to rename its new copy into place when
    `delete PKG --force` runs. Before: delete took no lock, so the rename brought tycho.json
    back after the package was deleted. Now every change of an existing object, deletes
    included, holds the registry's lock."""
    import threading

    import tychoreg.store.file as file_store
    from tychoreg.store.file import FileStore

    root = tmp_path / "registry"
    reg = Registry(FileStore(root), outdir=tmp_path / "out")
    reg.init("narf", "narf.bin")
    reg.push("narf", "1.0", write(tmp_path, "a", b"a"))
    gate = Gate()
    promoter: list[threading.Thread] = []
    real_rename, real_replace = os.rename, os.replace

    def pausing(real):
        def move(src, dst, *args, **kwargs):
            if threading.current_thread() in promoter and str(dst).endswith("tycho.json"):
                gate()
            return real(src, dst, *args, **kwargs)

        return move

    monkeypatch.setattr(file_store.os, "rename", pausing(real_rename))
    monkeypatch.setattr(file_store.os, "replace", pausing(real_replace))

    def promote_it() -> None:
        promoter.append(threading.current_thread())
        Registry(FileStore(root)).promote("narf", "1.0")

    promote = Actor(promote_it)
    gate.wait(promote)  # compared, about to rename
    deleter = Actor(lambda: Registry(FileStore(root)).delete("narf", force=True))
    deleter.join(2.5)  # before the fix it deleted everything meanwhile; now it waits for the lock
    gate.release()
    promote.done()
    assert deleter.done().error is None
    assert not (root / "narf" / "tycho.json").exists()
    assert not (root / "narf" / "tycho_1.0.pkg").exists()


def test_file_backend_lock_is_a_record_lock_other_processes_and_nfs_honour(tmp_path: Path) -> None:
    """The lock is an fcntl record lock on a regular file (NFS carries those between machines;
    flock on a folder it does not). Another process holding it makes a promote wait."""
    from tychoreg.store.file import LOCK_NAME, FileStore

    root = tmp_path / "registry"
    reg = Registry(FileStore(root), outdir=tmp_path / "out")
    reg.init("narf", "narf.bin")
    reg.push("narf", "1.0", write(tmp_path, "a", b"a"))
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import fcntl, os, sys, time\n"
                f"fd = os.open({str(root / LOCK_NAME)!r}, os.O_RDWR | os.O_CREAT)\n"
                "fcntl.lockf(fd, fcntl.LOCK_EX)\n"
                "print('locked', flush=True)\n"
                "time.sleep(1.5)\n"
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "locked"
    started = time.monotonic()
    reg.promote("narf", "1.0")
    assert time.monotonic() - started > 0.8  # waited for the other process
    holder.wait(10)
    assert json.loads((root / "narf" / "tycho.json").read_text())["latest"] == "1.0"


# -- 7. the catalog cannot be made to say what no record says ----------------------------------
def test_a_poisoned_catalog_entry_is_not_believed(narf: Backend) -> None:
    """Before: a catalog entry was trusted when its stamp equalled the record's listed ETag, and
    any writer of the catalog chose the stamp: a copied real ETag with a forged sha256 showed
    in list-versions. Now the entry holds the record's exact bytes, whose MD5 must be that ETag."""
    reg, _ = narf.registry()
    for i in range(20):
        reg.push("narf", f"1.{i}", write(narf.tmp, f"v{i}", f"version {i}".encode()))
    truth = {v.version: v.sha256 for v in reg.versions("narf")}
    if narf.name == "file":
        assert narf.raw().head(layout.catalog("narf")) is None  # nothing to poison
        return
    raw, _ = narf.raw().get(layout.catalog("narf"))
    catalog = json.loads(raw)
    forged = "f" * 64
    entry = catalog["records"]["1.4"]
    if isinstance(entry, dict):  # the catalog's first format: a stamp and a parsed record
        entry["record"]["sha256"] = forged
    else:  # the record's exact bytes
        catalog["records"]["1.4"] = entry.replace(truth["1.4"], forged)
    narf.put_raw(layout.catalog("narf"), json.dumps(catalog).encode())
    listed = {v.version: v.sha256 for v in narf.registry()[0].versions("narf")}
    assert listed == truth


# -- 9. recognising our own write without MD5 ETags -------------------------------------------
def test_a_lost_commit_answer_is_recognised_without_md5_etags(narf: Backend) -> None:
    """The commit lands but its answer is lost, and the store's ETags are not MD5s (SSE-KMS,
    SSE-C; a folder has none). Before: the push did not recognise its own data and deleted its
    own record. Now the data's push id says whose it is."""
    reg, store = narf.registry()

    def lost(_key: str) -> None:
        raise StorageError("the connection was reset")

    store.on("commit", DATA, lost, after=True)
    real_head = store.inner.head

    def head(key: str):
        info = real_head(key)
        if info is not None and key == DATA and info.etag:
            from dataclasses import replace

            return replace(info, etag='"an-etag-that-is-no-md5"')
        return info

    store.inner.head = head
    reg.push("narf", "1.0", write(narf.tmp, "a", A_BYTES))
    assert record_of(narf).sha256 == sha(A_BYTES)
    assert pulled(narf) == (A_BYTES, "sha256")
