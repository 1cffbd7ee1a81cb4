#!/usr/bin/env bash
# Builds the trained part of the built-in model `biq2021-efficientnet-lite2` (rankiqa/models/):
# the pooled quality head fitted by ridge on frozen EfficientNet-Lite2 features (the probe of
# configs/finetune_biq2021_efficientnet.yaml, no fine-tuning step) from the 2,400 + 3,000
# BIQ2021 training images; validated on the fixed 600-image part it never saw. Deterministic
# (the probe's features and fit gave the same figures to the last digit in sessions 5 and 6).
#   bash scripts/builtin_model.sh [RUN_DIR]
# Session 6: 49 min on the 2 CPU cores with two other training runs sharing them (16 min of CPU
# time in the process); printed validation SROCC 0.8021, PLCC 0.8094 and head_sha256 6140b68f...
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup_env.sh"
cd "$ROOT"
RUN="${1:-runs/builtin_model}"
SHARED="${SHARED:-../shared/data}"
rankiqa finetune --config finetune_biq2021_efficientnet --train-dir "$RUN/probe" \
  --set data.label_file="$SHARED/biq2021-train/mos.csv" \
  --set "data.extra_train_files=[$SHARED/biq2021-train-more/mos.csv]" --set train.max_steps=0
rankiqa export-npy --model "$RUN/probe" --include efficientnet_lite2/logits \
  --output "$RUN/head.npz" --force
python - "$RUN/head.npz" <<'PY'
import sys
import numpy as np
from rankiqa.models import arrays_digest
with np.load(sys.argv[1]) as data:
    arrays = {name: data[name] for name in data.files}
print(f"{sys.argv[1]}: {len(arrays)} arrays, head_sha256 {arrays_digest(arrays)}")
PYecho "copy $RUN/head.npz to rankiqa/models/biq2021_efficientnet_lite2_head.npz to ship it"
