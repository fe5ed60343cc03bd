#!/usr/bin/env bash
# Create the venv, install monitord and run it on config/local.yaml: this machine
# watching itself (ping 127.0.0.1 and the daemon's own listener). Metrics on
# http://127.0.0.1:9925/metrics; state in var/state.db. Ctrl-C stops it.
# Another config: scripts/run.sh path/to/monitord.yaml
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/common.sh
ensure_venv ""
exec .venv/bin/monitord run --config "${1:-config/local.yaml}"
