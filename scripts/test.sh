#!/usr/bin/env bash
# The whole test suite: install, lint, test. CI runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh --dev
# The programs the integration tests start themselves: PostgreSQL for the tracker tests, Chromium
# to read MLflow's UI (the SLURM packages are installed by orchestration/dev_cluster.sh). Without
# root they are skipped.
missing=()
ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || missing+=(postgresql)
command -v chromium >/dev/null || missing+=(chromium)
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null && [ ${#missing[@]} -gt 0 ]; then
  apt-get -o DPkg::Lock::Timeout=300 update -qq
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq \
    --no-install-recommends "${missing[@]}" >/dev/null
fi
.venv/bin/ruff check .
.venv/bin/python -m pytest "$@"
