#!/usr/bin/env bash
# Quick start 1: the main job on the built-in sample photos (installs itself on first use).
#   bash scripts/demo.sh [--output-dir DIR] [--set key=value ...]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup_env.sh"
cd "$ROOT"
exec rankiqa demo "$@"
