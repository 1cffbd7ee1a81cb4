#!/usr/bin/env bash
# The BIQ2021 chain with the tiny backbone on a CPU: ranking data from 400 BIQ2021 *training*
# images and the 24 Kodak photos -> stage one -> fine-tuning on the BIQ2021 training part
# (seeded 80/20 split, made before anything is trained) -> 30-crop evaluation on validation.
#   bash scripts/recipes/biq2021_tiny.sh [RUN_DIR]     (needs ../shared/data; see README for the time)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../setup_env.sh"
cd "$ROOT"
RUN="${1:-runs/biq2021_tiny}"
SHARED="${SHARED:-../shared/data}"
[[ -d "$SHARED/kodak" && -f "$SHARED/biq2021-train/mos.csv" ]] || {
  echo "error: needs $SHARED/kodak and $SHARED/biq2021-train (set SHARED=...)" >&2; exit 1; }
mkdir -p "$RUN"
CONFIG=configs/finetune_biq2021_tiny.yaml
python scripts/recipes/biq2021_references.py "$SHARED" "$RUN/references.txt" --config "$CONFIG" --count 400
[[ -f "$RUN/rank_data/rank_list.csv" ]] || \
  rankiqa make-rank-data "$RUN/references.txt" --output-dir "$RUN/rank_data" --workers 2 --max-side 256 --force
rankiqa train-rank --config configs/rank_tiny.yaml --train-dir "$RUN/rank" \
  --set data.rank_list="$RUN/rank_data/rank_list.csv" --set data.holdout_references=20 \
  --set data.eval_crop_size=128 --set data.eval_crops=2
rankiqa finetune --config "$CONFIG" --init "$RUN/rank" \
  --train-dir "$RUN/finetune" --set data.label_file="$SHARED/biq2021-train/mos.csv"
rankiqa evaluate --model "$RUN/finetune" --config "$CONFIG" \
  --set data.label_file="$SHARED/biq2021-train/mos.csv" --split val --crops 30 \
  --crop-mode random --output-dir "$RUN/eval" --force
