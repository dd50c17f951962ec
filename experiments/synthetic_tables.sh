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

source experiments/provenance.sh
provenance_start
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
  echo "- wall time: sweep ${sweep_s} s, with the tables $(( $(date +%s) - start )) s" \
       "(jobs found finished are reused; README.md lists each job's device, and runs.csv its wall time)"
  provenance_lines "$PYTHON"
} >> "$OUT/RUN.md"
echo "wrote $OUT (RUN.md, README.md, tables, plots)"
