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
source experiments/provenance.sh
provenance_start
$PY -m uvav.run -m experiment=av_mnist method=ft,pl,lora,adapter seed=0,1,2 trainer.progress=false trainer.num_threads=1 \
  hydra.sweep.dir=outputs/experiments/av_mnist/methods "$@"
$PY -m uvav.run -m experiment=av_mnist method=pl method.prompt_training=joint seed=0,1,2 trainer.progress=false trainer.num_threads=1 \
  hydra.sweep.dir=outputs/experiments/av_mnist/joint "$@"
$PY -m uvav.aggregate outputs/experiments/av_mnist/methods --out results/av_mnist
$PY -m uvav.compare outputs/experiments/av_mnist/methods outputs/experiments/av_mnist/joint \
  --out results/comparison_av_mnist
$PY -m uvav.robustness --severities 0 0.5 1 2 --out results/comparison_av_mnist/robustness \
  $(ls -d outputs/experiments/av_mnist/methods/*/ outputs/experiments/av_mnist/joint/*/ | grep -v multirun)
{
  echo "# How results/av_mnist and results/comparison_av_mnist were made"
  echo
  echo "- command: \`bash experiments/av_mnist_tables.sh $*\`"
  echo "- seeds: 0,1,2 (training); data.seed=0 (pairing, image pools, validation split); FSDD official split"
  echo "- trainer.num_threads=1 per job; finished $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "- wall time: $(( $(date +%s) - start )) s (finished jobs are reused on a relaunch)"
  provenance_lines "$PY"
} > results/av_mnist/RUN.md
cp results/av_mnist/RUN.md results/comparison_av_mnist/RUN.md
