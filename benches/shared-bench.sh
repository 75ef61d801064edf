#!/usr/bin/env bash
# Load comparison: certgate beside nginx and HAProxy with the same policy
# (TLS 1.2, ECDSA P-256, client cert required, upstream keep-alive), using
# the shared harness in ../shared/bench. Prints the harness's tables.
#
#   bash benches/shared-bench.sh                     # all tests, 3 rounds (~15 min)
#   ROUNDS=1 TESTS=small,hs,big1m,big64m,idle bash benches/shared-bench.sh
#
# Run ../shared/bench/setup.sh once first (apt packages, PKI, load tools).
# Every knob of ../shared/bench/run.sh (ROUNDS, TESTS, PIN, ...) passes through.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SHARED=${SHARED:-$ROOT/../shared}
[ -x "$SHARED/bench/run.sh" ] || { echo "no harness at $SHARED/bench (set SHARED=...)" >&2; exit 1; }

(cd "$ROOT" && cargo build --release --locked)
export CERTGATE_BIN=$ROOT/target/release/certgate
export EXTRA_NAME=${EXTRA_NAME:-certgate}
export EXTRA_PORT=${EXTRA_PORT:-18445}
export EXTRA_CMD=$ROOT/benches/certgate-bench-cmd.sh
exec "$SHARED/bench/run.sh" "$@"
