"""Version constraints (npm/cargo style) and resolving them against a package's versions.

Grammar: alternatives joined by ``||`` (OR); each is comparators joined by ``,`` or whitespace
(AND); a comparator is ``[op]version`` with op one of ``^ ~ >= > <= < = ==`` (none means ``=``).

* Numeric comparison: release components are compared as integers, missing ones are 0
  (``1.2`` == ``1.2.0``); a candidate is parsed by the scheme of its collection
  (:func:`tychoreg.versions.scheme_of`): semver (pre-releases per semver 11.4, build ignored) or
  PEP 440 (``packaging``; local labels ignored).  In a natural-order collection each version is
  tried as semver, then PEP 440; one that parses as neither matches only ``*`` and ``=itself``.
* Partial versions are X-ranges, with any operator: ``1.2`` = ``1.2.x`` = ``1.2.*`` =
  ``>=1.2.0 <1.3.0-0``; ``>=1.2`` = ``>=1.2.0``; ``>1.2`` = ``>=1.3.0-0``; ``<2`` = ``<2.0.0-0``;
  ``<=1.2`` = ``<1.3.0-0``; ``*``/``x`` match everything.  ``X-0`` is the lowest pre-release of X
  (PEP 440: ``X.dev0``), so derived upper bounds never admit pre-releases of the next release.
* ``^V``: below the next bump of V's first non-zero component (of the last given one if all
  are 0): ``^1.2.3`` <2.0.0, ``^0.2.3`` <0.3.0, ``^0.0.3`` <0.0.4, ``^0.0`` <0.1.0, ``^0`` <1.0.0.
  ``~V``: below the next minor if a minor is given, else the next major.  Both include V.
* Pre-releases (npm rule): a pre-release matches only if ``pre=True`` or a comparator of the same
  ``||`` alternative names a pre-release with the same release tuple: ``>1.2.3-alpha.3`` matches
  ``1.2.3-alpha.7`` but not ``3.4.5-alpha.9``.
* :func:`resolve` returns the highest match by the collection's precedence
  (:func:`tychoreg.versions.version_sort_key`), never a yanked version.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass

import semver
from packaging.version import InvalidVersion, Version

from .versions import Scheme, is_prerelease, scheme_of, version_sort_key

__all__ = ["Constraint", "parse_constraint", "resolve"]

_OPS = ("^", "~", ">=", "<=", "==", ">", "<", "=")
_WILD = ("x", "X", "*")
_FULL = re.compile(r"^(\d+(?:\.\d+)*)(.*)$")
_TESTS = {
    ">=": lambda c: c >= 0,
    ">": lambda c: c > 0,
    "<=": lambda c: c <= 0,
    "<": lambda c: c < 0,
    "=": lambda c: c == 0,
}


def _strip(release: Iterable[int]) -> tuple[int, ...]:
    out = list(release)
    while out and out[-1] == 0:
        out.pop()
    return tuple(out)


@dataclass(frozen=True)
class _Bound:
    release: tuple[int, ...] | str  # trailing zeros stripped; the string itself for ``raw``
    sem: semver.Version | None
    pep: Version | None
    names_pre: bool = False
    raw: str | None = None  # ``=X`` with X neither semver nor PEP 440: exact string match


def _derived(release: list[int], lowest: bool) -> _Bound:
    """The bound ``release`` (``release-0``, below all its pre-releases, if ``lowest``)."""
    short = _strip(release)
    sem = None
    if len(short) <= 3:
        major, minor, patch = (*short, 0, 0, 0)[:3]
        sem = semver.Version(major, minor, patch, prerelease="0" if lowest else None)
    pep = Version(".".join(map(str, release or [0])) + (".dev0" if lowest else ""))
    return _Bound(short, sem, pep)


def _full(text: str, raw_ok: bool) -> _Bound:
    match = _FULL.match(text)
    sem, pep = None, None
    short: tuple[int, ...] = ()
    if match:
        release, rest = [int(n) for n in match[1].split(".")], match[2]
        short = _strip(release)
        if len(short) <= 3:
            base = ".".join(map(str, (*short, 0, 0, 0)[:3]))
            try:
                sem = semver.Version.parse(base + ("-" + rest if rest[:1].isalpha() else rest))
            except ValueError:
                pass
        try:
            pep = Version(text)
            pep = Version(pep.public)
        except InvalidVersion:
            pass
    if sem is None and pep is None:
        if raw_ok:
            return _Bound(text, None, None, raw=text)
        raise ValueError(f"{text!r} is not a version (expected e.g. 1.2.3, 1.2, 1.x)")
    names_pre = sem.prerelease is not None if sem is not None else bool(pep and pep.is_prerelease)
    return _Bound(short, sem, pep, names_pre)


def _comparators(op: str, text: str, raw_ok: bool) -> list[tuple[str, _Bound]]:
    """``op text`` as plain comparators (ops ``>= > <= < =``); ``[]`` means any version."""
    body = text[1:] if text[:1] in ("v", "V") and text[1:2].isdigit() else text
    parts = body.split(".")
    if any(p in _WILD for p in parts) or (len(parts) < 3 and all(p.isdigit() for p in parts)):
        k = next((i for i, p in enumerate(parts) if not p.isdigit()), len(parts))
        if not all(p in _WILD for p in parts[k:]):
            raise ValueError(f"malformed version pattern {text!r} (numbers, then wildcards: 1.2.x)")
        nums = [int(p) for p in parts[:k]]
        if not nums:
            if op in (">", "<"):
                raise ValueError(f"{op}{text} can match no version")
            return []
        low = _derived(nums, lowest=False)
    else:
        low = _full(body, raw_ok)
        if op not in ("^", "~"):
            return [(op, low)]
        assert isinstance(low.release, tuple)
        nums = list((*low.release, 0, 0, 0)[: max(3, len(low.release))])

    def bump(i: int) -> _Bound:
        return _derived([*nums[:i], nums[i] + 1], lowest=True)

    last = len(nums) - 1
    if op == "^":
        return [(">=", low), ("<", bump(next((i for i, n in enumerate(nums) if n), last)))]
    if op == "~":
        return [(">=", low), ("<", bump(min(last, 1)))]
    return {
        "=": [(">=", low), ("<", bump(last))],
        ">=": [(">=", low)],
        ">": [(">=", bump(last))],
        "<": [("<", _derived(nums, lowest=True))],
        "<=": [("<", bump(last))],
    }[op]


#: A version as constraints compare it: parsed (or None), its stripped release, whether it is a
#: pre-release.
_Candidate = tuple[semver.Version | Version | None, tuple[int, ...] | str, bool]
#: One alternative of a constraint: comparators that must all hold.
_Alternative = tuple[tuple[str, _Bound], ...]


@dataclass(frozen=True)
class Constraint:
    """A parsed constraint; ``alternatives`` are OR-ed lists of AND-ed comparators."""

    text: str
    alternatives: tuple[_Alternative, ...]

    @property
    def names_prerelease(self) -> bool:
        return any(b.names_pre for alt in self.alternatives for _, b in alt)

    def matches(self, version: str, *, pre: bool = False, scheme: Scheme | None = None) -> bool:
        """Whether ``version`` satisfies the constraint (``scheme``: that of its collection)."""
        cand = _candidate(version, scheme or scheme_of([version]))
        return any(_alt_matches(alt, version, cand, pre) for alt in self.alternatives)


def _candidate(version: str, scheme: Scheme) -> _Candidate:
    text = version[1:] if version[:1] in ("v", "V") else version
    if scheme in ("semver", "natural"):
        try:
            sem = semver.Version.parse(text)
            return sem, _strip(sem.to_tuple()[:3]), sem.prerelease is not None
        except (ValueError, TypeError):
            if scheme == "semver":
                raise ValueError(f"not a semantic version: {version!r}") from None
    try:
        pep = Version(version)
        return Version(pep.public), _strip(pep.release), pep.is_prerelease
    except InvalidVersion:
        if scheme == "pep440":
            raise ValueError(f"not a PEP 440 version: {version!r}") from None
    return None, version, is_prerelease(version)


def _alt_matches(alt: _Alternative, version: str, cand: _Candidate, pre: bool) -> bool:
    parsed, release, cand_pre = cand
    for op, b in alt:
        if b.raw is not None:
            ok = version == b.raw
        elif isinstance(parsed, semver.Version) and b.sem is not None:
            ok = _TESTS[op](parsed.compare(b.sem))
        elif isinstance(parsed, Version) and b.pep is not None:
            ok = _TESTS[op]((parsed > b.pep) - (parsed < b.pep))
        else:
            ok = False
        if not ok:
            return False
    return pre or not cand_pre or any((b.names_pre or b.raw is not None) and b.release == release for _, b in alt)


def parse_constraint(text: str) -> Constraint:
    """Parse ``text``; ``ValueError`` names what is malformed."""
    alternatives = []
    for alt in text.split("||"):
        alt = re.sub(r"(\^|~|[<>=]=?)\s+", r"\1", alt.strip())  # ">= 1.2" -> ">=1.2"
        if not alt:
            raise ValueError(f"empty constraint in {text!r}")
        comps: list[tuple[str, _Bound]] = []
        for token in re.split(r"\s*,\s*|\s+", alt):
            if token in ("", "-"):
                raise ValueError(
                    f"empty comparator in {text!r}"
                    if not token
                    else f"hyphen ranges are not supported in {text!r}; use >=A,<=B"
                )
            op = next((o for o in _OPS if token.startswith(o)), "")
            operand = token[len(op) :]
            if not operand:
                raise ValueError(f"missing version after {op!r} in {text!r}")
            if any(ch in operand for ch in "^~<>=|"):
                raise ValueError(f"malformed comparator {token!r} in {text!r}")
            raw_ok = op in ("=", "==")  # only an explicit "=" may name a non-numeric version
            comps += _comparators("=" if op in ("", "==") else op, operand, raw_ok)
        alternatives.append(tuple(comps))
    return Constraint(text, tuple(alternatives))


def resolve(
    constraint: Constraint | str, versions: Iterable[str], *, yanked: Collection[str] = (), pre: bool = False
) -> str | None:
    """The highest version satisfying ``constraint`` (parsed, or text), not yanked; ``None`` if
    there is none."""
    if isinstance(constraint, str):
        constraint = parse_constraint(constraint)
    items = list(versions)
    scheme = scheme_of(items)
    skip = set(yanked)
    matching = [v for v in items if v not in skip and constraint.matches(v, pre=pre, scheme=scheme)]
    return max(matching, key=version_sort_key(items), default=None)


def everything() -> Constraint:
    """``*``: any release (the highest one is what ``latest`` falls back to after a yank)."""
    return parse_constraint("*")
