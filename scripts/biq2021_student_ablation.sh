#!/usr/bin/env bash
# The student's ablation (docs/recipes.md, "A network trained to rank"): the recipe of
# scripts/biq2021_student.sh with each signal on or off, on one teacher and one rank data
# (RUN_DIR/teach, RUN_DIR/rank_data), then the table of every row.
#   bash scripts/biq2021_student_ablation.sh [RUN_DIR] [ROW ...]
# Rows (default: all eight, in this order), the top two stages trained (blocks 15-20 and the
# head conv): mos, mos_teacher, mos_rank, all (each signal at weight 1); all_weighted: all three
# with the teacher weighted 4 and the ranking hinge 0.1 (the candidate the first four pointed
# to: the teacher's loss is ~5x smaller than the MOS loss, the hinge at 1 cost SROCC); whole:
# all_weighted with the whole network trained, the recipe's config; whole_pass: whole for
# 1,600 steps, one pass over the teacher's 27,000 views (cosine over them, evaluated with the
# held head every 400), and, its --set reaching the recipe's step 5 too, after the ridge refit
# 1,600 more steps of the MOS alone under the refitted head (step 5 has no teacher or rank
# list); whole_rank_teacher: whole with the teacher's scores of every image of
# the rank data (each reference and its distorted copies, the teacher's own 3 views) beside
# its scores of the photos (RUN_DIR/teach_rank). The quality head is held in every row.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
RUN="${1:-runs/biq2021_student}"
shift || true
ROWS=("$@")
[[ ${#ROWS[@]} -gt 0 ]] || ROWS=(mos mos_teacher mos_rank all all_weighted whole whole_pass whole_rank_teacher)
NO_TEACHER='finetune.teacher_table=""'
NO_RANK='finetune.rank_list=""'
TOP="finetune.trainable_scopes=[efficientnet_lite2/head"
for b in $(seq 15 20); do TOP+=",efficientnet_lite2/block_$b"; done
TOP+="]"
source scripts/setup_env.sh
if [[ " ${ROWS[*]} " == *" whole_rank_teacher "* && ! -f "$RUN/teach_rank/teacher.csv" ]]; then
  # the recipe's teach step with --rank-list; the photos' features (40 min) are the recipe's,
  # linked rather than computed again, so only the rank images' are new (~30 min alone)
  mkdir -p "$RUN/teach_rank/features"
  cp -ln "$RUN"/teach/features/photos-*.npy "$RUN/teach_rank/features/"
  cp -n "$RUN/teach/plan.json" "$RUN/teach_rank/"
  start=$SECONDS
  rankiqa teach --config configs/finetune_biq2021_student.yaml \
    --model biq2021-efficientnet-dinov2 --output-dir "$RUN/teach_rank" \
    --exclude "$RUN/ladder_photos.txt" --extra-views 2 --alpha 10000 \
    --rank-list "$RUN/rank_data/rank_list.csv"
  echo "step teach-rank: $((SECONDS - start)) s" | tee -a "$RUN/teach_rank/steps.txt"
fi
for row in "${ROWS[@]}"; do
  case "$row" in
    mos) off=(--set "$TOP" --set "$NO_TEACHER" --set "$NO_RANK") ;;
    mos_teacher) off=(--set "$TOP" --set "$NO_RANK" --set finetune.teacher_weight=1) ;;
    mos_rank) off=(--set "$TOP" --set "$NO_TEACHER" --set finetune.rank_weight=1) ;;
    all) off=(--set "$TOP" --set finetune.teacher_weight=1 --set finetune.rank_weight=1) ;;
    all_weighted) off=(--set "$TOP" --set finetune.teacher_weight=4 --set finetune.rank_weight=0.1) ;;
    whole) off=(--set finetune.teacher_weight=4 --set finetune.rank_weight=0.1) ;;
    whole_rank_teacher) off=(--set finetune.teacher_weight=4 --set finetune.rank_weight=0.1
                             --set finetune.teacher_table="$RUN/teach_rank/teacher.csv") ;;
    whole_pass) off=(--set finetune.teacher_weight=4 --set finetune.rank_weight=0.1
                     --set train.max_steps=1600 --set optim.lr_decay_steps=1600
                     --set train.eval_every=400) ;;
    *) echo "unknown row $row; choose from mos, mos_teacher, mos_rank, all, all_weighted," \
            "whole, whole_pass, whole_rank_teacher" >&2
       exit 2 ;;
  esac
  [[ -f "$RUN/ablation/$row/eval/summary.json" ]] || \
    TEACH_DIR="$RUN" bash scripts/biq2021_student.sh "$RUN/ablation/$row" "${off[@]}"
done
# the two reference rows: the start (the default model, 2 views) and the teacher (3 views), on
# the same validation part and ladders
for ref in biq2021-efficientnet-lite2:default:2 biq2021-efficientnet-dinov2:teacher:3; do
  IFS=: read -r model name views <<< "$ref"
  out="$RUN/reference/$name"
  [[ -f "$out/eval/summary.json" ]] || rankiqa evaluate --model "$model" \
    --config configs/finetune_biq2021_student.yaml --crops "$views" --output-dir "$out/eval" --force
  [[ -f "$out/ladders/ladders.json" ]] || rankiqa ladders "$RUN/ladder_photos.txt" \
    --model "$model" --output-dir "$out/ladders"
done
python scripts/student_table.py "$RUN"
