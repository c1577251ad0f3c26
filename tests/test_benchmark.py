"""The benchmark (benchmarks/bench.py) still runs end to end: its smoke mode, as a subprocess.

It checks that every tool ran and that the numbers are complete, not that targets are met: that
is what the full run and benchmarks/RESULTS.md are for.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from servers import ROOT

CASES = {
    "push": {"tychoreg", "s5cmd", "aws", "0.4.0"},
    "pull": {"tychoreg", "s5cmd", "aws", "0.4.0"},
    "rss_push": {"tychoreg", "s5cmd", "aws", "0.4.0"},
    "rss_pull": {"tychoreg", "s5cmd", "aws", "0.4.0"},
    "noop_pull": {"tychoreg", "0.4.0"},
    "pull_list": {"tychoreg", "0.4.0"},
    "list": {"tychoreg", "0.4.0"},
    "list_versions": {"tychoreg", "aws", "s5cmd", "0.4.0"},
    "sync_cold": {"tychoreg", "0.4.0"},
    "sync_warm": {"tychoreg", "0.4.0"},
    "help": {"tychoreg", "0.4.0"},
}
NETWORK = {"push", "pull", "noop_pull", "pull_list", "list", "list_versions", "sync_cold", "sync_warm"}


def test_benchmark_smoke(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench.py"), "--smoke", "--json", str(out)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith("machine: "), proc.stdout
    assert "| case | tool | median |" in proc.stdout

    report = json.loads(out.read_text())
    assert report["machine"]["mode"] == "smoke"
    assert set(report["cases"]) == set(CASES)
    for key, tools in CASES.items():
        case = report["cases"][key]
        assert set(case["tools"]) == tools, key
        assert case["anchor"] in tools, key
        for tool, row in case["tools"].items():
            assert isinstance(row["median"], float) and row["median"] > 0, (key, tool, row)
            assert isinstance(row["ratio"], float), (key, tool, row)
            if key in NETWORK:  # every tool went through the network emulator, which counted it
                traffic = row["traffic"]
                assert traffic is not None, (key, tool)
                if key != "sync_warm" or tool != "tychoreg":
                    assert traffic["requests"] >= 1 and traffic["connections"] >= 1, (key, tool, traffic)
        assert isinstance(case["tools"]["tychoreg"]["met"], bool), key

    versions = report["cases"]["list_versions"]
    assert versions["expected"] == report["sizes"]["versions"]
    assert versions["tools"]["tychoreg"]["count"] == report["sizes"]["versions"]
    assert versions["tools"]["aws"]["count"] == report["sizes"]["versions"]
    assert report["cases"]["pull_list"]["tools"]["tychoreg"]["count"] == report["sizes"]["pull_list"]
    assert report["cases"]["sync_cold"]["tools"]["tychoreg"]["count"] == report["sizes"]["sync"]
    # a warm sync finds everything in place and sends nothing (a promise of sync, not a timing)
    assert report["cases"]["sync_warm"]["tools"]["tychoreg"]["traffic"]["requests"] == 0
    assert report["machine"]["profile"].startswith("loopback")
