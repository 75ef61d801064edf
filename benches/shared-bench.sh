#!/usr/bin/env bash
# Load comparison: certgate beside nginx and HAProxy with the same policy
# (TLS 1.2, ECDSA P-256, client cert required, upstream keep-alive), using
# the shared harness in ../shared/bench. Prints the harness's tables.
#
#   bash benches/shared-bench.sh                     # all tests, 3 rounds (~15 min)
#   ROUNDS=1 TESTS=small,hs,big1m,big64m,idle bash benches/shared-bench.sh
#
# With the `hs` test, the handshake row is printed beside its crypto floor
# (benches/handshake_floor.py, from the `openssl speed` the harness records).
# Run ../shared/bench/setup.sh once first (apt packages, PKI, load tools).
# Every knob of ../shared/bench/run.sh (ROUNDS, TESTS, PIN, ...) passes through.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SHARED=${SHARED:-$ROOT/../shared}
[ -x "$SHARED/bench/run.sh" ] || { echo "no harness at $SHARED/bench (set SHARED=...)" >&2; exit 1; }

# CERTGATE_BIN measures another build (a before/after pair); unset, this tree's.
if [ -z "${CERTGATE_BIN:-}" ]; then
  (cd "$ROOT" && cargo build --release --locked)
  export CERTGATE_BIN=$ROOT/target/release/certgate
fi
export EXTRA_NAME=${EXTRA_NAME:-certgate}
export EXTRA_PORT=${EXTRA_PORT:-18445}
export EXTRA_CMD=$ROOT/benches/certgate-bench-cmd.sh
WORKDIR=${WORKDIR:-/tmp/tlsbench}
export OUT=${OUT:-$WORKDIR/results/$(date +%Y%m%d-%H%M%S)-certgate}
"$SHARED/bench/run.sh" "$@"
# The handshake row beside its crypto floor, when this run measured both.
if [ -s "$OUT/openssl-speed.txt" ] && grep -q '"test":"hs"' "$OUT/raw.jsonl" 2>/dev/null; then
  echo
  python3 "$ROOT/benches/handshake_floor.py" "$OUT"
fi
