"""Typed errors that users see.

Every failure a user can cause or meet is one of these. An error says what happened in plain
words that make sense to a Python caller as much as to a shell user; it carries what it is about
as fields (``package``, ``version``, ``reason`` and the ``details`` its kind needs), so a caller
can act on it without parsing the message. ``hint`` is advice that holds anywhere; the command
line renders its own hints, naming commands and flags, from ``reason`` and the fields (see
``cli.hint_for``). Anything else that escapes is a bug and is reported as such.
"""

from __future__ import annotations

from typing import Any, Literal

#: Every kind of failure an error may name in its ``reason`` (see :attr:`TychoError.reason`).
Reason = Literal[
    "bad-latest",
    "bad-localname",
    "bad-name",
    "bad-selector",
    "being-pushed",
    "confirm",
    "damaged",
    "deleted-during-download",
    "deleted-while-pushing",
    "dest-is-folder",
    "dest-permission",
    "explicit-config-missing",
    "extract-target",
    "failed-verification",
    "foreign-record",
    "lock-damaged",
    "lock-extract",
    "no-latest",
    "no-lock",
    "no-match",
    "no-package",
    "no-packages",
    "no-project",
    "no-tag",
    "no-version",
    "not-an-archive",
    "not-promoted",
    "not-yanked",
    "nothing-to-pull",
    "offline-miss",
    "offline-needs-lock",
    "offline-no-digest",
    "package-exists",
    "package-tagged",
    "range-not-allowed",
    "record-missing",
    "record-unsettled",
    "replaced-during-download",
    "replaced-or-damaged",
    "repushed",
    "reserved-version",
    "shared-destination",
    "stale-lock",
    "tag-is-version",
    "tagged",
    "unresolved",
    "upgrade-undeclared",
    "upload-removed",
    "version-exists",
    "version-is-tag",
    "yanked-latest",
    # signatures and mirroring
    "signature-invalid",
    "unsigned",
    "signing-failed",
    "not-signed",
    "no-signing-key",
    "mirror-failed",
    # reading over HTTP: the static catalog, the http backend, serve
    "read-only",
    "no-catalog",
    "catalog-damaged",
    "catalog-not-updated",
    "catalog-stale",
    "cannot-listen",
    "serve-http",
    "index-over-http",
    # folders as packages, retention (issue 15)
    "bad-format",
    "cannot-pack",
    "changed-while-packing",
    "folder-format",
    "format-needs-folder",
    "zstd-missing",
    "no-retention",
    # everyday use (issue 15a): project discovery, selectors on the command line
    "untrusted-config",
    "selector-twice",
    "package-twice",
]


class TychoError(Exception):
    """Base of user-facing errors: a message, an optional hint, an exit status, and fields."""

    exit_code = 1
    #: What kind of failure this is (``"no-version"``, ``"being-pushed"``, ...), for callers and
    #: for the command line's hints; None when the message is all there is to say.
    reason: Reason | None = None

    def __init__(
        self,
        message: str,
        hint: str | None = None,
        *,
        reason: Reason | None = None,
        package: str | None = None,
        version: str | None = None,
        **details: Any,
    ) -> None:
        super().__init__(message)
        self.hint = hint
        if reason is not None:
            self.reason = reason
        self.package = package
        self.version = version
        self.details = details


class UsageError(TychoError):
    """Bad arguments: invalid names, a missing file to push (exit 2)."""

    exit_code = 2


class ConfigError(TychoError):
    """Missing or malformed configuration (exit 2)."""

    exit_code = 2


class OperationError(TychoError):
    """The operation could not be done (exit 1)."""


class NotFound(OperationError):
    """No such package or version, or no ``latest`` yet."""


class AlreadyExists(OperationError):
    """Package or version exists; versions are immutable."""


class IntegrityError(OperationError):
    """Stored data does not match what was recorded at push."""


class StorageError(OperationError):
    """The store failed: network, permissions, a damaged object."""


class ConfirmationNeeded(OperationError):
    """The operation would do more than asked (e.g. move ``latest``); repeat it with consent."""

    reason = "confirm"


# -- the failures met most often, each with its one message ---------------------------------------
class PackageNotFound(NotFound):
    reason = "no-package"

    def __init__(self, package: str, location: str) -> None:
        super().__init__(f"no package {package} in {location}", package=package)


class VersionNotFound(NotFound):
    reason = "no-version"

    def __init__(self, package: str, version: str) -> None:
        super().__init__(f"no version {version} of package {package}", package=package, version=version)


class NoLatest(NotFound):
    reason = "no-latest"

    def __init__(self, package: str) -> None:
        super().__init__(f"package {package} has no latest version yet", package=package)


class NoMatch(NotFound):
    """No version answers a range (``pre``: whether pre-releases were considered)."""

    reason = "no-match"

    def __init__(self, package: str, selector: str, pre: bool) -> None:
        super().__init__(
            f"no version of package {package} matches {selector!r}"
            + ("" if pre else " (pre-releases and yanked versions are not considered)"),
            package=package,
            selector=selector,
            pre=pre,
        )


class TagNotFound(NotFound):
    reason = "no-tag"

    def __init__(self, package: str, tag: str) -> None:
        super().__init__(f"package {package} has no tag {tag}", package=package, tag=tag)


class PackageExists(AlreadyExists):
    reason = "package-exists"

    def __init__(self, package: str) -> None:
        super().__init__(f"package {package} already exists", package=package)


class VersionExists(AlreadyExists):
    """The version exists (``other_bytes``: and holds other bytes than those pushed again)."""

    reason = "version-exists"

    def __init__(self, package: str, version: str, *, other_bytes: bool = False) -> None:
        what = "already exists with other bytes" if other_bytes else "already exists; versions are immutable"
        super().__init__(
            f"version {version} of package {package} {what}",
            "push a new version number",
            package=package,
            version=version,
            other_bytes=other_bytes,
        )


class BeingPushed(AlreadyExists):
    reason = "being-pushed"

    def __init__(self, package: str, version: str) -> None:
        super().__init__(
            f"version {version} of package {package} is being pushed by someone else",
            "wait, then look again",
            package=package,
            version=version,
        )


class RecordMissing(IntegrityError):
    """A version has no record although something says it had one (``why``)."""

    reason = "record-missing"

    def __init__(self, package: str, version: str, why: str) -> None:
        super().__init__(
            f"{package} {version} has no record although {why}: its bytes cannot be verified",
            "someone removed the record",
            package=package,
            version=version,
            why=why,
        )


# -- signatures (appended with the signing feature) ---------------------------------------------
class SignatureError(IntegrityError):
    """A version's signatures do not satisfy the trusted signers: one does not verify
    (``reason="signature-invalid"``), or none is there while signatures are required
    (``reason="unsigned"``). ``why`` says what was found."""

    def __init__(self, package: str, version: str, why: str, *, reason: Reason) -> None:
        super().__init__(f"{package} {version} {why}", package=package, version=version, reason=reason, why=why)
