#!/usr/bin/env bash
# The camera's distortions trained into the default network (docs/label-efficiency.md, "Your own
# kind of photo"): synthetic ladders of the camera families (sensor noise, low light,
# overexposure, defocus, shake, all together) made from BIQ2021 training photos of the ss02 kind
# (ISO, shutter, focus and light varied at capture), then the built-in
# biq2021-efficientnet-lite2-ranked continued for STEPS steps on the MOS and the ranking hinge on
# those ladders (as docs/recipes.md's "the hinge again" row, with the camera's families). Each
# model is then evaluated on the 600-photo validation part, per kind of photo, and on ladders of
# 20 validation photos, the datasets' families and the camera's.
#   bash scripts/studies/camera_ladders.sh [RUN_DIR] [STEPS] [RANK_WEIGHT]   (resumable)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../setup_env.sh"
cd "$ROOT"
RUN="${1:-runs/camera_ladders}"
STEPS="${2:-400}"
WEIGHT="${3:-0.1}"
SHARED="${SHARED:-../shared/data}"
CONFIG=configs/finetune_biq2021_student.yaml
mkdir -p "$RUN"
[[ -f "$RUN/references.txt" ]] || python scripts/recipes/biq2021_references.py "$SHARED" \
  "$RUN/references.txt" --config "$CONFIG" --count 300 --kind ss02 --no-kodak
[[ -f "$RUN/ladder_photos.txt" ]] || python scripts/recipes/biq2021_references.py "$SHARED" \
  "$RUN/ladder_photos.txt" --config "$CONFIG" --count 20 --part val --no-kodak
[[ -d "$RUN/rank_data" ]] || rankiqa make-rank-data "$RUN/references.txt" \
  --output-dir "$RUN/rank_data" --workers 2 --max-side 512 --distortions camera
TRAINED="$RUN/hinge_${STEPS}_${WEIGHT}"
rankiqa finetune --config "$CONFIG" --init biq2021-efficientnet-lite2-ranked \
  --train-dir "$TRAINED" --set 'signals.teacher_table=""' \
  --set signals.rank_list="$RUN/rank_data/rank_list.csv" --set signals.rank_weight="$WEIGHT" \
  --set train.max_steps="$STEPS" --set optim.lr_decay_steps="$STEPS" \
  --set train.eval_every="$STEPS"
for MODEL in biq2021-efficientnet-lite2-ranked "$TRAINED"; do
  NAME=$(basename "$MODEL")
  [[ -f "$RUN/eval_$NAME/summary.json" ]] || rankiqa evaluate --model "$MODEL" --config "$CONFIG" \
    --split val --output-dir "$RUN/eval_$NAME"
  [[ -f "$RUN/ladders_$NAME/ladders.json" ]] || rankiqa ladders "$RUN/ladder_photos.txt" \
    --model "$MODEL" --families gblur,wn,jpeg,contrast,camera --output-dir "$RUN/ladders_$NAME"
done
python scripts/studies/camera_ladders.py "$RUN" biq2021-efficientnet-lite2-ranked "$(basename "$TRAINED")"
