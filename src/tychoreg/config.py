"""Finding and reading the configuration.

The file format is tycho-station 0.4.0's, kept so existing ``.tychoreg.json`` files work
unchanged; on top of it come a ``file`` backend, an S3 ``prefix`` and an embedded default so a
fresh machine works with no file at all. All resolution (which file, dotenv, ``{"env": ...}``
indirection, relative paths) happens here and nowhere else.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError

CONFIG_ENV = "TYCHOREG_CONFIG"
IDENTITY_ENV = "TYCHOREG_IDENTITY"
LOCAL_CONFIG = ".tychoreg.json"
BACKENDS = ("s3", "file")
DEFAULT_OUTDIR = "tycho_packages"
LOCK_NAME = "tycho.lock"
DEFAULT_CACHE_LIMIT = 10 * 1024 ** 3
DEFAULT_EXTRACT_LIMIT = 4 * 1024 ** 3
_SIZE = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*([kmgt]i?b|b)?\Z", re.IGNORECASE)
_UNITS = {"b": 1, "kb": 1000, "mb": 1000 ** 2, "gb": 1000 ** 3, "tb": 1000 ** 4,
          "kib": 1024, "mib": 1024 ** 2, "gib": 1024 ** 3, "tib": 1024 ** 4}
_BUCKET = re.compile(r"[A-Za-z0-9.\-_]{1,255}\Z")
_S3_STRINGS = ("region_name", "endpoint_url", "api_version", "prefix")
# Keys whose values must never be shown, whatever the section.
_SECRET_WORDS = ("secret", "token", "password", "access_key")


@dataclass(frozen=True)
class Settings:
    """Everything a command needs to know about where the registry is and where pulls go."""

    backend: str
    outdir: Path
    options: dict[str, Any]
    source: str
    secrets: tuple[str, ...] = field(default=(), repr=False)
    identity: str | None = None
    #: Things the user should hear about (e.g. a config file with secrets readable by others).
    warnings: tuple[str, ...] = ()
    #: Declared dependencies (the ``packages`` section), for ``sync`` and ``lock``.
    packages: dict[str, Requirement] = field(default_factory=dict)
    #: The folder of the config file (None for the embedded default): lock file and extract paths live there.
    project: Path | None = None
    cache: bool = True
    cache_limit: int | None = DEFAULT_CACHE_LIMIT
    extract_limit: int = DEFAULT_EXTRACT_LIMIT
    part_size: int | None = None
    concurrency: int | None = None

    @property
    def lockfile(self) -> Path | None:
        return self.project / LOCK_NAME if self.project else None


@dataclass(frozen=True)
class Requirement:
    """One entry of ``packages``: what to fetch and where it goes."""

    name: str
    version: str = "latest"
    extract: Path | None = None

    def describe(self) -> dict[str, str]:
        """How the lock file remembers the declaration, to notice when it changes."""
        out = {"requested": self.version}
        if self.extract is not None:
            out["extract"] = str(self.extract)
        return out


def parse_size(value: Any, where: str) -> int:
    """``"10GiB"``, ``"512MB"``, ``"1048576"`` or a number of bytes."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    match = _SIZE.match(value.strip()) if isinstance(value, str) else None
    if not match:
        raise ConfigError(f"{where} must be a size such as \"10GiB\", \"500MB\" or a number of bytes, "
                          f"not {value!r}")
    number, unit = float(match.group(1)), (match.group(2) or "B").lower()
    return int(number * _UNITS[unit])


def default_registry_path() -> Path:
    """The embedded default registry: a folder in the user's data directory."""
    from platformdirs import user_data_dir

    return Path(user_data_dir("tychoreg", appauthor=False)) / "registry"


def find_config(explicit: str | os.PathLike[str] | None, cwd: Path) -> Path | None:
    """Apply the resolution order: --config, $TYCHOREG_CONFIG, ./.tychoreg.json, none."""
    if explicit is not None and str(explicit) != "":
        path = cwd / Path(explicit).expanduser()
        if not path.is_file():
            raise ConfigError(f"config file {explicit} (given with --config) does not exist",
                              "check the path, or drop --config to use the default resolution")
        return path
    from_env = os.environ.get(CONFIG_ENV)
    if from_env:
        path = cwd / Path(from_env).expanduser()
        if not path.is_file():
            raise ConfigError(f"config file {from_env} (named by {CONFIG_ENV}) does not exist",
                              f"fix or unset {CONFIG_ENV}")
        return path
    local = cwd / LOCAL_CONFIG
    return local if local.is_file() else None


