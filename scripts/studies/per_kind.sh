#!/usr/bin/env bash
# The built-in models within each kind of BIQ2021 photo: ss01 (a personal gallery), ss02 (ISO,
# shutter, focus and light varied on purpose), ss03 (Unsplash). Each model scores the 600-photo
# validation part (seed 2021, the split of every BIQ2021 figure here) on its own views with
# `rankiqa evaluate`, which gives SROCC and PLCC within each kind beside the overall figure;
# then one table.
#   bash scripts/studies/per_kind.sh [RUN_DIR] [MODEL ...]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../setup_env.sh"
cd "$ROOT"
RUN="${1:-runs/per_kind}"
shift || true
SHARED="${SHARED:-../shared/data}"
MODELS=("$@")
if [[ ${#MODELS[@]} -eq 0 ]]; then
  mapfile -t MODELS < <(python -c "import rankiqa; print('\n'.join(rankiqa.list_models()))")
fi
for model in "${MODELS[@]}"; do
  rankiqa evaluate --model "$model" --output-dir "$RUN/$model" --force --split val \
    --set data.dataset=biq2021 --set data.label_file="$SHARED/biq2021-train/mos.csv" \
    --set data.split_seed=2021 --set data.val_fraction=0.2
done
python - "$RUN" "${MODELS[@]}" <<'PY'
import json, os, sys
run, models = sys.argv[1], sys.argv[2:]
print("| model | all: SROCC / PLCC | ss01 | ss02 | ss03 |")
print("|---|---|---|---|---|")
for model in models:
    s = json.load(open(os.path.join(run, model, "summary.json")))
    kinds = " | ".join(f"{g['srocc']:.4f} / {g['plcc']:.4f} (n={g['count']})"
                       for _, g in sorted(s["per_group"].items()))
    print(f"| `{model}` | {s['srocc']:.4f} / {s['plcc']:.4f} | {kinds} |")
PY
