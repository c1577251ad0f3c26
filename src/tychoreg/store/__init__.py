"""Stores: where a registry's objects live. See :mod:`tychoreg.store.base` for the interface."""

from __future__ import annotations

from typing import Any

from .base import GuardChanged, ObjectInfo, ObjectNotFound, PreconditionFailed, StagedUpload, Store

__all__ = ["GuardChanged", "ObjectInfo", "ObjectNotFound", "PreconditionFailed", "StagedUpload", "Store", "open_store"]


def open_store(backend: str, options: dict[str, Any], **tuning: int) -> Store:
    """Build the store for a backend name; imports the backend (and boto3) only when used.
    ``tuning`` (``part_size``, ``concurrency``) applies to S3 and HTTP transfers."""
    if backend == "s3":
        from .s3 import S3Store  # noqa: PLC0415 - a backend loads with its store (this package loads for --help)

        return S3Store(options, **tuning)
    if backend == "file":
        from .file import FileStore  # noqa: PLC0415 - a backend loads with its store (this package loads for --help)

        return FileStore(options["path"])
    if backend == "http":
        from .http import CONCURRENCY, PART_SIZE, HttpStore  # noqa: PLC0415 - a backend loads with its store

        part_size, concurrency = tuning.get("part_size", PART_SIZE), tuning.get("concurrency", CONCURRENCY)
        return HttpStore(options, part_size=part_size, concurrency=concurrency)
    raise ValueError(f"unknown backend {backend!r}")
