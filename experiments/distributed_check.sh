#!/usr/bin/env bash
# Issue 14's check of one job on several processes: the same FT job three ways, each from an empty cache —
# plain (`python -m uvav.run`), `torchrun --nproc_per_node=1` (DDP with one rank) and `torchrun
# --nproc_per_node=N` — then their test accuracy and FT time per epoch side by side.
#   bash experiments/distributed_check.sh [N] [overrides...]     (N: default 2; GPUs when CUDA is present)
# On a GPU machine: `bash experiments/distributed_check.sh 1 backbone=cavmae_base data.target_length=1024
# data.image_size=224` compares a 1-GPU torchrun job with the plain one (issue 14's GPU target).
# On the CPU, the plain and 1-rank jobs use every core; N ranks share them (cores / N threads each).
# Writes results/distributed/<device>/{table.md,RUN.md}. Wall time on 2 CPU cores with the defaults: ~3 min.
set -euo pipefail
cd "$(dirname "$0")/.."
source experiments/provenance.sh
recipe_setup
N=${1:-2}; shift || true
DEVICE=$($PY -c "import torch; print('cuda' if torch.cuda.is_available() else 'cpu')")
OUT=outputs/experiments/distributed/$DEVICE
RES=results/distributed/$DEVICE
mkdir -p "$OUT" "$RES"
ARGS=(method=ft seed=0 trainer.progress=false "$@")
run() {  # name, launcher...
  local name=$1; shift
  [ -f "$OUT/$name/metrics.json" ] || "$@" -m uvav.run "${ARGS[@]}" hydra.run.dir="$OUT/$name" \
    paths.cache_dir="$OUT/cache_$name" reuse_finished=false
}
run plain "$PY"
run torchrun_1 "$PY" -m torch.distributed.run --standalone --nproc_per_node=1
run "torchrun_$N" "$PY" -m torch.distributed.run --standalone --nproc_per_node="$N"
$PY - "$OUT" "$RES/table.md" "plain" "torchrun_1" "torchrun_$N" <<'PY'
import json, sys
from pathlib import Path
out, table, names = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:]
runs = {n: json.loads((out / n / "metrics.json").read_text()) for n in names}
base = runs[names[0]]
cases = list(base["accuracy"]["ft"])
lines = ["| job | processes | device | " + " | ".join(cases) + " | max abs diff vs plain | FT s/epoch | vs plain |",
         "|---|---|---|" + "---|" * len(cases) + "---|---|---|"]
for n, m in runs.items():
    acc = m["accuracy"]["ft"]
    diff = max(abs(acc[c] - base["accuracy"]["ft"][c]) for c in cases)
    t, t0 = (r["stages"]["ft"]["resources"]["time_per_epoch_s"] for r in (m, base))
    lines.append(f"| {n} | {m['distributed']['world_size']} | {m['device']} | "
                 + " | ".join(f"{acc[c]:.3f}" for c in cases) + f" | {diff:.3f} | {t:.3f} | {t / t0:.3f} |")
table.write_text("FT test accuracy per case and FT time per epoch (median of epochs after the first, rank 0's "
                 "clock, no validation)\n\n" + "\n".join(lines) + "\n")
print(table.read_text())
PY
{
  echo "# How results/distributed/$DEVICE was made"
  echo
  echo "- command: \`bash experiments/distributed_check.sh $N $*\`"
  echo "- job: ${ARGS[*]}; test split; each run from its own empty cache (reuse_finished=false)"
  echo "- finished $(date -u '+%Y-%m-%d %H:%M UTC'); wall time: $(( $(date +%s) - start )) s"
  provenance_lines "$PY"
} > "$RES/RUN.md"
