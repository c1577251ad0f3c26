"""The command line: parse arguments, call :class:`~tychoreg.registry.Registry`, print.

Typed errors become one ``error:`` line and one ``hint:`` line on stderr and the exit status they
carry; anything unexpected is reported as an internal error (traceback only with ``--debug``).
Secrets from the configuration are masked in every message. Much of what is printed comes from
storage or from files a cloned repository brought (yank reasons, notes, names in errors), so
every line printed as text has its control characters escaped here, at the edge: an escape
sequence in a note must not drive the user's terminal, and a newline must not forge a line.
JSON output is already safe (``json.dumps`` escapes them). Heavy modules (boto3, the domain)
are imported inside the commands so ``--help`` and ``--version`` start fast.
"""

from __future__ import annotations

import json
import os
import re
import sys
import unicodedata
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

from . import __version__
from .errors import ConfirmationNeeded, OperationError, Reason, TychoError, UsageError
from .progress import Bars
from .progress import wanted as progress_wanted

if TYPE_CHECKING:
    from click.shell_completion import CompletionItem

    from .cache import Cache
    from .config import Settings
    from .models import PullResult
    from .registry import Registry
    from .retention import Plan
    from .selector import PackageSpec


#: A command function as the option decorators get and return it.
_Command = TypeVar("_Command", bound=Callable[..., Any])


class _State:
    """Per-invocation options shared by the group and its commands."""

    def __init__(self) -> None:
        self.config: str | None = None
        self.debug = False
        self.quiet = False
        self.no_cache = False
        self.no_delta = False
        self.settings: Settings | None = None
        #: --json: results are one JSON document on stdout, and nothing else goes there.
        self.as_json = False
        #: The embedded default registry's location, when that is the one in use.
        self.default_registry: str | None = None

    def registry(self, connections: int = 0) -> Registry:
        """The registry the configuration names. ``connections``: how many requests the command
        sends at once first; they start connecting now, while the domain is still importing."""
        from .config import load_settings  # noqa: PLC0415 - the domain loads on use: --help stays fast
        from .store import connect_ahead  # noqa: PLC0415 - the domain loads on use: --help stays fast

        self.settings = load_settings(self.config)
        if connections:
            connect_ahead(self.settings.backend, self.settings.options, connections)
        from .registry import Registry  # noqa: PLC0415 - imported after the connections are under way

        if self.no_cache:
            self.settings = replace(self.settings, cache=False)
        for warning in self.settings.warnings:
            _warn(warning)
        reg = Registry.from_settings(self.settings, warn=_warn)
        reg.catalog_problem = _warn_error
        reg.delta = not self.no_delta
        if self.settings.origin == "default":
            self.default_registry = reg.location
        return reg

    def wrote(self) -> None:
        """Say, once, that a write went to the embedded default registry: with no config file in
        sight, a push may not land where the user thinks."""
        if self.default_registry is not None:
            _note(f"Wrote to the default registry in {self.default_registry} (no config file found here or above)")
            self.default_registry = None

    def redact(self, text: str) -> str:
        for secret in self.settings.secrets if self.settings else ():
            text = text.replace(secret, "****")
        return text


_STATE = _State()


