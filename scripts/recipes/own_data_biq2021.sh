#!/usr/bin/env bash
# README "Train on your own data", measured: the walk on 120 labelled photos (the setting of a
# new user's first hour: a 1-5 scale), drawn with seed 0 from the 600-photo validation part of
# biq2021-train (seed 2021), which no built-in model trained on; the part's other 480 photos are
# held out to check each step's model on photos nothing was fitted on (a user would not have
# them: the cross-validated figures are what they see). Steps 1-3 are the README's commands.
#   bash scripts/recipes/own_data_biq2021.sh [RUN_DIR]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../setup_env.sh"
cd "$ROOT"
RUN="${1:-runs/own_data}"
SHARED="${SHARED:-../shared/data}"
mkdir -p "$RUN/my_photos" "$RUN/heldout"
python - "$SHARED/biq2021-train" "$RUN" <<'PY'
import csv, os, sys
import numpy as np
from rankiqa.data import mos
src, run = sys.argv[1], sys.argv[2]
items = mos.read_dataset("biq2021", os.path.join(src, "mos.csv"))
val = mos.split(items, 0.2, 0.0, 2021)["val"]  # every BIQ2021 figure's validation part
order = np.random.default_rng(0).permutation(len(val))
for folder, chosen in (("my_photos", order[:120]), ("heldout", order[120:])):
    with open(os.path.join(run, folder, "labels.csv"), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file", "rating", "kind"])  # kind: figures within each kind too
        for k in sorted(chosen):
            name = os.path.basename(val[k].path)
            if not os.path.lexists(os.path.join(run, folder, name)):
                os.symlink(os.path.abspath(val[k].path), os.path.join(run, folder, name))
            writer.writerow([name, f"{1 + 4 * val[k].raw:.6f}", val[k].group])
print(f"120 labelled photos in {run}/my_photos, 480 held out in {run}/heldout (labels 1-5)")
PY
MINE=(--set data.label_file="$RUN/my_photos/labels.csv" --set 'data.score_range=[1, 5]')
HELD=(--set data.label_file="$RUN/heldout/labels.csv" --set 'data.score_range=[1, 5]')
start=$(date +%s)
# 1. the built-in model on your labels first: what any training has to beat
rankiqa evaluate --model biq2021-efficientnet-lite2-ranked "${MINE[@]}" --split all \
  --output-dir "$RUN/builtin_on_mine" --force
# 2. finetune: fewer than 400 labels, so the built-in model is adapted to them (adapt.below)
rankiqa finetune --config finetune_csv --train-dir "$RUN/model" "${MINE[@]}"
# 3. score new photos on your scale
rankiqa predict "$SHARED/kodak/kodim01.png" "$SHARED/kodak/kodim02.png" --model "$RUN/model"
echo "walk-through: $(( $(date +%s) - start )) s"
# the check a user cannot make: both models on the 480 held-out photos, within each kind too
for model in biq2021-efficientnet-lite2-ranked "$RUN/model"; do
  rankiqa evaluate --model "$model" "${HELD[@]}" --split all --output-dir \
    "$RUN/heldout_$(basename "$model")" --force
done