def load_settings(config: str | os.PathLike[str] | None = None, *, cwd: Path | None = None) -> Settings:
    """Resolve the configuration the way every command does."""
    cwd = Path.cwd() if cwd is None else cwd
    path = find_config(config, cwd)
    if path is None:
        return Settings(backend="file", outdir=cwd / DEFAULT_OUTDIR,
                        options={"path": str(default_registry_path())},
                        source="the embedded default (no config file found)",
                        identity=os.environ.get(IDENTITY_ENV) or None)
    return _from_file(path, cwd)


def _from_file(path: Path, cwd: Path) -> Settings:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"config file {path} is not valid JSON: {exc}",
                          "fix the file; see the README's configuration reference") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path} must hold a JSON object")
    tycho = _section(raw, "tycho", path)

    # dotenv first, so {"env": ...} values below can come from it; existing variables win.
    dotenv = _resolve(tycho.get("dotenv"), "tycho.dotenv", path)
    if dotenv is not None:
        if not isinstance(dotenv, str):
            raise ConfigError(f"tycho.dotenv in {path} must be a path")
        from dotenv import load_dotenv

        load_dotenv(dotenv_path=cwd / Path(dotenv).expanduser(), override=False)

    tycho = {k: _resolve(v, f"tycho.{k}", path) for k, v in tycho.items()}
    backend = tycho.get("backend", "s3")
    if backend not in BACKENDS:
        raise ConfigError(f"unknown backend {backend!r} in {path}",
                          f"set tycho.backend to one of: {', '.join(BACKENDS)}")
    outdir = tycho.get("outdir", DEFAULT_OUTDIR)
    if not isinstance(outdir, str) or not outdir:
        raise ConfigError(f"tycho.outdir in {path} must be a non-empty path")
    identity = os.environ.get(IDENTITY_ENV) or tycho.get("identity")
    if identity is not None and not isinstance(identity, str):
        raise ConfigError(f"tycho.identity in {path} must be a string")

    warnings = _exposed_secrets(raw, path)
    options = _resolve(_section(raw, backend, path), backend, path)
    secrets = tuple(sorted(_secret_values(options), key=len, reverse=True))
    if backend == "s3":
        _check_s3(options, path)
    else:
        reg = options.get("path")
        if not isinstance(reg, str) or not reg:
            raise ConfigError(f"the file backend needs file.path in {path}",
                              'add "file": {"path": "/srv/tycho-registry"}')
        options["path"] = str(path.parent / Path(reg).expanduser())
    return Settings(backend=backend, outdir=cwd / Path(outdir).expanduser(), options=options,
                    source=f"config file {path}", secrets=secrets, identity=identity, warnings=warnings,
                    packages=_packages(_resolve(raw.get("packages", {}), "packages", path), path),
                    project=path.parent, **_tuning(tycho, path))


def _tuning(tycho: Mapping[str, Any], path: Path) -> dict[str, Any]:
    """Cache, extraction and transfer settings from the ``tycho`` section."""
    out: dict[str, Any] = {}
    if "cache" in tycho:
        if not isinstance(tycho["cache"], bool):
            raise ConfigError(f"tycho.cache in {path} must be true or false")
        out["cache"] = tycho["cache"]
    for key in ("cache_limit", "extract_limit", "part_size"):
        if tycho.get(key) is not None:
            out[key] = parse_size(tycho[key], f"tycho.{key} in {path}")
    if out.get("part_size") is not None and not 5 * 1024 ** 2 <= out["part_size"] <= 5 * 1024 ** 3:
        raise ConfigError(f"tycho.part_size in {path} must be between 5MiB and 5GiB (S3's limits)")
    if "concurrency" in tycho:
        value = tycho["concurrency"]
        if isinstance(value, str) and value.isdigit():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 64:
            raise ConfigError(f"tycho.concurrency in {path} must be a whole number from 1 to 64")
        out["concurrency"] = value
    return out


