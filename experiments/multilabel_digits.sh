#!/usr/bin/env bash
# Regenerates results/multilabel_digits/: FT and PL (head only beside it) on an AudioSet-style multi-label set in
# CAV-MAE's datafile layout (experiments/make_multilabel_digits.py: a spoken and an independently drawn written
# digit per clip, labelled with both; frames 0-2 only extracted), test mAP per case, 3 seeds, CPU.
# Read through data=cavmae_json as a user would: multi-hot labels from the comma-separated mids (BCE, mAP), a random
# one of the 3 stored frames per sample and epoch in training, the test predictions averaged over the 3 frames.
# Settings as experiment=av_mnist (4 px image patches, FT 40 epochs at lr 0.002, SpecAugment 24/24, 2 px shifts).
# Needs ../shared/data (or DATA_ROOT=...). Seeds 0,1,2. Wall time on 2 CPU cores: ~25 min; relaunching reuses jobs.
set -euo pipefail
cd "$(dirname "$0")/.."
source experiments/provenance.sh
recipe_setup
DATA=${DATA_DIR:-outputs/data/multilabel_digits}
if [ ! -f "$DATA/test.json" ]; then
  $PY experiments/make_multilabel_digits.py "$DATA" ${DATA_ROOT:+--data-root "$DATA_ROOT"} --train 1200 --val 300 --frames 3
fi
$PY -m uvav.run -m method=ft,pl seed=0,1,2 data=cavmae_json "data.train_json=$DATA/train.json" \
  "data.val_json=$DATA/val.json" "data.test_json=$DATA/test.json" "data.label_csv=$DATA/labels.csv" \
  data.num_frames=3 data.target_length=128 data.image_size=32 data.normalize=train data.freq_mask=24 \
  data.time_mask=24 data.image_shift=2 backbone.image_patch_size=4 trainer.epochs=40 trainer.lr=0.002 \
  trainer.progress=false trainer.num_threads=1 hydra.sweep.dir=outputs/experiments/multilabel_digits "$@"
$PY -m uvav.aggregate outputs/experiments/multilabel_digits --out results/multilabel_digits
{
  echo "# How results/multilabel_digits was made"
  echo
  echo "- command: \`bash experiments/multilabel_digits.sh $*\`"
  echo "- data: \`experiments/make_multilabel_digits.py --train 1200 --val 300 --frames 3\` (seed 0): 1,200 train, 300 val"
  echo "  (FSDD train takes), 300 test clips (FSDD test takes); 10 classes, 1-2 labels per clip"
  echo "- seeds: 0,1,2 (training); split: test; metric: mAP (scikit-learn average precision, mean over classes)"
  echo "- trainer.num_threads=1 per job; finished $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "- wall time: $(( $(date +%s) - start )) s (finished jobs are reused on a relaunch)"
  provenance_lines "$PY"
} > results/multilabel_digits/RUN.md
