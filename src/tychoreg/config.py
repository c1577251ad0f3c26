"""Finding and reading the configuration.

The file format is tycho-station 0.4.0's, kept so existing ``.tychoreg.json`` files work
unchanged; on top of it come a ``file`` backend, an S3 ``prefix`` and an embedded default so a
fresh machine works with no file at all. All resolution (which file, dotenv, ``{"env": ...}``
indirection, relative paths) happens here and nowhere else.

A ``.tychoreg.json`` often arrives with a cloned repository, so it is input, not instruction: it
may name a registry and folders inside its own project, but it cannot read files outside its own
folder (``dotenv``), route a secret from the environment into a value that is sent or printed
(``{"env"}`` references are checked against the variable's name), or unpack outside the project.
The README's configuration section states these rules for users.
"""

from __future__ import annotations

import io
import json
import os
import re
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

from .discovery import LOCAL_CONFIG as LOCAL_CONFIG  # where it always was
from .discovery import find_project_config, trust_check
from .errors import ConfigError, TychoError, UsageError
from .names import check_package, clip, shown
from .portable import O_BINARY, O_CLOEXEC, O_NONBLOCK
from .schema import describe, suggestion, unknown_keys
from .selector import Selector
from .units import DEFAULT_EXTRACT_LIMIT, age_text, parse_age, parse_size

CONFIG_ENV = "TYCHOREG_CONFIG"
IDENTITY_ENV = "TYCHOREG_IDENTITY"


#: How the config file was found: named by --config, by $TYCHOREG_CONFIG, or found in the
#: current folder or a parent (a project config), or none (the embedded default).
Origin = Literal["explicit", "environment", "project", "default"]
Backend = Literal["s3", "file", "http"]
BACKENDS: tuple[Backend, ...] = ("s3", "file", "http")
DEFAULT_OUTDIR = "tycho_packages"
LOCK_NAME = "tycho.lock"
DEFAULT_CACHE_LIMIT = 10 * 1024**3
_BUCKET = re.compile(r"[A-Za-z0-9.\-_]{1,255}\Z")
_S3_STRINGS = ("region_name", "endpoint_url", "api_version", "prefix")
# Keys whose values must never be shown, whatever the section.
_SECRET_WORDS = ("secret", "token", "password", "access_key")
#: Local documents (config, lock, dotenv) larger than this are refused unread.
MAX_DOCUMENT = 16 * 1024**2
#: Deeper JSON than this is damage (or an attack on the parser), never configuration.
MAX_DEPTH = 32
#: Variables the user allows a config to read whatever their names say (comma or space separated).
ALLOW_ENV = "TYCHOREG_ALLOW_ENV"
# Settings whose values are configuration that messages may show, even when they come from a
# variable; any other value taken from the environment or a dotenv file is masked in output.
_PUBLIC = frozenset(
    {
        "tycho.backend",
        "tycho.outdir",
        "tycho.dotenv",
        "tycho.identity",
        "tycho.cache",
        "tycho.cache_limit",
        "tycho.extract_limit",
        "tycho.part_size",
        "tycho.concurrency",
        "s3.bucket",
        "s3.prefix",
        "s3.endpoint_url",
        "s3.region_name",
        "file.path",
        "tycho.trusted_signers",
        "tycho.revoked_signers",
        "tycho.require_signatures",
        "tycho.signing_key",
        "http.url",
    }
)
_CREDENTIALS = frozenset({"s3.aws_access_key_id", "s3.aws_secret_access_key", "s3.aws_session_token"})
# What a dotenv file may still put into the process environment: boto3's own credential chain
# reads these when the config names no credentials, as it did with tycho-station 0.4.0. Anything
# else (AWS_CONFIG_FILE, AWS_ENDPOINT_URL, proxies, TYCHOREG_*) would let a repository's .env
# file run commands or redirect requests, so it only answers the config's {"env"} references.
_DOTENV_EXPORTS = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
)
# A variable name holding any of these says it holds a secret ...
_SECRET_PARTS = (
    "SECRET",
    "TOKEN",
    "PASSWORD",
    "PASSWD",
    "PASSPHRASE",
    "PRIVATE",
    "CREDENTIAL",
    "COOKIE",
    "AUTHORIZATION",
    "APIKEY",
    "API_KEY",
    "JWT",
)
# ... and so does one with any of these as a word (SSH_KEY, DB_PASS, GH_PAT, SENTRY_DSN).
_SECRET_NAME_WORDS = frozenset({"AUTH", "OAUTH", "PAT", "PASS", "PWD", "PW", "DSN", "KEY"})
_URL_WITH_PASSWORD = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^/@\s]*:[^/@\s]*@")


