#!/usr/bin/env bash
# The BIQ2021 recipe on EfficientNet-Lite2 (configs/finetune_biq2021_efficientnet.yaml; the steps
# are scripts/recipes/biq2021_pretrained.sh's).
#   bash scripts/recipes/biq2021_efficientnet.sh [RUN_DIR] [--set key=value ...]
RUN="${1:-runs/biq2021_efficientnet}"
shift || true
exec bash "$(dirname "${BASH_SOURCE[0]}")/biq2021_pretrained.sh" \
  configs/finetune_biq2021_efficientnet.yaml "$RUN" "$@"
