"""The shared download cache: real files in tmp_path, no mocks."""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import threading
import time
from pathlib import Path

import pytest

from tychoreg.cache import RACY, Cache, CacheInfo, default_root
from tychoreg.errors import IntegrityError, OperationError

STRATEGIES = ["auto", "copy"]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def add(cache: Cache, data: bytes, part: Path | None = None) -> Path:
    """What a pull does: download into the part file (hashing as it goes), then commit."""
    digest = sha(data)
    part = part or cache.part_path(digest)
    part.write_bytes(data)
    return cache.commit(digest, len(data), part)


@pytest.fixture
def cache(tmp_path: Path) -> Cache:
    return Cache(tmp_path / "cache")


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_commit_then_place_round_trip(cache: Cache, tmp_path: Path, strategy: str) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)  # several chunks and a ragged end
    entry = add(cache, data)
    assert entry == cache.path(sha(data))
    assert stat.S_IMODE(entry.stat().st_mode) == 0o444
    assert not cache.part_path(sha(data)).exists()
    dest = tmp_path / "project" / "model.bin"
    assert cache.place(sha(data), len(data), dest, _strategy=strategy)
    assert dest.read_bytes() == data
    assert not [p for p in dest.parent.iterdir() if p.name.startswith(".")]  # no temp left


def test_place_creates_parents_and_replaces_existing(cache: Cache, tmp_path: Path) -> None:
    data = b"new content"
    add(cache, data)
    dest = tmp_path / "a" / "b" / "c" / "file.txt"
    assert cache.place(sha(data), len(data), dest)
    dest.write_bytes(b"old")
    assert cache.place(sha(data), len(data), dest)
    assert dest.read_bytes() == data


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_placed_file_is_the_users_to_change(cache: Cache, tmp_path: Path, strategy: str) -> None:
    data = os.urandom(100_000)
    add(cache, data)
    first, second = tmp_path / "one.bin", tmp_path / "two.bin"
    assert cache.place(sha(data), len(data), first, _strategy=strategy)
    assert os.access(first, os.W_OK)
    assert first.stat().st_ino != cache.path(sha(data)).stat().st_ino  # never a hard link
    with open(first, "r+b") as fh:
        fh.write(b"edited by the user")
    assert cache.place(sha(data), len(data), second, _strategy=strategy)
    assert second.read_bytes() == data
    assert cache.path(sha(data)).read_bytes() == data


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_corrupt_entry_is_removed_and_dest_untouched(cache: Cache, tmp_path: Path, strategy: str) -> None:
    data = os.urandom(50_000)
    entry = add(cache, data)
    entry.chmod(0o644)
    with open(entry, "r+b") as fh:
        fh.seek(1234)
        fh.write(bytes([data[1234] ^ 0xFF]))
    dest = tmp_path / "dest.bin"
    dest.write_bytes(b"previous version")
    assert not cache.place(sha(data), len(data), dest, _strategy=strategy)
    assert not entry.exists()
    assert dest.read_bytes() == b"previous version"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_truncated_entry_is_removed(cache: Cache, tmp_path: Path) -> None:
    data = b"x" * 1000
    entry = add(cache, data)
    entry.chmod(0o644)
    entry.write_bytes(data[:10])
    assert not cache.has(sha(data), len(data))
    assert not cache.place(sha(data), len(data), tmp_path / "d")
    assert not entry.exists() and not (tmp_path / "d").exists()


def test_missing_entry(cache: Cache, tmp_path: Path) -> None:
    assert not cache.place(sha(b"nothing"), 7, tmp_path / "d")
    assert not (tmp_path / "d").exists()
    assert not cache.has(sha(b"nothing"), 7)


def test_has(cache: Cache) -> None:
    data = b"hello"
    assert not cache.has(sha(data), 5)
    add(cache, data)
    assert cache.has(sha(data), 5)
    assert not cache.has(sha(data), 6)


@pytest.mark.parametrize("bad", ["", "abc", "A" * 64, "g" * 64, "a" * 65, "../" + "a" * 61])
def test_sha_is_validated(cache: Cache, bad: str) -> None:
    with pytest.raises(ValueError):
        cache.path(bad)
    with pytest.raises(ValueError):
        cache.has(bad, 1)