@dataclass(frozen=True)
class Settings:
    """Everything a command needs to know about where the registry is and where pulls go."""

    backend: Backend
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
    #: Signatures (docs/FORMAT.md, "Signatures"): the ``allowed_signers`` file that turns
    #: verification on, a list of revoked keys, whether every version must be signed, and the
    #: key pushes sign with. Paths are real paths inside the config's folder (or the current one).
    trusted_signers: Path | None = None
    revoked_signers: Path | None = None
    require_signatures: bool = False
    signing_key: Path | None = None

    #: Retention policies by package name (``*``: every package without its own), for ``prune``.
    retention: dict[str, Retention] = field(default_factory=dict)

    origin: Origin = "explicit"

    @property
    def lockfile(self) -> Path | None:
        return self.project / LOCK_NAME if self.project else None

    @property
    def declared(self) -> Project | None:
        """The project's declared packages and lock file (None for the embedded default)."""
        if self.project is None:
            return None
        return Project(self.project, self.packages, self.source)


@dataclass(frozen=True)
class Project:
    """A project: the folder of its config file (its lock file and extract folders live there),
    and the packages it declares."""

    folder: Path
    packages: dict[str, Requirement]
    source: str

    @property
    def lockfile(self) -> Path:
        return self.folder / LOCK_NAME


@dataclass(frozen=True)
class Requirement:
    """One entry of ``packages``: what to fetch and where it goes. ``version`` is the text as
    declared (the lock file compares it); ``selector`` is that text parsed, once."""

    name: str
    version: str = "latest"
    extract: Path | None = None
    selector: Selector | None = field(default=None, compare=False, repr=False)

    def wanted(self) -> Selector:
        return self.selector or Selector.parse(self.version)

    def describe(self) -> dict[str, str]:
        """How the lock file remembers the declaration, to notice when it changes."""
        out = {"requested": self.version}
        if self.extract is not None:
            out["extract"] = str(self.extract)
        return out


@dataclass(frozen=True)
class Retention:
    """A retention policy (``prune``, or a ``retention`` entry of the config): the ``keep``
    highest versions that are not yanked stay, and of the others only those older than
    ``older_than`` go. Either may be None (no such condition); both None is no policy at all
    (a config entry ``{}`` exempts a package from ``*``)."""

    keep: int | None = None
    older_than: timedelta | None = None

    @property
    def empty(self) -> bool:
        return self.keep is None and self.older_than is None

    def to_json(self) -> dict[str, int | str | None]:
        return {"keep": self.keep, "older_than": age_text(self.older_than) if self.older_than is not None else None}


def default_registry_path() -> Path:
    """The embedded default registry: a folder in the user's data directory."""
    from platformdirs import user_data_dir  # noqa: PLC0415 - platformdirs: ~3 ms, only for the embedded default

    return Path(user_data_dir("tychoreg", appauthor=False)) / "registry"


def find_config(explicit: str | os.PathLike[str] | None, cwd: Path) -> Path | None:
    """Apply the resolution order: --config, $TYCHOREG_CONFIG, the nearest .tychoreg.json, none."""
    found = locate_config(explicit, cwd)
    return found[0] if found else None


def locate_config(explicit: str | os.PathLike[str] | None, cwd: Path) -> tuple[Path, Origin] | None:
    """The config file and how it was found: ``--config``, ``$TYCHOREG_CONFIG``, else the
    ``.tychoreg.json`` in ``cwd`` or its nearest parent (see :mod:`tychoreg.discovery`)."""
    if explicit is not None and str(explicit) != "":
        path = cwd / Path(explicit).expanduser()
        if not _is_file(path):
            raise ConfigError(
                f"config file {clip(explicit)} does not exist", "check the path", reason="explicit-config-missing"
            )
        return path, "explicit"
    from_env = os.environ.get(CONFIG_ENV)
    if from_env:
        path = cwd / Path(from_env).expanduser()
        if not _is_file(path):
            raise ConfigError(
                f"config file {clip(from_env)} (named by {CONFIG_ENV}) does not exist", f"fix or unset {CONFIG_ENV}"
            )
        return path, "environment"
    found = find_project_config(cwd)
    return (found, "project") if found is not None else None


def _is_file(path: Path) -> bool:
    """``Path.is_file`` that also says no to a name the system refuses (too long, say)."""
    try:
        return path.is_file()
    except (OSError, ValueError):
        return False


