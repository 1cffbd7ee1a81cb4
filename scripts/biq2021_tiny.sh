#!/usr/bin/env bash
# The BIQ2021 chain with the tiny backbone on a CPU: Kodak ranking data -> stage one ->
# fine-tuning on the BIQ2021 training images (80/20 seeded split) -> 30-crop evaluation.
#   bash scripts/biq2021_tiny.sh [RUN_DIR]     (needs ../shared/data; about 15 minutes)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup_env.sh"
cd "$ROOT"
RUN="${1:-runs/biq2021_tiny}"
SHARED="${SHARED:-../shared/data}"
[[ -d "$SHARED/kodak" && -f "$SHARED/biq2021-train/mos.csv" ]] || {
  echo "error: needs $SHARED/kodak and $SHARED/biq2021-train (set SHARED=...)" >&2; exit 1; }
mkdir -p "$RUN"
[[ -f "$RUN/rank_data/rank_list.csv" ]] || \
  rankiqa make-rank-data "$SHARED/kodak" "$RUN/rank_data" --workers 2 --max-side 384 --force
rankiqa train-rank --config configs/rank_tiny.yaml --train-dir "$RUN/rank" \
  --set data.rank_list="$RUN/rank_data/rank_list.csv" --set data.holdout_references=2
rankiqa finetune --config configs/finetune_biq2021_tiny.yaml --init-checkpoint "$RUN/rank" \
  --train-dir "$RUN/finetune" --set data.label_file="$SHARED/biq2021-train/mos.csv"
rankiqa evaluate "$RUN/finetune" --config configs/finetune_biq2021_tiny.yaml \
  --set data.label_file="$SHARED/biq2021-train/mos.csv" --split val --crops 30 \
  --crop-mode random --output-dir "$RUN/eval"
