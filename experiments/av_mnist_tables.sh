#!/usr/bin/env bash
# Regenerates results/av_mnist/ (issue 3: FT vs PL, the paper's accuracy table) and results/comparison_av_mnist/
# (FT, LoRA, Adapter, PL oracle, PL uncertain per-scenario, PL uncertain trained as used), 3 seeds each, on CPU.
# Needs ../shared/data (or data.root=... / $UVAV_DATA_ROOT). Seeds 0,1,2; data.seed=0 (pairing and splits).
# Wall time on 2 CPU cores: ~40 min (FT: 40 epochs per seed, shared by all methods of that seed).
# Relaunching resumes: finished jobs are reused by their config, unfinished stages resume from checkpoints.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
PY=.venv/bin/python
start=$(date +%s)
$PY -m uvav.run -m experiment=av_mnist method=ft,pl,lora,adapter seed=0,1,2 trainer.progress=false trainer.num_threads=1 \
  hydra.sweep.dir=outputs/experiments/av_mnist/methods "$@"
$PY -m uvav.run -m experiment=av_mnist method=pl method.prompt_training=joint seed=0,1,2 trainer.progress=false trainer.num_threads=1 \
  hydra.sweep.dir=outputs/experiments/av_mnist/joint "$@"
$PY -m uvav.aggregate outputs/experiments/av_mnist/methods --out results/av_mnist \
  --note "experiments/av_mnist_tables.sh, wall time $(( $(date +%s) - start )) s"
$PY -m uvav.aggregate outputs/experiments/av_mnist/methods outputs/experiments/av_mnist/joint \
  --out results/comparison_av_mnist --comparison