def load_settings(config: str | os.PathLike[str] | None = None, *, cwd: Path | None = None) -> Settings:
    """Resolve the configuration the way every command does."""
    cwd = Path.cwd() if cwd is None else cwd
    found = locate_config(config, cwd)
    if found is None:
        return Settings(
            backend="file",
            outdir=cwd / DEFAULT_OUTDIR,
            options={"path": str(default_registry_path())},
            source="the embedded default (no config file found)",
            identity=os.environ.get(IDENTITY_ENV) or None,
            origin="default",
        )
    return _from_file(*found, cwd)


def read_document(
    path: Path,
    *,
    limit: int = MAX_DOCUMENT,
    head: int | None = None,
    check: Callable[[os.stat_result], None] | None = None,
) -> str:
    """The text of a small local document (a config, lock or dotenv file), or with ``head`` only
    its first bytes (to tell a lock from a list, whatever its size).

    Opened without blocking and checked to be a regular file, so a FIFO or device planted under
    that name cannot hang or exhaust the command; larger than ``limit`` is refused unread.
    Raises ``OSError`` (cannot open), ``ValueError`` (not a regular file, too large) or
    ``UnicodeDecodeError``. ``check`` is given the open file's status before anything is read
    (and may raise), so what it approves is what is read.
    """
    fd = os.open(path, os.O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_BINARY)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ValueError("it is not a regular file")
        if check is not None:
            check(info)
        if head is not None:
            return os.read(fd, head).decode("utf-8", errors="replace")
        if info.st_size > limit:
            raise ValueError(f"it is larger than {limit // 1024**2} MiB")
        chunks, size = [], 0
        while chunk := os.read(fd, 1024**2):
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                raise ValueError(f"it is larger than {limit // 1024**2} MiB")
    finally:
        os.close(fd)
    return b"".join(chunks).decode("utf-8")


