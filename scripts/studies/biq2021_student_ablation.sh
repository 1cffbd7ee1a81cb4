#!/usr/bin/env bash
# The student's ablation (docs/recipes.md, "A network trained to rank"): the recipe of
# scripts/recipes/biq2021_student.sh with each signal on or off, on one teacher and one rank data
# (RUN_DIR/teach, RUN_DIR/rank_data), then the table of every row.
#   bash scripts/studies/biq2021_student_ablation.sh [RUN_DIR] [ROW ...]
# Rows (default: all fifteen, in this order). Every row but whole_pass* trains 400 steps and has
# step 5 fit the head by ridge alone. The top two stages trained (blocks 15-20 and the head
# conv): mos, mos_teacher, mos_rank, all (each signal at weight 1); all_weighted: all three
# with the teacher weighted 4 and the ranking hinge 0.1 (the candidate the first four pointed
# to: the teacher's loss is ~5x smaller than the MOS loss, the hinge at 1 cost SROCC). The
# whole network trained: whole: all_weighted so; whole_pass: the recipe's config, 1,600 steps
# (one pass over the teacher's 27,000 views, cosine over them, evaluated with the held head
# every 400), then after the ridge refit 1,600 steps of the MOS alone under the refitted head;
# whole_rank_teacher: whole with the teacher's scores of every image of the rank data (each
# reference and its distorted copies, the teacher's own 3 views) beside its scores of the
# photos (RUN_DIR/teach_rank); whole_own_views: whole with the teacher's 3 own views of each
# photo alone (its 2 random ones left out); whole_bn_batch: whole with batch norm on each
# batch's statistics while training (its moving averages updated: the recipe freezes them);
# whole_bn_moving: whole_bn_batch with the rank images in a pass of their own on the moving
# statistics (signals.rank_batch_norm: moving); whole_pass_bn_batch, whole_pass_bn_moving:
# whole_pass so, its MOS stage too; whole_pass_mos3200: whole_pass's trained network, then a
# MOS stage of 3,200 steps; whole_bn_moving_mos1600: whole_bn_moving's trained network, then
# the recipe's MOS stage (1,600 steps, batch norm as in its training). The quality head is held
# in every row.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
RUN="${1:-runs/biq2021_student}"
shift || true
ROWS=("$@")
[[ ${#ROWS[@]} -gt 0 ]] || ROWS=(mos mos_teacher mos_rank all all_weighted whole whole_pass
                                whole_rank_teacher whole_own_views whole_bn_batch
                                whole_bn_moving whole_pass_bn_batch whole_pass_bn_moving
                                whole_pass_mos3200 whole_bn_moving_mos1600)
NO_TEACHER='signals.teacher_table=""'
NO_RANK='signals.rank_list=""'
TOP="finetune.trainable_scopes=[efficientnet_lite2/head"
for b in $(seq 15 20); do TOP+=",efficientnet_lite2/block_$b"; done
TOP+="]"
source scripts/setup_env.sh
# references, rank data and the teacher, before the rows that read them
bash scripts/recipes/biq2021_student_data.sh "$RUN"
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
# every row but whole_pass*: 400 steps and the ridge fit alone in step 5
SHORT=(--set train.max_steps=400 --set optim.lr_decay_steps=400 --set train.eval_every=200)
OWN_VIEWS="$RUN/teach/teacher_own_views.csv"
if [[ " ${ROWS[*]} " == *" whole_own_views "* && ! -f "$OWN_VIEWS" ]]; then
  # the teacher's table without its 2 random views a photo: its 3 own pyramid views alone
  python - "$RUN/teach/teacher.csv" "$OWN_VIEWS" <<'PY'
import csv, sys
with open(sys.argv[1], newline="") as f:
    rows = list(csv.DictReader(f))
with open(sys.argv[2] + ".tmp", "w", newline="") as f:
    out = csv.DictWriter(f, fieldnames=list(rows[0]))
    out.writeheader()
    out.writerows(row for row in rows if int(row["view"]) < 3)
PY
  mv "$OWN_VIEWS.tmp" "$OWN_VIEWS"
fi
reuse_network() {  # reuse_network ROW: this row's step 4 is ROW's trained network, linked
  # (step 4 then finds it trained); without ROW's run, step 4 would train into ROW's folder
  # through the link
  if [[ ! -f "$RUN/ablation/$1/eval/summary.json" ]]; then
    echo "row $row reuses row $1's trained network: run $1 first" >&2
    exit 2
  fi
  mkdir -p "$RUN/ablation/$row"
  [[ -e "$RUN/ablation/$row/train" ]] || ln -s "../$1/train" "$RUN/ablation/$row/train"
}
# the weights of every whole* row (the last row of the first table), and the batch-norm modes
WEIGHTS=(--set signals.teacher_weight=4 --set signals.rank_weight=0.1)
BN_BATCH=(--set finetune.frozen_batch_norm=false)
BN_MOVING=("${BN_BATCH[@]}" --set signals.rank_batch_norm=moving)
for row in "${ROWS[@]}"; do
  mos_steps=0
  case "$row" in
    mos) off=(--set "$TOP" --set "$NO_TEACHER" --set "$NO_RANK") ;;
    mos_teacher) off=(--set "$TOP" --set "$NO_RANK" --set signals.teacher_weight=1) ;;
    mos_rank) off=(--set "$TOP" --set "$NO_TEACHER" --set signals.rank_weight=1) ;;
    all) off=(--set "$TOP" --set signals.teacher_weight=1 --set signals.rank_weight=1) ;;
    all_weighted) off=(--set "$TOP" "${WEIGHTS[@]}") ;;
    whole) off=("${WEIGHTS[@]}") ;;
    whole_rank_teacher)
      off=("${WEIGHTS[@]}" --set signals.teacher_table="$RUN/teach_rank/teacher.csv") ;;
    whole_own_views) off=("${WEIGHTS[@]}" --set signals.teacher_table="$OWN_VIEWS") ;;
    whole_bn_batch) off=("${WEIGHTS[@]}" "${BN_BATCH[@]}") ;;
    whole_bn_moving) off=("${WEIGHTS[@]}" "${BN_MOVING[@]}") ;;
    whole_pass) off=("${WEIGHTS[@]}"); mos_steps=1600 ;;
    whole_pass_bn_batch) off=("${WEIGHTS[@]}" "${BN_BATCH[@]}"); mos_steps=1600 ;;
    whole_pass_bn_moving) off=("${WEIGHTS[@]}" "${BN_MOVING[@]}"); mos_steps=1600 ;;
    whole_pass_mos3200) reuse_network whole_pass; off=("${WEIGHTS[@]}"); mos_steps=3200 ;;
    whole_bn_moving_mos1600)
      reuse_network whole_bn_moving; off=("${WEIGHTS[@]}" "${BN_MOVING[@]}"); mos_steps=1600 ;;
    *) echo "unknown row $row; choose from mos, mos_teacher, mos_rank, all, all_weighted," \
            "whole, whole_pass, whole_rank_teacher, whole_own_views, whole_bn_batch," \
            "whole_bn_moving, whole_pass_bn_batch, whole_pass_bn_moving, whole_pass_mos3200," \
            "whole_bn_moving_mos1600" >&2
       exit 2 ;;
  esac
  [[ "$row" == whole_pass* ]] || off+=("${SHORT[@]}")
  [[ -f "$RUN/ablation/$row/eval/summary.json" ]] || TEACH_DIR="$RUN" MOS_STEPS=$mos_steps \
    bash scripts/recipes/biq2021_student.sh "$RUN/ablation/$row" "${off[@]}"
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
python scripts/studies/student_table.py "$RUN"
