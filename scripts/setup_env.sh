#!/usr/bin/env bash
# Creates .venv (Python 3.11+) and installs rankiqa with its test extra, once; sourced by the
# quick-start scripts so that each works on a fresh machine with nothing but Python.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
VENV="${RANKIQA_VENV:-$ROOT/.venv}"
STAMP="$VENV/.rankiqa-installed"
if [[ ! -x "$VENV/bin/python" ]]; then
  "$PYTHON" -m venv "$VENV"
fi
# Reinstall when the dependency list changed since the last install.
if [[ ! -f "$STAMP" || "$ROOT/pyproject.toml" -nt "$STAMP" ]]; then
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  "$VENV/bin/python" -m pip install --quiet -e "$ROOT[${RANKIQA_EXTRAS:-dev}]"
  touch "$STAMP"
fi
export PATH="$VENV/bin:$PATH"
