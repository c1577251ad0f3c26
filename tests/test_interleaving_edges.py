"""More bad orders and crash points, found by trying to break the protocol of docs/FORMAT.md
after its first fixes: gc and delete racing a commit, a lost answer whose check also fails,
stores that keep no metadata, listings that must not trust a record blindly, and pins on the
file backend. Each is forced deterministically with the helpers of interleave.py and failed on
the protocol before these fixes. The promise:
  * every visible version's data is described by its record (sha256, size);
  * no pull writes bytes not verified against the record;
  * list-versions shows no sha256 that does not describe the stored data.
"""

from __future__ import annotations

import io
import os
import time
from dataclasses import replace
from datetime import timedelta

import pytest

from interleave import Actor, Backend, Gate, pulled, sha, write
from tychoreg import layout
from tychoreg.errors import AlreadyExists, StorageError

DATA = layout.data("narf", "1.0")
RECORD = layout.record("narf", "1.0")
A_BYTES = b"A" * 3000
B_BYTES = b"B" * 3000  # the same size as A's on purpose: a size check cannot tell them apart


def stored(backend: Backend, key: str = DATA) -> bytes:
    sink = io.BytesIO()
    backend.raw().read(key, sink)
    return sink.getvalue()


class _NoMeta:
    """A store that keeps no user metadata (docs/FORMAT.md: "stores or file systems that drop
    metadata"): what is staged with a push id comes back without one."""

    keeps_metadata = False  # and says so, as a file system without user attributes does

    def __init__(self, inner) -> None:
        self._inner = inner

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def stage(self, key, source, size_hint=None, progress=None, meta=None):
        return self._inner.stage(key, source, size_hint, progress, None)

    def head(self, key):
        info = self._inner.head(key)
        return None if info is None else replace(info, meta={})


def no_meta(backend: Backend) -> Backend:
    make = backend.make
    return Backend(backend.name, lambda: _NoMeta(make()), backend.tmp)


def make_claim_old(narf: Backend) -> timedelta:
    """Age the claim of 1.0 past a small gc threshold; returns that threshold (`--older-than`)."""
    if narf.name == "file":
        old = time.time() - 2 * 86400
        os.utime(narf.tmp / "registry" / RECORD, (old, old))
        return timedelta(hours=24)
    time.sleep(3.2)  # S3 times are the server's own
    return timedelta(seconds=2)


# -- H1: gc checks the data, then deletes the claim; the push commits and confirms in between ----
def test_gc_puts_back_the_record_of_a_push_that_committed_after_gc_looked(narf: Backend) -> None:
    """gc step 3 (head the data: none) and step 4 (delete the claim if its ETag is unchanged) are
    two requests. A push whose claim is older than --older-than commits its data and confirms
    (the record is still its own, unchanged) between them; gc's conditional delete then succeeds,
    because nothing about the *record* changed. On the file backend too: the guarded commit only
    checks the record, and delete_if_match only the record's ETag. Result: A reported success,
    its data is visible and no record describes it, for ever (every pull: integrity error)."""
    a_reg, a_store = narf.registry()
    a_gate = Gate()
    a_store.on("commit", DATA, a_gate)
    a = Actor(lambda: a_reg.push("narf", "1.0", write(narf.tmp, "a", A_BYTES)))
    a_gate.wait(a)  # claimed, about to commit (stalled, or just slow)
    age = make_claim_old(narf)
    g_reg, g_store = narf.registry()

    def push_finishes(_key: str) -> None:  # after gc's head of the data answered "none"
        a_gate.release()
        assert a.done().error is None

    g_store.on("head", DATA, push_finishes, after=True)
    g_reg.gc(older_than=age, remove=True)
    assert a.error is None  # the push said it succeeded
    assert narf.raw().head(DATA) is not None  # its data is visible
    assert narf.raw().head(RECORD) is not None, "gc deleted the record of a committed, confirmed version"
    assert pulled(narf) == (A_BYTES, "sha256")


