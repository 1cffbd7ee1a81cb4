#!/usr/bin/env bash
# The student's ablation (docs/recipes.md, "A network trained to rank"): its rows are data,
# scripts/studies/student_rows.yaml (each with its overrides and its result); this runs them in
# the project's environment through scripts/studies/student_ablation.py.
#   bash scripts/studies/biq2021_student_ablation.sh [RUN_DIR] [ROW ...]   (default: every row)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../setup_env.sh"
cd "$ROOT"
exec python scripts/studies/student_ablation.py "$@"
