#!/usr/bin/env bash
# The resource benchmark with cavmae_base at CAV-MAE's input size (1024 fbank frames, 224 px images) on a GPU.
# FT, PL input-level, PL attention-level, PL attention-level + cached features; same data (768 synthetic
# training samples of that size), batch 48 (CAV-MAE's fine-tuning batch), 4 epochs each (median over epochs 2-4), bf16 autocast.
# Regenerates results/resources/gpu_cavmae_base.{md,json}. Run from the repo root on a CUDA machine with uvav's
# dependencies (or with wheels in .whl/ for hydra-core, omegaconf, antlr4 when they are missing there).
set -euo pipefail
if [ -d .whl ] && ! python3 -c "import hydra" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD:${PYTHONPATH:-}
out=${OUT:-results/resources}
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c "import torch, timm; print('torch', torch.__version__, 'timm', timm.__version__)"
python3 experiments/resource_benchmark.py --backbone cavmae_base --device cuda --epochs 4 --batch-size 48 \
  --out "$out/gpu_cavmae_base" data.target_length=1024 data.image_size=224 data.num_train=768 \
  data.num_val=64 data.num_test=64 paths.cache_dir=/tmp/uvav_cache --profile "$@"
