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
# The signature tests make keys and check signatures with OpenSSH's ssh-keygen (tychoreg itself
# verifies without it); install it where it is missing and we may.
if ! command -v ssh-keygen >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssh-client) >/dev/null 2>&1 || true
fi
exec .venv/bin/python -m pytest -n 2 -q "$@"
