"""tycho-station: a registry for versioned files and archives in your own object storage.

>>> from tychoreg import Registry
>>> reg = Registry.from_config()          # same resolution as the CLI
>>> reg.pull("narf")                      # doctest: +SKIP

Everything a Python caller needs is importable from here: :class:`Registry` (the API), the
results it returns and the errors it raises. Names are loaded on first use, so
``tychoreg --help`` stays fast.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.5.0"

#: Where each public name lives.
_HOMES = {
    "Registry": "registry",
    "Pin": "registry",
    "Settings": "config",
    "Project": "config",
    "Requirement": "config",
    "load_settings": "config",
    "Selector": "selector",
    "PackageInfo": "models",
    "PackageDetails": "models",
    "VersionInfo": "models",
    "PullResult": "models",
    "PushResult": "models",
    "Resolved": "models",
    "Locked": "lockfile",
    "Cache": "cache",
    "CacheInfo": "cache",
    "Verified": "upkeep",
    "Debris": "upkeep",
    "NotCached": "deliver",
    "UnsafeArchive": "extract",
    "PackageSpec": "selector",
    "SyncPlan": "plan",
    "Planned": "plan",
    "DeletePlan": "plan",
    **dict.fromkeys(
        (
            "TychoError",
            "UsageError",
            "ConfigError",
            "OperationError",
            "NotFound",
            "AlreadyExists",
            "IntegrityError",
            "StorageError",
            "ConfirmationNeeded",
            "PackageNotFound",
            "VersionNotFound",
            "NoLatest",
            "NoMatch",
            "TagNotFound",
            "PackageExists",
            "VersionExists",
            "BeingPushed",
            "RecordMissing",
            "SignatureError",
        ),
        "errors",
    ),
    # signatures and mirroring
    "Trust": "signatures",
    "Signed": "signatures",
    "SignResult": "signatures",
    "Mirrored": "mirror",
    # reading over HTTP
    "IndexReport": "webindex",
    "CatalogNotUpdated": "webindex",
    "ReadOnly": "store.snapshot",
}

#: Spelled out (not computed from ``_HOMES``, which a test checks it matches) so that type
#: checkers and linters see what ``from tychoreg import ...`` may name.
__all__ = [
    "AlreadyExists",
    "BeingPushed",
    "Cache",
    "CacheInfo",
    "CatalogNotUpdated",
    "ConfigError",
    "ConfirmationNeeded",
    "Debris",
    "DeletePlan",
    "IndexReport",
    "IntegrityError",
    "Locked",
    "Mirrored",
    "NoLatest",
    "NoMatch",
    "NotCached",
    "NotFound",
    "OperationError",
    "PackageDetails",
    "PackageExists",
    "PackageInfo",
    "PackageNotFound",
    "PackageSpec",
    "Pin",
    "Planned",
    "Project",
    "PullResult",
    "PushResult",
    "ReadOnly",
    "RecordMissing",
    "Registry",
    "Requirement",
    "Resolved",
    "Selector",
    "Settings",
    "SignResult",
    "SignatureError",
    "Signed",
    "StorageError",
    "SyncPlan",
    "TagNotFound",
    "Trust",
    "TychoError",
    "UnsafeArchive",
    "UsageError",
    "Verified",
    "VersionExists",
    "VersionInfo",
    "VersionNotFound",
    "__version__",
    "load_settings",
]

if TYPE_CHECKING:
    from .cache import Cache, CacheInfo
    from .config import Project, Requirement, Settings, load_settings
    from .deliver import NotCached
    from .errors import (
        AlreadyExists,
        BeingPushed,
        ConfigError,
        ConfirmationNeeded,
        IntegrityError,
        NoLatest,
        NoMatch,
        NotFound,
        OperationError,
        PackageExists,
        PackageNotFound,
        RecordMissing,
        SignatureError,
        StorageError,
        TagNotFound,
        TychoError,
        UsageError,
        VersionExists,
        VersionNotFound,
    )
    from .extract import UnsafeArchive
    from .lockfile import Locked
    from .mirror import Mirrored
    from .models import PackageDetails, PackageInfo, PullResult, PushResult, Resolved, VersionInfo
    from .plan import DeletePlan, Planned, SyncPlan
    from .registry import Pin, Registry
    from .selector import PackageSpec, Selector
    from .signatures import Signed, SignResult, Trust
    from .store.snapshot import ReadOnly
    from .upkeep import Debris, Verified
    from .webindex import CatalogNotUpdated, IndexReport


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'tychoreg' has no attribute {name!r}")
    return getattr(import_module(f".{home}", __name__), name)
