#!/usr/bin/env bash
# The whole test suite: install, lint, test. CI runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh --dev
# The servers the integration tests start themselves: PostgreSQL for the tracker tests (the
# SLURM packages are installed by orchestration/dev_cluster.sh). Without root they are skipped.
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null && ! ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; then
  apt-get -o DPkg::Lock::Timeout=300 update -qq
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq \
    --no-install-recommends postgresql >/dev/null
fi
.venv/bin/ruff check .
.venv/bin/python -m pytest "$@"
