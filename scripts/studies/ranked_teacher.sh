#!/usr/bin/env bash
# A stronger teacher (docs/recipes.md, "A stronger teacher"): the combined model's recipe with
# the ranked EfficientNet-Lite2 in place of ImageNet's, measured beside the current teacher on
# the same photos, views (3: the combined model's) and rank groups (400, of the combined
# recipe's rank data: 300 training photos + Kodak, five families).
#   bash scripts/studies/ranked_teacher.sh [RUN_DIR]   (resumable: each part written is kept)
set -euo pipefail
RUN="${1:-runs/ranked_teacher}"
CONFIG=configs/finetune_biq2021_combined.yaml
source "$(dirname "${BASH_SOURCE[0]}")/../recipes/chain.sh"
mkdir -p "$RUN"
references 300
ladder_photos 20
rank_data 512 --distortions gblur,wn,jpeg,contrast,mean_shift
PARTS=(--views 3 --rank-groups 400 --rank-list "$RUN/rank_data/rank_list.csv"
       --ladder-photos "$RUN/ladder_photos.txt" --set data.label_file="$LABELS"
       --set "data.extra_train_files=[$MORE]")
[[ -f "$RUN/ranked_dinov2.npz" ]] || \
  python scripts/studies/ranked_teacher.py arrays "$RUN/ranked_dinov2.npz"
# the slow part: DINOv2 on 6,000 photos x 3 views and 400 x 6 rank images
python scripts/studies/probe_features.py "$CONFIG" "$RUN/ranked_features" "${PARTS[@]}" \
  --set init.source="$RUN/ranked_dinov2.npz"
python scripts/studies/probe_features.py configs/finetune_biq2021_efficientnet.yaml \
  "$RUN/imagenet_features" "${PARTS[@]}"
python scripts/studies/ranked_teacher.py study "$RUN/ranked_features" "$RUN/imagenet_features" \
  --json "$RUN/study.json" | tee "$RUN/study.md"
