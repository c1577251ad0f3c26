"""SSH signatures (``ssh-keygen -Y sign``, OpenSSH's PROTOCOL.sshsig) and ``allowed_signers`` files.

Verification happens here, in Python, with the ``cryptography`` package: a machine that pulls
needs no OpenSSH. It covers the key types ``ssh-keygen`` signs with by default (``ssh-ed25519``,
``ssh-rsa`` with ``rsa-sha2-256``/``-512``, ``ecdsa-sha2-nistp256``/``384``/``521``); FIDO keys
(``sk-*``) and certificates are not verified (a ``cert-authority`` line trusts nothing here).
Signing runs ``ssh-keygen -Y sign``, which reads encrypted keys, asks for their passphrase on the
terminal and uses keys held by ``ssh-agent`` or hardware tokens; nothing of a private key ever
passes through this process.

The ``allowed_signers`` semantics follow ssh-keygen(1), section ALLOWED SIGNERS: each line names
principals, options (``namespaces=``, ``valid-after=``, ``valid-before=``, ``cert-authority``)
and a public key. As ``ssh-keygen -Y find-principals`` does, the signer of a signature is the
principals field of every line whose key made it and whose options admit it now.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

#: The signature namespace of everything tychoreg signs (``ssh-keygen -n tychoreg``).
NAMESPACE = "tychoreg"
#: An armored signature larger than this is not one of ours (RSA-16384 is under 6 KiB).
MAX_ARMORED = 16 * 1024
_BEGIN = "-----BEGIN SSH SIGNATURE-----"
_END = "-----END SSH SIGNATURE-----"
_HASHES = {"sha256": hashlib.sha256, "sha512": hashlib.sha512}
#: Key types verified here, and the names ``allowed_signers`` lines give them.
KEY_TYPES = frozenset({"ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521"})
_SIGNING_TIMEOUT = 600


class BadSignature(ValueError):
    """The signature is malformed, of another namespace, or does not match the message."""


class SigningFailed(RuntimeError):
    """``ssh-keygen -Y sign`` could not be run or did not sign."""


# -- the wire format -------------------------------------------------------------------------
def _string(buf: bytes, pos: int) -> tuple[bytes, int]:
    if pos + 4 > len(buf):
        raise BadSignature("truncated")
    size = int.from_bytes(buf[pos : pos + 4], "big")
    end = pos + 4 + size
    if end > len(buf):
        raise BadSignature("truncated")
    return buf[pos + 4 : end], end


def _put(data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + data


@dataclass(frozen=True)
class Signature:
    """One parsed SSHSIG blob."""

    public_key: bytes
    namespace: str
    hash_alg: str
    signature: bytes

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.public_key)

    @property
    def key_type(self) -> str:
        return key_type(self.public_key)


def fingerprint(key_blob: bytes) -> str:
    """A public key's fingerprint as ``ssh-keygen -l`` prints it (``SHA256:...``)."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(key_blob).digest()).decode().rstrip("=")


def key_id(key_blob: bytes) -> str:
    """A public key's fingerprint in hexadecimal, for names of stored objects."""
    return hashlib.sha256(key_blob).hexdigest()


def key_type(key_blob: bytes) -> str:
    try:
        name, _ = _string(key_blob, 0)
        return name.decode("ascii")
    except (BadSignature, UnicodeDecodeError):
        return "?"


def parse(armored: str | bytes) -> Signature:
    """Parse an armored SSH signature (as ``ssh-keygen -Y sign`` writes it); :class:`BadSignature`
    when it is not one."""
    if len(armored) > MAX_ARMORED:
        raise BadSignature("too large to be an SSH signature")
    try:
        text = armored.decode("ascii") if isinstance(armored, bytes) else armored
    except UnicodeDecodeError:
        raise BadSignature("not ASCII") from None
    lines = [line.strip() for line in text.strip().splitlines()]
    if len(lines) < 3 or lines[0] != _BEGIN or lines[-1] != _END:
        raise BadSignature("not an armored SSH signature")
    try:
        raw = base64.b64decode("".join(lines[1:-1]), validate=True)
    except (binascii.Error, ValueError):
        raise BadSignature("its base64 is damaged") from None
    if raw[:6] != b"SSHSIG" or len(raw) < 10:
        raise BadSignature("no SSHSIG preamble")
    if int.from_bytes(raw[6:10], "big") != 1:
        raise BadSignature("unknown SSHSIG version")
    pos = 10
    public_key, pos = _string(raw, pos)
    namespace, pos = _string(raw, pos)
    _reserved, pos = _string(raw, pos)
    hash_alg, pos = _string(raw, pos)
    signature, pos = _string(raw, pos)
    if pos != len(raw):
        raise BadSignature("trailing bytes")
    try:
        return Signature(public_key, namespace.decode("ascii"), hash_alg.decode("ascii"), signature)
    except UnicodeDecodeError:
        raise BadSignature("namespace or hash algorithm is not ASCII") from None


