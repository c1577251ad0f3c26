#!/usr/bin/env bash
# Install tychoreg in .venv and do the main job on a registry of its own in a temporary folder
# (never your configured registry, nor the default one in your data directory): init a package,
# push a file and a folder, pull both back, check the bytes. Everything it made is removed.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check .
T="$PWD/.venv/bin/tychoreg"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
# The config names a folder registry beside it; every command below is given this config, and the
# download cache and the digests tychoreg remembers stay in the temporary folder too.
printf '{"tycho": {"backend": "file"}, "file": {"path": "registry"}}\n' > quickstart.json
export TYCHOREG_CONFIG="$work/quickstart.json" TYCHOREG_CACHE_DIR="$work/cache" XDG_CACHE_HOME="$work/cache"
echo "hello from tycho-station" > hello.txt
$T init hello hello.txt
$T push hello 1.0 hello.txt --promote-latest
mkdir project && (cd project && "$T" pull hello && cmp tycho_packages/hello.txt ../hello.txt)
echo "round trip OK: bytes equal"
mkdir -p site/css && echo "<h1>hello</h1>" > site/index.html && echo "h1 {}" > site/css/main.css
$T init site site.tar.gz
$T push site 1.0 site --promote-latest
$T pull site --extract project/site
diff -r site project/site --exclude .tycho-extract.json && echo "folder round trip OK: trees equal"
$T list-versions hello
echo "(the registry was $work/registry; it is removed now)"