def test_commit_checks_the_size(cache: Cache) -> None:
    data = b"twelve bytes"
    part = cache.part_path(sha(data))
    part.write_bytes(data)
    with pytest.raises(IntegrityError):
        cache.commit(sha(data), len(data) + 1, part)
    assert not part.exists()
    assert not cache.has(sha(data), len(data))


def test_commit_keeps_an_existing_entry(cache: Cache, tmp_path: Path) -> None:
    data = b"same bytes"
    entry = add(cache, data)
    inode = entry.stat().st_ino
    again = tmp_path / "other.part"
    assert add(cache, data, part=again) == entry
    assert entry.stat().st_ino == inode
    assert not again.exists()


def test_info_counts(cache: Cache) -> None:
    assert cache.info() == CacheInfo(cache.root, 0, 0, None)
    for data in (b"a", b"bb", b"ccc"):
        add(cache, data)
    cache.part_path(sha(b"dddd")).write_bytes(b"dd")  # an unfinished download is not an entry
    assert cache.info() == CacheInfo(cache.root, 3, 6, None)
    assert Cache(cache.root, limit_bytes=10).info().limit_bytes == 10


def _age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_prune_by_age(cache: Cache) -> None:
    old, recent = b"old" * 10, b"recent"
    _age(add(cache, old), 10 * 86400)
    add(cache, recent)
    stale, fresh = cache.part_path(sha(b"s")), cache.part_path(sha(b"f"))
    stale.write_bytes(b"12345")
    fresh.write_bytes(b"123")
    _age(stale, 2 * 86400)
    assert cache.prune(older_than=7 * 86400) == (1, len(old) + 5)
    assert not cache.has(sha(old), len(old)) and cache.has(sha(recent), len(recent))
    assert not stale.exists() and fresh.exists()  # a pull may still be writing it


def test_prune_everything(cache: Cache) -> None:
    for data in (b"a", b"bb", b"ccc"):
        add(cache, data)
    assert cache.prune() == (3, 6)
    assert cache.info().entries == 0
    assert cache.prune() == (0, 0)
    assert Cache(cache.root / "never-created").prune() == (0, 0)


