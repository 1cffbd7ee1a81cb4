#!/usr/bin/env bash
# The student's ablation (docs/recipes.md, "A network trained to rank"): the recipe of
# scripts/biq2021_student.sh with each signal on or off, on one teacher and one rank data
# (RUN_DIR/teach, RUN_DIR/rank_data), then the table of every row.
#   bash scripts/biq2021_student_ablation.sh [RUN_DIR] [ROW ...]
# Rows: mos, mos_teacher, mos_rank, all (default: all four, in that order).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
RUN="${1:-runs/biq2021_student}"
shift || true
ROWS=("$@")
[[ ${#ROWS[@]} -gt 0 ]] || ROWS=(mos mos_teacher mos_rank all)
NO_TEACHER='finetune.teacher_table=""'
NO_RANK='finetune.rank_list=""'
for row in "${ROWS[@]}"; do
  case "$row" in
    mos) off=(--set "$NO_TEACHER" --set "$NO_RANK") ;;
    mos_teacher) off=(--set "$NO_RANK") ;;
    mos_rank) off=(--set "$NO_TEACHER") ;;
    all) off=() ;;
    *) echo "unknown row $row; choose from mos, mos_teacher, mos_rank, all" >&2; exit 2 ;;
  esac
  [[ -f "$RUN/ablation/$row/eval/summary.json" ]] || \
    TEACH_DIR="$RUN" bash scripts/biq2021_student.sh "$RUN/ablation/$row" "${off[@]}"
done
source scripts/setup_env.sh
# the two reference rows: the start (the default model) and the teacher, measured the same way
for ref in biq2021-efficientnet-lite2:default biq2021-efficientnet-dinov2:teacher; do
  model="${ref%%:*}" out="$RUN/reference/${ref##*:}"
  # each with its own config (the same split) and views
  [[ -f "$out/eval/summary.json" ]] || rankiqa evaluate --model "$model" \
    --output-dir "$out/eval" --force
  [[ -f "$out/ladders/ladders.json" ]] || rankiqa ladders "$RUN/ladder_photos.txt" \
    --model "$model" --output-dir "$out/ladders"
done
python scripts/student_table.py "$RUN"
