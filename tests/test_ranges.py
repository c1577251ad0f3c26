import itertools

import pytest
import semver

from tychoreg.names import is_constraint
from tychoreg.ranges import parse_constraint, resolve

# Every semver release 0.0.0 .. 3.3.4 plus pre-releases around the interesting boundaries.
RELEASES = itertools.product(range(4), range(4), range(5))
UNIVERSE = [f"{a}.{b}.{c}" for a, b, c in RELEASES] + [
    "0.0.3-beta",
    "0.0.4-0",
    "0.1.0-rc.1",
    "0.3.0-rc.1",
    "1.0.0-rc.1",
    "1.2.0-rc.1",
    "1.2.3-alpha.3",
    "1.2.3-alpha.7",
    "1.2.3-beta.2",
    "1.2.3-beta.4",
    "1.2.4-beta.2",
    "1.3.0-rc.1",
    "2.0.0-0",
    "2.0.0-rc.1",
    "3.4.5-alpha.9",
    "3.4.5",
]

# (constraint, lower bound or None, upper bound (exclusive) or None) as documented:
# cargo book "Specifying dependencies" and the node-semver README (caret, tilde, X-ranges).
DOCUMENTED = [
    # cargo: caret
    ("^1.2.3", "1.2.3", "2.0.0"),
    ("^1.2", "1.2.0", "2.0.0"),
    ("^1", "1.0.0", "2.0.0"),
    ("^0.2.3", "0.2.3", "0.3.0"),
    ("^0.2", "0.2.0", "0.3.0"),
    ("^0.0.3", "0.0.3", "0.0.4"),
    ("^0.0", "0.0.0", "0.1.0"),
    ("^0", "0.0.0", "1.0.0"),
    # cargo: tilde
    ("~1.2.3", "1.2.3", "1.3.0"),
    ("~1.2", "1.2.0", "1.3.0"),
    ("~1", "1.0.0", "2.0.0"),
    # cargo: wildcard
    ("*", None, None),
    ("1.*", "1.0.0", "2.0.0"),
    ("1.2.*", "1.2.0", "1.3.0"),
    # cargo: comparison and multiple requirements
    (">= 1.2.0", "1.2.0", None),
    ("> 1", "2.0.0", None),
    ("< 2", None, "2.0.0"),
    (">= 1.2, < 1.5", "1.2.0", "1.5.0"),
    # npm: caret
    ("^1.2.x", "1.2.0", "2.0.0"),
    ("^0.0.x", "0.0.0", "0.1.0"),
    ("^1.x", "1.0.0", "2.0.0"),
    ("^0.x", "0.0.0", "1.0.0"),
    # npm: tilde
    ("~0.2.3", "0.2.3", "0.3.0"),
    ("~0.2", "0.2.0", "0.3.0"),
    ("~0", "0.0.0", "1.0.0"),
    # npm: X-ranges (a partial version is an X-range), whitespace as AND
    ("x", None, None),
    ("1.x", "1.0.0", "2.0.0"),
    ("1.2.x", "1.2.0", "1.3.0"),
    ("1.X", "1.0.0", "2.0.0"),
    ("1.x.x", "1.0.0", "2.0.0"),
    ("1", "1.0.0", "2.0.0"),
    ("1.2", "1.2.0", "1.3.0"),
    ("=1.2", "1.2.0", "1.3.0"),
    (">=1.2 <2", "1.2.0", "2.0.0"),
    (">=1.2,<2", "1.2.0", "2.0.0"),
    ("<=1.2", None, "1.3.0"),
    (">1.2", "1.3.0", None),
    ("=1.2.3", "1.2.3", "1.2.4"),
    ("1.2.3", "1.2.3", "1.2.4"),
    ("==v1.2.3", "1.2.3", "1.2.4"),
]


def _expected(version: str, lower: str | None, upper: str | None) -> bool:
    v = semver.Version.parse(version)
    return (
        v.prerelease is None
        and (lower is None or v >= semver.Version.parse(lower))
        and (upper is None or v < semver.Version.parse(upper))
    )


@pytest.mark.parametrize("text,lower,upper", DOCUMENTED)
def test_documented_ranges(text: str, lower: str | None, upper: str | None) -> None:
    constraint = parse_constraint(text)
    assert not constraint.names_prerelease
    got = {v for v in UNIVERSE if constraint.matches(v)}
    assert got == {v for v in UNIVERSE if _expected(v, lower, upper)}


