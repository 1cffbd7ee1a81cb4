#!/usr/bin/env bash
# README "Your own data", measured: the walk-through on 200 BIQ2021 photos standing in for a
# user's labelled folder. Step 0 builds that folder (links to 200 photos drawn with seed 0 from
# ../shared/data/biq2021-train, their MOS written on a 1-5 scale, as labelling tools often do,
# so that data.score_range is exercised); steps 1-3 are the README's commands as written.
#   bash scripts/recipes/own_data_biq2021.sh [RUN_DIR]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../setup_env.sh"
cd "$ROOT"
RUN="${1:-runs/own_data}"
SHARED="${SHARED:-../shared/data}"
mkdir -p "$RUN/my_photos"
python - "$SHARED/biq2021-train" "$RUN/my_photos" <<'PY'
import csv, os, sys
import numpy as np
from rankiqa.data import mos
src, out = sys.argv[1], sys.argv[2]
items = mos.read_dataset("biq2021", os.path.join(src, "mos.csv"))
chosen = sorted(np.random.default_rng(0).permutation(len(items))[:200])
with open(os.path.join(out, "labels.csv"), "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["path", "score"])
    for k in chosen:
        name = os.path.basename(items[k].path)
        if not os.path.lexists(os.path.join(out, name)):
            os.symlink(os.path.abspath(items[k].path), os.path.join(out, name))
        writer.writerow([name, f"{1 + 4 * items[k].raw:.6f}"])
print(f"{len(chosen)} photos and labels.csv in {out}")
PY
start=$(date +%s)
# 1. fine-tune (the probe, then 100 steps) on 160 photos, validated on the other 40
rankiqa finetune --config finetune_csv --train-dir "$RUN/model" \
  --set data.label_file="$RUN/my_photos/labels.csv" --set 'data.score_range=[1, 5]'
# 2. evaluate: the run's own data config, split and views (rankiqa.json)
rankiqa evaluate --model "$RUN/model" --output-dir "$RUN/eval" --force
# 3. score new photos with the model's own views
rankiqa predict "$SHARED/kodak/kodim01.png" "$SHARED/kodak/kodim02.png" --model "$RUN/model"
echo "walk-through: $(( $(date +%s) - start )) s"