def signed_data(message: bytes, namespace: str, hash_alg: str) -> bytes:
    """What the key signs for ``message`` (PROTOCOL.sshsig: the preamble, namespace, reserved,
    hash algorithm and the message's hash)."""
    digest = _HASHES[hash_alg](message).digest()
    return b"SSHSIG" + _put(namespace.encode()) + _put(b"") + _put(hash_alg.encode()) + _put(digest)


def verify(message: bytes, armored: str | bytes, namespace: str = NAMESPACE) -> Signature:
    """Check that ``armored`` is a signature of ``message`` in ``namespace`` by the key it
    embeds (``ssh-keygen -Y check-novalidate``); returns it. Whether that key is trusted is
    :func:`judge`'s question. Raises :class:`BadSignature`."""
    sig = parse(armored)
    if sig.namespace != namespace:
        raise BadSignature(f"it was made for namespace {sig.namespace!r}, not {namespace!r}")
    if sig.hash_alg not in _HASHES:
        raise BadSignature(f"unsupported hash algorithm {sig.hash_alg!r}")
    _check(sig.public_key, sig.signature, signed_data(message, namespace, sig.hash_alg))
    return sig


def _check(key_blob: bytes, sig_blob: bytes, data: bytes) -> None:
    # cryptography: ~25 ms to import, needed only where signatures are checked
    from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm  # noqa: PLC0415 - see above
    from cryptography.hazmat.primitives import hashes  # noqa: PLC0415 - see above
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa  # noqa: PLC0415 - see above
    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature  # noqa: PLC0415 - see above
    from cryptography.hazmat.primitives.serialization import load_ssh_public_key  # noqa: PLC0415 - see above

    kind = key_type(key_blob)
    if kind not in KEY_TYPES:
        raise BadSignature(f"keys of type {kind!r} are not supported")
    try:
        key = load_ssh_public_key(kind.encode() + b" " + base64.b64encode(key_blob))
    except (ValueError, UnsupportedAlgorithm):
        raise BadSignature("its public key is malformed") from None
    alg, pos = _string(sig_blob, 0)
    raw, pos = _string(sig_blob, pos)
    if pos != len(sig_blob):
        raise BadSignature("trailing bytes in the signature")
    try:
        if isinstance(key, ed25519.Ed25519PublicKey) and alg == b"ssh-ed25519":
            key.verify(raw, data)
        elif isinstance(key, rsa.RSAPublicKey) and alg in (b"rsa-sha2-256", b"rsa-sha2-512"):
            if key.key_size < 1024:
                raise BadSignature("the RSA key is shorter than 1024 bits")
            hash_: hashes.HashAlgorithm = hashes.SHA512() if alg == b"rsa-sha2-512" else hashes.SHA256()
            key.verify(raw, data, padding.PKCS1v15(), hash_)
        elif isinstance(key, ec.EllipticCurvePublicKey) and alg.decode(errors="replace") == kind:
            r, at = _string(raw, 0)
            s, at = _string(raw, at)
            if at != len(raw):
                raise BadSignature("trailing bytes in the ECDSA signature")
            curve_hash: hashes.HashAlgorithm = {256: hashes.SHA256(), 384: hashes.SHA384()}.get(
                key.curve.key_size, hashes.SHA512()
            )
            der = encode_dss_signature(int.from_bytes(r, "big"), int.from_bytes(s, "big"))
            key.verify(der, data, ec.ECDSA(curve_hash))
        else:
            raise BadSignature(f"signature algorithm {alg.decode(errors='replace')!r} does not fit a {kind} key")
    except InvalidSignature:
        raise BadSignature("it does not match what was signed") from None