# -- H2: a lost commit answer plus a failed head: the push releases the claim of its own data ------
def test_a_push_whose_commit_landed_keeps_its_claim_when_the_data_head_fails(narf: Backend) -> None:
    """The commit lands but its answer is lost (a reset); the head that should recognise our own
    data then fails too (the network is still down). `_data(quiet=True)` turns that failure into
    "no data", so `_lost` deletes our claim with If-Match (which matches: it is ours). The data
    stays, visible, without a record: every pull refuses it, and a new push of 1.0 is refused
    as "already exists". Unknown is not absent: a claim must only be released when the data is
    known to be absent."""
    reg, store = narf.registry()

    def answer_lost(_key: str) -> None:
        def head_fails(_k: str) -> None:
            raise StorageError("cannot reach the store")

        store.on("head", DATA, head_fails)  # the next head of the data (the one that checks our write)
        raise StorageError("the connection was reset")

    store.on("commit", DATA, answer_lost, after=True)
    with pytest.raises(StorageError):
        reg.push("narf", "1.0", write(narf.tmp, "a", A_BYTES))
    assert narf.raw().head(DATA) is not None  # the commit had landed
    assert narf.raw().head(RECORD) is not None, "the push deleted the record of its own committed data"
    assert pulled(narf) == (A_BYTES, "sha256")


def test_a_confirm_that_cannot_look_at_the_data_does_not_report_success(s3_narf: Backend) -> None:
    """The same confusion in `_confirm`: gc removed the claim of a stalled push (documented);
    the push commits, and its confirm should re-create the record ("A's confirm re-creates
    it"). Its head of the data fails once; `_data(quiet=True)` says "no data", which `_confirm`
    reads as "deleted meanwhile: nothing of ours to describe", and the push reports success.
    The version stays visible without a record (every pull: integrity error)."""
    narf = s3_narf
    a_reg, a_store = narf.registry()
    a_gate = Gate()
    a_store.on("commit", DATA, a_gate)
    a = Actor(lambda: a_reg.push("narf", "1.0", write(narf.tmp, "a", A_BYTES)))
    a_gate.wait(a)
    age = make_claim_old(narf)
    assert [d.key for d in narf.registry()[0].gc(older_than=age, remove=True)] == [RECORD]

    def head_fails(_k: str) -> None:
        raise StorageError("cannot reach the store")

    a_store.on("head", DATA, head_fails)  # A's next head of the data: in its confirm
    a_gate.release()
    a.done()
    assert narf.raw().head(DATA) is not None
    if a.error is None:  # it said it succeeded: then its version must be described
        assert narf.raw().head(RECORD) is not None, "the push reported success, its record is gone"
        assert pulled(narf) == (A_BYTES, "sha256")


# -- H3: a takeover decided before a commit lands, on a store that keeps no metadata ---------------
def test_takeover_after_commit_on_a_store_without_metadata_puts_the_claim_back(narf: Backend, monkeypatch) -> None:
    """`_claim` heads the data (none) and then replaces the stale claim with If-Match: two
    requests. A commits and confirms in between (its record is unchanged, so C's If-Match still
    matches): C's takeover lands on a version whose data exists (FORMAT.md says this cannot
    happen on the file backend: "a claim is never taken over once data exists"). With push ids,
    C's commit fails and C puts A's record back. Without metadata (S3 stores that drop
    x-amz-meta, file systems without user xattrs) the data has no push id, so C reads it as
    0.4.0's and deletes its claim: A's version, pushed by tychoreg, has no record and pulls
    unverified (by ETag on S3, by size only on the file backend). No client crashed."""
    monkeypatch.setenv("TYCHOREG_CLAIM_TIMEOUT", "0")  # A's claim looks dead (slow push, or C's clock)
    narf = no_meta(narf)
    a_reg, a_store = narf.registry()
    c_reg, c_store = narf.registry()
    a_gate, c_gate = Gate(), Gate()
    a_store.on("commit", DATA, a_gate)
    c_store.on("put_if_match", RECORD, c_gate)  # C has checked the data and is about to take over
    a = Actor(lambda: a_reg.push("narf", "1.0", write(narf.tmp, "a", A_BYTES)))
    a_gate.wait(a)
    c = Actor(lambda: c_reg.push("narf", "1.0", write(narf.tmp, "c", B_BYTES)))
    c_gate.wait(c)
    a_gate.release()
    assert a.done().error is None  # committed and confirmed
    c_gate.release()
    assert isinstance(c.done().error, AlreadyExists)
    assert pulled(narf) == (A_BYTES, "sha256")  # before: (A_BYTES, "size") on file, "etag" on S3
    assert narf.raw().head(RECORD) is not None, "the loser deleted the record describing A's data"


