"""Signed versions (docs/FORMAT.md, "Signatures"): what is signed, where signatures are kept, and
whether a version's signatures satisfy the trusted signers.

What is signed is a *statement* (:func:`statement`): package, version, size and SHA-256 of the
version's bytes, never the mutable ``tycho.json``. Signatures are SSH signatures
(:mod:`tychoreg.sshsig`) kept beside the record, one object per key and digest:
``PKG/.tycho/signatures/VERSION/SHA256.KEYID.sig``. A version may carry several.

The check (:func:`check`) runs where a pull resolves what a version's bytes must be
(:func:`tychoreg.fetch.expected_for`), so every reading command gets it: a version is signed when
at least one of its signatures for its bytes verifies with a key the trusted signers admit now;
a signature that does not verify, or whose key is not trusted, expired or revoked, is an error
(nothing is written); a version without any is a warning, or an error where signatures are
required. A version pushed without a record (0.4.0) takes its SHA-256 from a trusted signature,
and its bytes are then verified against it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeVar

from . import layout, sshsig
from .errors import ConfigError, IntegrityError, OperationError, SignatureError, StorageError, UsageError
from .names import clip
from .store import ObjectNotFound, PreconditionFailed, Store

#: The first line of every statement; a later format would change it.
STATEMENT_HEADER = "tychoreg-signed-version 1"
_T = TypeVar("_T")


def statement(package: str, version: str, size: int, sha256: str) -> bytes:
    """The exact bytes a signature of a version signs (names are already restricted to
    ``A-Z a-z 0-9 . _ + -``, so nothing needs escaping)."""
    return (f"{STATEMENT_HEADER}\npackage {package}\nversion {version}\nsize {size}\nsha256 {sha256.lower()}\n").encode(
        "ascii"
    )


@dataclass(frozen=True)
class Trust:
    """Whom to believe: the ``allowed_signers`` lines, the revoked keys, and whether every version
    must be signed."""

    signers: tuple[sshsig.AllowedSigner, ...]
    source: Path
    revoked: frozenset[bytes] = frozenset()
    required: bool = False

    @classmethod
    def load(cls, trusted: Path, *, revoked: Path | None = None, required: bool = False) -> Trust:
        """Read the files the configuration names; :class:`ConfigError` when they cannot be used
        (a missing trust file must not quietly turn verification off)."""
        signers = _read(trusted, "tycho.trusted_signers", sshsig.parse_allowed_signers)
        gone = _read(revoked, "tycho.revoked_signers", sshsig.parse_revoked) if revoked else set()
        return cls(tuple(signers), trusted, frozenset(gone), required)


def _read(path: Path, setting: str, parse: Callable[[str], _T]) -> _T:
    from .config import read_document  # noqa: PLC0415 - config is loaded already; keeps this module's imports light

    try:
        text = read_document(path)
    except OSError as exc:
        raise ConfigError(f"cannot read {setting} file {clip(path)}: {exc.strerror or exc}") from None
    except ValueError as exc:  # also UnicodeDecodeError
        raise ConfigError(f"cannot read {setting} file {clip(path)}: {clip(exc, 160)}") from None
    try:
        return parse(text)
    except ValueError as exc:
        raise ConfigError(f"{setting} file {clip(path)} is not valid: {clip(exc, 200)}") from None


@dataclass(frozen=True)
class Signed:
    """What the trusted signers say of one version: ``signed`` (by ``signers``, whose keys are
    ``fingerprints``; ``armored`` is one of those signatures, for a lock file) or ``unsigned``.
    ``sha256`` is the digest the trusted signatures vouch for."""

    state: Literal["signed", "unsigned"]
    signers: tuple[str, ...] = ()
    fingerprints: tuple[str, ...] = ()
    sha256: str | None = None
    armored: str | None = None

    @property
    def signer(self) -> str | None:
        return ", ".join(self.signers) if self.signers else None


def check(store: Store, package: str, version: str, size: int, sha256: str | None, trust: Trust) -> Signed:
    """Judge the signatures of ``version`` (``size`` bytes hashing to ``sha256``; None for a
    version without a record, whose digest then comes from its signatures).

    Raises :class:`SignatureError` (``signature-invalid``) when a signature for these bytes
    does not verify with a trusted key and none does, or (``unsigned``) when there is none and
    signatures are required; :class:`IntegrityError` when trusted signatures of a version
    without a record name different digests."""
    found = []
    for info in store.list(layout.signatures_of(package, version)):
        named = layout.signature_name(package, info.key)
        if named is None or named[0] != version or (sha256 is not None and named[1] != sha256):
            continue  # another version's folder, or a signature of bytes this version had before
        found.append((info.key, named[1]))
    trusted: list[tuple[sshsig.Verdict, str, str]] = []
    problems: list[str] = []
    for key, digest in found:
        try:
            raw, _ = store.get(key)
        except ObjectNotFound:
            continue  # removed since the listing
        try:
            verdict = sshsig.judge(statement(package, version, size, digest), raw, list(trust.signers), trust.revoked)
        except sshsig.BadSignature as exc:
            problems.append(f"a signature does not verify ({exc})")
            continue
        if verdict.trusted:
            trusted.append((verdict, digest, raw.decode("ascii")))
        else:
            problems.append(verdict.problem or f"the key {verdict.fingerprint} is not trusted")
    if trusted:
        digests = {d for _, d, _ in trusted}
        if len(digests) > 1:
            raise IntegrityError(
                f"{package} {version} carries trusted signatures for different bytes (sha256 "
                + ", ".join(sorted(digests))
                + ")",
                reason="signature-invalid",
                package=package,
                version=version,
            )
        return Signed(
            "signed",
            tuple(dict.fromkeys(v.principals or "" for v, _, _ in trusted)),
            tuple(dict.fromkeys(v.fingerprint for v, _, _ in trusted)),
            digests.pop(),
            trusted[0][2],
        )
    if problems:
        raise SignatureError(
            package,
            version,
            "has no valid trusted signature: " + "; ".join(dict.fromkeys(problems)),
            reason="signature-invalid",
        )
    if trust.required:
        what = "is not signed" if sha256 is not None or not found else "has no signature"
        raise SignatureError(package, version, f"{what}, and signatures are required", reason="unsigned")
    return Signed("unsigned")


def check_pinned(package: str, version: str, size: int, sha256: str, armored: str, trust: Trust) -> Signed | None:
    """A signature a lock file recorded, checked without the registry: the :class:`Signed` when
    it verifies with a key trusted now, else None (then the registry is asked)."""
    try:
        verdict = sshsig.judge(statement(package, version, size, sha256), armored, list(trust.signers), trust.revoked)
    except sshsig.BadSignature:
        return None
    if not verdict.trusted:
        return None
    return Signed("signed", (verdict.principals or "",), (verdict.fingerprint,), sha256, armored)


@dataclass(frozen=True)
class SignResult:
    """A signature made (``added``) or found already there, by the key ``fingerprint``."""

    package: str
    version: str
    sha256: str
    fingerprint: str
    key: str
    added: bool


def sign(store: Store, package: str, version: str, size: int, sha256: str, key: Path) -> SignResult:
    """Sign ``version``'s statement with ``key`` and store the signature beside its record
    (create-if-absent: a signature by the same key that still verifies is kept)."""
    message = statement(package, version, size, sha256)
    try:
        armored = sshsig.sign(message, key)
    except sshsig.SigningFailed as exc:
        raise OperationError(
            f"could not sign {package} {version}: {exc}", reason="signing-failed", package=package, version=version
        ) from None
    sig = sshsig.parse(armored)
    where = layout.signature(package, version, sha256, sshsig.key_id(sig.public_key))
    body = armored.encode("ascii")
    try:
        store.put_if_absent(where, body)
        return SignResult(package, version, sha256, sig.fingerprint, where, True)
    except PreconditionFailed:
        pass
    raw, etag = store.get(where)
    try:
        if sshsig.verify(message, raw).public_key == sig.public_key:
            return SignResult(package, version, sha256, sig.fingerprint, where, False)
    except sshsig.BadSignature:
        pass  # damaged or planted: replaced by ours, only if unchanged since we read it
    store.put_if_match(where, body, etag)
    return SignResult(package, version, sha256, sig.fingerprint, where, True)


def forget(store: Store, package: str, version: str, sha256: str) -> None:
    """Remove the signatures of ``version``'s bytes ``sha256`` (after the version was deleted);
    best effort: left behind, they name bytes no record has and are never looked at."""
    try:
        for info in list(store.list(layout.signatures_of(package, version))):
            named = layout.signature_name(package, info.key)
            if named is not None and named[0] == version and named[1] == sha256:
                store.delete(info.key)
    except StorageError:
        pass


def key_path(key: str | os.PathLike[str]) -> Path:
    """A signing key named on the command line: it must be a readable file (checked before any
    request, so a typo costs no upload)."""
    path = Path(key).expanduser()
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise UsageError(
            f"cannot read the signing key {clip(path)}: {exc.strerror or exc}",
            "name an SSH private key file, or a public key whose private half ssh-agent holds",
            reason="no-signing-key",
        ) from None
    return path
