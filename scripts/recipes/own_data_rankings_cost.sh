#!/usr/bin/env bash
# What README "Train on your own data"'s few-label rankings cost beside what they buy: 100
# labelled BIQ2021 photos (1-5 scale) and 100 unlabelled ones standing in for a user's folder.
# Times each step, its peak memory (GNU time) and the ranking data's disk, then prints one
# table: make-rank-data on the unlabelled photos (the default live families), finetune as
# README step 3 writes it, and the same with signals.rank_list.
#   bash scripts/recipes/own_data_rankings_cost.sh [RUN_DIR]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../setup_env.sh"
cd "$ROOT"
RUN="${1:-runs/own_data_rankings}"
SHARED="${SHARED:-../shared/data}"
mkdir -p "$RUN/my_photos"
python - "$SHARED/biq2021-train" "$RUN" <<'PY'
import csv, os, sys
import numpy as np
from rankiqa.data import mos
src, run = sys.argv[1], sys.argv[2]
items = mos.read_dataset("biq2021", os.path.join(src, "mos.csv"))
chosen = np.random.default_rng(1).permutation(len(items))[:200]
photos = os.path.join(run, "my_photos")
with open(os.path.join(photos, "labels.csv"), "w", newline="") as f, \
        open(os.path.join(run, "unlabelled.txt"), "w") as unlabelled:
    writer = csv.writer(f)
    writer.writerow(["path", "score"])
    for n, k in enumerate(chosen):
        name = os.path.basename(items[k].path)
        if not os.path.lexists(os.path.join(photos, name)):
            os.symlink(os.path.abspath(items[k].path), os.path.join(photos, name))
        if n < 100:
            writer.writerow([name, f"{1 + 4 * items[k].raw:.6f}"])
        else:
            unlabelled.write(os.path.join(photos, name) + "\n")
print(f"100 labelled photos (labels.csv) and 100 unlabelled (unlabelled.txt) in {run}")
PY
measure() {  # NAME COMMAND...: wall seconds and peak RSS of one step
  local name=$1; shift
  /usr/bin/time -f "%e %M" -o "$RUN/$name.time" "$@"
  read -r wall rss < "$RUN/$name.time"
  printf '%s\t%.0f s\t%.2f GB\n' "$name" "$wall" "$(echo "$rss / 1048576" | bc -l)" >> "$RUN/costs.tsv"
}
: > "$RUN/costs.tsv"
measure make-rank-data rankiqa make-rank-data "$RUN/unlabelled.txt" \
  --output-dir "$RUN/rank_data" --workers 2 --force
# adapt.below=0: the training path (probe + fine-tuning), which the rankings join; with the
# config's default, 100 labels would adapt the built-in model instead (no rankings involved)
FT=(--config finetune_csv --set data.label_file="$RUN/my_photos/labels.csv"
    --set 'data.score_range=[1, 5]' --set adapt.below=0)
measure finetune rankiqa finetune "${FT[@]}" --train-dir "$RUN/plain"
measure finetune+rankings rankiqa finetune "${FT[@]}" --train-dir "$RUN/ranked" \
  --set signals.rank_list="$RUN/rank_data/rank_list.csv"
echo "step	wall	peak memory"
cat "$RUN/costs.tsv"
echo "ranking data on disk: $(du -sLh "$RUN/rank_data" | cut -f1) ($(find "$RUN/rank_data" -name '*.png' | wc -l) images)"
for run in plain ranked; do
  python -c "import json,sys; h=json.load(open(sys.argv[1]))['history']; print(sys.argv[2], 'validation srocc by step:', ', '.join(f\"{e['step']}: {e['srocc']:.4f}\" for e in h))" "$RUN/$run/eval.json" "$run"
done
