"""The config file's JSON Schema, and the warnings about keys it does not know.

``config.schema.json`` ships in the package (and is published as ``docs/config.schema.json``);
editors validate a ``.tychoreg.json`` with it, and it is the one list of the keys a config file
may hold: a key it does not know (``outdri``, ``cache_limt``, a top-level ``pakages``) is a typo
more often than not, and would otherwise be ignored in silence, so each gets a warning with the
nearest known key. Values are checked where they are read (:mod:`tychoreg.config`); this module
only looks at names, and never refuses a file (tycho-station 0.4.0 ignored unknown keys too).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

from .names import clip, shown

SCHEMA_FILE = "config.schema.json"


@cache
def schema() -> dict[str, Any]:
    """The config file's JSON Schema (draft 2020-12), as shipped in the package."""
    doc: dict[str, Any] = json.loads(Path(__file__).with_name(SCHEMA_FILE).read_text(encoding="utf-8"))
    return doc


def _known(node: Mapping[str, Any]) -> list[str] | None:
    """The keys an object in the schema may hold (None: any)."""
    if node.get("additionalProperties", True) is not False:
        return None
    return list(node.get("properties", {}))


def _entry_schema(node: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """For a map of free names (``packages``, ``retention``): the schema of an entry's object form."""
    entry = node.get("additionalProperties")
    if not isinstance(entry, dict):
        return None
    if entry.get("type") == "object":
        return entry
    for option in entry.get("anyOf", ()):
        if option.get("type") == "object" and "properties" in option:
            return dict(option)
    return None


def suggestion(key: str, known: list[str]) -> str | None:
    """The known key ``key`` was most likely meant to be (None: none is close)."""
    folded = {k.lower(): k for k in known}
    if key.lower() in folded:
        return folded[key.lower()]
    import difflib  # noqa: PLC0415 - ~3 ms, only for a key that is not known

    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    return close[0] if close else None


def unknown_keys(raw: Mapping[str, Any]) -> list[tuple[str, str, list[str]]]:
    """Each key of the config ``raw`` that the schema does not know, as (where, key, the keys
    known there): ``where`` is ``""`` at the top, else the section (``"tycho."``,
    ``"packages.narf."``). Sections of the wrong type are left to the reader."""
    top = schema()
    found: list[tuple[str, str, list[str]]] = []

    def check(obj: Mapping[str, Any], node: Mapping[str, Any], where: str) -> None:
        known = _known(node)
        if known is not None:
            found.extend((where, str(key), known) for key in obj if key not in known)

    check(raw, top, "")
    for section, node in top.get("properties", {}).items():
        value = raw.get(section)
        if not isinstance(value, dict) or not isinstance(node, dict):
            continue
        check(value, node, f"{section}.")
        entry = _entry_schema(node)
        if entry is None:
            continue
        for name, item in value.items():
            if isinstance(item, dict) and "env" not in item:
                check(item, entry, f"{section}.{name}.")
    return found


def describe(where: str, key: str, known: list[str], path: Path) -> str:
    """The warning for one unknown key: where it is, and the key it most likely meant."""
    guess = suggestion(key, known)
    return f"unknown key {shown(where + key, 80)} in {clip(path)} is ignored" + (
        f" (did you mean {clip(where + guess, 80)}?)" if guess else f" (known here: {clip(', '.join(known), 200)})"
    )
