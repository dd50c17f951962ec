#!/usr/bin/env bash
# Issue 13's target: self-supervised pretraining (method=pretrain) of cavmae_tiny on av_mnist's 2,300 training pairs
# without labels, then FT, PL and the head-only baseline on 10% of the labelled training pairs
# (data.label_fraction=0.1, 230 pairs), against the same jobs from random weights. Two pretraining variants, both
# reported: `cavmae` (CAV-MAE's weights: contrastive weight 0.01 on the masked pass, temperature 0.05) and
# `contrastive` (weight 1 on a second, unmasked pass, temperature 0.07: the prototype of docs/facts.md §9).
# Seeds 0,1,2 (pretraining seed s gives the checkpoint of training seed s); data.seed=0; test split.
# Writes results/pretrain_av_mnist/<variant>/. Wall time on 2 CPU cores: ~35 min. Relaunching reuses finished jobs
# and resumes unfinished ones.
set -euo pipefail
cd "$(dirname "$0")/.."
source experiments/provenance.sh
recipe_setup
OUT=outputs/experiments/pretrain_av_mnist
COMMON=(experiment=av_mnist trainer.progress=false "$@")
declare -A VARIANTS=(
  [cavmae]=""
  [contrastive]="method.contrastive_weight=1 method.contrastive_masked=false method.temperature=0.07"
)
$PY -m uvav.run -m "${COMMON[@]}" method=pl data.label_fraction=0.1 seed=0,1,2 hydra.sweep.dir=$OUT/scratch
for variant in cavmae contrastive; do
  # shellcheck disable=SC2086  # the variant's overrides are separate words
  $PY -m uvav.run -m "${COMMON[@]}" method=pretrain method.epochs=30 trainer.batch_size=128 ${VARIANTS[$variant]} \
    seed=0,1,2 hydra.sweep.dir=$OUT/$variant/pretrain
  for seed in 0 1 2; do
    $PY -m uvav.run -m "${COMMON[@]}" method=pl data.label_fraction=0.1 seed=$seed \
      backbone.checkpoint="$PWD/$OUT/$variant/pretrain/$seed/model.pt" hydra.sweep.dir=$OUT/$variant/pretrained/$seed
  done
  $PY experiments/pretrain_table.py --scratch $OUT/scratch --pretrained $OUT/$variant/pretrained \
    --pretrain $OUT/$variant/pretrain --out results/pretrain_av_mnist/$variant \
    --title "method=pretrain ($variant: ${VARIANTS[$variant]:-the CAV-MAE weights}) on av_mnist, then 10% of the labels"
done
{
  echo "# How results/pretrain_av_mnist was made"
  echo
  echo "- command: \`bash experiments/pretrain_av_mnist.sh $*\`"
  echo "- seeds: 0,1,2 (pretraining and training); data.seed=0 (pairing, image pools, validation split); FSDD's split"
  echo "- pretraining: method=pretrain method.epochs=30 trainer.batch_size=128 on all 2,300 training pairs, no labels;"
  echo "  variant cavmae: the defaults (CAV-MAE's weights); variant contrastive: ${VARIANTS[contrastive]}"
  echo "- labelled jobs: method=pl data.label_fraction=0.1 (FT, head only and PL in one job), experiment=av_mnist"
  echo "- finished $(date -u '+%Y-%m-%d %H:%M UTC'); wall time: $(( $(date +%s) - start )) s"
  provenance_lines "$PY"
} > results/pretrain_av_mnist/RUN.md
