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
CONFIG="$1"
RUN="$2"
shift 2
source "$(dirname "${BASH_SOURCE[0]}")/chain.sh"
mkdir -p "$RUN"
references 300
ladder_photos 20
rank_data 512 --distortions gblur,wn,jpeg,contrast,mean_shift
INIT=()
if [[ -n "${STAGE_ONE:-}" ]]; then
  # shellcheck disable=SC2086  # STAGE_ONE_ARGS: words, as documented
  stage_one "$STAGE_ONE" ${STAGE_ONE_ARGS:-}
  INIT=(--init "$RUN/rank")
fi
stage_two "${INIT[@]}" --set "data.extra_train_files=[$MORE]" \
  --set signals.rank_list="$RUN/rank_data/rank_list.csv" "$@"
evaluate
ladders