def test_size_limit_evicts_least_recently_used(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache", limit_bytes=250, evict_every=0)
    a, b, c = (bytes([n]) * 100 for n in range(3))
    _age(add(cache, a), 300)
    _age(add(cache, b), 200)
    # a is used again (place records it), so b is now the least recently used
    assert cache.place(sha(a), 100, tmp_path / "a.bin")
    add(cache, c)
    assert cache.has(sha(a), 100) and cache.has(sha(c), 100)
    assert not cache.has(sha(b), 100)
    assert cache.info().total_bytes == 200


def test_an_entry_larger_than_the_limit_is_kept_until_next_commit(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache", limit_bytes=50, evict_every=0)
    small, big = b"s" * 10, b"b" * 100
    _age(add(cache, small), 100)
    add(cache, big)
    assert cache.has(sha(big), 100) and not cache.has(sha(small), 10)


def test_concurrent_commits_and_places_of_one_sha(cache: Cache, tmp_path: Path) -> None:
    data = os.urandom(2 * 1024 * 1024)
    digest, n = sha(data), 8
    barrier, errors, placed = threading.Barrier(n), [], []

    def pull(i: int) -> None:
        try:
            part = tmp_path / "cache" / "tmp" / f"{digest}.{i}.part"  # each pull locks its own
            part.parent.mkdir(parents=True, exist_ok=True)
            part.write_bytes(data)
            barrier.wait()
            cache.commit(digest, len(data), part)
            dest = tmp_path / "out" / f"{i}.bin"
            placed.append(cache.place(digest, len(data), dest))
            assert dest.read_bytes() == data
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=pull, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and placed == [True] * n
    assert cache.info().entries == 1
    assert list((tmp_path / "cache" / "tmp").iterdir()) == []


def test_place_does_not_break_over_a_vanished_entry(cache: Cache, tmp_path: Path) -> None:
    data = b"evicted"
    add(cache, data)
    cache.prune()
    assert not cache.place(sha(data), len(data), tmp_path / "d")


def test_place_into_a_folder_is_refused(cache: Cache, tmp_path: Path) -> None:
    data = b"x"
    add(cache, data)
    (tmp_path / "dir").mkdir()
    with pytest.raises(OperationError, match="is a folder"):
        cache.place(sha(data), 1, tmp_path / "dir")


def test_unwritable_cache_fails_commit_clearly(cache: Cache, tmp_path: Path) -> None:
    """A cache that cannot take the entry (here a file squats the entries' folder, which even
    root cannot write through) fails with a clear error and leaves the part to the caller."""
    data = b"payload"
    part = cache.part_path(sha(data))
    part.write_bytes(data)
    (cache.root / "sha256").write_bytes(b"in the way")
    with pytest.raises(OperationError, match="cannot write to the download cache"):
        cache.commit(sha(data), len(data), part)
    assert part.read_bytes() == data and os.access(part, os.W_OK)  # still the caller's
    assert not Cache(cache.root).place(sha(data), len(data), tmp_path / "d")
    assert not (tmp_path / "d").exists()


def test_default_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TYCHOREG_CACHE_DIR", str(tmp_path / "elsewhere"))
    assert default_root() == tmp_path / "elsewhere" / "files"
    monkeypatch.delenv("TYCHOREG_CACHE_DIR")
    assert default_root().name == "files" and default_root().parent.name == "tychoreg"


def test_destination_write_error_names_the_path(cache: Cache, tmp_path: Path) -> None:
    data = b"x"
    add(cache, data)
    (tmp_path / "not-a-folder").write_bytes(b"")
    dest = tmp_path / "not-a-folder" / "f"
    with pytest.raises(OperationError, match=f"cannot write {dest}"):
        cache.place(sha(data), 1, dest)
    assert cache.has(sha(data), 1)  # the cache is not blamed


def test_cache_write_error_fails_commit_and_leaves_the_part(cache: Cache) -> None:
    data = b"payload"
    part = cache.part_path(sha(data))
    part.write_bytes(data)
    part.chmod(0o640)
    (cache.root / "sha256").write_bytes(b"")  # entries cannot be created below a file
    with pytest.raises(OperationError, match="cannot write to the download cache"):
        cache.commit(sha(data), len(data), part)
    assert part.read_bytes() == data and stat.S_IMODE(part.stat().st_mode) == 0o640
    assert not cache.has(sha(data), len(data)) and cache.info().entries == 0


def test_digest_memo_trusts_only_an_unchanged_settled_file(cache: Cache, tmp_path: Path) -> None:
    data = b"a" * 1000
    path = tmp_path / "f"
    path.write_bytes(data)
    cache.note_digest(path, sha(data))
    assert cache.known_digest(path) is None  # noted right after a change: racy, not trusted
    time.sleep(RACY + 0.2)
    cache.note_digest(path, sha(data))
    assert cache.known_digest(path) == sha(data)
    with open(path, "r+b") as fh:  # same size, other bytes
        fh.write(b"b")
    assert cache.known_digest(path) is None
    assert cache.known_digest(tmp_path / "missing") is None


def test_size_checks_are_spaced_out(tmp_path: Path) -> None:
    """Counting the cache scans it: a burst of commits checks the size once, not every time."""
    cache = Cache(tmp_path / "cache", limit_bytes=50, evict_every=3600)
    first, second = b"f" * 40, b"s" * 40
    add(cache, first)
    add(cache, second)  # within the spacing: the limit may be passed for a while
    assert cache.has(sha(first), 40) and cache.has(sha(second), 40)
    os.utime(cache.root / ".evicted", (1, 1))  # the spacing has passed
    add(cache, b"t" * 40)
    assert cache.info().entries == 1 and cache.has(sha(b"t" * 40), 40)  # the newest stays, the rest went


# -- a cache other accounts can write ------------------------------------------------------------


def test_adopted_file_is_copied_never_linked(cache: Cache, tmp_path: Path) -> None:
    """An entry is never the inode of a user's file: editing that file in place must not
    change the entry."""
    data = os.urandom(200_000)
    pulled = tmp_path / "project" / "model.bin"
    pulled.parent.mkdir()
    pulled.write_bytes(data)
    assert cache.adopt(sha(data), len(data), pulled)
    entry = cache.path(sha(data))
    assert entry.stat().st_ino != pulled.stat().st_ino and entry.stat().st_nlink == 1
    assert stat.S_IMODE(entry.stat().st_mode) == 0o444
    with open(pulled, "r+b") as fh:
        fh.write(b"edited in place")
    assert entry.read_bytes() == data
    assert [p.name for p in pulled.parent.iterdir()] == ["model.bin"]  # nothing left beside it


@pytest.mark.parametrize("how", ["writable by others", "second name", "another account's"])
def test_open_verified_reads_a_private_copy_of_an_entry_others_can_change(
    cache: Cache, tmp_path: Path, how: str
) -> None:
    """What was hashed is what is read, even if the entry's bytes change right after."""
    data = os.urandom(300_000)
    entry = add(cache, data)
    if how == "writable by others":
        entry.chmod(0o666)
    elif how == "second name":
        os.link(entry, tmp_path / "elsewhere")
    else:
        if os.geteuid() != 0:
            pytest.skip("giving a file to another account needs root")
        os.chown(entry, 23451, 23451)
    fh = cache.open_verified(sha(data), len(data))
    assert fh is not None
    with fh:
        assert os.fstat(fh.fileno()).st_ino != entry.stat().st_ino
        entry.chmod(0o644)
        with open(entry, "r+b") as evil:  # changed in place after the check
            evil.write(b"evil" * 100)
        assert fh.read() == data
    assert cache.open_verified(sha(data), len(data)) is None  # and now it is damaged: dropped
    assert not entry.exists()


def test_open_verified_hands_out_the_entry_it_hashed(cache: Cache) -> None:
    """A private entry is read in place, by the descriptor that was hashed: a file renamed over
    its name afterwards is not what gets read."""
    data = os.urandom(100_000)
    entry = add(cache, data)
    fh = cache.open_verified(sha(data), len(data))
    assert fh is not None
    with fh:
        assert os.fstat(fh.fileno()).st_ino == entry.stat().st_ino
        swapped = entry.with_name("swap")
        swapped.write_bytes(b"x" * len(data))
        os.replace(swapped, entry)
        assert fh.read() == data


@pytest.mark.parametrize("plant", ["fifo", "symlink", "folder"])
def test_non_files_at_an_entry_are_misses_that_never_hang(cache: Cache, tmp_path: Path, plant: str) -> None:
    data = b"the real bytes"
    entry = cache.path(sha(data))
    entry.parent.mkdir(parents=True)
    target = tmp_path / "elsewhere"
    target.write_bytes(data)  # even the right bytes, through a link, are not used
    {"fifo": lambda: os.mkfifo(entry), "symlink": lambda: os.symlink(target, entry), "folder": lambda: entry.mkdir()}[
        plant
    ]()
    assert not cache.has(sha(data), len(data))
    assert without_hanging(lambda: cache.open_verified(sha(data), len(data)), [entry]) is None
    assert not without_hanging(lambda: cache.place(sha(data), len(data), tmp_path / "dest"), [entry])
    assert not (tmp_path / "dest").exists()
    if plant != "folder":
        assert add(cache, data) == entry  # a download replaces what was planted
        assert stat.S_ISREG(entry.lstat().st_mode) and entry.read_bytes() == data
    assert target.read_bytes() == data


def test_commit_refuses_a_part_with_another_name(cache: Cache, tmp_path: Path) -> None:
    """A part hard-linked to some other file would make that file read-only and an entry."""
    data = b"payload"
    precious = tmp_path / "precious"
    precious.write_bytes(data)
    precious.chmod(0o644)
    part = cache.part_path(sha(data))
    os.link(precious, part)
    with pytest.raises(OperationError, match="not a file of yours alone"):
        cache.commit(sha(data), len(data), part)
    assert stat.S_IMODE(precious.stat().st_mode) == 0o644 and not cache.has(sha(data), len(data))


def test_part_files_live_in_a_private_folder(cache: Cache) -> None:
    part = cache.part_path(sha(b"x"))
    folder = cache.root / "tmp" / f"uid-{os.geteuid()}"
    st = folder.lstat()
    assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o700 and st.st_uid == os.geteuid()
    part.write_bytes(b"x")
    assert (folder / f"{sha(b'x')}.part").read_bytes() == b"x"


def test_private_folder_that_is_a_link_or_not_ours_is_refused(tmp_path: Path) -> None:
    elsewhere = tmp_path / "home"
    elsewhere.mkdir(mode=0o700)
    cache = Cache(tmp_path / "cache")
    (cache.root / "tmp").mkdir(parents=True)
    os.symlink(elsewhere, cache.root / "tmp" / f"uid-{os.geteuid()}")
    with pytest.raises(OperationError, match="not a private folder of yours"):
        cache.part_path(sha(b"x"))
    data = b"adopt me"
    src = tmp_path / "pulled"
    src.write_bytes(data)
    assert not cache.adopt(sha(data), len(data), src)  # no cache this time, and nothing written there
    assert list(elsewhere.iterdir()) == []
    if os.geteuid() == 0:
        os.unlink(cache.root / "tmp" / f"uid-{os.geteuid()}")
        theirs = cache.root / "tmp" / f"uid-{os.geteuid()}"
        theirs.mkdir(mode=0o777)
        os.chown(theirs, 23451, 23451)
        with pytest.raises(OperationError, match="belongs to uid 23451"):
            Cache(cache.root).part_path(sha(b"x"))
        assert list(theirs.iterdir()) == []


def settled_memo(cache: Cache, path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    time.sleep(RACY + 0.2)
    cache.note_digest(path, sha(data))
    assert cache.known_digest(path) == sha(data)
    return cache._digest_record(path)


def test_memo_others_can_write_is_not_believed(cache: Cache, tmp_path: Path) -> None:
    path = tmp_path / "f"
    memo = settled_memo(cache, path, b"a" * 100)
    memo.chmod(0o664)  # as in a setgid folder with umask 002
    assert cache.known_digest(path) is None
    memo.chmod(0o600)
    assert cache.known_digest(path) == sha(b"a" * 100)
    for folder in (memo.parent, memo.parent.parent):
        folder.chmod(0o777)
        assert cache.known_digest(path) is None
        folder.chmod(0o700)
    assert cache.known_digest(path) == sha(b"a" * 100)


def test_memo_of_another_account_or_about_its_file_is_not_believed(cache: Cache, tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("giving a file to another account needs root")
    path = tmp_path / "f"
    memo = settled_memo(cache, path, b"b" * 100)
    os.chown(memo, 23451, 23451)
    assert cache.known_digest(path) is None
    os.chown(memo, 0, 0)
    os.chown(memo.parent, 23451, 23451)
    assert cache.known_digest(path) is None
    os.chown(memo.parent, 0, 0)
    assert cache.known_digest(path) == sha(b"b" * 100)
    os.chown(path, 23451, 23451)  # the file itself may have been swapped for someone else's
    assert cache.known_digest(path) is None


def test_memo_that_is_a_fifo_or_a_link_is_ignored(cache: Cache, tmp_path: Path) -> None:
    path = tmp_path / "f"
    memo = settled_memo(cache, path, b"c" * 100)
    genuine = memo.read_bytes()
    memo.unlink()
    os.mkfifo(memo)
    assert without_hanging(lambda: cache.known_digest(path), [memo]) is None
    memo.unlink()
    (tmp_path / "forged").write_bytes(genuine)
    os.symlink(tmp_path / "forged", memo)
    assert cache.known_digest(path) is None


def without_hanging(call, fifos, seconds: float = 10.0):  # type: ignore[no-untyped-def]
    """``call()``'s result, failing (instead of hanging the suite) if it blocks on one of
    ``fifos``: after ``seconds`` their write ends are opened, which releases a blocked reader."""
    import threading

    outcome: list = []
    worker = threading.Thread(target=lambda: outcome.append(call()), daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        for fifo in fifos:
            with contextlib.suppress(OSError):
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        worker.join(seconds)
        pytest.fail(f"blocked on a FIFO for {seconds} s")
    assert outcome, "the call raised"
    return outcome[0]


def _grow(fd: int, data: bytes, follower, step: int = 1024 * 1024) -> None:
    """What a download does: write the bytes in order and say how many are hashed."""
    for at in range(0, len(data), step):
        os.pwrite(fd, data[at : at + step], at)
        follower.advance(fd, min(at + step, len(data)))


def test_a_follower_copies_a_download_into_the_cache_as_it_is_verified(cache: Cache, tmp_path: Path) -> None:
    """The copy a pull leaves in the cache is made while it downloads (no copy at the end): the
    entry holds exactly the bytes, is committed only by ``finish``, and never shares an inode
    with the pulled file."""
    data = os.urandom(5 * 1024 * 1024 + 7)
    follower = cache.follow(sha(data), len(data))
    assert follower is not None
    part = tmp_path / "download.part"
    with open(part, "w+b") as fh:
        _grow(fh.fileno(), data, follower)
        assert not cache.has(sha(data), len(data))  # nothing before the download is verified
    assert follower.finish()
    entry = cache.path(sha(data))
    assert entry.read_bytes() == data
    assert entry.stat().st_ino != part.stat().st_ino
    assert not list((cache.root / "tmp").rglob("*.adopt"))
    assert cache.follow(sha(data), len(data)) is None  # already there: nothing to follow


def test_a_follower_starts_again_when_the_download_does(cache: Cache, tmp_path: Path) -> None:
    """A resumed part file that turns out not to be a prefix of these bytes is downloaded again
    from the start: what was copied of it must not end up in the entry."""
    data = os.urandom(3 * 1024 * 1024)
    follower = cache.follow(sha(data), len(data))
    assert follower is not None
    with open(tmp_path / "download.part", "w+b") as fh:
        _grow(fh.fileno(), os.urandom(2 * 1024 * 1024), follower)  # the stale prefix
        time.sleep(0.2)  # let the copy take it
        os.ftruncate(fh.fileno(), 0)
        follower.advance(fh.fileno(), 0)
        _grow(fh.fileno(), data, follower)
    assert follower.finish()
    assert cache.path(sha(data)).read_bytes() == data


def test_an_abandoned_or_short_follow_leaves_no_entry(cache: Cache, tmp_path: Path) -> None:
    data = os.urandom(2 * 1024 * 1024)
    follower = cache.follow(sha(data), len(data))
    assert follower is not None
    with open(tmp_path / "download.part", "w+b") as fh:
        _grow(fh.fileno(), data[: 1024 * 1024], follower)
    follower.abandon()
    assert not cache.has(sha(data), len(data))
    # a file shorter than it should be (the copy finds its end early) is no entry either
    follower = cache.follow(sha(data), len(data))
    assert follower is not None
    with open(tmp_path / "short.part", "w+b") as fh:
        _grow(fh.fileno(), data[: 1024 * 1024], follower)
        assert not follower.finish()
    assert not cache.has(sha(data), len(data))
    assert not list((cache.root / "tmp").rglob("*.adopt"))


def test_a_pull_leaves_its_cache_copy_without_copying_at_the_end(tmp_path: Path, monkeypatch) -> None:
    """End to end: with the copy after the download made impossible, a pull still leaves its
    entry in the cache (the follower made it while downloading), and the entry is verified bytes."""
    from tychoreg import Registry
    from tychoreg.store.file import FileStore

    data = os.urandom(3 * 1024 * 1024 + 5)
    (tmp_path / "reg").mkdir()
    reg = Registry(FileStore(tmp_path / "reg"), outdir=tmp_path / "out", cache=Cache(tmp_path / "cache"))
    reg.init("narf", "narf.bin")
    src = tmp_path / "narf.bin"
    src.write_bytes(data)
    reg.push("narf", "1.0", src, promote_latest=True)
    monkeypatch.setattr(Cache, "adopt", lambda self, *a: pytest.fail("copied after the download"))
    reg.pull("narf", "latest")
    assert (tmp_path / "out" / "narf.bin").read_bytes() == data
    assert reg.cache is not None and reg.cache.path(sha(data)).read_bytes() == data
