#!/usr/bin/env bash
# Create .venv and install uvav with its dev tools; a no-op when pyproject.toml has not changed since.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.uvav-installed
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "uvav: installing into .venv (first time: a few minutes, ~6 GB with torch)" >&2
  .venv/bin/python -m pip install -q --upgrade pip
  # setuptools prints an "Editable installation" notice (information, not a warning) for every editable install of
  # a flat layout; only that notice is silenced: a real warning or deprecation still shows
  PYTHONWARNINGS="ignore:Editable installation" .venv/bin/python -m pip install -q -e '.[dev]'
  echo "$want" > "$stamp"
fi
