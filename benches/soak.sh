#!/usr/bin/env bash
# Soak test: a release certgate under mixed load (keep-alive, new handshakes,
# uploads, refusals, an approval every 3 s, a cert rotation every minute),
# RSS / open fds / p99 sampled over time. Loopback only, bounded.
#   bash benches/soak.sh                      # 30 minutes
#   SOAK_SECONDS=300 SOAK_SAMPLE=10 bash benches/soak.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export SOAK_SECONDS=${SOAK_SECONDS:-1800} SOAK_SAMPLE=${SOAK_SAMPLE:-30}
cargo bench --bench soak --locked 2>/dev/null
