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
