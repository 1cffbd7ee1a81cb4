#!/usr/bin/env bash
# The BIQ2021 student's inputs (docs/recipes.md, "A network trained to rank"), made once and
# shared by the recipe (scripts/recipes/biq2021_student.sh) and every row of its ablation.
#   [TEACHER=NAME] bash scripts/recipes/biq2021_student_data.sh [DIR]
# TEACHER: the built-in model (or run folder) whose judgement teaches; the shipped student's was
# biq2021-efficientnet-dinov2. biq2021-efficientnet-dinov2-ranked is stronger on the validation
# part, but its network was trained on these photos' MOS: its cross-fitted scores of them are
# not out of sample (docs/recipes.md, "A stronger teacher").
# Steps (each but the first skipped when its output is there; wall times go to DIR/steps.txt):
#   1. references: 300 BIQ2021 training photos + Kodak for rank data; 20 validation photos for
#      the ladders (never taught on)
#   2. make-rank-data: 5 families x 5 levels of each reference (2 min on machine C)
#   3. teach: the teacher's cross-fitted scores of 5 views (its 3 own + 2 random) of each of
#      the 5,400 training photos (40 min alone on machine C)
set -euo pipefail
RUN="${1:-runs/biq2021_student}"
CONFIG=configs/finetune_biq2021_student.yaml
source "$(dirname "${BASH_SOURCE[0]}")/chain.sh"
mkdir -p "$RUN"
# seeded, so the same lists every time (under a second)
step references references 300
ladder_photos 20
[[ -f "$RUN/rank_data/rank_list.csv" ]] || \
  step rank-data rank_data 512 --distortions gblur,wn,jpeg,contrast,mean_shift
# --alpha: the penalty the combined recipe's probe chose by cross-validation (docs/recipes.md);
# choosing it again per fold would cost ~5 min per fold on 6,544 features
[[ -f "$RUN/teach/teacher.csv" ]] || step teach rankiqa teach --config "$CONFIG" \
  --model "${TEACHER:-biq2021-efficientnet-dinov2}" --output-dir "$RUN/teach" \
  --exclude "$RUN/ladder_photos.txt" --extra-views 2 --alpha 10000