# -- allowed_signers -------------------------------------------------------------------------
@dataclass(frozen=True)
class AllowedSigner:
    """One line of an ``allowed_signers`` file."""

    principals: str
    key: bytes
    line: int
    namespaces: str | None = None
    valid_after: datetime | None = None
    valid_before: datetime | None = None
    cert_authority: bool = False


def parse_key(text: str) -> bytes:
    """``TYPE BASE64 [comment]`` (an OpenSSH public key line) to the key's blob; ``ValueError``."""
    parts = text.split()
    if len(parts) < 2:
        raise ValueError("expected a key type and a base64 key")
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("the key's base64 is damaged") from None
    if key_type(blob) != parts[0]:
        raise ValueError(f"the key is not of the type its line names ({parts[0][:40]})")
    return blob


def _token(text: str) -> tuple[str, str]:
    """The first field of ``text`` (double quotes keep spaces) and the rest, stripped."""
    quoted = False
    for i, ch in enumerate(text):
        if ch == '"':
            quoted = not quoted
        elif ch in " \t" and not quoted:
            return text[:i], text[i:].lstrip(" \t")
    if quoted:
        raise ValueError("a double quote is not closed")
    return text, ""


def _time(value: str) -> datetime:
    """OpenSSH's ``YYYYMMDD[Z]`` / ``YYYYMMDDHHMM[SS][Z]``: UTC with ``Z``, else local time."""
    utc = value.endswith(("Z", "z"))
    digits = value[:-1] if utc else value
    formats = {8: "%Y%m%d", 12: "%Y%m%d%H%M", 14: "%Y%m%d%H%M%S"}
    if not digits.isdigit() or len(digits) not in formats:
        raise ValueError(f"invalid time {value[:40]!r} (YYYYMMDD[Z] or YYYYMMDDHHMM[SS][Z])")
    when = datetime.strptime(digits, formats[len(digits)])
    return when.replace(tzinfo=timezone.utc) if utc else when.astimezone()


def _options(text: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for item in re.findall(r'(?:[^,"]|"[^"]*")+', text):
        name, eq, value = item.partition("=")
        name = name.lower()
        if name == "cert-authority" and not eq:
            found[name] = ""
            continue
        if name not in ("namespaces", "valid-after", "valid-before") or not eq:
            raise ValueError(f"unknown option {name[:40]!r}")
        if name in found:
            raise ValueError(f"option {name} given twice")
        found[name] = value[1:-1] if len(value) >= 2 and value[0] == value[-1] == '"' else value
    return found


def parse_allowed_signers(text: str) -> list[AllowedSigner]:
    """Every line of an ``allowed_signers`` file; ``ValueError`` naming the first bad line (by
    number: the file's text is never repeated)."""
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip(" \t\r")
        if not line or line.startswith("#"):
            continue
        try:
            if line.startswith('"'):
                end = line.find('"', 1)
                if end < 0:
                    raise ValueError("a double quote is not closed")
                principals, rest = line[1:end], line[end + 1 :].lstrip(" \t")
            else:
                principals, rest = _token(line)
            if not principals or not rest:
                raise ValueError("expected principals, options and a public key")
            first, after = _token(rest)
            options: dict[str, str] = {}
            if first not in KEY_TYPES and not first.startswith(("ssh-", "ecdsa-", "sk-")):
                options, rest = _options(first), after
            found.append(
                AllowedSigner(
                    principals,
                    parse_key(rest),
                    number,
                    options.get("namespaces"),
                    _time(options["valid-after"]) if "valid-after" in options else None,
                    _time(options["valid-before"]) if "valid-before" in options else None,
                    "cert-authority" in options,
                )
            )
        except ValueError as exc:
            raise ValueError(f"line {number}: {exc}") from None
    return found


def parse_revoked(text: str) -> set[bytes]:
    """A revocation list as ``ssh-keygen -Y verify -r`` reads it in its plain form: one public
    key per line (``#`` comments). KRLs (binary) are refused with ``ValueError``."""
    if text.startswith("SSHKRL"):
        raise ValueError("binary KRL files are not supported: list the revoked public keys, one per line")
    revoked = set()
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if line and not line.startswith("#"):
            try:
                revoked.add(parse_key(line))
            except ValueError as exc:
                raise ValueError(f"line {number}: {exc}") from None
    return revoked


def _glob(pattern: str, text: str) -> bool:
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, text, re.DOTALL) is not None


