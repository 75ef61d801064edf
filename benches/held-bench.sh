#!/usr/bin/env bash
# Memory per held connection at fleet scale: certgate holds 10,000 and
# 50,000 idle mTLS keep-alive connections (one request served on each, then
# parked), opened from several 127.0.0.x source addresses
# (benches/held.py). Prints RSS before, RSS held and KiB per connection.
#
#   bash benches/held-bench.sh                 # COUNTS=10000,50000 (~4 min)
#   COUNTS=10000,18000 bash benches/held-bench.sh   # where the fd limit is 20,000
#
# Same policy, PKI and backend as the shared bench (run ../shared/bench/setup.sh
# once first). Raises the open-file limit (as root, the hard limit too).
# Loopback only; only processes this script started are stopped, by PID.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
W=${WORKDIR:-/tmp/tlsbench}
COUNTS=${COUNTS:-10000,50000}
CERTGATE_BIN=${CERTGATE_BIN:-$ROOT/target/release/certgate}
PORT=18470
BACKEND_PORT=18080
OUT=${OUT:-$(mktemp -d /tmp/held.XXXXXX)}
[ -s "$W/pki/device-a.pem" ] || { echo "no harness PKI in $W: run ../shared/bench/setup.sh first" >&2; exit 1; }
[ -s "$W/conf/backend.conf" ] || { echo "no harness backend config in $W/conf: run ../shared/bench/run.sh once" >&2; exit 1; }
[ -n "${CERTGATE_PREBUILT:-}" ] || (cd "$ROOT" && cargo build --release --locked)

# Raising the hard limit needs CAP_SYS_RESOURCE; without it, counts the
# limit cannot hold are skipped and say so.
ulimit -Hn 1048576 2>/dev/null || true
ulimit -n "$(ulimit -Hn)"
LIMIT=$(ulimit -n)

# shellcheck source=benches/procs.sh
source "$ROOT/benches/procs.sh"
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

# Our own backend: one left by an earlier run may be stopping right now.
for ((i = 0; i < 100; i++)); do
  (exec 3<>"/dev/tcp/127.0.0.1/$BACKEND_PORT") 2>/dev/null || break
  sleep 0.1
done
nginx -p "$W" -c "$W/conf/backend.conf" -g 'daemon off;' > "$OUT/backend.log" 2>&1 &
PIDS+=($!)
wait_port "$BACKEND_PORT" 10 || { echo "backend did not start (port $BACKEND_PORT in use?)" >&2; cat "$OUT/backend.log" >&2; exit 1; }
BENCH_LISTEN=127.0.0.1:$PORT BENCH_BACKEND=127.0.0.1:$BACKEND_PORT \
  BENCH_SERVER_CERT=$W/pki/server.pem BENCH_SERVER_KEY=$W/pki/server.key \
  BENCH_CLIENT_CA=$W/pki/clientca.pem BENCH_WORKDIR=$OUT CERTGATE_BIN=/bin/true \
  BENCH_MAX_CONNECTIONS=60000 BENCH_IDLE_TIMEOUT=900s bash "$ROOT/benches/certgate-bench-cmd.sh"

{
  echo "### Held idle mTLS connections, certgate ($(cd "$ROOT" && git rev-parse --short HEAD), $(date -u +%Y-%m-%d))"
  echo
  echo "| connections | opened in s | failed | RSS before, MiB | RSS held, MiB | KiB per connection |"
  echo "|---:|---:|---:|---:|---:|---:|"
} > "$OUT/table.md"
IFS=, read -r -a NS <<<"$COUNTS"
for n in "${NS[@]}"; do
  if [ "$LIMIT" != unlimited ] && [ "$LIMIT" -lt $((n + 500)) ]; then
    echo "| ${n} | skipped: open-file limit $LIMIT (raising it needs CAP_SYS_RESOURCE) | | | | |" >> "$OUT/table.md"
    continue
  fi
  # A fresh process per count: memory the allocator kept from the last
  # count would hide part of this one.
  "$CERTGATE_BIN" run --config "$OUT/certgate-bench.toml" --threads 1 > "$OUT/certgate-$n.log" 2>&1 &
  CG=$!
  PIDS+=("$CG")
  wait_port "$PORT" 30 || { echo "certgate did not start" >&2; cat "$OUT/certgate-$n.log" >&2; exit 1; }
  sleep 1
  before=$(rss_kb "$CG")
  coproc HELD { exec timeout 900 python3 "$ROOT/benches/held.py" --port "$PORT" -n "$n" \
    --cert "$W/pki/device-a.pem" --key "$W/pki/device-a.key" --deadline 800; }
  held_pid=$HELD_PID
  read -r -t 800 word ok failed took <&"${HELD[0]}" || { echo "held.py did not get ready" >&2; exit 1; }
  [ "$word" = READY ] || { echo "held.py: $word $ok $failed $took" >&2; exit 1; }
  [ "$ok" -gt 0 ] || { echo "held.py: no connection got its response ($failed failed); see $OUT/certgate-$n.log" >&2; exit 1; }
  sleep 3 # past the 250 ms after which idle connections park
  held=$(rss_kb "$CG")
  python3 -c "import sys; n,ok,f,t,b,h=sys.argv[1:]; print(f'| {int(n):,} | {float(t):.1f} | {f} | {int(b)/1024:.1f} | {int(h)/1024:.1f} | {(int(h)-int(b))/int(ok):.1f} |')" \
    "$n" "$ok" "$failed" "$took" "$before" "$held" >> "$OUT/table.md"
  echo >&"${HELD[1]}"
  wait "$held_pid" 2>/dev/null || true
  kill -TERM "$CG"
  wait "$CG" 2>/dev/null || true
done
cat "$OUT/table.md"
