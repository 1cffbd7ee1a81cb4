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
source scripts/studies/frozen_features.sh
frozen_features 150 600 "${LABELS[@]}"
python scripts/studies/leave_one_kind_out.py "$RUN/features" --unlabelled "$RUN/unlabelled.txt" \
  --plot "$RUN/leave_one_kind_out.png" --json "$RUN/rows.json" | tee "$RUN/leave_one_kind_out.md"
