#!/usr/bin/env bash
# Regenerates results/synthetic/: the paper's two tables (test accuracy per case for FT, head only, FT + PL
# uncertain/oracle; training memory, time per epoch and parameters per method) on the synthetic data with the
# default settings (data=synthetic backbone=cavmae_tiny prompt=attention scenario=all method=pl: the FT model is
# trained first, then head-only and PL on the frozen model), seeds 0, 1, 2.
# Expected wall time on 2 CPU cores: about 2.5 min with trainer.num_threads=1 (~45 s per seed: FT 8 epochs, head
# only and PL 10 epochs each); a rerun reuses the finished jobs (~15 s).
# Resumable: the sweep folder (outputs/experiments/synthetic) and the cache (outputs/experiments/cache) are fixed, so
# after an interruption the same command reuses finished jobs and resumes the interrupted one from its checkpoint.
# Each invocation appends what it ran (command, seeds, commit, device, versions, wall time) to results/synthetic/RUN.md.
#
# Usage (from anywhere): experiments/synthetic_tables.sh [extra Hydra overrides]
#   experiments/synthetic_tables.sh trainer.num_threads=1   # on a machine shared with other jobs (2 processes with 2
#                                                            # threads each on 2 cores slow each other down badly)
#   SWEEPS_DIR=/tmp/s RESULTS_DIR=/tmp/r experiments/synthetic_tables.sh data.num_train=96   # a dry run elsewhere
set -euo pipefail
cd "$(dirname "$0")/.."

NAME=${NAME:-synthetic}
SEEDS=${SEEDS:-0,1,2}
PYTHON=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python)}
SWEEP=${SWEEPS_DIR:-outputs/experiments}/$NAME
CACHE=${CACHE_DIR:-${SWEEPS_DIR:-outputs/experiments}/cache}  # FT models and finished jobs, shared by the recipes
OUT=${RESULTS_DIR:-results}/$NAME
CMD=("$PYTHON" -m uvav.run -m method=pl "seed=$SEEDS" trainer.progress=false "hydra.sweep.dir=$SWEEP"
     "paths.cache_dir=$CACHE" "$@")
AGG=("$PYTHON" -m uvav.aggregate "$SWEEP" --out "$OUT")

start=$(date +%s)
commit=$(git rev-parse HEAD 2>/dev/null || echo unknown)
dirty=$(GIT_OPTIONAL_LOCKS=0 git status --porcelain --untracked-files=no 2>/dev/null | wc -l)
load_start=$(cut -d" " -f1-3 /proc/loadavg 2>/dev/null || echo "?")
"${CMD[@]}"
sweep_s=$(( $(date +%s) - start ))
"${AGG[@]}"

mkdir -p "$OUT"
[ -f "$OUT/RUN.md" ] || printf '# How %s was made\n\nOne section per invocation of %s (newest last).\n' \
  "$OUT" "experiments/synthetic_tables.sh" > "$OUT/RUN.md"
{
  echo
  echo "## $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
  echo
  echo "- command: \`${CMD[*]}\`, then \`${AGG[*]}\`"
  echo "- seeds: $SEEDS"
  moved=$([ "$(git rev-parse HEAD 2>/dev/null || echo unknown)" != "$commit" ] && echo " (HEAD moved during the run)" || true)
  echo "- git commit at start: $commit$([ "$dirty" -gt 0 ] && echo " with $dirty modified tracked files")$moved"
  echo "- machine: $(hostname), $(getconf _NPROCESSORS_ONLN) CPU cores" \
       "($(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2 | xargs || uname -m));" \
       "load average (1/5/15 min) at start $load_start, at end $(cut -d" " -f1-3 /proc/loadavg 2>/dev/null)"
  echo "- wall time: sweep ${sweep_s} s, with the tables $(( $(date +%s) - start )) s" \
       "(jobs found finished are reused; README.md lists each job's device, and runs.csv its wall time)"
  "$PYTHON" - <<'EOF'
from importlib.metadata import version
import torch
names = ["torch", "torchaudio", "timm", "hydra-core", "omegaconf", "optuna", "hydra-optuna-sweeper", "sqlalchemy",
         "numpy", "pandas", "matplotlib"]
print("- device: " + (torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu (no CUDA)"))
print("- versions: " + ", ".join(f"{n} {version(n)}" for n in names))
EOF
} >> "$OUT/RUN.md"
echo "wrote $OUT (RUN.md, README.md, tables, plots)"
