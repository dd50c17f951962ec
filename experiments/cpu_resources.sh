#!/usr/bin/env bash
# Regenerates results/resources/cpu_cavmae_{tiny,small}.{md,json,profile.txt}: the resource benchmark
# (FT vs PL input-level / attention-level / attention-level + cached features) on this machine's CPU, one thread,
# synthetic data (1200 training samples), batch 64, 4 epochs per method (median over epochs 2-4). ~6 min on 2 cores.
# Run it on an otherwise idle machine: times are wall-clock.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
for backbone in cavmae_tiny cavmae_small; do
  .venv/bin/python experiments/resource_benchmark.py --backbone "$backbone" --threads 1 --epochs 4 --profile \
    --out "results/resources/cpu_$backbone" data.num_train=1200 paths.cache_dir=outputs/experiments/cache "$@"
done
