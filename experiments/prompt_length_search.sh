#!/usr/bin/env bash
# Regenerates results/prompt_length/: an Optuna (TPE, seeded) search of prompt.length in {1,2,4,8,16} and the PL
# learning rate in {0.001,0.005,0.02} on the synthetic data (default settings otherwise, seed 0), maximising
# validation accuracy (test accuracy is only reported), then the tables and the accuracy-vs-prompt-length plot.
# Trials: TRIALS (default 16) finished trials in the study; training seed 0, sampler seed 123
# (conf/hparams_search/prompt_length.yaml). TPE repeats good configurations: a repeat is reused from the cache at once.
# Expected wall time on 2 CPU cores: about 4 min with trainer.num_threads=1 (the FT model once, ~25 s, shared with
# synthetic_tables.sh through the recipes' cache; ~25 s per new configuration).
# Resumable: the study lives in outputs/experiments/prompt_length/optuna.db; a rerun runs only the trials still
# missing to reach TRIALS finished ones (a trial killed mid-way stays RUNNING in the study and is not counted).
# Each invocation appends what it ran (command, trials, commit, device, versions, wall time) to RUN.md.
#
# Usage (from anywhere): experiments/prompt_length_search.sh [extra Hydra overrides]
#   experiments/prompt_length_search.sh trainer.num_threads=1   # on a machine shared with other jobs
#   TRIALS=24 experiments/prompt_length_search.sh                # continue the same study up to 24 finished trials
set -euo pipefail
cd "$(dirname "$0")/.."

NAME=${NAME:-prompt_length}
TRIALS=${TRIALS:-16}
PYTHON=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python)}
SWEEP=${SWEEPS_DIR:-outputs/experiments}/$NAME
CACHE=${CACHE_DIR:-${SWEEPS_DIR:-outputs/experiments}/cache}  # FT models and finished jobs, shared by the recipes
OUT=${RESULTS_DIR:-results}/$NAME
STUDY=uvav_prompt_length

finished_trials() {
  [ -f "$SWEEP/optuna.db" ] || { echo 0; return; }
  "$PYTHON" - "$SWEEP/optuna.db" "$STUDY" <<'EOF' 2>/dev/null || echo 0
import sys, optuna
optuna.logging.set_verbosity(optuna.logging.ERROR)
study = optuna.load_study(study_name=sys.argv[2], storage=f"sqlite:///{sys.argv[1]}")
print(sum(t.state.is_finished() for t in study.trials))
EOF
}

source experiments/provenance.sh
provenance_start
before=$(finished_trials)
missing=$(( TRIALS - before ))
# one folder per job and run (the search config sets the same subdir; explicit here so the recipe never depends on
# the defaults order)
CMD=("$PYTHON" -m uvav.run -m hparams_search=prompt_length "hydra.sweeper.n_trials=$missing" trainer.progress=false
     "hydra.sweep.dir=$SWEEP" "paths.cache_dir=$CACHE" 'hydra.sweep.subdir=${now:%Y%m%d-%H%M%S}_${hydra.job.num}'
     "$@")
AGG=("$PYTHON" -m uvav.aggregate "$SWEEP" --out "$OUT")
if [ "$missing" -gt 0 ]; then
  echo "study $STUDY: $before finished trials, running $missing more"
  "${CMD[@]}"
else
  echo "study $STUDY already has $before finished trials (TRIALS=$TRIALS): tables only"
fi
sweep_s=$(( $(date +%s) - start ))
"${AGG[@]}"

mkdir -p "$OUT"
[ -f "$OUT/RUN.md" ] || printf '# How %s was made\n\nOne section per invocation of %s (newest last).\n' \
  "$OUT" "experiments/prompt_length_search.sh" > "$OUT/RUN.md"
{
  echo
  echo "## $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
  echo
  if [ "$missing" -gt 0 ]; then echo "- command: \`${CMD[*]}\`, then \`${AGG[*]}\`"
  else echo "- command: \`${AGG[*]}\` (the study already had TRIALS=$TRIALS finished trials)"; fi
  echo "- trials: $TRIALS wanted; $before finished before, $(finished_trials) after; training seed 0;" \
       "study $STUDY in sqlite:///$SWEEP/optuna.db (every trial: optuna_trials.csv)"
  echo "- wall time: search ${sweep_s} s, with the tables $(( $(date +%s) - start )) s"
  provenance_lines "$PYTHON"
} >> "$OUT/RUN.md"
echo "wrote $OUT (RUN.md, README.md, tables, plots)"