def too_deep(doc: Any, limit: int = MAX_DEPTH) -> bool:
    """Whether JSON ``doc`` nests deeper than ``limit`` (checked without recursion)."""
    stack = [(doc, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, (dict, list)):
            if depth > limit:
                return True
            stack.extend((child, depth + 1) for child in (node.values() if isinstance(node, dict) else node))
    return False


def parse_document(text: str) -> Any:
    """JSON that is not nested deeper than :data:`MAX_DEPTH`; ``ValueError`` otherwise."""
    try:
        doc = json.loads(text)
    except RecursionError:
        raise ValueError(f"it is nested too deeply (more than {MAX_DEPTH} levels)") from None
    if too_deep(doc):
        raise ValueError(f"it is nested too deeply (more than {MAX_DEPTH} levels)")
    return doc


def secret_marks(name: str) -> set[str]:
    """What in a variable's name says that it holds a secret (empty: it says nothing of the kind)."""
    upper = name.upper()
    if upper in ("PWD", "OLDPWD"):  # the shell's current and previous directory
        return set()
    marks = {part for part in _SECRET_PARTS if part in upper}
    return marks | (set(re.split(r"[^A-Z0-9]+", upper)) & _SECRET_NAME_WORDS)


def _may_read(where: str, variable: str) -> bool:
    """The rule for ``{"env": NAME}``: a variable named as a secret may feed only a credential
    that consumes that kind of secret; everything else takes configuration variables only.

    ``aws_secret_access_key`` only signs requests and never leaves the machine, so it may read any
    variable. The access key id and session token travel in request headers, so they may read only
    variables named for them (``REG_WRITE_KEY``, ``AWS_SESSION_TOKEN``). Every other value ends up
    in a URL, a header, a file name or a message, so it may not read a secret at all.
    """
    marks = secret_marks(variable)
    if not marks or where == "s3.aws_secret_access_key":
        return True
    if where.startswith("http.headers."):  # sent to http.url, which the same file names: only variables meant for it
        return variable.upper().startswith(HTTP_SECRET_PREFIX)
    upper = variable.upper()
    if where == "s3.aws_session_token":
        return marks <= {"TOKEN"} and ("SESSION_TOKEN" in upper or "SECURITY_TOKEN" in upper)
    return where == "s3.aws_access_key_id" and marks <= {"KEY"}


class _Environment:
    """Answers ``{"env": NAME, "default": VALUE}`` from the environment, then the dotenv file,
    then the default, and remembers what came from a variable so that it can be masked."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.dotenv: dict[str, str] = {}
        raw = os.environ.get(ALLOW_ENV, "")
        self.allowed = frozenset(n for n in re.split(r"[,\s]+", raw) if n)
        #: (setting, variable, value) for every value taken from a variable.
        self.taken: list[tuple[str, str, str]] = []

    def resolve(self, value: Any, where: str) -> Any:
        """Replace ``{"env": NAME, "default": VALUE}`` by the variable's value, recursively."""
        if _is_env_ref(value):
            return self._lookup(value, where)
        if isinstance(value, dict):
            return {k: self.resolve(v, f"{where}.{k}") for k, v in value.items()}
        return value

    def _lookup(self, ref: Mapping[str, Any], where: str) -> Any:
        name = ref["env"]
        if not isinstance(name, str) or not name or "=" in name or "\0" in name:
            raise ConfigError(f"{where} in {clip(self.path)}: 'env' must name an environment variable")
        if name not in self.allowed and not _may_read(where, name):
            raise ConfigError(
                f"{where} in {clip(self.path)} reads environment variable {shown(name)}, whose "
                "name says it holds a secret; such a variable may only feed "
                "s3.aws_secret_access_key (or s3.aws_session_token / s3.aws_access_key_id "
                f"from variables named for them, or http.headers from {HTTP_SECRET_PREFIX}* variables)",
                f"if {shown(name)} really is meant for {where}, allow it: export {ALLOW_ENV}={clip(name, 60)}",
            )
        if name in os.environ:
            found = os.environ[name]
        elif name in self.dotenv:
            found = self.dotenv[name]
        elif "default" in ref:
            return ref["default"]
        else:
            raise ConfigError(
                f"environment variable {clip(name, 60)} is not set (needed by {where} in {clip(self.path)})",
                f"set {clip(name, 60)}, or give a default in the config file",
            )
        if (
            where not in _CREDENTIALS
            and name not in self.allowed
            and isinstance(found, str)
            and _URL_WITH_PASSWORD.match(found)
        ):
            raise ConfigError(
                f"{where} in {clip(self.path)} reads environment variable {shown(name)}, which "
                "holds a URL with a password",
                f"use a variable meant for {where}",
            )
        self.taken.append((where, name, found))
        return found

    def masked(self) -> list[str]:
        """Values from variables that output must not show: those of settings that are not known
        to be public, and those of variables named as secrets."""
        return [
            value
            for where, name, value in self.taken
            if isinstance(value, str)
            and len(value) >= 4
            and ((where not in _PUBLIC and not where.startswith(("packages.", "retention."))) or secret_marks(name))
        ]


def _from_file(path: Path, origin: Origin, cwd: Path) -> Settings:
    env = _Environment(path)
    try:
        return _settings(path, origin, cwd, env)
    except TychoError as exc:
        secrets = sorted(env.masked(), key=len, reverse=True)
        if not secrets:
            raise
        raise type(exc)(_mask(str(exc), secrets), exc.hint and _mask(exc.hint, secrets)) from None


def _mask(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, "****")
    return text


def _settings(path: Path, origin: Origin, cwd: Path, env: _Environment) -> Settings:
    # A config found in a parent folder is used only if no one else could have written it.
    parent = origin == "project" and os.path.realpath(path.parent) != os.path.realpath(cwd)
    try:
        raw = parse_document(read_document(path, check=trust_check(path) if parent else None))
    except OSError as exc:
        raise ConfigError(f"cannot read config file {clip(path)}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"config file {clip(path)} is not valid JSON: {exc.reason}",
            "fix the file; see the README's configuration reference",
        ) from None
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"config file {clip(path)} is not valid JSON: {exc}",
            "fix the file; see the README's configuration reference",
        ) from None
    except ValueError as exc:  # not a regular file, too large, nested too deeply
        raise ConfigError(
            f"config file {clip(path)} cannot be used: {exc}", "fix the file; see the README's configuration reference"
        ) from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {clip(path)} must hold a JSON object")
    tycho = _section(raw, "tycho", path)
    # In a project config, outdir and dotenv are relative to its folder; with --config or
    # $TYCHOREG_CONFIG they are relative to the current folder, as in tycho-station 0.4.0.
    base = path.parent if origin == "project" else cwd

    # dotenv first, so {"env": ...} values below can come from it; existing variables win.
    dotenv = env.resolve(tycho.get("dotenv"), "tycho.dotenv")
    dotenv_file = _load_dotenv(dotenv, path, base, env) if dotenv is not None else None

    tycho = {k: env.resolve(v, f"tycho.{k}") for k, v in tycho.items()}
    backend = tycho.get("backend", "s3")
    if backend not in BACKENDS:
        guess = suggestion(backend, list(BACKENDS)) if isinstance(backend, str) else None
        raise ConfigError(
            f"unknown backend {shown(backend)} in {clip(path)}" + (f" (did you mean {guess}?)" if guess else ""),
            f"set tycho.backend to one of: {', '.join(BACKENDS)}",
        )
    outdir = tycho.get("outdir", DEFAULT_OUTDIR)
    if not isinstance(outdir, str) or not outdir:
        raise ConfigError(f"tycho.outdir in {clip(path)} must be a non-empty path")
    identity = os.environ.get(IDENTITY_ENV) or tycho.get("identity")
    if identity is not None and not isinstance(identity, str):
        raise ConfigError(f"tycho.identity in {clip(path)} must be a string")

    options = env.resolve(_section(raw, backend, path), backend)
    packages = _packages(env.resolve(raw.get("packages", {}), "packages"), path)

    retention = _retention(env.resolve(raw.get("retention", {}), "retention"), path)
    secrets = tuple(
        sorted(set(_secret_values(options)) | set(env.masked()) | set(_header_values(options)), key=len, reverse=True)
    )
    warnings = _unknown(raw, path) + _exposed_secrets(raw, path) + _exposed_dotenv(dotenv_file, env, path)
    if backend == "s3":
        _check_s3(options, path)
    elif backend == "http":
        _check_http(options, path)
    else:
        reg = options.get("path")
        if not isinstance(reg, str) or not reg:
            raise ConfigError(
                f"the file backend needs file.path in {clip(path)}", 'add "file": {"path": "/srv/tycho-registry"}'
            )
        options["path"] = str(path.parent / Path(reg).expanduser())
    return Settings(
        backend=backend,
        outdir=base / Path(outdir).expanduser(),
        options=options,
        source=f"config file {path}",
        secrets=secrets,
        identity=identity,
        warnings=warnings,
        packages=packages,
        retention=retention,
        project=path.parent,
        origin=origin,
        **_tuning(tycho, path),
        **_signing(tycho, path, cwd),
    )


