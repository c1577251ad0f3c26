#!/usr/bin/env bash
# Install tychoreg in .venv and do the main job on the embedded default registry
# (a folder in your user data directory): init a package, push a version, pull it back, verify.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check .
T="$PWD/.venv/bin/tychoreg"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
version="0.1.$(date +%s)"
echo "hello from tycho-station $version" > "$work/hello.txt"
$T list --json | grep -q '"name": "hello"' || $T init hello hello.txt
$T push hello "$version" "$work/hello.txt" --promote-latest
(cd "$work" && "$T" pull hello && cmp tycho_packages/hello.txt hello.txt && echo "round trip OK: bytes equal")
$T list-versions hello | tail -n 3