def _set_config(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    if value is not None:
        _STATE.config = value


def _set_debug(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    _STATE.debug = _STATE.debug or value


def _set_quiet(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    _STATE.quiet = _STATE.quiet or value


def _set_no_cache(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    _STATE.no_cache = _STATE.no_cache or value


def _set_json(ctx: click.Context, param: click.Parameter, value: bool) -> bool:
    _STATE.as_json = _STATE.as_json or value
    return value


def json_option(func: _Command) -> _Command:
    """``--json``: print one JSON document on stdout (progress and remarks go to stderr or nowhere)."""
    return click.option(
        "--json", "as_json", is_flag=True, callback=_set_json, help="Print one JSON document on stdout."
    )(func)


def no_cache_option(func: _Command) -> _Command:
    """``--no-cache``, for the commands that download."""
    return click.option(
        "--no-cache",
        is_flag=True,
        expose_value=False,
        callback=_set_no_cache,
        help="Neither read nor fill the shared download cache this time.",
    )(func)


def _set_no_delta(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    _STATE.no_delta = _STATE.no_delta or value


def no_delta_option(func: _Command) -> _Command:
    """``--no-delta``, for the commands that download."""
    return click.option(
        "--no-delta",
        is_flag=True,
        expose_value=False,
        callback=_set_no_delta,
        help="Download whole files: do not reuse the parts that local copies already hold.",
    )(func)


def common(func: _Command) -> _Command:
    """``--config``, ``--quiet`` and ``--debug``, accepted before or after the command name."""
    func = click.option(
        "-q",
        "--quiet",
        is_flag=True,
        expose_value=False,
        callback=_set_quiet,
        help="No progress bars and no progress lines; errors and warnings still show.",
    )(func)
    func = click.option(
        "--debug",
        is_flag=True,
        expose_value=False,
        callback=_set_debug,
        help="Show tracebacks and request details on errors.",
    )(func)
    return click.option(
        "--config",
        metavar="PATH",
        expose_value=False,
        callback=_set_config,
        help=(
            "Config file (default: $TYCHOREG_CONFIG, else the nearest .tychoreg.json here or above, "
            "else the embedded default registry)."
        ),
    )(func)


#: Errors, warnings and hints longer than this are cut in the middle (a name can be megabytes).
MAX_MESSAGE = 1000
_PLAIN = re.compile(r"[ -~]*\Z")
# Control (C0, DEL, C1), format (bidi overrides, zero-width), surrogates, line/paragraph separators.
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


_SHORT = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(ch: str) -> str:
    if unicodedata.category(ch) not in _UNSAFE_CATEGORIES:
        return ch
    if ch in _SHORT:
        return _SHORT[ch]
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def clean(text: str) -> str:
    """``text`` with every control, format and separator character escaped (``\\x1b``): safe
    to print on a terminal, one line."""
    if _PLAIN.match(text):
        return text
    return "".join(_escape(ch) for ch in text)


def _message(text: str) -> str:
    """A message for stderr: secrets masked first (a cut must not split one), then escaped, then
    bounded."""
    from .names import clip  # noqa: PLC0415 - ~0.3 ms off --help

    return clip(clean(_STATE.redact(text)), MAX_MESSAGE)


def _out(text: str) -> None:
    """Results on stdout, not masked (a package named like a key is data), but escaped."""
    click.echo(clean(text))


def _json(doc: Any) -> None:
    """One JSON document on stdout; ``json.dumps`` escapes control characters itself."""
    click.echo(json.dumps(doc, indent=2))


def _info(text: str) -> None:
    """What was done (pulled, pushed, skipped): on stdout like results, silenced by --quiet and
    by --json (whose document says it)."""
    if not _STATE.quiet and not _STATE.as_json:
        click.echo(clean(text))


def _note(text: str) -> None:
    """A remark on stderr that is neither an error nor a warning (nothing found, dry run)."""
    click.echo(_message(text), err=True)


@contextmanager
def _bars() -> Iterator[Bars]:
    bars = Bars(progress_wanted(_STATE.quiet))
    try:
        yield bars
    finally:
        bars.close()


def _warn(text: str) -> None:
    click.echo(_message(f"warning: {text}"), err=True)


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


class _ClosedPipe(Exception):
    """stdout's reader went away; raised instead of ``BrokenPipeError``, which click would turn
    into exit status 1 on its own."""


class _Group(click.Group):
    """The command group: a closed stdout in any command reaches :func:`main` as :class:`_ClosedPipe`."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BrokenPipeError:
            raise _ClosedPipe from None


@click.group(
    cls=_Group,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100, "terminal_width": 100},
)
@click.version_option(__version__, "--version", "-V", prog_name="tychoreg", message="%(prog)s %(version)s")
@common
def cli() -> None:
    """tychoreg: versioned files and archives in your own S3 bucket or folder.

    \b
    Quick start:
      tychoreg init narf narf.tar.gz
      tychoreg push narf 1.0 build/narf.tar.gz --promote-latest
      tychoreg pull narf            # -> tycho_packages/narf.tar.gz
    """


@cli.command()
@click.argument("package", metavar="PKG")
@click.argument("filename", metavar="FILENAME")
@json_option
@common
def init(package: str, filename: str, as_json: bool) -> None:
    """Create package PKG whose pulls are saved as FILENAME."""
    reg = _STATE.registry()
    reg.init(package, filename)
    if as_json:
        _json({"package": package, "filename": filename, "registry": reg.location})
    else:
        _out(f"Initialized {package} in {reg.location} (pulls are saved as {filename})")
    _STATE.wrote()


@cli.command()
@click.argument("package", metavar="PKG")
@click.argument("version", metavar="VERSION")
@click.argument("file", metavar="FILE|DIR", type=click.Path(path_type=Path))
@click.option("--promote-latest", is_flag=True, help="Also make this version the one `latest` means.")
@click.option("--note", metavar="TEXT", help="A note recorded with the version (shown by `info`).")
@click.option(
    "--skip-existing",
    is_flag=True,
    help="Succeed when VERSION already holds exactly these bytes (fail if other bytes).",
)
@click.option(
    "--sign",
    "sign",
    metavar="KEY",
    type=click.Path(path_type=Path),
    help="Sign the version with this SSH key (a private key, or a public key held by ssh-agent); "
    "default: tycho.signing_key, if set.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["tar.gz", "tar.zst", "zip"]),
    help="Pack a DIR as this (default: what PKG's file name ends in, else tar.gz).",
)
@json_option
@common
def push(
    package: str,
    version: str,
    file: Path,
    promote_latest: bool,
    note: str | None,
    skip_existing: bool,
    sign: Path | None,
    fmt: str | None,
    as_json: bool,
) -> None:
    """Upload FILE as VERSION of PKG. Versions are immutable.

    A DIR is packed reproducibly first (sorted, fixed times and owners: the same tree gives the
    same bytes, so --skip-existing recognises a rebuilt tree); pull --extract unpacks it.
    """
    reg = _STATE.registry()
    with _bars() as bars:
        result = reg.push(
            package,
            version,
            file,
            promote_latest=promote_latest,
            note=note,
            skip_existing=skip_existing,
            progress=bars,
            sign=sign,
            format=fmt,
        )
    if not result.skipped or result.promoted:
        _STATE.wrote()
    if as_json:
        _json(result.to_json(package))
        return
    if result.packed:
        p = result.packed
        counts = ", ".join(
            f"{n} {w}{'' if n == 1 else 's'}" for n, w in ((p.files, "file"), (p.folders, "folder"), (p.links, "link"))
        )
        _info(f"Packed {p.folder} as {p.format}: {counts}, {_size(p.content_bytes)} -> {_size(p.archive_bytes)}")
    if result.skipped:
        _info(f"Already there: {package} {version} holds exactly these bytes (skipped)")
    else:
        info = result.version
        _info(f"Pushed {package} {version} ({_size(info.size)}, sha256 {info.sha256})")
    if result.signed_by:
        _info(f"Signed {package} {version} with {result.signed_by}")
    if result.promoted:
        _info(f"{package} latest -> {version}")


def _shown(path: Path) -> str:
    """A path as the user would type it: relative when under the current directory."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except (ValueError, OSError):
        return str(path)


def _report_pull(result: PullResult) -> None:
    if result.yanked:
        _warn(
            f"{result.package} {result.version} is yanked"
            + (f": {result.yank_reason}" if result.yank_reason else "")
            + "; no range or latest picks it"
        )
    if not result.verified:
        how = "size and ETag" if result.checked_by == "etag" else "size only"
        _warn(
            f"{result.package} {result.version} has no recorded SHA-256 (pushed by tycho-station 0.4.0 "
            f"or another tool): checked by {how}, unverified"
        )
    if result.signers is not None and not result.signers:
        _warn(f"{result.package} {result.version} is not signed: no signature to check against the trusted signers")
    check = "sha256 verified" if result.verified else "unverified"
    if result.signers:
        check += f", signed by {', '.join(result.signers)}"
    if result.resumes:
        check += f", resumed {result.resumes}x after interruptions"
    if result.reused:
        fetched = result.fetched or 0
        check += f", reused {_size(result.reused)} of {_size(result.size or 0)}, fetched {_size(fetched)}"
    verb = "Extracted" if result.extracted else "Pulled"
    if result.downloaded:
        _info(f"{verb} {result.package} {result.version} -> {_shown(result.path)} ({check})")
    elif result.from_cache:
        _info(f"{verb} {result.package} {result.version} -> {_shown(result.path)} (from the cache, {check})")
    elif result.extracted:
        _info(
            f"Up to date: {result.package} {result.version} already extracted in {_shown(result.path)} "
            "(skipped; --force to extract again)"
        )
    else:
        _info(
            f"Up to date: {result.package} {result.version} already at {_shown(result.path)} "
            "(skipped; --force to download)"
        )


@cli.command()
@click.argument("package", metavar="PKG[@SELECTOR]")
@click.option(
    "--version",
    "version",
    default=None,
    show_default="latest",
    help="A version, a tag, or a range such as ^1.2, ~1.2.3, >=1.2,<2, 1.x (or write PKG@SELECTOR).",
)
@click.option("--outfile", type=click.Path(path_type=Path), help="Save here instead of OUTDIR/FILENAME.")
@click.option("--force", is_flag=True, help="Download even when the destination is up to date.")
@click.option("--pre", is_flag=True, help="Let a range pick pre-releases.")
@click.option(
    "--extract",
    "extract",
    metavar="DIR",
    type=click.Path(path_type=Path),
    help="Unpack the archive (tar, tar.gz/bz2/xz/zst, zip) into DIR instead of saving the file.",
)
@click.option(
    "--allow-unverified",
    is_flag=True,
    help="Take a version whose record is missing although it had one, by size and ETag.",
)
@no_cache_option
@no_delta_option
@json_option
@common
def pull(
    package: str,
    version: str | None,
    outfile: Path | None,
    force: bool,
    pre: bool,
    extract: Path | None,
    allow_unverified: bool,
    as_json: bool,
) -> None:
    """Download VERSION (default latest) of PKG to OUTDIR/FILENAME or --outfile.

    \b
    e.g. tychoreg pull narf@^1.2      (the same as: tychoreg pull narf --version '^1.2')
    """
    if extract is not None and outfile is not None:
        raise UsageError("--extract and --outfile do not go together", "give one of them")
    spec = _spec(package, version)
    reg = _STATE.registry(connections=3)  # tycho.json, the record and a HEAD of the data
    with _bars() as bars:
        result = reg.pull(
            spec.package,
            spec.wanted(),
            outfile=outfile,
            force=force,
            pre=pre,
            progress=bars,
            extract=extract,
            allow_unverified=allow_unverified,
        )
    _report_pull(result)
    if as_json:
        _json(result.to_json())


def _spec(text: str, version: str | None, option: str = "--version") -> PackageSpec:
    """``PKG`` or ``PKG@SELECTOR`` as typed, with the selector an option may give instead
    (both at once is a usage error)."""
    from .selector import PackageSpec, Selector  # noqa: PLC0415 - the domain loads on use: --help stays fast

    spec = PackageSpec.parse(text)
    if version is None:
        return spec
    if spec.selector is not None:
        raise UsageError(
            f"{clean(text)} already names a version, and {option} {clean(version)} names one too",
            f"give the version once: {clean(spec.package)}@SELECTOR or {option}",
            reason="selector-twice",
        )
    return PackageSpec(spec.package, Selector.parse(version))


def _done(name: str, outcome: PullResult | TychoError) -> None:
    if isinstance(outcome, TychoError):
        _print_error(outcome, prefix=f"{name}: ")
    else:
        _report_pull(outcome)


def _outcomes_json(results: list[tuple[str, PullResult | TychoError]]) -> list[dict[str, Any]]:
    """The contract's list for pull-list and sync: a pull per package, or its error."""
    return [
        _error_json(name, outcome) if isinstance(outcome, TychoError) else outcome.to_json()
        for name, outcome in results
    ]


def _error_json(package: str, exc: TychoError) -> dict[str, Any]:
    """One package's failure in a JSON list: ``{"package", "error"}``, then its reason and hint."""
    hint = hint_for(exc)
    return {
        "package": package,
        "error": _STATE.redact(str(exc)),
        "reason": exc.reason,
        "hint": _STATE.redact(hint) if hint else None,
    }


@cli.command("pull-list")
@click.argument("packages", metavar="PKG[@SELECTOR]...", nargs=-1)
@click.option(
    "--from",
    "source",
    metavar="FILE",
    type=click.Path(path_type=Path),
    help="Also pull what FILE names: a tycho.lock (exact versions, verified), or a list with one PKG per line.",
)
@click.option("--force", is_flag=True, help="Download even when destinations are up to date.")
@click.option("--offline", is_flag=True, help="With a lock file: use the cache only, never the registry.")
@no_cache_option
@no_delta_option
@json_option
@common
def pull_list(packages: tuple[str, ...], source: Path | None, force: bool, offline: bool, as_json: bool) -> None:
    """Pull the latest version of each PKG (or what PKG@SELECTOR or --from FILE names); report
    every failure.

    \b
    e.g. tychoreg pull-list narf@^1 tool@stable gcc@13.2.0
    """
    specs = [_spec(p, None) for p in packages]
    reg = _STATE.registry(connections=0 if offline else 3)
    with _bars() as bars:
        results = reg.pull_list(specs, from_file=source, force=force, offline=offline, progress=bars, done=_done)
    if as_json:
        _json(_outcomes_json(results))
    failed = sum(isinstance(outcome, TychoError) for _, outcome in results)
    if failed:
        raise TychoError(f"{failed} of {len(results)} packages failed to pull", "see the errors above")


@cli.command("list", short_help="Every package (or those matching a glob) with its latest version.")
@click.argument("pattern", metavar="[PATTERN]", required=False)
@json_option
@common
def list_(pattern: str | None, as_json: bool) -> None:
    """Every package (matching the glob PATTERN, e.g. 'tools-*') with its latest version.

    \b
    e.g. tychoreg list 'tools-*' --json
    """
    reg = _STATE.registry(connections=8)  # the listing, then tycho.json of each package in waves
    infos = reg.packages(pattern)
    for info in infos:
        if info.problem:
            _warn(info.problem)
    if as_json:
        _json([{"name": i.name, "latest": i.latest} for i in infos])
        return
    if not infos:
        _note(f"No packages in {reg.location}")
    width = max((len(i.name) for i in infos), default=0)
    for info in infos:
        _out(f"{info.name.ljust(width)}  {info.latest or '-'}")


@cli.command("list-versions")
@click.argument("package", metavar="PKG")
@json_option
@common
def list_versions(package: str, as_json: bool) -> None:
    """Every version of PKG, ascending by version precedence."""
    reg = _STATE.registry(connections=4)  # tycho.json, two listings and the catalog at once
    versions = reg.versions(package)
    for v in versions:
        if v.problem:
            _warn(v.problem)
    if as_json:
        _json([v.to_json() for v in versions])
        return
    if not versions:
        _note(f"{package} has no versions yet")
    width = max((len(v.version) for v in versions), default=0)
    for v in versions:
        pushed = (v.pushed_at or "")[:16].replace("T", " ") or "-"
        state = "sha256" if v.sha256 else "DAMAGED" if v.problem else "unverified"
        marks = ([f"[{', '.join(v.tags)}]"] if v.tags else []) + (["YANKED"] if v.yanked else [])
        _out(f"{v.version.ljust(width)}  {_size(v.size):>10}  {pushed:16}  {state:10}  {' '.join(marks)}".rstrip())


@cli.command()
@click.argument("package", metavar="PKG")
@click.argument("version", metavar="VERSION")
@json_option
@common
def promote(package: str, version: str, as_json: bool) -> None:
    """Make VERSION the one that `latest` means."""
    _STATE.registry().promote(package, version)
    _STATE.wrote()
    if as_json:
        _json({"package": package, "version": version, "latest": version})
    else:
        _out(f"{package} latest -> {version}")


@cli.command()
@click.argument("package", metavar="PKG")
@click.argument("version", metavar="VERSION")
@click.argument("tag", metavar="TAG")
@click.option("--pre", is_flag=True, help="Let a range pick pre-releases.")
@json_option
@common
def tag(package: str, version: str, tag: str, pre: bool, as_json: bool) -> None:
    """Point TAG (e.g. stable) at VERSION (a version, tag or range)."""
    exact = _STATE.registry().tag(package, version, tag, pre=pre)
    _STATE.wrote()
    if as_json:
        _json({"package": package, "tag": tag, "version": exact})
    else:
        _out(f"{package} {tag} -> {exact}")


@cli.command()
@click.argument("package", metavar="PKG")
@click.argument("tag", metavar="TAG")
@json_option
@common
def untag(package: str, tag: str, as_json: bool) -> None:
    """Remove TAG from PKG."""
    old = _STATE.registry().untag(package, tag)
    _STATE.wrote()
    if as_json:
        _json({"package": package, "tag": tag, "was": old})
    else:
        _out(f"Removed tag {tag} of {package} (was {old})")


def _confirm(question: str, yes: bool) -> bool:
    """Consent: --yes, or an answer on a terminal; never a prompt in a script."""
    if yes:
        return True
    if sys.stdin.isatty() and sys.stderr.isatty():
        return click.confirm(question, default=False, err=True)
    return False


@cli.command(short_help="Stop handing out VERSION to ranges and latest.")
@click.argument("package", metavar="PKG")
@click.argument("version", metavar="VERSION")
@click.option("--reason", metavar="TEXT", help="Why; shown to everyone who pulls it by name.")
@click.option("--yes", is_flag=True, help="Go ahead even if latest has to move.")
@json_option
@common
def yank(package: str, version: str, reason: str | None, yes: bool, as_json: bool) -> None:
    """Stop handing out VERSION: no range or latest picks it; exact pulls still work, with a warning."""
    reg = _STATE.registry()
    try:
        latest = reg.yank(package, version, reason, move_latest=yes)
    except ConfirmationNeeded as exc:
        if not _confirm(f"{exc}. Go ahead?", yes):
            raise
        latest = reg.yank(package, version, reason, move_latest=True)
    _STATE.wrote()
    if as_json:
        _json({"package": package, "version": version, "yanked": True, "reason": reason, "latest": latest})
        return
    _out(f"Yanked {package} {version}" + (f" ({reason})" if reason else ""))
    _out(f"{package} latest -> {latest or '(unset)'}")


@cli.command()
@click.argument("package", metavar="PKG")
@click.argument("version", metavar="VERSION")
@json_option
@common
def unyank(package: str, version: str, as_json: bool) -> None:
    """Make a yanked VERSION resolvable again (latest is left as it is)."""
    _STATE.registry().unyank(package, version)
    _STATE.wrote()
    if as_json:
        _json({"package": package, "version": version, "yanked": False})
    else:
        _out(f"Unyanked {package} {version}")


@cli.command()
@click.argument("package", metavar="PKG")
@click.argument("version", metavar="[VERSION]", required=False)
@click.option("--yes", is_flag=True, help="Do not ask for confirmation (for scripts).")
@click.option("--force", is_flag=True, help="Also delete versions that tags point to, and those tags.")
@click.option("--dry-run", is_flag=True, help="Say what would be deleted; delete nothing (needs no --yes).")
@json_option
@common
def delete(package: str, version: str | None, yes: bool, force: bool, dry_run: bool, as_json: bool) -> None:
    """Delete VERSION of PKG, or all of PKG, data and metadata."""
    what = f"{package} {version}" if version else f"package {package} with all its versions"
    if dry_run:
        plan = _STATE.registry().plan_delete(package, version, force=force)
        if as_json:
            _json({**plan.to_json(), "deleted": False, "dry_run": True})
            return
        exact = f"{package} {plan.version}" if plan.version else f"package {package}"
        count = f" ({len(plan.versions)} version{'s' if len(plan.versions) != 1 else ''})" if not plan.version else ""
        _out(f"Would delete {exact}{count}" + (f" and tags {', '.join(plan.tags)}" if plan.tags else ""))
        for v in plan.versions if not plan.version else ():
            _out(f"  {v}")
        _note("Dry run: nothing was deleted")
        return
    if not _confirm(f"Delete {what}? This cannot be undone.", yes):
        raise TychoError(f"not deleting {what} without confirmation", "pass --yes to confirm")
    removed = _STATE.registry().delete(package, version, force=force)
    _STATE.wrote()
    if as_json:
        _json({"package": package, "version": version, "tags": removed, "deleted": True, "dry_run": False})
    else:
        _out(f"Deleted {what}" + (f" (and tags {', '.join(removed)})" if removed else ""))


@cli.command(short_help="Show a package, or one version: size, sha256, who, when, note.")
@click.argument("package", metavar="PKG[@SELECTOR]")
@click.argument("version", metavar="[VERSION]", required=False)
@click.option(
    "--version", "version_option", metavar="SELECTOR", help="The version to show (the same as VERSION or PKG@SELECTOR)."
)
@json_option
@click.option("--pre", is_flag=True, help="Let a range pick pre-releases.")
@common
def info(package: str, version: str | None, version_option: str | None, as_json: bool, pre: bool) -> None:
    """Show PKG (localname, tags, newest versions) or one VERSION (size, sha256, who, when, note).

    \b
    e.g. tychoreg info narf@stable   (the same as: tychoreg info narf stable)
    """
    from .models import PackageDetails  # noqa: PLC0415 - the domain loads on use: --help stays fast

    if version is not None and version_option is not None:
        raise UsageError(
            f"VERSION {clean(version)} and --version {clean(version_option)} both name a version",
            "give the version once",
            reason="selector-twice",
        )
    spec = _spec(package, version_option, "--version") if version is None else _spec(package, version, "VERSION")
    reg = _STATE.registry()
    details = (
        reg.info(spec.package) if spec.selector is None else reg.version_info(spec.package, spec.selector, pre=pre)
    )
    if as_json:
        _json(details.to_json())
        return
    if isinstance(details, PackageDetails):
        rows = [
            ("package", details.name),
            ("localname", details.localname or "-"),
            ("tags", ", ".join(f"{t} -> {v}" for t, v in details.tags.items()) or "-"),
            ("yanked", ", ".join(details.yanked) or "-"),
            ("versions", str(details.version_count)),
            ("newest", ", ".join(v.version for v in details.newest) or "-"),
        ]
    else:
        v = details
        rows = [
            ("version", v.version),
            ("size", f"{_size(v.size)} ({v.size} bytes)"),
            ("sha256", v.sha256 or "- (unverified: pushed without a record)"),
            ("pushed at", v.pushed_at or "-"),
            ("pushed by", v.pushed_by or "-"),
            ("note", v.note or "-"),
            ("tags", ", ".join(v.tags) or "-"),
            ("yanked", ("yes" + (f": {v.yank_reason}" if v.yank_reason else "")) if v.yanked else "no"),
        ]
        if v.signers is not None:
            rows.append(("signed by", ", ".join(v.signers) or ("- (INVALID)" if v.problem else "- (unsigned)")))
        if v.problem:
            _warn(v.problem)
    for label, value in rows:
        _out(f"{label + ':':11} {value}")


@cli.command(short_help="Check stored versions against their SHA-256 and size.")
@click.argument("package", metavar="[PKG[@SELECTOR]]", required=False)
@click.argument("version", metavar="[VERSION]", required=False)
@json_option
@common
def verify(package: str | None, version: str | None, as_json: bool) -> None:
    """Re-read stored versions and check them against their SHA-256 and size; exit 1 on any mismatch."""
    spec = _spec(package, version, "VERSION") if package is not None else None
    reg = _STATE.registry()
    results = reg.verify(spec.package, spec.selector) if spec is not None else reg.verify()
    bad = [r for r in results if not r.ok]
    if as_json:
        _json(
            [
                {
                    "package": r.package,
                    "version": r.version,
                    "ok": r.ok,
                    "checked_by": r.checked_by,
                    "problem": r.problem,
                    **({"signed_by": list(r.signers)} if r.signers is not None else {}),
                }
                for r in results
            ]
        )
    else:
        for r in results:
            signed = f", signed by {', '.join(r.signers)}" if r.signers else ", unsigned" if r.signers == () else ""
            _out(f"{'ok    ' if r.ok else 'FAILED'}  {r.package} {r.version}  ({r.checked_by}{signed})")
    for r in bad:
        _warn(r.problem or f"{r.package} {r.version} failed")
    if bad:
        raise TychoError(
            f"{len(bad)} of {len(results)} versions failed verification",
            "re-push good copies as new versions and delete or yank the damaged ones",
        )
    _note(f"{len(results)} versions verified")


@cli.command(short_help="List (or --yes: delete) what interrupted pushes left behind.")
@click.option(
    "--older-than",
    "older_than",
    default="24h",
    show_default=True,
    metavar="AGE",
    help="Leave alone what is younger (pushes may still be running), e.g. 2h, 7d.",
)
@click.option("--yes", is_flag=True, help="Delete what is found (default: only list it).")
@json_option
@common
def gc(older_than: str, yes: bool, as_json: bool) -> None:
    """Find debris of interrupted pushes and deletes (unfinished uploads, orphaned claims, chunk
    indexes of versions that are gone); --yes deletes it."""
    from .units import parse_age  # noqa: PLC0415 - ~0.3 ms off --help

    found = _STATE.registry().gc(older_than=parse_age(older_than), remove=yes)
    if yes and found:
        _STATE.wrote()
    if as_json:
        _json(
            {
                "removed": yes,
                "dry_run": not yes,
                "debris": [{"kind": d.kind, "key": d.key, "size": d.size} for d in found],
            }
        )
        return
    for d in found:
        _out(
            f"{'removed' if yes else 'would remove'}  {d.kind}  {d.key}"
            + (f"  ({_size(d.size)})" if d.size is not None else "")
        )
    if not found:
        _note("No debris found")
    elif not yes:
        _note("Dry run: pass --yes to delete")


@cli.command(short_help="Install the packages the config declares, as tycho.lock pins them.")
@click.option("--locked", is_flag=True, help="Install exactly what tycho.lock says; fail if it is stale.")
@click.option("--offline", is_flag=True, help="Use tycho.lock and the cache only; never the registry.")
@click.option("--force", is_flag=True, help="Download and extract again even when up to date.")
@click.option("--dry-run", is_flag=True, help="Say what would be locked and installed; write and download nothing.")
@no_cache_option
@no_delta_option
@json_option
@common
def sync(locked: bool, offline: bool, force: bool, dry_run: bool, as_json: bool) -> None:
    """Install the config's `packages`: resolve what tycho.lock does not pin yet, write the
    lock, then pull (and extract) each in parallel. Up-to-date packages cost nothing.

    \b
    e.g. "packages": {"narf": "^1.2", "gcc": {"version": "stable", "extract": "tools/gcc"}}
    """
    reg = _STATE.registry()
    if dry_run:
        _sync_plan(reg, locked=locked, offline=offline, force=force, as_json=as_json)
        return
    try:
        with _bars() as bars:
            results = reg.sync(locked=locked, offline=offline, force=force, progress=bars, done=_done)
    except OperationError as exc:
        _unresolved_json(exc, as_json)
        raise
    if as_json:
        _json(_outcomes_json(results))
    failed = sum(isinstance(outcome, TychoError) for _, outcome in results)
    if failed:
        raise TychoError(f"{failed} of {len(results)} packages failed to install", "see the errors above")


def _unresolved_json(exc: OperationError, as_json: bool) -> None:
    """With --json, the packages a sync could not resolve (so it installed nothing), each with its error."""
    failed = exc.details.get("failed") if exc.reason == "unresolved" else None
    if as_json and isinstance(failed, dict):
        _json(_outcomes_json(sorted(failed.items())))


_ACTIONS = {"up-to-date": "up to date", "from-cache": "would copy from the cache", "download": "would download"}


def _sync_plan(reg: Registry, *, locked: bool, offline: bool, force: bool, as_json: bool) -> None:
    try:
        plan = reg.plan_sync(locked=locked, offline=offline, force=force)
    except OperationError as exc:
        _unresolved_json(exc, as_json)
        raise
    if as_json:
        _json(
            [
                _error_json(name, p) if isinstance(p, TychoError) else {**p.to_json(), "dry_run": True}
                for name, p in plan.packages
            ]
        )
    else:
        if plan.lock_changes:
            _out(f"Would write {_shown(plan.lockfile)}")
        for name, p in plan.packages:
            if isinstance(p, TychoError):
                _print_error(p, prefix=f"{name}: ")
            else:
                _out(f"{_ACTIONS[p.action]}: {p.package} {p.version} -> {_shown(p.path)}")
        _note("Dry run: nothing was written or downloaded")
    failed = sum(isinstance(p, TychoError) for _, p in plan.packages)
    if failed:
        raise TychoError(f"{failed} of {len(plan.packages)} packages could not be installed", "see the errors above")


@cli.command(short_help="Resolve the declared packages into tycho.lock (download nothing).")
@click.argument("packages", metavar="[PKG...]", nargs=-1)
@click.option("--upgrade", is_flag=True, help="Resolve again the named packages (all, if none named).")
@click.option("--dry-run", is_flag=True, help="Say what the lock would pin; write nothing.")
@click.option("--check", is_flag=True, help="Exit 1 if tycho.lock does not answer the declarations (for CI); offline.")
@json_option
@common
def lock(packages: tuple[str, ...], upgrade: bool, dry_run: bool, check: bool, as_json: bool) -> None:
    """Pin each declared package to an exact version and SHA-256 in tycho.lock. Entries already
    locked stay as they are unless --upgrade (for PKG..., or for all)."""
    if packages and not upgrade:
        raise UsageError("naming packages needs --upgrade", f"e.g. tychoreg lock --upgrade {packages[0][:60]}")
    if check and (upgrade or dry_run):
        raise UsageError("--check does not go with --upgrade or --dry-run", "give --check alone")
    reg = _STATE.registry()
    if check:
        problems = reg.lock_problems()
        assert reg.project is not None
        if as_json:
            _json({"lockfile": str(reg.project.lockfile), "fresh": not problems, "problems": problems})
        for problem in problems:
            _warn(problem)
        if problems:
            raise OperationError(
                f"{reg.project.lockfile.name} does not answer the declared packages", reason="stale-lock"
            )
        _note(f"{_shown(reg.project.lockfile)} answers every declared package")
        return
    upgrading = list(packages) if packages else upgrade
    entries, changed = reg.plan_lock(upgrade=upgrading) if dry_run else reg.lock(upgrade=upgrading)
    assert reg.project is not None
    if as_json:
        _json(
            {
                "lockfile": str(reg.project.lockfile),
                "changed": changed,
                "dry_run": dry_run,
                "packages": [{"package": name, **entries[name].to_object()} for name in sorted(entries)],
            }
        )
        return
    for name in sorted(entries):
        signer = entries[name].signer
        _info(f"{name:20} {entries[name].version}" + (f"  signed by {signer}" if signer else ""))
    if dry_run:
        _info(f"{'Would write' if changed else 'Would leave unchanged:'} {_shown(reg.project.lockfile)}")
        _note("Dry run: nothing was written")
    else:
        _info(f"{'Wrote' if changed else 'Unchanged:'} {_shown(reg.project.lockfile)}")


@cli.group(short_help="Inspect or prune the shared download cache.")
def cache() -> None:
    """The shared download cache: files by SHA-256, shared by every project of this user."""


def _cache() -> Cache:
    from .config import load_settings  # noqa: PLC0415 - the domain loads on use: --help stays fast
    from .registry import Registry  # noqa: PLC0415 - the domain loads on use: --help stays fast

    return Registry.download_cache(load_settings(_STATE.config))


@cache.command("info")
@json_option
@common
def cache_info(as_json: bool) -> None:
    """Where the cache is, how many files it holds and their size."""
    info = _cache().info()
    if as_json:
        _json(
            {
                "path": str(info.root),
                "entries": info.entries,
                "bytes": info.total_bytes,
                "limit_bytes": info.limit_bytes,
            }
        )
        return
    limit = _size(info.limit_bytes) if info.limit_bytes is not None else "none"
    for label, value in (
        ("path", info.root),
        ("entries", info.entries),
        ("size", _size(info.total_bytes)),
        ("limit", limit),
    ):
        _out(f"{label + ':':9} {value}")


@cache.command("prune")
@click.option("--older-than", metavar="AGE", help="Only files unused for AGE (e.g. 30d, 12h); default: all.")
@click.option("--dry-run", is_flag=True, help="Say what would be removed; remove nothing.")
@json_option
@common
def cache_prune(older_than: str | None, dry_run: bool, as_json: bool) -> None:
    """Remove cached files (all, or those unused for AGE). Pulled files stay where they are."""
    from .units import parse_age  # noqa: PLC0415 - ~0.3 ms off --help

    age = parse_age(older_than).total_seconds() if older_than is not None else None
    removed, freed = _cache().prune(age, dry_run=dry_run)
    if as_json:
        _json({"removed": removed, "bytes": freed, "dry_run": dry_run})
        return
    files = f"{removed} cached file{'s' if removed != 1 else ''} ({_size(freed)})"
    _out(f"Would remove {files}" if dry_run else f"Removed {files}")
    if dry_run:
        _note("Dry run: nothing was removed")


# -- everyday use (issue 15a): help and shell completion ----------------------------------------
@cli.command("help", short_help="Show the help of tychoreg or of a command.")
@click.argument("names", metavar="[COMMAND]...", nargs=-1)
@json_option
@common
@click.pass_context
def help_(ctx: click.Context, names: tuple[str, ...], as_json: bool) -> None:
    """Show the help of tychoreg, or of COMMAND (as COMMAND --help does).

    \b
    e.g. tychoreg help pull
         tychoreg help cache prune
    """
    here = ctx.find_root()
    command: click.Command = here.command
    for name in names:
        group = command if isinstance(command, click.Group) else None
        found = group.get_command(here, name) if group is not None else None
        if found is None:
            where = here.command_path
            raise UsageError(
                f"{where} has no command {clean(name)!r}" if group is not None else f"{where} has no subcommands",
                f"see: {' '.join(['tychoreg help', *here.command_path.split()[1:]])}",
            )
        here = click.Context(found, info_name=name, parent=here)
        command = found
    text = command.get_help(here)
    if as_json:
        subcommands = sorted(command.commands) if isinstance(command, click.Group) else []
        _json({"command": here.command_path, "help": text, "commands": subcommands})
    else:
        click.echo(text)


#: The shells ``completion`` writes a script for (click's own completion support).
SHELLS = ("bash", "zsh", "fish")
#: The variable the completion scripts set when they ask this program for completions.
COMPLETE_VAR = "_TYCHOREG_COMPLETE"


@cli.command(short_help="Print a shell completion script (bash, zsh, fish).")
@click.argument("shell", type=click.Choice(SHELLS))
@json_option
@common
def completion(shell: str, as_json: bool) -> None:
    """Print the completion script for SHELL: commands, options and package names (from the
    registry) complete on Tab.

    \b
    bash:  tychoreg completion bash > ~/.local/share/bash-completion/completions/tychoreg
    zsh:   tychoreg completion zsh > "${fpath[1]}/_tychoreg"
    fish:  tychoreg completion fish > ~/.config/fish/completions/tychoreg.fish
    """
    from click.shell_completion import get_completion_class  # noqa: PLC0415 - only for this command

    complete = get_completion_class(shell)
    assert complete is not None  # every name in SHELLS is one of click's
    script = complete(cli, {}, "tychoreg", COMPLETE_VAR).source()
    if as_json:
        _json({"shell": shell, "script": script})
    else:
        click.echo(script, nl=False)


#: How long completion waits for the registry's listing before it offers nothing.
COMPLETION_TIMEOUT = 3.0


class _PackageName(click.types.StringParamType):
    """A package name (``PKG``, or ``PKG[@SELECTOR]`` where ``selectors``) whose completions come
    from the registry: one listing of package names, or of one package's tags and versions."""

    name = "package"

    def __init__(self, selectors: bool) -> None:
        self.selectors = selectors

    def shell_complete(self, ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
        from click.shell_completion import CompletionItem  # noqa: PLC0415 - only while completing

        return [CompletionItem(c) for c in _bounded(lambda: self._candidates(incomplete))]

    def _candidates(self, incomplete: str) -> list[str]:
        from .config import load_settings  # noqa: PLC0415 - the domain loads on use: --help stays fast
        from .registry import Registry  # noqa: PLC0415 - the domain loads on use: --help stays fast

        reg = Registry.from_settings(load_settings(_STATE.config))  # no warnings: they would garble the line
        package, at, partial = incomplete.partition("@")
        if at and self.selectors:
            return [f"{package}@{s}" for s in reg.selectors(package) if s.startswith(partial)]
        return reg.package_names(incomplete)


def _bounded(work: Callable[[], list[str]]) -> list[str]:
    """``work``'s answer, or nothing when it fails or takes longer than a person waits for Tab."""
    import threading  # noqa: PLC0415 - only while completing

    found: list[str] = []

    def run() -> None:
        try:
            found.extend(work())
        except Exception:  # noqa: BLE001 - completion offers nothing rather than an error
            pass

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(COMPLETION_TIMEOUT)
    return list(found) if not worker.is_alive() else []


def _complete_packages(group: click.Group) -> None:
    """Give every package argument (PKG, PKG...) of every command completions from the registry."""
    for command in group.commands.values():
        if isinstance(command, click.Group):
            _complete_packages(command)
            continue
        for param in command.params:
            metavar = param.metavar or ""
            if isinstance(param, click.Argument) and param.name in ("package", "packages") and "PKG" in metavar:
                param.type = _PackageName(selectors="@SELECTOR" in metavar)


# -- signatures and mirroring --------------------------------------------------------------------
@cli.command(short_help="Sign an existing version with an SSH key.")
@click.argument("package", metavar="PKG")
@click.argument("version", metavar="VERSION")
@click.option(
    "--key",
    metavar="KEY",
    type=click.Path(path_type=Path),
    help="SSH key to sign with (a private key, or a public key held by ssh-agent); default: tycho.signing_key.",
)
@json_option
@common
def sign(package: str, version: str, key: Path | None, as_json: bool) -> None:
    """Sign VERSION of PKG (its package, version, size and SHA-256) with an SSH key; the signature
    is stored beside the version. A version may carry several signatures."""
    result = _STATE.registry().sign(package, version, key=key)
    if result.added:
        _STATE.wrote()
    if as_json:
        _json(
            {
                "package": result.package,
                "version": result.version,
                "sha256": result.sha256,
                "key": result.fingerprint,
                "added": result.added,
            }
        )
        return
    if result.added:
        _info(f"Signed {result.package} {result.version} (sha256 {result.sha256}) with {result.fingerprint}")
    else:
        _info(f"Already signed: {result.package} {result.version} carries a signature by {result.fingerprint}")


@cli.command(short_help="Copy packages to another registry, verified and incremental.")
@click.argument("packages", metavar="[PKG...]", nargs=-1)
@click.option(
    "--to",
    "to",
    metavar="CONFIG",
    required=True,
    type=click.Path(path_type=Path),
    help="The config file of the registry to copy to.",
)
@click.option("--dry-run", is_flag=True, help="Say what would be copied; change nothing.")
@no_delta_option
@json_option
@common
def mirror(packages: tuple[str, ...], to: Path, dry_run: bool, as_json: bool) -> None:
    """Copy PKG... (all packages when none is named) from this registry to the one CONFIG
    describes: versions with their records, signatures, notes, tags, yanks and latest. Each
    version is verified on the way; one already there with the same SHA-256 is skipped; one there
    with other bytes is a conflict and is never overwritten (exit 1, after copying the rest)."""
    from .config import load_settings  # noqa: PLC0415 - the domain loads on use: --help stays fast
    from .registry import Registry  # noqa: PLC0415 - the domain loads on use: --help stays fast

    reg = _STATE.registry()
    target = load_settings(to)
    for warning in target.warnings:
        _warn(warning)
    dest = Registry.from_settings(target, warn=_warn)
    if _STATE.settings is not None:
        _STATE.settings = replace(_STATE.settings, secrets=_STATE.settings.secrets + target.secrets)
    with _bars() as bars:
        done = reg.mirror(dest, packages, dry_run=dry_run, progress=bars)
    if as_json:
        _json(done.to_json())
    else:
        verb = "Would copy" if dry_run else "Copied"
        for package, version in done.copied:
            _info(f"{verb} {package} {version}")
        for line in done.refs:
            _info(f"{'Would set' if dry_run else 'Set'} {line}")
        if done.signatures:
            _info(f"{verb} {done.signatures} signature{'s' if done.signatures != 1 else ''}")
        summary = (
            f"{len(done.copied)} {'to copy' if dry_run else 'copied'} to {dest.location}, {done.skipped} already there"
            f" (same sha256), {len(done.conflicts)} conflict{'s' if len(done.conflicts) != 1 else ''}"
        )
        if done.reused:
            summary += f"; reused {_size(done.reused)} from local copies, fetched {_size(done.fetched)}"
        if not done.copied and not done.refs and not done.signatures and not done.conflicts and not done.failed:
            summary = f"Nothing to copy: {done.skipped} versions already in {dest.location} (same sha256)"
        _note(summary)
    for package, version, why in done.conflicts:
        _warn(f"conflict: {package} {version} differs in {dest.location} ({why}); not overwritten")
    for failure in done.failed:
        _warn(f"{failure.package}{' ' + failure.version if failure.version else ''}: {failure.error}")
    if done.conflicts or done.failed:
        raise TychoError(
            f"{len(done.conflicts)} conflicts and {len(done.failed)} failures while mirroring to {dest.location}",
            reason="mirror-failed",
        )


# -- reading over HTTP: the static catalog and serve -------------------------------------------------
def _warn_error(exc: TychoError) -> None:
    """An error that did not fail the command (the catalog after a write): a warning, and its hint."""
    _warn(str(exc))
    hint = hint_for(exc)
    if hint:
        click.echo(_message(f"hint: {hint}"), err=True)


@cli.command(short_help="Write (or --check) the static catalog: web pages and machine indexes.")
@click.option("--check", is_flag=True, help="Only check: exit 1 if the catalog is stale or missing.")
@json_option
@common
def index(check: bool, as_json: bool) -> None:
    """Write the static catalog into the registry: index.html and .tycho-catalog.json at its root,
    PKG/index.html and PKG/.tycho/catalog.json per package. Writes keep it current by themselves;
    run this for a registry written by tycho-station 0.4.0 or an older tychoreg, or after a warning.
    With it, any static web server (or `tychoreg serve`) makes the registry readable over HTTP.
    It also writes the chunk index (for delta pulls) of every version that lacks one, reading each
    such version once."""
    reg = _STATE.registry()
    report = reg.index(check=check)
    if report.written:
        _STATE.wrote()
    if check:
        if as_json:
            _json({"fresh": not report.stale, "packages": report.packages, "stale": report.stale})
        else:
            for key in report.stale:
                _out(f"stale  {key}")
        if report.stale:
            raise TychoError(
                f"the catalog of {reg.location} is stale: {len(report.stale)} of its objects "
                "do not say what the registry holds",
                reason="catalog-stale",
            )
        _note(f"The catalog of {reg.location} is up to date ({report.packages} packages)")
        return
    if as_json:
        _json({"packages": report.packages, "written": report.written, "problems": report.problems})
    else:
        for key in report.written:
            _info(f"wrote  {key}")
    for problem in report.problems:
        _warn(problem)
    if report.problems:
        raise TychoError(f"{len(report.problems)} parts of the catalog could not be written", "see the warnings above")
    if not as_json:
        if report.written:
            _note(f"Catalog written for {report.packages} packages in {reg.location}")
        else:
            _note(f"The catalog of {reg.location} was up to date ({report.packages} packages)")


@cli.command(short_help="Serve the registry read-only over HTTP (pages, indexes, data).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0: every one).")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535), help="Port (0: any free one).")
@click.option("--json", "as_json", is_flag=True, help='First line: {"url": ...} as JSON instead of the bare URL.')
@common
def serve(host: str, port: int, as_json: bool) -> None:
    """Serve the configured registry (a folder or a bucket) read-only over HTTP, for browsers
    and for the http backend, until Ctrl-C. The first line of output is the URL (with --json, a
    JSON object with it); one line per request goes to stderr."""
    reg = _STATE.registry()

    def ready(url: str) -> None:
        click.echo(json.dumps({"url": url, "registry": reg.location}) if as_json else url)
        sys.stdout.flush()
        if not _STATE.quiet:
            _note(f"Serving {reg.location} read-only at {url} (Ctrl-C stops)")

    def log(line: str) -> None:
        if not _STATE.quiet:
            click.echo(_message(line), err=True)

    reg.serve(host, port, ready=ready, log=log)
    _note("Stopped")


# -- folders as packages, retention (issue 15) ---------------------------------------------------
@cli.command(short_help="Delete old versions by policy (never latest or a tagged one).")
@click.argument("packages", metavar="[PKG...]", nargs=-1)
@click.option(
    "--keep", type=click.IntRange(min=0), metavar="N", help="Keep the N highest versions (yanked ones aside)."
)
@click.option("--older-than", "older_than", metavar="AGE", help="Delete only versions older than AGE (e.g. 180d, 12h).")
@click.option("--dry-run", is_flag=True, help="Say what would be deleted; delete nothing.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation (for scripts and nightly jobs).")
@json_option
@common
def prune(
    packages: tuple[str, ...], keep: int | None, older_than: str | None, dry_run: bool, yes: bool, as_json: bool
) -> None:
    """Delete old versions of each PKG (every package if none is named): all but the --keep N
    highest, and of those only the ones older than --older-than AGE. The version latest names
    and tagged versions always stay. With neither option, the config's "retention" section
    applies (a package's own entry, else "*"), for a nightly job:

    \b
    e.g. "retention": {"*": {"keep": 20, "older_than": "180d"}, "firmware": {"keep": 50}}
    """
    from .units import parse_age  # noqa: PLC0415 - ~0.3 ms off --help

    age = parse_age(older_than) if older_than is not None else None
    reg = _STATE.registry()
    results = reg.prune(
        packages, keep=keep, older_than=age, dry_run=dry_run, confirm=lambda plans: _confirm_prune(plans, yes)
    )
    if not dry_run and any(not isinstance(o, TychoError) and o.deleted for _, o in results):
        _STATE.wrote()
    failed = 0
    for name, outcome in results:
        if isinstance(outcome, TychoError):
            failed += 1
            _print_error(outcome, prefix=f"{name}: ")
            continue
        for c in () if as_json else outcome.deleted:
            age_days = "" if c.age is None else f", {c.age / 86400:.0f} days old"
            _out(f"{'would delete' if dry_run else 'deleted'}  {name} {c.version}  ({_size(c.size)}{age_days})")
        for version, why in outcome.spared.items():
            _note(f"kept {name} {version}: {why}")
        for version, why in outcome.failed.items():
            _warn(f"could not delete {name} {version}: {why}")
        failed += bool(outcome.failed)
        gone = len(outcome.deleted)
        _note(f"{name}: {gone} {'would be ' if dry_run else ''}deleted, {len(outcome.kept) + len(outcome.spared)} kept")
    if as_json:
        _json([{"package": n, "error": str(o)} if isinstance(o, TychoError) else o.to_json() for n, o in results])
    if not results:
        _note("Nothing to prune: no package has a retention policy")
    elif dry_run:
        _note("Dry run: nothing was deleted")
    if failed:
        raise TychoError(f"{failed} of {len(results)} packages could not be pruned completely", "see the errors above")


def _confirm_prune(plans: list[Plan], yes: bool) -> bool:
    """--yes, or an answer on a terminal after seeing the plan; never a prompt in a script."""
    if yes:
        return True
    if not (sys.stdin.isatty() and sys.stderr.isatty()):
        return False
    for plan in plans:
        for c in plan.delete:
            _note(f"would delete  {plan.package} {c.version}  ({_size(c.size)})")
    doomed = sum(len(p.delete) for p in plans)
    return click.confirm(f"Delete these {doomed} versions? This cannot be undone.", default=False, err=True)


def _print_error(exc: TychoError, prefix: str = "") -> None:
    click.echo(_message(f"error: {prefix}{exc}"), err=True)
    hint = hint_for(exc)
    if hint:
        click.echo(_message(f"hint: {hint}"), err=True)


def _fields(exc: TychoError) -> tuple[str, str]:
    return exc.package or "PKG", exc.version or "VERSION"


def _lockfile_name(exc: TychoError) -> str:
    lockfile = exc.details.get("lockfile")
    return lockfile.name if isinstance(lockfile, Path) else "the lock file"


def _versions_hint(exc: TychoError) -> str:
    return f"see the versions with: tychoreg list-versions {_fields(exc)[0]}"


#: What to do next, said with this command line's commands and flags: one place for all of them.
_HINTS: dict[Reason, Callable[[TychoError], str]] = {
    "no-package": lambda e: f"create it with: tychoreg init {_fields(e)[0]} FILENAME",
    "no-version": _versions_hint,
    "no-latest": lambda e: f"pull one with --version, or set it: tychoreg promote {_fields(e)[0]} VERSION",
    "no-match": lambda e: _versions_hint(e) + ("" if e.details.get("pre") else "; --pre admits pre-releases"),
    "no-tag": lambda e: f"see its tags with: tychoreg info {_fields(e)[0]}",
    "not-yanked": lambda e: f"see the yanked versions with: tychoreg info {_fields(e)[0]}",
    "package-exists": lambda e: f"see it with: tychoreg list-versions {_fields(e)[0]}",
    "version-exists": lambda e: (
        "versions are immutable: push a new version number"
        if e.details.get("other_bytes")
        else "push a new version number"
    ),
    "being-pushed": lambda e: f"wait, then check with: tychoreg list-versions {_fields(e)[0]}",
    "confirm": lambda e: (
        "pass --yes to go ahead" + ("; --dry-run shows what would go" if e.details.get("planned") else "")
    ),
    "tagged": lambda e: "move the tags first, or pass --force to delete it and its tags",
    "package-tagged": lambda e: "pass --force to delete it with all its versions and tags",
    "yanked-latest": lambda e: "unyank it first: tychoreg unyank {} {}".format(*_fields(e)),
    "reserved-version": lambda e: "choose a concrete version such as 1.0.0; use --promote-latest to make it latest",
    "range-not-allowed": lambda e: f"see the versions with: tychoreg list-versions {_fields(e)[0]}",
    "not-promoted": lambda e: "run: tychoreg promote {} {}".format(*_fields(e)),
    "deleted-while-pushing": lambda e: f"create it again with: tychoreg init {_fields(e)[0]} FILENAME",
    "record-missing": lambda e: (
        "someone removed the record; if you trust the stored bytes anyway, pull with "
        "--allow-unverified, else delete the version and push it again"
    ),
    "foreign-record": lambda e: "check it with: tychoreg verify {} {}; then re-push it as a new version".format(
        *_fields(e)
    ),
    "record-unsettled": lambda e: "check it with: tychoreg verify {} {}".format(*_fields(e)),
    "replaced-or-damaged": lambda e: "check it with: tychoreg verify",
    "upload-removed": lambda e: "push it again",
    "deleted-during-download": lambda e: "pull again; if it is gone, " + _versions_hint(e),
    "bad-localname": lambda e: f"pull with --outfile PATH, and repair localname in {_fields(e)[0]}/tycho.json",
    "bad-latest": lambda e: f"repair it with: tychoreg promote {_fields(e)[0]} VERSION",
    "dest-is-folder": lambda e: "name a file path with --outfile, or remove the folder",
    "dest-permission": lambda e: "choose another --outfile or fix the folder's permissions",
    "extract-target": lambda e: "choose another folder for --extract, or remove that one",
    "not-an-archive": lambda e: (
        "--extract unpacks tar (plain, gzip, bzip2, xz, zstd) and zip; pull without --extract to keep the file as it is"
    ),
    "offline-miss": lambda e: "run once without --offline to fill the cache",
    "offline-no-digest": lambda e: "run without --offline",
    "repushed": lambda e: f"if you trust the new bytes: tychoreg lock --upgrade {_fields(e)[0]}",
    "no-lock": lambda e: (
        "create it with: tychoreg lock" + (" (needs the registry)" if e.details.get("offline") else "")
    ),
    "stale-lock": lambda e: "run: tychoreg lock, then commit the updated lock file",
    "lock-damaged": lambda e: "restore it from version control, or delete it and run: tychoreg lock",
    "lock-extract": lambda e: f"{e.hint}; fix the entry or delete {_lockfile_name(e)} and run: tychoreg lock",
    "shared-destination": lambda e: 'give one of them an "extract" folder, or pull it with --outfile instead',
    "explicit-config-missing": lambda e: "check the path, or drop --config to use the default resolution",
    "nothing-to-pull": lambda e: "e.g. tychoreg pull-list narf toolchain",
    "offline-needs-lock": lambda e: "e.g. tychoreg pull-list --from tycho.lock --offline",
    # signatures and mirroring
    "signature-invalid": lambda e: (
        "nothing was written; check who signed it with: tychoreg info {} {} (and the trusted signers file)".format(
            *_fields(e)
        )
    ),
    "unsigned": lambda e: (
        "sign it with: tychoreg sign {} {} --key KEY, or set tycho.require_signatures to false".format(*_fields(e))
    ),
    "signing-failed": lambda e: "check the key (ssh-keygen -Y sign needs it, or ssh-agent holding it)",
    "not-signed": lambda e: "the version is pushed; sign it with: tychoreg sign {} {} --key KEY".format(*_fields(e)),
    "no-signing-key": lambda e: "pass --key KEY (or --sign KEY to push), or set tycho.signing_key in the config",
    "mirror-failed": lambda e: "see the warnings above; run the same mirror again to retry what failed",
    # reading over HTTP
    "read-only": lambda e: "HTTP only reads: write with a config whose backend is s3 or file (the same registry)",
    "no-catalog": lambda e: "with a config for the registry's bucket or folder, run: tychoreg index",
    "catalog-damaged": lambda e: "with a config for the registry's bucket or folder, run: tychoreg index",
    "catalog-not-updated": lambda e: "repair it with: tychoreg index",
    "catalog-stale": lambda e: "bring it up to date with: tychoreg index",
    "cannot-listen": lambda e: "choose another --port (--port 0 takes any free one), or stop what listens there",
    "serve-http": lambda e: "serve with a config whose backend is s3 or file",
    "index-over-http": lambda e: "check it with a config whose backend is s3 or file",
    # folders as packages, retention (issue 15)
    "folder-format": lambda e: (
        f"push it with --format {e.details['named']} (what {e.details['localname']} says)"
        if e.details.get("named")
        else f"push it to a package whose file name ends in .{e.details.get('format')}: "
        f"tychoreg init {_fields(e)[0]}-dir NAME.{e.details.get('format')}"
    ),
    "format-needs-folder": lambda e: "drop --format, or name a folder to pack",
    "zstd-missing": lambda e: (
        "pip install 'tycho-station[zstd]'" + ("" if e.details.get("pulling") else ", or push with --format tar.gz")
    ),
    "no-retention": lambda e: (
        'give --keep N and/or --older-than AGE, or a "retention" section in the config, '
        'e.g. {"retention": {"*": {"keep": 20, "older_than": "180d"}}}'
    ),
    # everyday use (issue 15a)
    "untrusted-config": lambda e: (
        f"if you trust it, make it yours and writable only by you (chmod go-w {e.details.get('path')}), "
        "or name it with --config"
    ),
    "selector-twice": lambda e: e.hint or "give the version once",
    "package-twice": lambda e: "name each package once",
}


def hint_for(exc: TychoError) -> str | None:
    """What to tell a command-line user to do about ``exc``: this CLI's own advice for its
    ``reason``, else the error's own hint."""
    render = _HINTS.get(exc.reason) if exc.reason else None
    return render(exc) if render else exc.hint


def _debug_traceback() -> None:
    if _STATE.debug:
        import traceback  # noqa: PLC0415 - ~1 ms off --help; used only with --debug

        for line in _STATE.redact(traceback.format_exc()).splitlines():
            click.echo(clean(line), err=True)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI and return the exit status (0 done, 1 failed, 2 bad usage or config)."""
    global _STATE
    _STATE = _State()
    if COMPLETE_VAR in os.environ:  # a completion script asks: package names come from the registry
        _complete_packages(cli)
    try:
        result = cli.main(args=argv, prog_name="tychoreg", standalone_mode=False)
        return result if isinstance(result, int) else 0
    except TychoError as exc:
        _debug_traceback()
        _print_error(exc)
        return exc.exit_code
    except click.exceptions.NoArgsIsHelpError as exc:
        click.echo(exc.ctx.get_help() if exc.ctx else exc.format_message(), err=True)
        return 2
    except click.UsageError as exc:
        command = exc.ctx.command_path if exc.ctx else "tychoreg"
        click.echo(_message(f"error: {exc.format_message()}"), err=True)
        click.echo(_message(f"hint: see '{command} --help'"), err=True)
        return 2
    except click.ClickException as exc:
        click.echo(_message(f"error: {exc.format_message()}"), err=True)
        return exc.exit_code
    except click.Abort as exc:
        if isinstance(exc.__cause__ or exc.__context__, KeyboardInterrupt):  # click turns Ctrl-C into Abort
            return _interrupted()
        click.echo("error: aborted", err=True)
        return 1
    except KeyboardInterrupt:
        return _interrupted()
    except (BrokenPipeError, _ClosedPipe):
        _silence_stdout()
    except Exception as exc:  # noqa: BLE001 - the edge: never show a bare traceback
        _debug_traceback()
        click.echo(_message(f"error: internal error: {type(exc).__name__}: {exc}"), err=True)
        click.echo("hint: rerun with --debug and report it with the output", err=True)
        return 1


#: The exit status after Ctrl-C (128 + SIGINT, as a shell reports it).
EXIT_INTERRUPTED = 130
#: The exit status when the reader of stdout went away (128 + SIGPIPE, as a shell reports it).
EXIT_CLOSED_PIPE = 141
#: How long an interrupted command lets work in other threads unwind (remove its temporary files).
SETTLE_SECONDS = 1.0


def _interrupted() -> int:
    """Ctrl-C: the main thread has unwound (its temporary files are gone, a download's part file
    is cut back to what was verified so the next pull resumes it). Work in other threads is told
    to stop at its next chunk and given a moment to unwind too; a transfer stalled in the network
    is not waited for (the process ends without it: a thread pool would otherwise hold the exit
    for as long as the stall lasts)."""
    import threading  # noqa: PLC0415 - loaded by then anyway; only after Ctrl-C
    import time  # noqa: PLC0415 - only after Ctrl-C

    from .concurrency import CANCELLED  # noqa: PLC0415 - the domain loads on use: --help stays fast

    CANCELLED.set()
    click.echo("error: interrupted; nothing half-written was left in place", err=True)
    try:
        others = [t for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon]
        deadline = time.monotonic() + SETTLE_SECONDS
        for thread in others:
            thread.join(max(0.0, deadline - time.monotonic()))
        if not any(t.is_alive() for t in others):
            return EXIT_INTERRUPTED
    except KeyboardInterrupt:  # a second Ctrl-C: stop waiting
        pass
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(EXIT_INTERRUPTED)


def _silence_stdout() -> NoReturn:
    """The reader of stdout is gone (``tychoreg list | head -1``): stop quietly, as a command
    killed by SIGPIPE does, without Python's complaint about flushing a closed pipe at exit."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    sys.exit(EXIT_CLOSED_PIPE)