def _unknown(raw: Mapping[str, Any], path: Path) -> tuple[str, ...]:
    """Warnings for keys the config file's schema does not know (see :mod:`tychoreg.schema`).

    The ``s3`` section is the exception: its keys go to ``boto3.client``, which refuses those it
    does not take, so a key there that is close to a known one is refused here with the key it
    most likely meant, and any other is left for boto3 to judge (a newer boto3 may take it)."""
    warnings = []
    for where, key, known in unknown_keys(raw):
        if where != "s3.":
            warnings.append(describe(where, key, known, path))
        elif guess := suggestion(key, known):
            raise ConfigError(
                f"s3.{shown(key, 60)} in {clip(path)} is not an option of the S3 client (did you mean s3.{guess}?)",
                "fix the key; every key of the s3 section but bucket and prefix goes to boto3.client",
            )
    return tuple(warnings[:20])


def _inside(child: str, folder: str) -> bool:
    """Whether the real path ``child`` lies strictly inside the real path ``folder``."""
    return child != folder and os.path.commonpath([child, folder]) == folder


def _load_dotenv(value: Any, path: Path, base: Path, env: _Environment) -> Path | None:
    """Read ``tycho.dotenv``: only a file inside the config file's folder or ``base``, the folder
    its relative path is resolved against (the config's own folder for a project config, the
    current directory for one named by --config or $TYCHOREG_CONFIG), with symlinks resolved, so
    a committed ``.env -> ~/.aws/credentials`` is refused. A missing file is no error, as in
    0.4.0. Returns the file read, for the readable-secrets warning."""
    if not isinstance(value, str) or not value:
        raise ConfigError(f"tycho.dotenv in {clip(path)} must be a path")
    if "\0" in value:
        raise ConfigError(f"tycho.dotenv in {clip(path)} must be a path")
    file = base / Path(value).expanduser()
    real = os.path.realpath(file)
    if not any(_inside(real, os.path.realpath(folder)) for folder in (path.parent, base)):
        via = f" (through a symbolic link, it is {clip(real)})" if real != os.path.abspath(file) else ""
        where = "folder" + (
            f" {clip(path.parent)}"
            if os.path.realpath(path.parent) == os.path.realpath(base)
            else f"s {clip(path.parent)} and {clip(base)}"
        )
        raise ConfigError(
            f"tycho.dotenv in {clip(path)} names {shown(value)}{via}, which is outside the {where}",
            "keep the .env file beside the config file: a config may not read other files",
        )
    try:
        text = read_document(Path(real))
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"cannot read the dotenv file {clip(file)}: {exc.strerror or exc}") from None
    except ValueError as exc:  # also UnicodeDecodeError
        raise ConfigError(f"cannot read the dotenv file {clip(file)}: {exc}") from None
    from dotenv import dotenv_values  # noqa: PLC0415 - python-dotenv: ~2 ms, only with tycho.dotenv

    # No ${VAR} expansion: it would let the file copy a secret into a harmless-looking name.
    values = dotenv_values(stream=io.StringIO(text), interpolate=False)
    env.dotenv = {k: v for k, v in values.items() if v is not None}
    for name in _DOTENV_EXPORTS:
        if name in env.dotenv and name not in os.environ:
            os.environ[name] = env.dotenv[name]
    return Path(real)


