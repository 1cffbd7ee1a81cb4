#!/usr/bin/env bash
# A user's own kind of photo, left out of the source model (docs/label-efficiency.md, "Your own
# kind of photo"). BIQ2021's three kinds (ss01 a personal gallery, ss02 ISO, shutter, focus and
# light varied on purpose, ss03 Unsplash) take turns as "the user's own": the source is
# biq2021-efficientnet-lite2's recipe (a ridge head on frozen EfficientNet-Lite2 features, the
# 2-view pyramid at 224²) fitted without that kind's photos; then N of the kind's labels adapt it,
# each arm of `rankiqa.train.adapt` in turn, measured within the kind on the 600-photo validation
# part (seed 2021), which nothing is fitted on.
#   - unlabelled photos: 150 training photos of biq2021-train, made into synthetic ladders (blur,
#     noise, JPEG, contrast); their MOS is never used and they are never drawn as labels;
#   - labels: drawn (seeded, several draws) from the kind's other training photos
#     (biq2021-train's training part and biq2021-train-more).
#   bash scripts/studies/leave_one_kind_out.sh [RUN_DIR]   (resumable: each part written is kept)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../setup_env.sh"
cd "$ROOT"
RUN="${1:-runs/leave_one_kind_out}"
SHARED="${SHARED:-../shared/data}"
CONFIG=configs/finetune_biq2021_efficientnet.yaml
LABELS=(--set data.label_file="$SHARED/biq2021-train/mos.csv"
        --set "data.extra_train_files=[$SHARED/biq2021-train-more/mos.csv]")
mkdir -p "$RUN"
python scripts/recipes/biq2021_references.py "$SHARED" "$RUN/unlabelled.txt" --config "$CONFIG" \
  --count 150 --no-kodak
python scripts/recipes/biq2021_references.py "$SHARED" "$RUN/ladder_photos.txt" --config "$CONFIG" \
  --count 20 --part val --no-kodak
[[ -f "$RUN/rank_data/rank_list.csv" ]] || \
  rankiqa make-rank-data "$RUN/unlabelled.txt" --output-dir "$RUN/rank_data" --workers 2 \
    --max-side 512 --distortions gblur,wn,jpeg,contrast --force
python scripts/studies/probe_features.py "$CONFIG" "$RUN/features" --views 2 --rank-groups 600 \
  --rank-list "$RUN/rank_data/rank_list.csv" --ladder-photos "$RUN/ladder_photos.txt" \
  "${LABELS[@]}"
python scripts/studies/leave_one_kind_out.py "$RUN/features" --unlabelled "$RUN/unlabelled.txt" \
  --plot "$RUN/leave_one_kind_out.png" | tee "$RUN/leave_one_kind_out.md"
