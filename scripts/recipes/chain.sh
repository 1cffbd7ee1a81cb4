# The recipe chain, each step spelled once: references -> make-rank-data -> train-rank ->
# finetune -> evaluate -> ladders, and the wall-time wrapper the long recipes use. A recipe
# sets RUN (its folder) and CONFIG (the finetune config whose seeded split the photos are drawn
# from), sources this file and calls the steps it takes, in order:
#   references COUNT          COUNT BIQ2021 training photos + the Kodak photos (RUN/references.txt)
#   ladder_photos COUNT       COUNT validation photos for the ladders, never trained on
#   rank_data MAX_SIDE [OPT]  make-rank-data on the references (once: kept when there)
#   stage_one RANK_CONFIG [--set ...]  train-rank on the rank data into RUN/rank
#   stage_two [OPT ...]       finetune CONFIG on BIQ2021's labels into RUN/finetune
#   evaluate [OPT ...]        evaluate RUN/finetune into RUN/eval
#   ladders                   ladders of RUN/finetune on the ladder photos into RUN/ladders
#   step NAME COMMAND ...     runs COMMAND and appends its wall time to RUN/steps.txt
# Sourced, not run: `source "$(dirname "${BASH_SOURCE[0]}")/chain.sh"`.
source "$(dirname "${BASH_SOURCE[0]}")/../setup_env.sh"
cd "$ROOT"
SHARED="${SHARED:-../shared/data}"
LABELS="$SHARED/biq2021-train/mos.csv"
MORE="$SHARED/biq2021-train-more/mos.csv"  # training photos only (shared/README.md)

references() {
  python scripts/recipes/biq2021_references.py "$SHARED" "$RUN/references.txt" \
    --config "$CONFIG" --count "$1"
}

ladder_photos() {
  python scripts/recipes/biq2021_references.py "$SHARED" "$RUN/ladder_photos.txt" \
    --config "$CONFIG" --count "$1" --part val --no-kodak
}

rank_data() {
  local max_side="$1"
  shift
  [[ -f "$RUN/rank_data/rank_list.csv" ]] || \
    rankiqa make-rank-data "$RUN/references.txt" --output-dir "$RUN/rank_data" --workers 2 \
      --max-side "$max_side" "$@" --force
}

stage_one() {
  local rank_config="$1"
  shift
  rankiqa train-rank --config "$rank_config" --train-dir "$RUN/rank" \
    --set data.rank_list="$RUN/rank_data/rank_list.csv" "$@"
}

stage_two() {
  rankiqa finetune --config "$CONFIG" --train-dir "$RUN/finetune" \
    --set data.label_file="$LABELS" "$@"
}

evaluate() {
  rankiqa evaluate --model "$RUN/finetune" "$@" --output-dir "$RUN/eval" --force
}

ladders() {
  rankiqa ladders "$RUN/ladder_photos.txt" --model "$RUN/finetune" --output-dir "$RUN/ladders"
}

step() {
  local name="$1" start=$SECONDS
  shift
  "$@"
  echo "step $name: $((SECONDS - start)) s" | tee -a "$RUN/steps.txt"
}
