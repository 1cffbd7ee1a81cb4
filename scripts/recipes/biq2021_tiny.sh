#!/usr/bin/env bash
# The BIQ2021 chain with the tiny backbone on a CPU: ranking data from 400 BIQ2021 *training*
# images and the 24 Kodak photos -> stage one -> fine-tuning on the BIQ2021 training part
# (seeded 80/20 split, made before anything is trained) -> 30-crop evaluation on validation.
#   bash scripts/recipes/biq2021_tiny.sh [RUN_DIR]     (needs ../shared/data; see README for the time)
set -euo pipefail
RUN="${1:-runs/biq2021_tiny}"
CONFIG=configs/finetune_biq2021_tiny.yaml
source "$(dirname "${BASH_SOURCE[0]}")/chain.sh"
[[ -d "$SHARED/kodak" && -f "$LABELS" ]] || {
  echo "error: needs $SHARED/kodak and $SHARED/biq2021-train (set SHARED=...)" >&2; exit 1; }
mkdir -p "$RUN"
references 400
rank_data 256
stage_one configs/rank_tiny.yaml --set data.holdout_references=20 \
  --set data.eval_crop_size=128 --set data.eval_crops=2
stage_two --init "$RUN/rank"
evaluate --config "$CONFIG" --set data.label_file="$LABELS" --split val --crops 30 \
  --crop-mode random
