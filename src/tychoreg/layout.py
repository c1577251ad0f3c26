"""Where each piece of a package lives in the store (see docs/FORMAT.md).

0.4.0's two kinds of keys are kept exactly: ``PKG/tycho.json`` and ``PKG/tycho_VERSION.pkg``.
Everything tychoreg adds lives under ``PKG/.tycho/``, which 0.4.0 never lists (it looks only at
``PKG/tycho_*`` keys and at top-level folders), and which no valid name can collide with because
names never start with a dot.
"""

from __future__ import annotations

from .store.snapshot import PACKAGE_INDEX as _PACKAGE_INDEX
from .store.snapshot import ROOT_INDEX as _ROOT_INDEX

PACKAGE_DOC = "tycho.json"
DATA_PREFIX = "tycho_"
DATA_SUFFIX = ".pkg"
RECORDS = ".tycho/versions/"
RECORD_SUFFIX = ".json"
CATALOG = ".tycho/index.json"


def package_doc(package: str) -> str:
    return f"{package}/{PACKAGE_DOC}"


def data(package: str, version: str) -> str:
    return f"{package}/{DATA_PREFIX}{version}{DATA_SUFFIX}"


def data_prefix(package: str) -> str:
    return f"{package}/{DATA_PREFIX}"


def record(package: str, version: str) -> str:
    return f"{package}/{RECORDS}{version}{RECORD_SUFFIX}"


def catalog(package: str) -> str:
    return f"{package}/{CATALOG}"


def records_prefix(package: str) -> str:
    return f"{package}/{RECORDS}"


def version_of_data(package: str, key: str) -> str | None:
    """The version a data key holds, or None when the key is not one."""
    head = data_prefix(package)
    if key.startswith(head) and key.endswith(DATA_SUFFIX) and "/" not in key[len(head) :]:
        return key[len(head) : -len(DATA_SUFFIX)] or None
    return None


def version_of_record(package: str, key: str) -> str | None:
    head = records_prefix(package)
    if key.startswith(head) and key.endswith(RECORD_SUFFIX) and "/" not in key[len(head) :]:
        return key[len(head) : -len(RECORD_SUFFIX)] or None
    return None


# -- signatures (docs/FORMAT.md, "Signatures") ---------------------------------------------
SIGNATURES = ".tycho/signatures/"
SIGNATURE_SUFFIX = ".sig"


def signatures_prefix(package: str) -> str:
    return f"{package}/{SIGNATURES}"


def signatures_of(package: str, version: str) -> str:
    return f"{package}/{SIGNATURES}{version}/"


def signature(package: str, version: str, sha256: str, key_id: str) -> str:
    """One signature of ``version``'s bytes (``sha256``) by the key ``key_id`` (hex SHA-256 of the
    public key blob)."""
    return f"{package}/{SIGNATURES}{version}/{sha256}.{key_id}{SIGNATURE_SUFFIX}"


def signature_name(package: str, key: str) -> tuple[str, str, str] | None:
    """(version, sha256, key id) of a signature key, or None when the key is not one."""
    head = signatures_prefix(package)
    if not key.startswith(head) or not key.endswith(SIGNATURE_SUFFIX):
        return None
    version, slash, name = key[len(head) : -len(SIGNATURE_SUFFIX)].partition("/")
    sha256, dot, key_id = name.partition(".")
    hexdigits = set("0123456789abcdef")
    if not (slash and dot and version and len(sha256) == len(key_id) == 64 and set(sha256 + key_id) <= hexdigits):
        return None
    return version, sha256, key_id


# -- the static catalog (docs/FORMAT.md, "The static catalog") --------------------------------
# Pages where static web servers look for them (``/`` and ``PKG/`` serve ``index.html``), machine
# indexes where no package name can be: a dot-file at the root (never a folder: 0.4.0 takes every
# top-level folder for a package) and tychoreg's own ``PKG/.tycho/``.
ROOT_PAGE = "index.html"
PAGE = "index.html"
ROOT_INDEX = _ROOT_INDEX
PACKAGE_INDEX = _PACKAGE_INDEX


def package_index(package: str) -> str:
    return f"{package}/{PACKAGE_INDEX}"


def package_page(package: str) -> str:
    return f"{package}/{PAGE}"


# -- chunk indexes (docs/FORMAT.md, "Chunk indexes") ------------------------------------------
CHUNKS = ".tycho/chunks/"
CHUNKS_SUFFIX = ".cdx"


def chunk_index(package: str, version: str) -> str:
    return f"{package}/{CHUNKS}{version}{CHUNKS_SUFFIX}"


def chunks_prefix(package: str) -> str:
    return f"{package}/{CHUNKS}"


def version_of_chunk_index(package: str, key: str) -> str | None:
    head = chunks_prefix(package)
    if key.startswith(head) and key.endswith(CHUNKS_SUFFIX) and "/" not in key[len(head) :]:
        return key[len(head) : -len(CHUNKS_SUFFIX)] or None
    return None
