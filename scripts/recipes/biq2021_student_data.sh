#!/usr/bin/env bash
# The BIQ2021 student's inputs (docs/recipes.md, "A network trained to rank"), made once and
# shared by the recipe (scripts/recipes/biq2021_student.sh) and every row of its ablation.
#   bash scripts/recipes/biq2021_student_data.sh [DIR]
# Steps (each but the first skipped when its output is there; wall times go to DIR/steps.txt):
#   1. references: 300 BIQ2021 training photos + Kodak for rank data; 20 validation photos for
#      the ladders (never taught on)
#   2. make-rank-data: 5 families x 5 levels of each reference (2 min on machine C)
#   3. teach: biq2021-efficientnet-dinov2's cross-fitted scores of 5 views (its 3 own + 2
#      random) of each of the 5,400 training photos (40 min alone on machine C)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../setup_env.sh"
cd "$ROOT"
DIR="${1:-runs/biq2021_student}"
CONFIG=configs/finetune_biq2021_student.yaml
SHARED="${SHARED:-../shared/data}"
mkdir -p "$DIR"
step() {  # step NAME COMMAND...: runs it and prints its wall time
  local name="$1" start=$SECONDS
  shift
  "$@"
  echo "step $name: $((SECONDS - start)) s" | tee -a "$DIR/steps.txt"
}
# seeded, so the same lists every time (under a second)
step references python scripts/recipes/biq2021_references.py "$SHARED" "$DIR/references.txt" \
  --config "$CONFIG" --count 300
python scripts/recipes/biq2021_references.py "$SHARED" "$DIR/ladder_photos.txt" --config "$CONFIG" \
  --count 20 --part val --no-kodak
[[ -f "$DIR/rank_data/rank_list.csv" ]] || step rank-data rankiqa make-rank-data \
  "$DIR/references.txt" --output-dir "$DIR/rank_data" --workers 2 --max-side 512 \
  --distortions gblur,wn,jpeg,contrast,mean_shift --force
# --alpha: the penalty the combined recipe's probe chose by cross-validation (docs/recipes.md);
# choosing it again per fold would cost ~5 min per fold on 6,544 features
[[ -f "$DIR/teach/teacher.csv" ]] || step teach rankiqa teach --config "$CONFIG" \
  --model biq2021-efficientnet-dinov2 --output-dir "$DIR/teach" \
  --exclude "$DIR/ladder_photos.txt" --extra-views 2 --alpha 10000
