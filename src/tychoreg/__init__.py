"""tycho-station: a registry for versioned files and archives in your own object storage.

>>> from tychoreg import Registry
>>> reg = Registry.from_config()          # same resolution as the CLI
>>> reg.pull("narf")                      # doctest: +SKIP

Names are loaded on first use, so ``tychoreg --help`` stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.5.0"

__all__ = ["Registry", "TychoError", "NotFound", "AlreadyExists", "IntegrityError", "StorageError",
           "ConfigError", "UsageError", "OperationError", "__version__"]

if TYPE_CHECKING:
    from .errors import (AlreadyExists, ConfigError, IntegrityError, NotFound, OperationError,
                         StorageError, TychoError, UsageError)
    from .registry import Registry


def __getattr__(name: str) -> Any:
    if name == "Registry":
        from .registry import Registry

        return Registry
    if name in __all__:
        from . import errors

        return getattr(errors, name)
    raise AttributeError(f"module 'tychoreg' has no attribute {name!r}")
