#!/usr/bin/env bash
# Create .venv and install uvav with its dev tools; a no-op when pyproject.toml has not changed since.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.uvav-installed
# reinstalled when pyproject.toml, this script or the set of package files changes (a strict editable install links
# each file: a new module needs the links remade)
want=$( (cat pyproject.toml scripts/setup.sh; find uvav hydra_plugins conf -name '*.py' -o -name '*.yaml' | sort) \
  | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "uvav: installing into .venv (first time: a few minutes, ~6 GB with torch)" >&2
  .venv/bin/python -m pip install -q --upgrade pip
  # setuptools prints an "Editable installation" notice (information, not a warning) for every editable install of
  # a flat layout; only that notice is silenced: a real warning or deprecation still shows. editable_mode=strict:
  # the package's files are linked under build/__editable__*, a real folder on sys.path, so Hydra's plugin scan
  # (pkgutil over the hydra_plugins namespace) finds hydra_plugins/uvav_optuna_sweeper; setuptools' default editable
  # finder hides it from pkgutil ("Unknown plugin class")
  PYTHONWARNINGS="ignore:Editable installation" .venv/bin/python -m pip install -q -e '.[dev]' \
    --config-settings editable_mode=strict
  # frost's photographs and the reference of tests/corruptions/test_visual.py; without its dependencies, which name
  # opencv-python (the GUI build, a second cv2 beside the headless one uvav needs)
  .venv/bin/python -m pip install -q --no-deps "imagecorruptions==1.1.2"
  echo "$want" > "$stamp"
fi
