#!/usr/bin/env bash
# Style and types: ruff (lint, then the formatter's check) on the whole tree, mypy --strict on
# src/. Settings are in pyproject.toml. Runs with the .venv that scripts/test.sh makes (its test
# extra brings ruff and mypy); scripts/test.sh runs this before the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
py=.venv/bin/python
"$py" -m ruff check .
"$py" -m ruff format --check .
"$py" -m mypy
