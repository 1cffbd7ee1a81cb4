#!/usr/bin/env bash
# Fault injection (README, "Failure behaviour"): kill -9 a tiny train-rank N times at random
# moments and check every rerun.   bash scripts/dev/faults.sh [--kills 10] [--work-dir DIR]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../setup_env.sh"
cd "$ROOT"
exec python scripts/dev/faults.py "$@"
