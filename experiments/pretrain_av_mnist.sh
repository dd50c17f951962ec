#!/usr/bin/env bash
# Issue 13's target: self-supervised pretraining (method=pretrain, CAV-MAE's objective) of cavmae_tiny on av_mnist's
# 2,300 training pairs without labels, then FT, PL and the head-only baseline on 10% of the labelled training pairs
# (data.label_fraction=0.1, 230 pairs), against the same jobs from random weights. Seeds 0,1,2 (pretraining seed s
# gives the checkpoint of training seed s); data.seed=0; test split. Writes results/pretrain_av_mnist/.
# Wall time on 2 CPU cores: ~25 min. Relaunching reuses finished jobs and resumes unfinished ones.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
PY=.venv/bin/python
source experiments/provenance.sh
provenance_start
OUT=outputs/experiments/pretrain_av_mnist
COMMON=(experiment=av_mnist trainer.progress=false "$@")
$PY -m uvav.run -m "${COMMON[@]}" method=pretrain method.epochs=30 trainer.batch_size=128 seed=0,1,2 \
  hydra.sweep.dir=$OUT/pretrain
$PY -m uvav.run -m "${COMMON[@]}" method=pl data.label_fraction=0.1 seed=0,1,2 hydra.sweep.dir=$OUT/scratch
for seed in 0 1 2; do
  $PY -m uvav.run -m "${COMMON[@]}" method=pl data.label_fraction=0.1 seed=$seed \
    backbone.checkpoint="$PWD/$OUT/pretrain/$seed/model.pt" hydra.sweep.dir=$OUT/pretrained/$seed
done
$PY experiments/pretrain_table.py --scratch $OUT/scratch --pretrained $OUT/pretrained --pretrain $OUT/pretrain \
  --out results/pretrain_av_mnist
{
  echo "# How results/pretrain_av_mnist was made"
  echo
  echo "- command: \`bash experiments/pretrain_av_mnist.sh $*\`"
  echo "- seeds: 0,1,2 (pretraining and training); data.seed=0 (pairing, image pools, validation split); FSDD's split"
  echo "- pretraining: method=pretrain method.epochs=30 trainer.batch_size=128 on all 2,300 training pairs, no labels"
  echo "- labelled jobs: method=pl data.label_fraction=0.1 (FT, head only and PL in one job), experiment=av_mnist"
  echo "- finished $(date -u '+%Y-%m-%d %H:%M UTC'); wall time: $(( $(date +%s) - start )) s"
  provenance_lines "$PY"
} > results/pretrain_av_mnist/RUN.md
