import itertools
import random
from dataclasses import dataclass

import pytest

from tychoreg.versions import is_prerelease, scheme_of, sort_versions, version_sort_key

# (expected scheme, versions in expected ascending order)
ORDERS = [
    # semver spec 11.4 precedence example
    (
        "semver",
        [
            "1.0.0-alpha",
            "1.0.0-alpha.1",
            "1.0.0-alpha.beta",
            "1.0.0-beta",
            "1.0.0-beta.2",
            "1.0.0-beta.11",
            "1.0.0-rc.1",
            "1.0.0",
        ],
    ),
    # leading v mixed with bare semver; equal precedence broken by the raw string
    ("semver", ["0.9.0", "v0.10.0-rc.1", "0.10.0", "1.0.0", "v1.0.0", "V1.0.1", "v2.0.0"]),
    ("semver", ["1.0.0+a", "1.0.0+b", "1.0.1+a"]),
    ("semver", ["1.9.0", "1.10.0", "10.0.0"]),
    # PEP 440
    ("pep440", ["1.0.dev1", "1.0a1", "1.0b1", "1.0rc1", "1.0", "1.0.post1", "1.1"]),
    ("pep440", ["1.9", "1.10"]),
    ("pep440", ["0.9", "1.0", "1.0.0", "v1.0.1", "1.1"]),
    ("pep440", ["1.0.0-rc1", "1.0", "1.0.0", "1.0.1"]),  # "1.0" is not semver
    # natural order
    ("natural", ["nightly-5", "1.9", "1.10"]),  # words sort before numbers
    ("natural", ["build-2", "build-10"]),
    ("natural", ["1.0-alpha", "1.0-beta", "1.0-rc", "1.0-rc1", "1.0", "1.0-hotfix", "1.0.1"]),
    ("natural", ["2024-01-05", "2024-01-15", "2024-02-01"]),
    ("natural", ["r9", "r10", "r100"]),
    ("natural", ["1.0-dev", "1.0-a", "1.0-b2", "1.0-preview", "1.0-c", "1.0-RC2", "1.0", "1.0-zeta"]),
    ("natural", ["nightly-5", "nightly-9", "nightly-10"]),
]


@pytest.mark.parametrize("scheme,expected", ORDERS)
def test_exact_order(scheme: str, expected: list[str]) -> None:
    assert scheme_of(expected) == scheme
    assert sort_versions(reversed(expected)) == expected
    shuffled = list(expected)
    random.Random(1234).shuffle(shuffled)
    assert sort_versions(shuffled) == expected


@pytest.mark.parametrize(
    "lo,hi",
    [
        ("1.9", "1.10"),
        ("build-2", "build-10"),
        ("1.0-rc1", "1.0"),
        ("1.0-beta", "1.0-rc"),
        ("1.0-alpha", "1.0-beta"),
        ("2024-01-05", "2024-01-15"),
        ("1.0", "1.0.1"),
        ("r9", "r10"),
        ("1.0", "1.0-hotfix"),
    ],
)
def test_pairs(lo: str, hi: str) -> None:
    assert sort_versions([hi, lo]) == [lo, hi]
    assert sort_versions([lo, hi]) == [lo, hi]


def test_non_pep440_member_forces_natural_order() -> None:
    assert scheme_of(["1.0", "1.1rc1"]) == "pep440"
    assert scheme_of(["1.0", "1.1rc1", "nightly-5"]) == "natural"
    assert sort_versions(["1.1rc1", "nightly-5", "1.0"]) == ["nightly-5", "1.0", "1.1rc1"]
    assert scheme_of(["1.0.0", "1.0"]) == "pep440"
    assert scheme_of([]) == "semver"


@pytest.mark.parametrize(
    "version,among,expected",
    [
        ("1.0.0-rc.1", None, True),
        ("v1.0.0", None, False),
        ("1.0.0+build.5", None, False),
        ("1.0rc1", None, True),
        ("1.0.dev3", None, True),
        ("1.0.post1", None, False),
        ("1.0", None, False),
        ("1.0-rc1", ["nightly-5"], True),
        ("nightly-5", None, False),
        ("2.0-beta", None, True),
        ("build-7", None, False),
        ("1.0-preview", ["x"], True),
        ("1.0-hotfix", None, False),
        # the collection decides the scheme: "1.0.0-rc1" is semver alone, PEP 440 here
        ("1.0.0-rc1", ["1.0"], True),
    ],
)
def test_is_prerelease(version: str, among: list[str] | None, expected: bool) -> None:
    assert is_prerelease(version, among) is expected


def test_order_is_total_over_every_permutation() -> None:
    for versions in (
        ["1.0.0", "v1.0.0", "1.0.0+b", "1.0.0+a", "1.0.0-rc.1"],
        ["1.0", "1.0.0", "v1.0", "1.0.post0", "1.0rc1"],
        ["1.0", "1.00", "01.0", "1_0", "1-0", "1.0-rc"],
    ):
        results = {tuple(sort_versions(p)) for p in itertools.permutations(versions)}
        assert len(results) == 1


def test_key_for_records() -> None:
    @dataclass
    class Rec:
        version: str

    recs = [Rec("v1.10.0"), Rec("1.2.0"), Rec("1.10.0-beta.1")]
    key = version_sort_key(r.version for r in recs)
    assert [r.version for r in sorted(recs, key=lambda r: key(r.version))] == ["1.2.0", "1.10.0-beta.1", "v1.10.0"]
    with pytest.raises(ValueError):
        key("nightly-5")


def test_shuffled_large_collection_is_stable() -> None:
    versions = [f"{a}.{b}{s}" for a in range(3) for b in (0, 1, 9, 10) for s in ("", "-rc1", "-beta2", "-hotfix", ".1")]
    rng = random.Random(42)
    expected = sort_versions(versions)
    for _ in range(20):
        rng.shuffle(versions)
        assert sort_versions(versions) == expected
    assert expected.index("1.10-rc1") < expected.index("1.10") < expected.index("1.10-hotfix")


def test_natural_order_ignores_a_leading_v() -> None:
    assert sort_versions(["v2.0", "1.0-hotfix", "v1.5"]) == ["1.0-hotfix", "v1.5", "v2.0"]


def test_semver_order_agrees_with_the_semver_library_on_random_versions() -> None:
    """The semver key is a plain tuple (it sorts thousands of versions in C); it must order
    exactly as semver.Version does (precedence 11.1-11.4, build ignored), ties by the string."""
    import semver

    rng = random.Random(16)
    words = ["0", "1", "2", "11", "alpha", "beta", "rc", "a1", "1a", "x-y", "Z"]

    def one() -> str:
        core = ".".join(str(rng.choice([0, 1, 2, 10])) for _ in range(3))
        if rng.random() < 0.6:
            core += "-" + ".".join(rng.choice(words) for _ in range(rng.randint(1, 3)))
        if rng.random() < 0.2:
            core += "+build." + rng.choice(words)
        return ("v" if rng.random() < 0.1 else "") + core

    for _ in range(50):
        versions = list({one() for _ in range(60)})
        expected = sorted(versions, key=lambda v: (semver.Version.parse(v.lstrip("v")), v))
        assert sorted(versions, key=version_sort_key(versions)) == expected
