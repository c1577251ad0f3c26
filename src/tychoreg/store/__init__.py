"""Stores: where a registry's objects live. See :mod:`tychoreg.store.base` for the interface."""

from __future__ import annotations

from typing import Any

from .base import GuardChanged, ObjectInfo, ObjectNotFound, PreconditionFailed, StagedUpload, Store

__all__ = [
    "GuardChanged",
    "ObjectInfo",
    "ObjectNotFound",
    "PreconditionFailed",
    "StagedUpload",
    "Store",
    "connect_ahead",
    "open_store",
]


def connect_ahead(backend: str, options: dict[str, Any], connections: int) -> None:
    """Start connecting to the server ``open_store`` will talk to, before the store (and the rest
    of tychoreg) is imported: see :mod:`tychoreg.store.preconnect`. Only the S3 store's lean
    client adopts such connections; other backends start none."""
    if backend != "s3":
        return
    from . import preconnect  # noqa: PLC0415 - socket and threading only
    from .s3target import lean_target  # noqa: PLC0415 - light: no http.client, no ssl

    target = lean_target(options)
    if target is not None:
        preconnect.start(*target.address, connections)


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