def test_killed_push_after_a_takeover_on_a_store_without_metadata_stays_verified(s3_narf: Backend, monkeypatch) -> None:
    """FORMAT.md's own case ("if A dies first, B loses at its commit and puts A's claim back"),
    on an S3 store that keeps no metadata: B took A's stale claim over, A commits and is killed
    before it confirms. B's commit fails; A's data has no push id, so B takes it for 0.4.0's and
    deletes its own record, the only one whose `replaced` described A's data. A's bytes then
    pull as a 0.4.0 version: unverified. (Meanwhile, B's record is taken to describe A's data,
    so list-versions shows B's sha256 for A's bytes.)"""
    narf = no_meta(s3_narf)
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
    a_store.on("get", RECORD, a_dies)  # A's confirm: killed there
    a_gate.release()
    a_dies.wait(a)
    listed = {v.version: v.sha256 for v in narf.registry()[0].versions("narf")}
    b_gate.release()
    assert isinstance(b.done().error, AlreadyExists)
    assert pulled(narf) == (A_BYTES, "sha256")  # before: (A_BYTES, "etag"): B deleted its record
    assert listed["1.0"] in (sha(A_BYTES), None), "list-versions showed B's sha256 for A's bytes"


# -- H4: list-versions trusts a record without `replaced` that another push's data sits under -----
def test_list_versions_shows_no_other_pushes_sha256_after_gc_removed_a_stalled_claim(s3_narf: Backend) -> None:
    """A push stalls past gc's threshold; gc removes its claim (documented). B then claims the
    free version afresh (no takeover, so its record has no `replaced`). A wakes, commits, and is
    killed before it confirms; B loses at its commit and leaves its record (A's claim is not in
    its `replaced`). Pulls refuse the version (B's record does not describe A's data), but
    list-versions and `info PKG` only check records that have `replaced` against the data's push
    id: they show B's sha256 and size for A's bytes, at rest, for ever."""
    narf = s3_narf
    a_reg, a_store = narf.registry()
    a_gate, a_dies = Gate(), Gate()
    a_store.on("commit", DATA, a_gate)
    a = Actor(lambda: a_reg.push("narf", "1.0", write(narf.tmp, "a", A_BYTES)))
    a_gate.wait(a)
    age = make_claim_old(narf)
    removed = narf.registry()[0].gc(older_than=age, remove=True)
    assert [d.key for d in removed] == [RECORD]
    b_reg, b_store = narf.registry()
    b_gate = Gate()
    b_store.on("commit", DATA, b_gate)
    b = Actor(lambda: b_reg.push("narf", "1.0", write(narf.tmp, "b", B_BYTES)))
    b_gate.wait(b)  # B holds a fresh claim
    a_store.on("get", RECORD, a_dies)  # A commits, then is killed before its confirm
    a_gate.release()
    a_dies.wait(a)
    b_gate.release()
    assert isinstance(b.done().error, AlreadyExists)
    assert stored(narf) == A_BYTES
    reg, _ = narf.registry()
    listed = {v.version: v for v in reg.versions("narf")}
    newest = {v.version: v for v in reg.info("narf").newest}
    assert listed["1.0"].sha256 != sha(B_BYTES), "list-versions shows B's sha256 for the stored bytes of A"
    assert newest["1.0"].sha256 != sha(B_BYTES), "info shows B's sha256 for the stored bytes of A"


# -- H5: file backend: nothing pins the object a size-only pull read ------------------------------
def test_a_size_only_pull_on_the_file_backend_is_pinned_to_the_object_it_resolved(file_narf: Backend) -> None:
    """A version without a record (pushed by 0.4.0) is resolved by head: size only, no ETag, so
    no pin. It is deleted and pushed again by tychoreg, with a record, same size, before the pull
    opens the file. The pull writes the new bytes checked by size only, never against the new
    version's record (sha256). On S3 the read is conditional on the ETag resolved; a folder has
    no such check (the read opens the file by name after the head)."""
    narf = file_narf
    narf.put_raw(DATA, b"X" * len(B_BYTES))
    reg, store = narf.registry()

    def replaced_meanwhile(_key: str) -> None:
        other = narf.registry()[0]
        other.delete("narf", "1.0")
        other.push("narf", "1.0", write(narf.tmp, "b", B_BYTES))

    store.on("read", DATA, replaced_meanwhile)
    dest = narf.tmp / "pulled.bin"
    try:
        result = reg.pull("narf", "1.0", outfile=dest)
    except Exception:  # noqa: BLE001 - refusing (the object changed) is what the promise allows
        return
    data = dest.read_bytes()
    assert not (data == B_BYTES and result.checked_by == "size"), (
        "the pull wrote the bytes of a tychoreg push (with a record) checked by size only"
    )