# (constraint, versions that match, versions that do not) -- all exact, default pre=False.
EXAMPLES = [
    # npm pre-release tag rule
    (">1.2.3-alpha.3", ["1.2.3-alpha.7", "1.2.3", "3.4.5"], ["3.4.5-alpha.9", "1.2.3-alpha.3"]),
    ("^1.2.3-beta.2", ["1.2.3-beta.2", "1.2.3-beta.4", "1.2.3", "1.9.0"], ["1.2.4-beta.2", "1.2.3-alpha.7", "2.0.0"]),
    ("~1.2.3-beta.2", ["1.2.3-beta.4", "1.2.9"], ["1.2.4-beta.2", "1.3.0"]),
    ("^0.0.3-beta", ["0.0.3-beta", "0.0.3-pr.2", "0.0.3"], ["0.0.4-0", "0.0.4"]),
    # npm "advanced range" example with ||
    ("1.2.7 || >=1.2.9 <2.0.0", ["1.2.7", "1.2.9", "1.4.6"], ["1.2.8", "2.0.0"]),
    # <2 is <2.0.0-0; explicit <2.0.0 is plain semver comparison (pre-release still gated)
    ("<2.0.0", ["1.9.9"], ["2.0.0-rc.1", "2.0.0"]),
    # PEP 440 versions, compared numerically ("1.10" > "1.9", "1.2" == "1.2.0")
    ("^1.2", ["1.2", "1.9", "1.10", "1.2.post1"], ["2.0", "1.1", "2.0rc1", "1.3rc1"]),
    ("1.x", ["1.9", "1.10", "1"], ["2.0", "0.9"]),
    (">=2.0rc1", ["2.0rc1", "2.0rc2", "2.0", "2.0.0"], ["2.0b1", "2.1rc1"]),
    # leading v on either side
    ("^v1.2", ["v1.2.3", "V1.9.0", "1.2.0"], ["v2.0.0"]),
    # "=" with a version that is neither semver nor PEP 440: exact string
    ("=jammy", ["jammy"], ["Jammy", "focal"]),
    ("*", ["focal"], ["noble-rc"]),
    ("^1", [], ["jammy"]),
]


@pytest.mark.parametrize("text,yes,no", EXAMPLES)
def test_matches(text: str, yes: list[str], no: list[str]) -> None:
    constraint = parse_constraint(text)
    assert [v for v in yes if not constraint.matches(v)] == []
    assert [v for v in no if constraint.matches(v)] == []


def test_pre_flag_admits_prereleases_but_not_past_derived_upper_bounds() -> None:
    caret = parse_constraint("^1.2.3")
    assert caret.matches("1.5.0-rc.1", pre=True) and not caret.matches("1.5.0-rc.1")
    assert not caret.matches("2.0.0-rc.1", pre=True)  # <2.0.0-0
    assert not caret.matches("1.2.3-rc.1", pre=True)  # below the lower bound
    assert parse_constraint("<2.0.0").matches("2.0.0-rc.1", pre=True)
    assert not parse_constraint("<2").matches("2.0.0-rc.1", pre=True)
    assert parse_constraint(">1").matches("2.0.0-rc.1", pre=True)


SEMVER = ["1.0.0", "1.1.0", "1.2.0", "1.2.1", "1.3.0-rc.1", "2.0.0-beta.1", "2.0.0", "2.1.0", "3.0.0-alpha.1"]
PEP = ["1.2", "1.9", "1.10", "1.10.post1", "2.0rc1", "2.0", "2.1.dev3"]
LEADING_V = ["v1.2.3", "v1.3.0", "V1.3.1", "v2.0.0", "v2.1.0-beta.1"]
NATURAL = ["focal", "jammy", "noble-rc"]
MIXED_NATURAL = ["nightly-5", "1.9", "1.10", "2.0-rc1"]