def _tuning(tycho: Mapping[str, Any], path: Path) -> dict[str, Any]:
    """Cache, extraction and transfer settings from the ``tycho`` section."""
    out: dict[str, Any] = {}
    where = clip(path)
    if "cache" in tycho:
        if not isinstance(tycho["cache"], bool):
            raise ConfigError(f"tycho.cache in {where} must be true or false")
        out["cache"] = tycho["cache"]
    for key in ("cache_limit", "extract_limit", "part_size"):
        if tycho.get(key) is not None:
            out[key] = parse_size(tycho[key], f"tycho.{key} in {where}")
    if out.get("part_size") is not None and not 5 * 1024**2 <= out["part_size"] <= 5 * 1024**3:
        raise ConfigError(f"tycho.part_size in {where} must be between 5MiB and 5GiB (S3's limits)")
    if "concurrency" in tycho:
        value = tycho["concurrency"]
        if isinstance(value, str) and value.isdigit():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 64:
            raise ConfigError(f"tycho.concurrency in {where} must be a whole number from 1 to 64")
        out["concurrency"] = value
    return out


def extract_problem(text: str) -> str | None:
    """Why ``text`` cannot be an ``extract`` folder of a config or lock file (None if it can).

    Extract folders are relative to the project folder (the one holding the config or lock) and
    stay strictly inside it: a cloned repository must not unpack over ``~/.ssh`` or its own
    ``.git`` (hooks run code). Symbolic links on the way are checked when installing.
    """
    if "\0" in text:
        return "it contains a NUL character"
    if text.startswith("~"):
        return "it starts with ~ (it must be relative to the project folder)"
    path = Path(text)
    if path.is_absolute():
        return "it is an absolute path (it must be relative to the project folder)"
    if ".." in path.parts:
        return "it climbs out of the project folder with '..'"
    if not path.parts:
        return "it is the project folder itself"
    if any(part.lower() == ".git" for part in path.parts):
        return "it is inside .git"
    return None


def _packages(section: Any, path: Path) -> dict[str, Requirement]:
    """The ``packages`` section: ``{"narf": "^1.2", "gcc": {"version": "stable", "extract": "tools/gcc"}}``."""
    where = clip(path)
    if not isinstance(section, dict):
        raise ConfigError(f"section 'packages' of {where} must be a JSON object of package: version")
    found: dict[str, Requirement] = {}
    for name, spec in sorted(section.items()):
        entry = f"packages.{clip(name, 60)}"
        try:
            check_package(name)
            if isinstance(spec, str):
                found[name] = Requirement(name, spec, None, Selector.parse(spec))
                continue
            if not isinstance(spec, dict) or set(spec) - {"version", "extract"}:
                odd = sorted(str(k) for k in spec if k not in ("version", "extract")) if isinstance(spec, dict) else []
                guess = suggestion(odd[0], ["version", "extract"]) if odd else None
                raise ConfigError(
                    f'{entry} in {where} must be a version string or {{"version": ..., "extract": DIR}}'
                    + (f"; it has an unknown key {shown(odd[0], 60)}" if odd else "")
                    + (f" (did you mean {guess}?)" if guess else "")
                )
            version = spec.get("version", "latest")
            extract = spec.get("extract")
            if not isinstance(version, str) or (extract is not None and (not isinstance(extract, str) or not extract)):
                raise ConfigError(f"{entry} in {where}: version and extract must be strings")
            problem = extract_problem(extract) if extract is not None else None
            if problem:
                raise ConfigError(
                    f"{entry}.extract in {where} is {shown(extract, 200)}: {problem}",
                    "extract folders must be relative paths inside the folder that holds the config file",
                )
            found[name] = Requirement(
                name, version, Path(extract) if extract is not None else None, Selector.parse(version)
            )
        except UsageError as exc:
            raise ConfigError(f"{entry} in {where}: {exc}", exc.hint) from None
    return found


def _section(raw: Mapping[str, Any], name: str, path: Path) -> dict[str, Any]:
    value = raw.get(name, {})
    if not isinstance(value, dict):
        raise ConfigError(f"section {shown(name)} of {clip(path)} must be a JSON object")
    return dict(value)


def _is_env_ref(value: Any) -> bool:
    return isinstance(value, dict) and "env" in value and set(value) <= {"env", "default"}


def _secret_values(options: Mapping[str, Any]) -> list[str]:
    found: list[str] = []
    for key, value in options.items():
        if isinstance(value, dict):
            found.extend(_secret_values(value))
        elif isinstance(value, str) and len(value) >= 4 and any(w in key.lower() for w in _SECRET_WORDS):
            found.append(value)
    return found


