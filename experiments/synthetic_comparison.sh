#!/usr/bin/env bash
# Regenerates results/comparison_synthetic/: FT, LoRA, Adapter, head only, prompts (oracle / uncertain per-scenario
# / uncertain trained as used) on the synthetic data, seeds 0,1,2, plus robustness curves; and the check that
# caching frozen features leaves accuracy unchanged (PL with method.cache_features=off vs auto, same seeds).
# Wall time on 2 CPU cores: ~10 min. Relaunching reuses finished jobs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
PY=.venv/bin/python
SWEEP=outputs/experiments/synthetic_comparison
COMMON=(seed=0,1,2 trainer.progress=false trainer.num_threads=1 paths.cache_dir=outputs/experiments/cache "$@")
source experiments/provenance.sh
provenance_start
$PY -m uvav.run -m method=ft,pl,lora,adapter "${COMMON[@]}" hydra.sweep.dir=$SWEEP/methods
$PY -m uvav.run -m method=pl method.prompt_training=joint "${COMMON[@]}" hydra.sweep.dir=$SWEEP/joint
$PY -m uvav.run -m method=pl method.cache_features=off "${COMMON[@]}" hydra.sweep.dir=$SWEEP/uncached
$PY -m uvav.compare $SWEEP/methods $SWEEP/joint --out results/comparison_synthetic
$PY -m uvav.aggregate $SWEEP/methods $SWEEP/uncached --out results/comparison_synthetic/caching
$PY -m uvav.robustness --severities 0 0.5 1 2 --out results/comparison_synthetic/robustness \
  $(ls -d $SWEEP/methods/*/ $SWEEP/joint/*/)
{
  echo "# How results/comparison_synthetic was made"
  echo
  echo "- command: \`bash experiments/synthetic_comparison.sh $*\`; seeds 0,1,2; data=synthetic (data.seed=0)"
  echo "- caching check: \`caching/\` aggregates PL with method.cache_features=auto (methods/) and =off (uncached/)"
  echo "- 1 thread per job; wall time: $(( $(date +%s) - start )) s; finished $(date -u '+%Y-%m-%d %H:%M UTC')"
  provenance_lines "$PY"
} > results/comparison_synthetic/RUN.md
