#!/usr/bin/env bash
# Pin every package the tests install (the runtime dependencies and the test extra of
# pyproject.toml, with everything they pull in) to exact versions with their SHA-256 hashes, in
# requirements/test.txt, which scripts/test.sh installs with pip --require-hashes: a fresh clone
# tests with exactly what CI tested. One file for every Python from 3.10 and every OS (markers
# select per platform). Run this after changing dependencies in pyproject.toml, or to take newer
# releases; commit the result. It brings uv into a throwaway virtual environment to resolve.
set -euo pipefail
cd "$(dirname "$0")/.."
tools=$(mktemp -d)
trap 'rm -rf "$tools"' EXIT
python3 -m venv "$tools"
"$tools/bin/python" -m pip install -q --disable-pip-version-check uv
"$tools/bin/uv" pip compile pyproject.toml --extra test --universal --python-version 3.10 --generate-hashes \
    --custom-compile-command "bash scripts/lock-test-tools.sh" --quiet -o requirements/test.txt
echo "wrote requirements/test.txt"
