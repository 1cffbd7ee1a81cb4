#!/usr/bin/env bash
# The BIQ2021 recipe on EfficientNet-Lite2 + DINOv2 ViT-S/14 under one head
# (configs/finetune_biq2021_combined.yaml; the steps are scripts/recipes/biq2021_pretrained.sh's).
#   bash scripts/recipes/biq2021_combined.sh [RUN_DIR] [--set key=value ...]
RUN="${1:-runs/biq2021_combined}"
shift || true
exec bash "$(dirname "${BASH_SOURCE[0]}")/biq2021_pretrained.sh" \
  configs/finetune_biq2021_combined.yaml "$RUN" "$@"
