#!/usr/bin/env bash
# Issue 13's second target: the checkpoints of experiments/pretrain_av_mnist.sh (method=pretrain on av_mnist's
# training pairs, no labels; both variants), used for FT on a new dataset in the UrbanSound8K-AV layout: FSDD's 300 test-take
# recordings with unseen MNIST digits (experiments/make_digits_us8k_av.py), split per class 70/30 (test), a tenth of
# the training part for validation. FT from random weights vs from the pretraining checkpoint of the same seed,
# seeds 0,1,2, av_mnist's input sizes and FT recipe (128 frames, 32 px, 4 px image patches, 40 epochs, lr 2e-3).
# Writes results/pretrain_digits_us8k/<variant>/. Wall time on 2 CPU cores: ~8 min after pretrain_av_mnist.sh,
# which it needs (its pretraining jobs' checkpoints).
set -euo pipefail
cd "$(dirname "$0")/.."
source experiments/provenance.sh
recipe_setup
OUT=outputs/experiments/pretrain_digits_us8k
DATA=outputs/data/digits_us8k_av
PRE=outputs/experiments/pretrain_av_mnist
for seed in 0 1 2; do
  for variant in cavmae contrastive; do
    [ -f "$PRE/$variant/pretrain/$seed/model.pt" ] || { echo "run experiments/pretrain_av_mnist.sh first" >&2; exit 1; }
  done
done
[ -d "$DATA/Dataset_v3_sound" ] || $PY experiments/make_digits_us8k_av.py "$DATA"
COMMON=(method=ft data=urbansound8k_av data.root="$PWD/$DATA" data.target_length=128 data.image_size=32
        backbone.image_patch_size=4 trainer.epochs=40 trainer.lr=0.002 trainer.progress=false "$@")
$PY -m uvav.run -m "${COMMON[@]}" seed=0,1,2 hydra.sweep.dir=$OUT/scratch
for variant in cavmae contrastive; do
  for seed in 0 1 2; do
    $PY -m uvav.run -m "${COMMON[@]}" seed=$seed backbone.checkpoint="$PWD/$PRE/$variant/pretrain/$seed/model.pt" \
      hydra.sweep.dir=$OUT/$variant/pretrained/$seed
  done
  $PY experiments/pretrain_table.py --scratch $OUT/scratch --pretrained $OUT/$variant/pretrained \
    --pretrain $PRE/$variant/pretrain --out results/pretrain_digits_us8k/$variant \
    --title "av_mnist pretraining ($variant), then FT on unseen spoken + handwritten digits, UrbanSound8K-AV layout"
done
{
  echo "# How results/pretrain_digits_us8k was made"
  echo
  echo "- command: \`bash experiments/pretrain_digits_us8k.sh $*\`"
  echo "- data: experiments/make_digits_us8k_av.py (FSDD test takes, 300 clips; MNIST test-pool images, seed 0)"
  echo "- seeds: 0,1,2 (pretraining and FT); data.split=stratified (data.seed=0)"
  echo "- finished $(date -u '+%Y-%m-%d %H:%M UTC'); wall time: $(( $(date +%s) - start )) s"
  provenance_lines "$PY"
} > results/pretrain_digits_us8k/RUN.md
