#!/usr/bin/env bash
# The BIQ2021 student (docs/recipes.md, "A network trained to rank"): biq2021-efficientnet-lite2's
# network and views, trained from three signals at once, resumable step by step.
#   bash scripts/recipes/biq2021_student.sh [RUN_DIR] [--set key=value ...]
# Steps (each skipped or resumed when its output is there; its wall time is printed):
#   1-3. references, rank data and the teacher's scores (scripts/recipes/biq2021_student_data.sh)
#   4. train: configs/finetune_biq2021_student.yaml: MOS + teacher + ranking hinge, the whole
#      network trained for one pass over the teacher's views (1,600 steps), its head held
#   5. head: the head fitted again by ridge on the trained network's features (the probe), then
#      MOS_STEPS (1,600) steps of the network on the MOS alone under that head, held
#   6. evaluate on the 600 validation photos and ladders on the 20 photos
# --set goes to steps 4 and 5 (scripts/studies/biq2021_student_ablation.sh turns signals off); step 5's
# length is MOS_STEPS alone (0: the ridge fit only).
set -euo pipefail
RUN="${1:-runs/biq2021_student}"
shift || true
CONFIG=configs/finetune_biq2021_student.yaml
source "$(dirname "${BASH_SOURCE[0]}")/chain.sh"
# the teacher and rank data are shared by every run of the ablation (TEACH_DIR to move them)
BASE="${TEACH_DIR:-$RUN}"
mkdir -p "$RUN" "$BASE"
bash scripts/recipes/biq2021_student_data.sh "$BASE"
step train rankiqa finetune --config "$CONFIG" --train-dir "$RUN/train" \
  --set signals.teacher_table="$BASE/teach/teacher.csv" \
  --set signals.rank_list="$BASE/rank_data/rank_list.csv" "$@"
# the head fitted again by ridge on the trained network's features (the probe): the quality
# head reads pooled statistics standardised by the start's spread, and a trained network moves
# features whose spread is tiny far more than that spread. Then the MOS alone under that head
# (step 5 gets no teacher table or rank list): against the ridge fit alone, +0.013 SROCC and
# +0.021 PLCC on the validation part (docs/recipes.md)
MOS_STEPS="${MOS_STEPS:-1600}"
MOS=(--set train.max_steps="$MOS_STEPS")
# the MOS stage's cosine spans it
if [[ "$MOS_STEPS" -gt 0 ]]; then MOS+=(--set optim.lr_decay_steps="$MOS_STEPS"); fi
step head rankiqa finetune --config "$CONFIG" --init "$RUN/train" --train-dir "$RUN/finetune" \
  --set 'init.exclude_scopes=[efficientnet_lite2/logits]' --set probe.enabled=true \
  "$@" "${MOS[@]}"
step evaluate evaluate
step ladders rankiqa ladders "$BASE/ladder_photos.txt" --model "$RUN/finetune" \
  --output-dir "$RUN/ladders"
