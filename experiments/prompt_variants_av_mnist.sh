#!/usr/bin/env bash
# Issue 15: which prompt ingredient earns its place? On av_mnist, 3 seeds (0,1,2), test split, selection on
# validation, every prompt variant beside head only, LoRA and adapters on the same frozen base:
# - base finetuned: the FT model (40 epochs, complete case; shared with experiments/av_mnist_tables.sh);
# - base pretrained: the `contrastive` method=pretrain checkpoint of the same seed (experiments/pretrain_av_mnist.sh),
#   not fine-tuned: head, prompts, LoRA or adapters are the only adaptation.
# Variants: prompts of the paper (attention level, one set per case), deep input-level prompts (prompt.depth=2: every
# encoder block of cavmae_tiny), input-conditioned prompts (method=cpl, no case label), and (finetuned base) training
# at scenario.missing_rate=0.5 instead of the default uniform draw over the four cases (3 in 4 corrupted).
# Schedules: as experiments/av_mnist_tables.sh on the finetuned base (10 epochs, lr 0.005 for every frozen-base
# stage); 30 epochs at lr 0.02 on the pretrained base (chosen on validation, below), the same for every method.
# Writes results/prompt_variants_av_mnist/. Wall time on 2 CPU cores: ~95 min with the FT models and pretraining
# checkpoints in the cache (experiments/av_mnist_tables.sh and pretrain_av_mnist.sh: ~40 and ~35 min more without);
# ~5 min when every job is reused. Relaunching reuses finished jobs and resumes unfinished ones.
set -euo pipefail
cd "$(dirname "$0")/.."
source experiments/provenance.sh
recipe_setup
OUT=outputs/experiments/prompt_variants
PRETRAIN=outputs/experiments/pretrain_av_mnist/contrastive/pretrain
# two jobs at a time, one thread each (2 cores)
COMMON=(experiment=av_mnist trainer.progress=false trainer.num_threads=1 hydra/launcher=joblib
        hydra.launcher.n_jobs=2 "$@")
DEEP=(prompt=input prompt.depth=2)

# the pretrained bases: experiments/pretrain_av_mnist.sh's contrastive variant (reused when it has run)
$PY -m uvav.run -m "${COMMON[@]}" method=pretrain method.epochs=30 trainer.batch_size=128 \
  method.contrastive_weight=1 method.contrastive_masked=false method.temperature=0.07 seed=0,1,2 \
  hydra.sweep.dir=$PRETRAIN

run() {  # run <sweep dir> <overrides...>: one multirun
  local dir=$1; shift
  $PY -m uvav.run -m "${COMMON[@]}" "$@" hydra.sweep.dir="$dir"
}
run $OUT/finetuned/baselines method=lora,adapter,pl seed=0,1,2
run $OUT/finetuned/deep method=pl,cpl "${DEEP[@]}" seed=0,1,2
run $OUT/finetuned/missing_rate method=lora,cpl "${DEEP[@]}" scenario.missing_rate=0.5 seed=0,1,2
# the pretrained base's schedule, chosen on seed 0's validation split (outputs/.../schedule_check): at 10 epochs and
# lr 0.005 head only was still far from converged (validation 0.41); 30 epochs at lr 0.005 / 0.02 / 0.05 gave head
# only 0.532 / 0.584 / 0.584 and PL 0.489 / 0.508 / 0.542; 0.02 is the lower of the two best for head only
$PY -m uvav.run -m "${COMMON[@]}" method=pl method.base=pretrained backbone.checkpoint="$PWD/$PRETRAIN/0/model.pt" \
  seed=0 method.epochs=30 method.lr=0.005,0.02,0.05 hydra.sweep.dir=$OUT/schedule_check
for seed in 0 1 2; do
  BASE=(method.base=pretrained backbone.checkpoint="$PWD/$PRETRAIN/$seed/model.pt" seed=$seed method.epochs=30
        method.lr=0.02)
  run $OUT/pretrained/baselines/$seed method=lora,adapter,pl "${BASE[@]}"
  run $OUT/pretrained/deep/$seed method=pl,cpl "${DEEP[@]}" "${BASE[@]}"
done

RESULTS=results/prompt_variants_av_mnist
$PY -m uvav.compare $OUT/finetuned $OUT/pretrained --variants --out $RESULTS  # not the schedule check
# robustness curves of the best prompt variant on validation (mixed case) and of LoRA on the same base
# shellcheck disable=SC2046  # one job folder per line
$PY -m uvav.robustness --severities 0 0.5 1 2 --out $RESULTS/robustness $(cat $RESULTS/robustness_runs.txt)
{
  echo "# How results/prompt_variants_av_mnist was made"
  echo
  echo "- command: \`bash experiments/prompt_variants_av_mnist.sh $*\`"
  echo "- seeds: 0,1,2 (training and, for the pretrained base, pretraining); data.seed=0; FSDD's split; test split,"
  echo "  every stage's epoch selected on validation accuracy"
  echo "- two jobs at a time (hydra/launcher=joblib n_jobs=2), trainer.num_threads=1 each"
  echo "- finished $(date -u '+%Y-%m-%d %H:%M UTC'); wall time: $(( $(date +%s) - start )) s (finished jobs reused)"
  provenance_lines "$PY"
} > $RESULTS/RUN.md