def _readable_by_others(path: Path) -> bool:
    try:
        return bool(path.stat().st_mode & 0o044)
    except OSError:
        return False


def _exposed_secrets(raw: Mapping[str, Any], path: Path) -> tuple[str, ...]:
    """Warn when the file holds literal secrets and others can read it: plain values, and the
    defaults of ``{"env": ..., "default": ...}`` (a default is written in the file too)."""
    literal = []
    for section, values in raw.items():
        if not isinstance(values, dict):
            continue
        for key, value in values.items():
            if not any(w in key.lower() for w in ("secret", "token", "password")):
                continue
            if isinstance(value, str) and value:
                literal.append(f"{section}.{key}")
            elif _is_env_ref(value) and isinstance(value.get("default"), str) and value["default"]:
                literal.append(f"{section}.{key} (its default)")
    if literal and _readable_by_others(path):
        return (
            (
                f"{clip(path)} holds {', '.join(clip(name, 80) for name in literal[:6])} and other users can "
                f"read it: run 'chmod 600 {clip(path)}', or use {{\"env\": NAME}} values without a default"
            ),
        )
    return ()


def _exposed_dotenv(file: Path | None, env: _Environment, path: Path) -> tuple[str, ...]:
    """Warn when the dotenv file holds secrets (variables named as secrets, or feeding a credential
    key) and other users can read it."""
    if file is None or not _readable_by_others(file):
        return ()
    used = {name for where, name, _ in env.taken if where in ("s3.aws_secret_access_key", "s3.aws_session_token")}
    held = sorted(n for n in env.dotenv if n in used or secret_marks(n) - {"KEY"})
    if not held:
        return ()
    return (
        (
            f"{clip(file)} (the dotenv file of {clip(path)}) holds {', '.join(clip(n, 60) for n in held[:6])} "
            f"and other users can read it: run 'chmod 600 {clip(file)}'"
        ),
    )


def _check_s3(options: dict[str, Any], path: Path) -> None:
    where = clip(path)
    bucket = options.get("bucket")
    if not isinstance(bucket, str) or not bucket:
        raise ConfigError(f"the s3 backend needs s3.bucket in {where}", 'add "s3": {"bucket": "my-registry"}')
    if not _BUCKET.match(bucket):
        raise ConfigError(
            f"s3.bucket {shown(bucket)} in {where} is not a valid bucket name",
            "use the bucket's name only (letters, digits, . - _), not a URL or path",
        )
    for key, value in options.items():
        if (key in _S3_STRINGS or key.startswith("aws_")) and value is not None and not isinstance(value, str):
            raise ConfigError(f"s3.{clip(key, 60)} in {where} must be a string")
    prefix = options.get("prefix", "")
    if not isinstance(prefix, str):
        raise ConfigError(f"s3.prefix in {where} must be a string")
    parts = [p for p in prefix.split("/") if p]
    if any(p in (".", "..") for p in parts):
        raise ConfigError(f"s3.prefix {shown(prefix)} in {where} may not contain '.' or '..' segments")
    options["prefix"] = "/".join(parts)


# -- signatures (appended with the signing feature) ---------------------------------------------
def _signing(tycho: Mapping[str, Any], path: Path, cwd: Path) -> dict[str, Any]:
    """``tycho.trusted_signers``, ``tycho.revoked_signers``, ``tycho.signing_key`` (files, relative
    to the config file's folder and confined like ``dotenv``) and ``tycho.require_signatures``."""
    out: dict[str, Any] = {}
    for key in ("trusted_signers", "revoked_signers", "signing_key"):
        if tycho.get(key) is not None:
            out[key] = _confined_file(tycho[key], f"tycho.{key}", path, cwd)
    if "require_signatures" in tycho:
        if not isinstance(tycho["require_signatures"], bool):
            raise ConfigError(f"tycho.require_signatures in {clip(path)} must be true or false")
        out["require_signatures"] = tycho["require_signatures"]
    for key in ("require_signatures", "revoked_signers"):
        if out.get(key) and "trusted_signers" not in out:
            raise ConfigError(
                f"tycho.{key} in {clip(path)} needs tycho.trusted_signers",
                'add "trusted_signers": "allowed_signers" (an ssh-keygen allowed_signers file) to the tycho section',
            )
    return out


