#!/usr/bin/env bash
# Set up (once), lint and run the test suite on two pytest-xdist workers: `bash scripts/test.sh [pytest args...]`
# (`-n 0`: one process; `-m "not slow"`: the quick loop).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check uvav tests experiments
exec .venv/bin/python -m pytest -q -n 2 "$@"
