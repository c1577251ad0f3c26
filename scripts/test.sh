#!/usr/bin/env bash
# Set up a virtual environment with the package and its test tools, check style and types
# (scripts/check.sh), then run every test.
# The tools come from requirements/test.txt: exact versions with their hashes (pip refuses
# anything else), so a fresh clone tests with what CI tested; scripts/lock-test-tools.sh
# regenerates it. The suite starts its own SeaweedFS server and builds tycho-station 0.4.0's
# venv (cached in .ci-cache/).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
pip=(.venv/bin/python -m pip install -q --disable-pip-version-check)
"${pip[@]}" --require-hashes -r requirements/test.txt
"${pip[@]}" --no-deps .
bash scripts/check.sh
exec .venv/bin/python -m pytest -n 2 -q "$@"