def match_pattern_list(patterns: str, text: str) -> bool:
    """ssh_config(5) PATTERNS: comma-separated globs, ``!`` negates (a negated match wins)."""
    matched = False
    for pattern in patterns.split(","):
        if pattern.startswith("!"):
            if _glob(pattern[1:], text):
                return False
        elif _glob(pattern, text):
            matched = True
    return matched


@dataclass(frozen=True)
class Verdict:
    """Whom a signature is from, as the trusted signers see it. ``principals`` is set when it is
    trusted; else ``problem`` says why not."""

    fingerprint: str
    principals: str | None = None
    problem: str | None = None

    @property
    def trusted(self) -> bool:
        return self.principals is not None


def judge(
    message: bytes,
    armored: str | bytes,
    signers: list[AllowedSigner],
    revoked: set[bytes] | frozenset[bytes] = frozenset(),
    *,
    now: datetime | None = None,
    namespace: str = NAMESPACE,
) -> Verdict:
    """Is ``armored`` a valid signature of ``message`` by a key the ``allowed_signers`` lines
    admit now (``ssh-keygen -Y find-principals`` then ``-Y verify``)? :class:`BadSignature` when
    it is no valid signature at all; a :class:`Verdict` otherwise."""
    sig = verify(message, armored, namespace)
    fp = sig.fingerprint
    if sig.public_key in revoked:
        return Verdict(fp, problem=f"the key {fp} is revoked")
    now = now or datetime.now(timezone.utc)
    lines = [s for s in signers if s.key == sig.public_key and not s.cert_authority]
    if not lines:
        return Verdict(fp, problem=f"the key {fp} is not a trusted signer")
    principals, why = [], []
    for line in lines:
        if line.namespaces is not None and not match_pattern_list(line.namespaces, namespace):
            why.append(f"the trusted signers admit {fp} only for namespaces {line.namespaces!r}")
        elif line.valid_before is not None and now > line.valid_before:
            why.append(f"the key {fp} of {line.principals} expired on {line.valid_before.isoformat()}")
        elif line.valid_after is not None and now < line.valid_after:
            why.append(f"the key {fp} of {line.principals} is valid only after {line.valid_after.isoformat()}")
        else:
            principals.append(line.principals)
    if principals:
        return Verdict(fp, ",".join(dict.fromkeys(principals)))
    return Verdict(fp, problem="; ".join(why))


# -- signing ---------------------------------------------------------------------------------
def sign(message: bytes, key: Path, namespace: str = NAMESPACE) -> str:
    """Sign ``message`` with ``ssh-keygen -Y sign -f KEY -n NAMESPACE`` (a private key file, or a
    public key whose private half ``ssh-agent`` holds); returns the armored signature, checked.

    The message goes in a file of a private temporary folder, not on standard input: without a
    terminal, ssh-keygen reads an encrypted key's passphrase from standard input, which then
    gets the user's (on a terminal) or nothing (in a script: it fails at once, never hangs).

    Raises :class:`SigningFailed`."""
    exe = shutil.which("ssh-keygen")
    if exe is None:
        raise SigningFailed("ssh-keygen (OpenSSH) is needed to sign and was not found")
    with tempfile.TemporaryDirectory(prefix="tychoreg-sign-") as folder:
        statement = Path(folder) / "statement"
        statement.write_bytes(message)
        try:
            proc = subprocess.run(
                [exe, "-q", "-Y", "sign", "-f", str(key), "-n", namespace, str(statement)],
                stdin=None if sys.stdin is not None and sys.stdin.isatty() else subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                timeout=_SIGNING_TIMEOUT,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise SigningFailed(f"ssh-keygen could not sign: {exc}") from None
        said = [line for line in proc.stderr.decode(errors="replace").splitlines() if line.strip()]
        produced = statement.with_name("statement.sig")
        if proc.returncode != 0 or not produced.exists():
            last = said[-1] if said else f"exit {proc.returncode}"
            raise SigningFailed(f"ssh-keygen could not sign with {key}: {last}")
        armored = produced.read_text("ascii", errors="replace")
    try:
        verify(message, armored, namespace)
    except BadSignature as exc:
        raise SigningFailed(f"ssh-keygen made a signature tychoreg cannot verify: {exc}") from None
    return armored.strip() + "\n"
