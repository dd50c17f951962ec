#!/usr/bin/env bash
# Regenerates results/scale/: the scale benchmark (issue #11). For N = 1500 and 6000 generated UrbanSound8K-AV clips
# (experiments/make_us8k_av.py: 4 s WAVs at mixed rates, mono and stereo; JPEGs, seed 0) it measures the feature
# store's decode throughput with 1 and 2 workers, then runs the default PL job (cavmae_tiny, 1024 fbank frames,
# 224 px, cached features, 1 epoch per stage) on a fresh cache while sampling the peak held memory (Pss_Anon +
# Pss_Shmem) and RSS of its whole process tree. Checks: completes at 6000 clips with peak held <= 4 GiB, and
# 6000 within 15% of 1500. Datasets, caches and logs go to outputs/experiments/scale/; a relaunch reuses finished N
# (--force reruns them). Extra arguments go to experiments/scale_benchmark.py, e.g. --extra trainer.num_threads=1.
# OUT= and WORK= move the results and the work folder. Run it on an otherwise idle machine: times are wall-clock.
# Disk: the datasets (~0.3 MB per clip) and one feature store at a time (caches are removed after each job).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
PY=.venv/bin/python
OUT=${OUT:-results/scale}
WORK=${WORK:-outputs/experiments/scale}
source experiments/provenance.sh
provenance_start
$PY experiments/scale_benchmark.py --clips 1500 6000 --out "$OUT" --work "$WORK" "$@"
{
  echo "# How results/scale was made"
  echo
  echo "- command: \`bash experiments/scale_benchmark.sh $*\`, i.e. \`python experiments/scale_benchmark.py" \
       "--clips 1500 6000 --out $OUT --work $WORK $*\`"
  echo "- data: experiments/make_us8k_av.py --seed 0 (generated, UrbanSound8K-AV layout); job commands and their" \
       "overrides in scale.md / scale.json"
  echo "- seeds: generator --seed 0; training seed=0 and data.seed=0 (the defaults): stratified split, 30% test," \
       "15% of the rest validation; split sizes in scale.md"
  echo "- wall time: $(( $(date +%s) - start )) s (finished sizes are reused on a relaunch);" \
       "finished $(date -u '+%Y-%m-%d %H:%M UTC')"
  provenance_lines "$PY"
} > "$OUT/RUN.md"
