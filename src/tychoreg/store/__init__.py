"""Stores: where a registry's objects live. See :mod:`tychoreg.store.base` for the interface."""

from __future__ import annotations

from typing import Any

from .base import ObjectInfo, ObjectNotFound, PreconditionFailed, StagedUpload, Store

__all__ = ["ObjectInfo", "ObjectNotFound", "PreconditionFailed", "StagedUpload", "Store", "open_store"]


def open_store(backend: str, options: dict[str, Any]) -> Store:
    """Build the store for a backend name; imports the backend (and boto3) only when used."""
    if backend == "s3":
        from .s3 import S3Store

        return S3Store(options)
    if backend == "file":
        from .file import FileStore

        return FileStore(options["path"])
    raise ValueError(f"unknown backend {backend!r}")
