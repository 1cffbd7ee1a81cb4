#!/usr/bin/env bash
# What the label-efficiency studies share: biq2021-efficientnet-lite2's frozen features of every
# BIQ2021 training and validation photo, of the synthetic ladders of COUNT unlabelled training
# photos (blur, noise, JPEG, contrast; the first RANK_GROUPS groups) and of 20 validation
# photos' ladders; each part already written is kept. Sourced by label_efficiency.sh and
# leave_one_kind_out.sh after setup_env.sh, with RUN, SHARED and CONFIG set:
#   frozen_features COUNT RANK_GROUPS [--set key=value ...]
frozen_features() {
  local count=$1 groups=$2
  shift 2
  mkdir -p "$RUN"
  python scripts/recipes/biq2021_references.py "$SHARED" "$RUN/unlabelled.txt" --config "$CONFIG" \
    --count "$count" --no-kodak
  python scripts/recipes/biq2021_references.py "$SHARED" "$RUN/ladder_photos.txt" \
    --config "$CONFIG" --count 20 --part val --no-kodak
  [[ -f "$RUN/rank_data/rank_list.csv" ]] || \
    rankiqa make-rank-data "$RUN/unlabelled.txt" --output-dir "$RUN/rank_data" --workers 2 \
      --max-side 512 --distortions gblur,wn,jpeg,contrast --force
  python scripts/studies/probe_features.py "$CONFIG" "$RUN/features" --views 2 \
    --rank-groups "$groups" --rank-list "$RUN/rank_data/rank_list.csv" \
    --ladder-photos "$RUN/ladder_photos.txt" "$@"
}
