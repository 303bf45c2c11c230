#!/usr/bin/env bash
# The whole test suite: install, lint, test. CI runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh --dev
.venv/bin/ruff check .
.venv/bin/python -m pytest "$@"
