# Sourced by the recipes in experiments/: what a results folder records about the run that made it.
# recipe_setup installs and starts the clock; provenance_start sets $start, $commit, $dirty and $load_start;
# provenance_lines PYTHON prints Markdown list items: commit, machine and load, device, library versions.

# recipe_setup: install what the recipe needs (scripts/setup.sh), set $PY, start the provenance clock.
recipe_setup() {
  bash scripts/setup.sh
  PY=.venv/bin/python
  provenance_start
}

provenance_start() {
  start=$(date +%s)
  commit=$(git rev-parse HEAD 2>/dev/null || echo unknown)
  dirty=$(GIT_OPTIONAL_LOCKS=0 git status --porcelain --untracked-files=no 2>/dev/null | wc -l)
  load_start=$(cut -d" " -f1-3 /proc/loadavg 2>/dev/null || echo "?")
}

provenance_lines() {
  local moved
  moved=$([ "$(git rev-parse HEAD 2>/dev/null || echo unknown)" != "$commit" ] && echo " (HEAD moved during the run)" || true)
  echo "- git commit at start: $commit$([ "$dirty" -gt 0 ] && echo " with $dirty modified tracked files")$moved"
  echo "- machine: $(hostname), $(getconf _NPROCESSORS_ONLN) CPU cores" \
       "($(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2 | xargs || uname -m));" \
       "load average (1/5/15 min) at start $load_start, at end $(cut -d" " -f1-3 /proc/loadavg 2>/dev/null)"
  "$1" - <<'PY'
from importlib.metadata import version
import torch
names = ["torch", "torchaudio", "timm", "hydra-core", "omegaconf", "optuna", "hydra-optuna-sweeper", "sqlalchemy",
         "numpy", "pandas", "matplotlib"]
print("- device: " + (torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu (no CUDA)"))
print("- versions: " + ", ".join(f"{n} {version(n)}" for n in names))
PY
}
