"""``tycho.lock``: the exact versions and digests a project's declared packages resolved to.

Plain JSON with sorted keys, one entry per package, so it diffs well and merges by hand. The
lock records each declaration as it was when locked (``requested``, ``extract``): when the config
file's ``packages`` section no longer says the same, the lock is stale and ``sync --locked``
refuses it. The format is public; see docs/FORMAT.md.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from . import portable
from .config import Requirement, extract_problem, parse_document, read_document
from .errors import ConfigError, OperationError, UsageError
from .localfs import default_mode, fresh_temp
from .models import Resolved
from .names import check_package, clip, is_valid_segment, shown
from .selector import PackageSpec

FORMAT = 1
_SHA256 = re.compile(r"[0-9a-fA-F]{64}\Z")


@dataclass(frozen=True)
class Locked:
    """One package pinned: the version, its bytes' fingerprint, and the declaration it answers."""

    package: str
    version: str
    sha256: str | None
    size: int
    localname: str
    requested: str = "latest"
    extract: str | None = None
    #: Who signed it (the trusted signers' principals) and one such signature, where trust is
    #: configured: a later install checks it without asking the registry. Absent in older locks.
    signer: str | None = None
    signature: str | None = None

    @classmethod
    def of(cls, resolved: Resolved, requirement: Requirement) -> Locked:
        return cls(
            resolved.package,
            resolved.version,
            resolved.sha256,
            resolved.size,
            resolved.localname,
            requirement.version,
            str(requirement.extract) if requirement.extract is not None else None,
            resolved.signer,
            resolved.signature,
        )

    def answers(self, requirement: Requirement) -> bool:
        return self.describe() == requirement.describe()

    def describe(self) -> dict[str, str]:
        out = {"requested": self.requested}
        if self.extract is not None:
            out["extract"] = self.extract
        return out

    def to_object(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "version": self.version,
            "sha256": self.sha256,
            "size": self.size,
            "localname": self.localname,
            "requested": self.requested,
        }
        if self.extract is not None:
            out["extract"] = self.extract
        if self.signer is not None:
            out["signer"] = self.signer
        if self.signature is not None:
            out["signature"] = self.signature
        return out


def read(path: Path) -> dict[str, Locked] | None:
    """The lock's entries, or None when there is no lock file.

    A lock arrives with a cloned repository, so every field is checked before use: names and
    versions are names, the digest is 64 hex digits (upper case is accepted and lowered), and an
    ``extract`` folder stays inside the project (exit 2 otherwise, like a bad config). Anything
    else malformed, also JSON nested absurdly deep, is a damaged lock (exit 1).
    """
    try:
        data = parse_document(read_document(path))
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise _damaged(path, exc.strerror or str(exc)) from None
    except ValueError as exc:  # also UnicodeDecodeError and json.JSONDecodeError
        raise _damaged(path, clip(exc, 160)) from None
    packages = data.get("packages") if isinstance(data, dict) else None
    if not isinstance(packages, dict):
        raise _damaged(path, "no 'packages' object")
    found: dict[str, Locked] = {}
    for name, entry in packages.items():
        try:
            sha, extract = entry.get("sha256"), entry.get("extract")
            locked = Locked(
                name,
                entry["version"],
                sha,
                entry["size"],
                entry["localname"],
                entry.get("requested", "latest"),
                extract,
                entry.get("signer"),
                entry.get("signature"),
            )
        except (AttributeError, KeyError, TypeError):
            raise _damaged(path, f"entry {shown(name)} lacks version, size or localname") from None
        if isinstance(sha, str) and _SHA256.match(sha):
            locked = replace(locked, sha256=sha.lower())
        elif sha is not None:
            raise _damaged(path, f"entry {shown(name)} has a sha256 that is not 64 hexadecimal digits")
        if not (
            is_valid_segment(name)
            and is_valid_segment(locked.version)
            and is_valid_segment(locked.localname)
            and isinstance(locked.size, int)
            and not isinstance(locked.size, bool)
            and 0 <= locked.size < 2**63
            and isinstance(locked.requested, str)
            and (extract is None or isinstance(extract, str))
            and (locked.signer is None or (isinstance(locked.signer, str) and len(locked.signer) <= 4096))
            and (locked.signature is None or (isinstance(locked.signature, str) and len(locked.signature) <= 16384))
        ):
            raise _damaged(path, f"entry {shown(name)} has an invalid field")
        problem = extract_problem(extract) if extract is not None else None
        if problem:
            raise ConfigError(
                f"{clip(path)}: package {name} would be extracted to {shown(extract, 200)}: {problem}",
                f"extract folders must be relative paths inside {clip(os.path.abspath(path.parent))}",
                reason="lock-extract",
                package=name,
                lockfile=path,
            )
        found[name] = locked
    return found


def write(path: Path, entries: dict[str, Locked], registry: str) -> None:
    """Replace the lock atomically (a reader sees the old lock or the new one)."""
    body = {
        "format": FORMAT,
        "registry": registry,
        "packages": {name: entries[name].to_object() for name in sorted(entries)},
    }
    tmp: Path | None = None
    try:
        fh, tmp = fresh_temp(path)  # never written through anything planted at its name
        with fh:
            fh.write((json.dumps(body, indent=2, sort_keys=True) + "\n").encode())
            portable.fchmod(fh.fileno(), default_mode())
        os.replace(tmp, path)
    except OSError as exc:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        raise OperationError(
            f"cannot write {path}: {exc.strerror or exc}", "check the project folder's permissions"
        ) from None


def mismatches(entries: dict[str, Locked], declared: dict[str, Requirement]) -> list[str]:
    """Why the lock does not answer the declarations (empty when it does)."""
    problems = [f"{n} is declared but not locked" for n in sorted(set(declared) - set(entries))]
    problems += [f"{n} is locked but no longer declared" for n in sorted(set(entries) - set(declared))]
    for name in sorted(set(declared) & set(entries)):
        if not entries[name].answers(declared[name]):
            was, now = entries[name].describe(), declared[name].describe()
            problems.append(f"{name} was locked for {clip(was)} but is now declared as {clip(now)}")
    return problems


def _damaged(path: Path, why: str) -> OperationError:
    return OperationError(
        f"{clip(path)} is damaged: {why}", "restore it from version control", reason="lock-damaged", lockfile=path
    )


def read_pull_list(path: Path) -> tuple[list[PackageSpec], dict[str, Locked] | None]:
    """What a pull list names: a lock file (exact versions) or a list of packages, one per line
    (``PKG`` or ``PKG@SELECTOR``; ``#`` starts a comment). Returns (packages, lock entries or None)."""

    def unreadable(exc: OSError | ValueError) -> UsageError:
        why = exc.strerror if isinstance(exc, OSError) else None
        return UsageError(
            f"cannot read {clip(path)}: {why or clip(exc, 160)}",
            "give a tycho.lock or a text file with one package name per line",
        )

    try:
        head = read_document(path, head=4096)
    except (OSError, ValueError) as exc:
        raise unreadable(exc) from None
    if head.lstrip().startswith(("{", "[")):  # JSON: a lock (no package name starts with either)
        return [], read(path)
    try:
        text = read_document(path)
    except (OSError, ValueError) as exc:  # also UnicodeDecodeError
        raise unreadable(exc) from None
    names = [line.split("#", 1)[0].strip() for line in text.splitlines()]
    specs = [PackageSpec.parse(n) for n in names if n]
    for spec in specs:
        check_package(spec.package)
    return specs, None
