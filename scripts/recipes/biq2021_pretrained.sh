#!/usr/bin/env bash
# The BIQ2021 recipe on a pretrained backbone (README, "BIQ2021 with EfficientNet-Lite2 and
# DINOv2"), shared by biq2021_efficientnet.sh and biq2021_dinov2.sh: ranking data from 300
# BIQ2021 training images + Kodak -> stage two on 2,400 + 3,000 training images: the pooled head
# fitted by ridge on frozen features (probe; with probe.rank_weight, the ranking-aware
# probe on the rank groups), then the top of the backbone and the head fine-tuned with the
# ranking hinge on the rank groups as a second loss (train.max_steps of the config: 0 for the
# combined recipe, whose final model is its probe) -> evaluation of the config's views (2; 3 for
# the combined recipe) on the 600 validation images -> ladders on 20 validation photos.
#   [STAGE_ONE=RANK_CONFIG] bash scripts/recipes/biq2021_pretrained.sh CONFIG RUN_DIR [--set key=value ...]
# --set goes to `rankiqa finetune` (e.g. train.max_steps=0: the frozen backbone, probe only;
# signals.rank_list="": regression only). STAGE_ONE (e.g.
# configs/rank_biq2021_efficientnet.yaml) runs stage one on the same rank data first
# (RUN_DIR/rank) and starts stage two from it instead of the config's pretrained weights;
# STAGE_ONE_ARGS adds to its command line (e.g. "--set train.max_steps=2000").
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../setup_env.sh"
cd "$ROOT"
CONFIG="$1"
RUN="$2"
shift 2
SHARED="${SHARED:-../shared/data}"
LABELS="$SHARED/biq2021-train/mos.csv"
MORE="$SHARED/biq2021-train-more/mos.csv"
mkdir -p "$RUN"
python scripts/recipes/biq2021_references.py "$SHARED" "$RUN/references.txt" --config "$CONFIG" --count 300
python scripts/recipes/biq2021_references.py "$SHARED" "$RUN/ladder_photos.txt" --config "$CONFIG" \
  --count 20 --part val --no-kodak
[[ -f "$RUN/rank_data/rank_list.csv" ]] || \
  rankiqa make-rank-data "$RUN/references.txt" --output-dir "$RUN/rank_data" --workers 2 --max-side 512 \
    --distortions gblur,wn,jpeg,contrast,mean_shift --force
INIT=()
if [[ -n "${STAGE_ONE:-}" ]]; then
  rankiqa train-rank --config "$STAGE_ONE" --train-dir "$RUN/rank" \
    --set data.rank_list="$RUN/rank_data/rank_list.csv" ${STAGE_ONE_ARGS:-}
  INIT=(--init "$RUN/rank")
fi
rankiqa finetune --config "$CONFIG" "${INIT[@]}" --train-dir "$RUN/finetune" \
  --set data.label_file="$LABELS" --set "data.extra_train_files=[$MORE]" \
  --set signals.rank_list="$RUN/rank_data/rank_list.csv" "$@"
rankiqa evaluate --model "$RUN/finetune" --output-dir "$RUN/eval" --force
rankiqa ladders "$RUN/ladder_photos.txt" --model "$RUN/finetune" --output-dir "$RUN/ladders"
