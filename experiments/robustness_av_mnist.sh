#!/usr/bin/env bash
# Issue 27: robustness as the field measures it, on av_mnist, 3 seeds (0,1,2), FSDD's test split, CPU.
# Every method on the same FT model per seed (40 epochs, complete case; frozen-base stages: their defaults):
# FT, FT + modality dropout (scenario=modality_dropout: trained with audio zeroed / image black), head only
# (method=head_only: the baseline as a run of its own), PL (scored uncertain), input-conditioned prompts (cpl), LoRA,
# adapters, stand-in tokens. Training missing rates: the uniform draw over each method's training cases (its
# default; null below) for all, and scenario.missing_rate=0.5 for FT + dropout, head only, PL and LoRA (for the
# frozen-base methods the "missing" training cases are the paper's noise kinds, their default training recipe).
# Each run is scored (python -m uvav.robustness --suite all) under the 15 ImageNet-C frame corruptions and 10 audio
# corruptions at severities 1-5 (READ's environmental noises need recordings uvav cannot ship: not scored), and
# under test-time missing rates 0, 0.1, ..., 1 per modality (a per-sample missing table fixed by seed 0).
# Writes results/robustness_av_mnist/. Wall time on 2 CPU cores: see its RUN.md. Relaunching reuses finished jobs
# and every run's finished robustness.json.
set -euo pipefail
cd "$(dirname "$0")/.."
source experiments/provenance.sh
recipe_setup
OUT=outputs/experiments/robustness_av_mnist
RESULTS=results/robustness_av_mnist
# two jobs at a time, one thread each (2 cores)
COMMON=(experiment=av_mnist trainer.progress=false trainer.num_threads=1 hydra/launcher=joblib
        hydra.launcher.n_jobs=2 seed=0,1,2 "$@")
$PY -m uvav.run -m "${COMMON[@]}" method=ft,head_only,pl,cpl,lora,adapter,standin hydra.sweep.dir=$OUT/uniform
$PY -m uvav.run -m "${COMMON[@]}" method=ft scenario=modality_dropout scenario.missing_rate=null,0.5 \
  hydra.sweep.dir=$OUT/dropout
$PY -m uvav.run -m "${COMMON[@]}" method=head_only,pl,lora scenario.missing_rate=0.5 hydra.sweep.dir=$OUT/rate_0.5

# scoring: two processes over halves of the runs (one thread each), then the summary (every run's result reused)
mapfile -t RUNS < <(find $OUT -name metrics.json -printf '%h\n' | sort)
SCORE=(--suite all --severities 0 1 2)
half=$(( (${#RUNS[@]} + 1) / 2 ))
OMP_NUM_THREADS=1 $PY -m uvav.robustness "${RUNS[@]:0:$half}" "${SCORE[@]}" &
OMP_NUM_THREADS=1 $PY -m uvav.robustness "${RUNS[@]:$half}" "${SCORE[@]}" &
wait
$PY -m uvav.robustness "${RUNS[@]}" "${SCORE[@]}" --out $RESULTS
{
  echo "# How results/robustness_av_mnist was made"
  echo
  echo "- command: \`bash experiments/robustness_av_mnist.sh $*\`"
  echo "- seeds: 0,1,2 (training); data.seed=0; FSDD's split; test split, every stage's epoch selected on validation"
  echo "  accuracy; missing tables drawn by seed 0; corruptions seeded per clip (uvav.corruptions)"
  echo "- two jobs at a time (hydra/launcher=joblib n_jobs=2), trainer.num_threads=1 each; scoring in two processes"
  echo "- finished $(date -u '+%Y-%m-%d %H:%M UTC'); wall time: $(( $(date +%s) - start )) s (finished jobs reused)"
  provenance_lines "$PY"
} > $RESULTS/RUN.md
