#!/usr/bin/env bash
# Quick start 2: the test suite (installs itself on first use). Extra arguments go to pytest.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup_env.sh"
cd "$ROOT"
exec python -m pytest "$@"