# -- H3, triggered by a clock: on the file backend claim ages are read by the client's clock -------
def test_file_backend_client_clock_ahead_does_not_take_a_fresh_claim_over(file_narf: Backend, monkeypatch) -> None:
    """H3 without any stall: a claim's age was the client's clock minus the file's mtime, which
    NFS sets by the server's clock, so a client two hours ahead took every claim for a dead one,
    and on a file system without user xattrs the takeover race of H3 then left A's version
    without a record, pulled by size only. Now the folder's own clock is read (the lock file,
    just touched): the claim is fresh, the second push is told so."""
    from datetime import datetime

    import tychoreg.store.base as base

    class Ahead(datetime):
        @classmethod
        def now(cls, tz=None):  # type: ignore[override]
            return datetime.now(tz) + timedelta(hours=2)

    narf = no_meta(file_narf)
    a_reg, a_store = narf.registry()
    c_reg, _ = narf.registry()
    a_gate = Gate()
    a_store.on("commit", DATA, a_gate)
    a = Actor(lambda: a_reg.push("narf", "1.0", write(narf.tmp, "a", A_BYTES)))
    a_gate.wait(a)
    monkeypatch.setattr(base, "datetime", Ahead)  # C's clock (only C measures an age here)
    with pytest.raises(AlreadyExists, match="being pushed"):  # the folder's clock says: fresh
        c_reg.push("narf", "1.0", write(narf.tmp, "c", B_BYTES))
    monkeypatch.undo()
    a_gate.release()
    assert a.done().error is None
    assert pulled(narf) == (A_BYTES, "sha256")  # before: (A_BYTES, "size")


# -- H1b: delete's step 4 removes a live push's claim, as gc does -------------------------------
def test_delete_keeps_the_claim_of_a_push_that_commits_after_the_data_went(narf: Backend) -> None:
    """A has claimed 1.0 and is about to commit; a client that does not claim (0.4.0, or a copy
    by another tool) put its bytes there first. A user deletes 1.0: step 1 reads the record's
    ETag (A's live claim), step 3 deletes the data; A now commits (the key is free; on the file
    backend the guard passes: the claim is A's) and confirms (the record is unchanged, its own);
    step 4 then deletes the record by the ETag of step 1, which still matches. A reported
    success; its data is visible without a record for ever."""
    a_reg, a_store = narf.registry()
    a_gate = Gate()
    a_store.on("commit", DATA, a_gate)
    a = Actor(lambda: a_reg.push("narf", "1.0", write(narf.tmp, "a", A_BYTES)))
    a_gate.wait(a)
    narf.put_raw(DATA, b"0.4.0 bytes")  # 0.4.0 checked the key was free before A committed
    d_reg, d_store = narf.registry()

    def push_finishes(_key: str) -> None:  # after delete's step 3
        a_gate.release()
        assert a.done().error is None

    d_store.on("delete", DATA, push_finishes, after=True)
    d_reg.delete("narf", "1.0")
    assert a.error is None
    assert narf.raw().head(DATA) is not None  # A's data, visible
    assert narf.raw().head(RECORD) is not None, "delete removed the record of A's committed, confirmed version"
    assert pulled(narf) == (A_BYTES, "sha256")


# -- H6: 0.4.0 overwrites a version tychoreg just committed; the record "describes" 0.4.0's bytes --
def test_a_record_with_a_push_id_does_not_describe_data_without_one(s3_narf: Backend) -> None:
    """0.4.0's push is `exists?` then an unconditional upload. If its check ran before A's
    commit, its upload replaces A's data after it (the upload may take minutes). The reading
    rule "a record describes the data when ... the data has none [no push id]" then takes A's
    record for 0.4.0's bytes: list-versions and info show A's sha256 for bytes that are not A's
    (same size here). Pulls do refuse (sha256 mismatch), with "the stored copy is damaged"."""
    narf = s3_narf
    assert narf.raw().head(DATA) is None  # 0.4.0's exists() check: free
    narf.registry()[0].push("narf", "1.0", write(narf.tmp, "a", A_BYTES))
    narf.put_raw(DATA, B_BYTES)  # 0.4.0's upload_file lands (no metadata)
    reg, _ = narf.registry()
    listed = {v.version: v for v in reg.versions("narf")}
    one = reg.info("narf", "1.0")
    assert stored(narf) == B_BYTES
    assert listed["1.0"].sha256 != sha(A_BYTES), "list-versions shows A's sha256 for 0.4.0's bytes"
    assert one.sha256 != sha(A_BYTES), "info shows A's sha256 for 0.4.0's bytes"