# (constraint, collection, yanked, pre, expected)
RESOLVE = [
    ("^1", SEMVER, (), False, "1.2.1"),
    ("^1", SEMVER, {"1.2.1"}, False, "1.2.0"),
    ("^1", SEMVER, (), True, "1.3.0-rc.1"),
    ("^1", SEMVER, ["1.0.0", "1.1.0", "1.2.0", "1.2.1"], False, None),
    ("~1.2", SEMVER, (), False, "1.2.1"),
    ("1.1.*", SEMVER, (), False, "1.1.0"),
    ("*", SEMVER, (), False, "2.1.0"),
    ("*", SEMVER, (), True, "3.0.0-alpha.1"),
    ("*", SEMVER, ["2.1.0", "2.0.0"], False, "1.2.1"),
    ("^2.0.0-beta.1", SEMVER, (), False, "2.1.0"),
    ("~2.0.0-beta.1", SEMVER, (), False, "2.0.0"),
    ("~2.0.0-beta.1", SEMVER, ["2.0.0"], False, "2.0.0-beta.1"),  # names that pre-release
    (">=2.0.0-beta.1, <2.0.0", SEMVER, (), False, "2.0.0-beta.1"),
    (">=3.0.0-alpha.0", SEMVER, (), False, "3.0.0-alpha.1"),
    (">=3", SEMVER, (), False, None),
    ("^4", SEMVER, (), False, None),
    ("^1.3 || ^2.0", SEMVER, (), False, "2.1.0"),
    ("^1.2", PEP, (), False, "1.10.post1"),
    ("^1.2", PEP, {"1.10.post1"}, False, "1.10"),
    ("1.x", PEP, (), False, "1.10.post1"),
    ("=1.9", PEP, (), False, "1.9"),
    ("<2", PEP, (), True, "1.10.post1"),  # 2.0rc1 is a pre-release of 2.0: not below <2.0.0-0
    (">=2.0a1,<2.0.0", PEP, (), False, "2.0rc1"),
    (">=2.0a1,<2.0", PEP, (), False, None),  # partial <2.0 is <2.0.0-0 (PEP 440 agrees)
    ("*", PEP, (), False, "2.0"),
    ("*", PEP, (), True, "2.1.dev3"),
    ("^1.2", LEADING_V, (), False, "V1.3.1"),
    (">=2.1.0-beta.1", LEADING_V, (), False, "v2.1.0-beta.1"),
    ("*", LEADING_V, (), False, "v2.0.0"),
    ("*", NATURAL, (), False, "jammy"),  # natural order; noble-rc is a pre-release
    ("*", NATURAL, (), True, "noble-rc"),
    ("=noble-rc", NATURAL, (), False, "noble-rc"),
    ("^1", NATURAL, (), False, None),
    (">=0", NATURAL, (), False, None),
    # natural-order collection: versions that parse on their own still compare numerically
    ("^1.9", MIXED_NATURAL, (), False, "1.10"),
    ("*", MIXED_NATURAL, (), False, "1.10"),  # words sort before numbers; 2.0-rc1 is pre
    ("*", MIXED_NATURAL, (), True, "2.0-rc1"),
    # mixed semver/PEP 440 collection is ordered and parsed as PEP 440
    ("^1", ["1.0.0", "1.1", "1.2.0-rc.1"], (), False, "1.1"),
    ("^1", ["1.0.0", "1.1", "1.2.0-rc.1"], (), True, "1.2.0-rc.1"),
    # "1.0.0-1" is a semver pre-release, but PEP 440 post-release 1.0.0.post1
    ("*", ["0.9.0", "1.0.0-1"], (), False, "0.9.0"),
    ("*", ["0.9", "1.0.0-1"], (), False, "1.0.0-1"),
    ("*", [], (), False, None),
]


@pytest.mark.parametrize("text,versions,yanked,pre,expected", RESOLVE)
def test_resolve(text: str, versions: list[str], yanked: object, pre: bool, expected: str | None) -> None:
    assert resolve(text, versions, yanked=yanked, pre=pre) == expected  # type: ignore[arg-type]
    backwards = list(reversed(versions))
    assert resolve(text, backwards, yanked=yanked, pre=pre) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "text,names",
    [
        (">1.2.3-alpha.3", True),
        ("^2.0.0-beta.1", True),
        (">=2.0rc1", True),
        ("1.x || =1.0.0-rc.1", True),
        ("^1.2.3", False),
        ("*", False),
        (">=1.0.post1", False),
        ("=jammy", False),
    ],
)
def test_names_prerelease(text: str, names: bool) -> None:
    assert parse_constraint(text).names_prerelease is names


@pytest.mark.parametrize(
    "text",
    [
        "^1.2",
        "~1.2.3",
        ">=1.2,<2",
        "1.x",
        "1.2.X",
        "1.2.*",
        "*",
        "x",
        "<2",
        "=1.0.0",
        "1.x || 2.x",
        ">= 1.2",
        "1.2.3.x.y",
    ],
)
def test_is_constraint(text: str) -> None:
    assert is_constraint(text)


@pytest.mark.parametrize(
    "text",
    [
        "1.2.3",
        "v1.2.3",
        "1.2",
        "1",
        "latest",
        "stable",
        "1.0.0-rc.1",
        "2.0rc1",
        "1.0+x",
        "jammy",
        "xenial",
        "box.x",
        "2024-01-05",
        "nightly-5",
    ],
)
def test_is_not_constraint(text: str) -> None:
    assert not is_constraint(text)


@pytest.mark.parametrize(
    "text",
    [
        "",
        " ",
        ">=",
        "^",
        "~",
        "= ",
        "1.2.3.x.y",
        ">=a.b",
        "^jammy",
        "jammy",
        "1.x.3",
        "x.1",
        "1..2",
        "=>1.2",
        "~=1.2",
        ">=1.2,",
        ",1.2",
        "||",
        "1.x ||",
        "1.2 - 2.0",
        "<*",
        ">x",
        ">=1.2.3-",
        "^1.2.3-beta..1",
        "1.x-beta",
        "^^1",
        ">=1.2||<",
    ],
)
def test_malformed(text: str) -> None:
    with pytest.raises(ValueError):
        parse_constraint(text)
    with pytest.raises(ValueError):
        resolve(text, ["1.0.0"])
