#!/usr/bin/env bash
# Set up (once) and run the main job: `bash scripts/run.sh [hydra overrides...]`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m uvav.run "$@"
