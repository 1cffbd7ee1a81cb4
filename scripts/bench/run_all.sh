#!/usr/bin/env bash
# Every command of BENCHMARKS.md, one after another, each with its wall time; run it alone on
# the machine (the figures are timings). About 25 min on a 2-core CPU.
#   bash scripts/bench/run_all.sh > bench.log
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../setup_env.sh"
cd "$ROOT"
run() { echo "\$ $*"; local start=$(date +%s); "$@" 2>/dev/null; echo "# wall $(( $(date +%s) - start )) s"; }
B=(python scripts/bench/bench.py)
run "${B[@]}" p1
run "${B[@]}" p1 --references 16
run "${B[@]}" p1 --equal-batch
run "${B[@]}" p1 --net resnet_v2_50 --crop 224 --references 1 --warmup 1 --repeats 3
run "${B[@]}" p1 --net resnet_v2_50 --crop 224 --references 3 --warmup 1 --repeats 3
run "${B[@]}" p1 --equal-batch --net resnet_v2_50 --crop 224 --references 1 --warmup 1 --repeats 3
for _ in 1 2 3; do run "${B[@]}" p2; done
run "${B[@]}" p2 --no-cache
run "${B[@]}" p2 --net resnet_v2_50 --crop 224 --steps 2 --repeats 3 --warmup 1
run "${B[@]}" p3 --repeats 3
run "${B[@]}" p4
run "${B[@]}" p4 --net resnet_v2_50 --crop 224 --warmup 1 --repeats 3
run "${B[@]}" p5
run "${B[@]}" p6
run "${B[@]}" p10
run "${B[@]}" p11