def _confined_file(value: Any, setting: str, path: Path, cwd: Path) -> Path:
    """A file a config names for signatures: inside the config file's folder (or the current
    directory), after following symbolic links, as ``dotenv`` is: a cloned repository's config may
    not make tychoreg read, or sign with, a file elsewhere (``~/.ssh/id_ed25519``)."""
    if not isinstance(value, str) or not value or "\0" in value:
        raise ConfigError(f"{setting} in {clip(path)} must be a path")
    file = path.parent / Path(value).expanduser()
    real = os.path.realpath(file)
    if not any(_inside(real, os.path.realpath(folder)) for folder in (path.parent, cwd)):
        via = f" (through a symbolic link, it is {clip(real)})" if real != os.path.abspath(file) else ""
        raise ConfigError(
            f"{setting} in {clip(path)} names {shown(value)}{via}, which is outside the folder of the config file",
            "keep the file beside the config file (a config may not read other files); a key may also be named "
            "on the command line",
        )
    return Path(real)


# -- the http backend (reading over HTTP) ---------------------------------------------------------
#: Variables named as secrets that ``http.headers`` may read: those named for it.
HTTP_SECRET_PREFIX = "TYCHOREG_HTTP_"
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,256}\Z")


def _header_values(options: Mapping[str, Any]) -> list[str]:
    """Every header value is treated as a secret (a bearer token, a cookie): masked in output."""
    headers = options.get("headers")
    if not isinstance(headers, dict):
        return []
    return [v for v in headers.values() if isinstance(v, str) and len(v) >= 4]


def _check_http(options: dict[str, Any], path: Path) -> None:
    """``http.url`` (the registry's root as a static web server serves it) and ``http.headers``."""
    import urllib.parse  # noqa: PLC0415 - ~1 ms, only for the http backend

    where = clip(path)
    unknown = sorted(set(options) - {"url", "headers"})
    if unknown:
        raise ConfigError(
            f"unknown key http.{clip(unknown[0], 60)} in {where}", "the http section takes url and headers"
        )
    url = options.get("url")
    if not isinstance(url, str) or not url:
        raise ConfigError(
            f"the http backend needs http.url in {where}", 'add "http": {"url": "https://host/path/to/registry"}'
        )
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or any(c in url for c in "\0\r\n \t"):
        raise ConfigError(f"http.url {shown(url)} in {where} must be an http:// or https:// URL")
    if parts.username is not None or parts.password is not None:
        raise ConfigError(
            f"http.url in {where} holds credentials", 'send them as a header instead: "headers": {"Authorization": ...}'
        )
    if parts.query or parts.fragment:
        raise ConfigError(f"http.url {shown(url)} in {where} must not have a query or fragment")
    options["url"] = url if url.endswith("/") else url + "/"
    headers = options.get("headers", {})
    if not isinstance(headers, dict):
        raise ConfigError(f"http.headers in {where} must be a JSON object of header names and values")
    for name, value in headers.items():
        if not _HEADER_NAME.match(name):
            raise ConfigError(f"http.headers in {where}: {shown(name)} is not a header name")
        if not isinstance(value, str) or any(c in value for c in "\r\n\0"):
            raise ConfigError(f"http.headers.{clip(name, 60)} in {where} must be a one-line string")
    options["headers"] = dict(headers)


def _retention(section: Any, path: Path) -> dict[str, Retention]:
    """The ``retention`` section: ``{"*": {"keep": 20, "older_than": "180d"}, "narf": {"keep": 5}}``.
    A package's own entry replaces ``*`` for it (``{}``: never pruned by the config)."""
    where = clip(path)
    if not isinstance(section, dict):
        raise ConfigError(f"section 'retention' of {where} must be a JSON object of package (or \"*\"): policy")
    found: dict[str, Retention] = {}
    for name, spec in sorted(section.items()):
        entry = f"retention.{clip(name, 60)}"
        if name != "*":
            try:
                check_package(name)
            except UsageError as exc:
                raise ConfigError(f"{entry} in {where}: {exc}", 'name a package, or "*" for every package') from None
        if not isinstance(spec, dict) or set(spec) - {"keep", "older_than"}:
            raise ConfigError(
                f"{entry} in {where} must be an object with keep and/or older_than",
                'e.g. {"keep": 20, "older_than": "180d"}',
            )
        keep, older = spec.get("keep"), spec.get("older_than")
        if keep is not None and (not isinstance(keep, int) or isinstance(keep, bool) or keep < 0):
            raise ConfigError(f"{entry}.keep in {where} must be a whole number of versions (0 or more)")
        if older is not None and not isinstance(older, str):
            raise ConfigError(f'{entry}.older_than in {where} must be an age such as "180d" or "12h"')
        try:
            age = parse_age(older) if older is not None else None
        except UsageError as exc:
            raise ConfigError(f"{entry}.older_than in {where}: {exc}", exc.hint) from None
        found[name] = Retention(keep, age)
    return found
