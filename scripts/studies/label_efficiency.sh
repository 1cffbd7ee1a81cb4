#!/usr/bin/env bash
# Where learning from rankings pays: validation SROCC, PLCC and ladder pair accuracy against the
# number of labelled photos N (docs/label-efficiency.md). biq2021-efficientnet-lite2's backbone and views
# (EfficientNet-Lite2, the 2-view pyramid at 224²), its frozen features extracted once:
#   - 100 training photos of biq2021-train stand for the unlabelled collection: their synthetic
#     blur, noise, JPEG and contrast ladders (400 rank groups) are the rankings; none of their
#     MOS is used, and they are never drawn as labelled photos;
#   - the labelled photos are drawn (seeded) from the other 5,300 training photos
#     (biq2021-train's training part and biq2021-train-more);
#   - every figure is on the 600-photo validation part (seed 2021) and the ladders of 20 of its
#     photos, which nothing is fitted on.
#   bash scripts/studies/label_efficiency.sh [RUN_DIR]   (resumable: each part already written is kept)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../setup_env.sh"
cd "$ROOT"
RUN="${1:-runs/label_efficiency}"
SHARED="${SHARED:-../shared/data}"
CONFIG=configs/finetune_biq2021_efficientnet.yaml
LABELS=(--set data.label_file="$SHARED/biq2021-train/mos.csv"
        --set "data.extra_train_files=[$SHARED/biq2021-train-more/mos.csv]")
source scripts/studies/frozen_features.sh
frozen_features 100 400 "${LABELS[@]}"
# 1. the probes on frozen ImageNet features, N from 25 to every labelled photo (and N = 0)
python scripts/studies/label_efficiency.py "$RUN/features" --unlabelled "$RUN/unlabelled.txt" \
  --plot "$RUN/label_efficiency.png" | tee "$RUN/label_efficiency.md"
# 2. stage one on the unlabelled photos' ladders (the top blocks, 600 steps), then the same
#    probes on the features it changed, and its own score with no opinion score at all
rankiqa train-rank --config configs/rank_biq2021_efficientnet.yaml --train-dir "$RUN/rank" \
  --set data.rank_list="$RUN/rank_data/rank_list.csv"
python scripts/studies/probe_features.py "$CONFIG" "$RUN/features_stage_one" --views 2 \
  --rank-list "$RUN/rank_data/rank_list.csv" --ladder-photos "$RUN/ladder_photos.txt" \
  --set init.source="$RUN/rank" "${LABELS[@]}"
python scripts/studies/label_efficiency.py "$RUN/features_stage_one" --unlabelled "$RUN/unlabelled.txt" \
  --plot "$RUN/label_efficiency_stage_one.png" | tee "$RUN/label_efficiency_stage_one.md"
rankiqa evaluate --model "$RUN/rank" --config "$CONFIG" "${LABELS[@]}" \
  --output-dir "$RUN/eval_stage_one" --force
rankiqa ladders "$RUN/ladder_photos.txt" --model "$RUN/rank" --crops 2 --crop-mode pyramid \
  --output-dir "$RUN/ladders_stage_one"
# 3. which photos to label next: the active-labelling simulation (rankiqa suggest-labels)
python scripts/studies/label_efficiency.py "$RUN/features" --unlabelled "$RUN/unlabelled.txt" --active \
  --plot "$RUN/active.png" | tee "$RUN/active.md"