def _packages(section: Any, path: Path) -> dict[str, Requirement]:
    """The ``packages`` section: ``{"narf": "^1.2", "gcc": {"version": "stable", "extract": "tools/gcc"}}``."""
    from .errors import UsageError
    from .names import check_package, check_selector

    if not isinstance(section, dict):
        raise ConfigError(f"section 'packages' of {path} must be a JSON object of package: version")
    found: dict[str, Requirement] = {}
    for name, spec in sorted(section.items()):
        try:
            check_package(name)
            if isinstance(spec, str):
                found[name] = Requirement(name, check_selector(spec))
                continue
            if not isinstance(spec, dict) or set(spec) - {"version", "extract"}:
                raise ConfigError(f"packages.{name} in {path} must be a version string or "
                                  '{"version": ..., "extract": DIR}')
            version = spec.get("version", "latest")
            extract = spec.get("extract")
            if not isinstance(version, str) or (extract is not None and (not isinstance(extract, str) or not extract)):
                raise ConfigError(f"packages.{name} in {path}: version and extract must be strings")
            found[name] = Requirement(name, check_selector(version),
                                      Path(extract).expanduser() if extract is not None else None)
        except UsageError as exc:
            raise ConfigError(f"packages.{name} in {path}: {exc}", exc.hint) from None
    return found


def _section(raw: Mapping[str, Any], name: str, path: Path) -> dict[str, Any]:
    value = raw.get(name, {})
    if not isinstance(value, dict):
        raise ConfigError(f"section {name!r} of {path} must be a JSON object")
    return dict(value)


def _is_env_ref(value: Any) -> bool:
    return isinstance(value, dict) and "env" in value and set(value) <= {"env", "default"}


def _resolve(value: Any, where: str, path: Path) -> Any:
    """Replace ``{"env": NAME, "default": VALUE}`` by the variable's value, recursively."""
    if _is_env_ref(value):
        name = value["env"]
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{where} in {path}: 'env' must name an environment variable")
        if name in os.environ:
            return os.environ[name]
        if "default" in value:
            return value["default"]
        raise ConfigError(f"environment variable {name} is not set (needed by {where} in {path})",
                          f"set {name}, or give a default in the config file")
    if isinstance(value, dict):
        return {k: _resolve(v, f"{where}.{k}", path) for k, v in value.items()}
    return value


def _secret_values(options: Mapping[str, Any]) -> list[str]:
    found: list[str] = []
    for key, value in options.items():
        if isinstance(value, dict):
            found.extend(_secret_values(value))
        elif isinstance(value, str) and len(value) >= 4 and any(w in key.lower() for w in _SECRET_WORDS):
            found.append(value)
    return found


def _exposed_secrets(raw: Mapping[str, Any], path: Path) -> tuple[str, ...]:
    """Warn when the file holds literal secrets (not ``{"env": ...}``) and others can read it."""
    literal = [f"{section}.{key}" for section, values in raw.items() if isinstance(values, dict)
               for key, value in values.items()
               if isinstance(value, str) and any(w in key.lower() for w in ("secret", "token", "password"))]
    try:
        mode = path.stat().st_mode
    except OSError:
        return ()
    if literal and mode & 0o044:
        return (f"{path} holds {', '.join(literal)} and other users can read it: "
                f"run 'chmod 600 {path}', or use {{\"env\": NAME}} values instead",)
    return ()


def _check_s3(options: dict[str, Any], path: Path) -> None:
    bucket = options.get("bucket")
    if not isinstance(bucket, str) or not bucket:
        raise ConfigError(f"the s3 backend needs s3.bucket in {path}",
                          'add "s3": {"bucket": "my-registry"}')
    if not _BUCKET.match(bucket):
        raise ConfigError(f"s3.bucket {bucket!r} in {path} is not a valid bucket name",
                          "use the bucket's name only (letters, digits, . - _), not a URL or path")
    for key, value in options.items():
        if key in _S3_STRINGS or key.startswith("aws_"):
            if value is not None and not isinstance(value, str):
                raise ConfigError(f"s3.{key} in {path} must be a string")
    prefix = options.get("prefix", "")
    if not isinstance(prefix, str):
        raise ConfigError(f"s3.prefix in {path} must be a string")
    parts = [p for p in prefix.split("/") if p]
    if any(p in (".", "..") for p in parts):
        raise ConfigError(f"s3.prefix {prefix!r} in {path} may not contain '.' or '..' segments")
    options["prefix"] = "/".join(parts)
