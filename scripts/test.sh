#!/usr/bin/env bash
# Set up (once), lint and run the test suite: `bash scripts/test.sh [pytest args...]`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check uvav tests experiments
exec .venv/bin/python -m pytest -q "$@"
