#!/usr/bin/env bash
# Fleet workloads the shared harness does not run, side by side with nginx
# and HAProxy under the same policy: (1) resumed handshakes — one request per
# connection, the client offers its last session (wrk + the harness's
# client-cert shim); (2) a reconnect storm — STORM_DEVICES distinct devices
# connect at once (benches/storm.rs). Prints markdown tables.
#
#   bash benches/fleet-bench.sh            # ROUNDS=3 DURATION=10 STORM_DEVICES=10000
#
# Run ../shared/bench/setup.sh once first. Loopback only; every step is
# bounded in time; only processes this script started are stopped (by PID).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SHARED=${SHARED:-$ROOT/../shared}
W=${WORKDIR:-/tmp/tlsbench}
ROUNDS=${ROUNDS:-3} DURATION=${DURATION:-10} STORM_DEVICES=${STORM_DEVICES:-10000}
[ -x "$SHARED/bench/run.sh" ] || { echo "no harness at $SHARED/bench (set SHARED=...)" >&2; exit 1; }
SHIM=$W/bin/mtls_preload.so
[ -f "$SHIM" ] || { echo "no $SHIM: run $SHARED/bench/setup.sh first" >&2; exit 1; }

(cd "$ROOT" && cargo build --release --locked && cargo bench --locked --bench storm --no-run)
# 10,000 client sockets here, as many server-side ones in each proxy.
ulimit -n "$(ulimit -Hn)"
[ "$(ulimit -n)" -gt $((STORM_DEVICES + 1000)) ] || echo "note: open-file limit $(ulimit -n) is low for $STORM_DEVICES devices" >&2

log=$(mktemp)
CONTENDERS=nginx,haproxy bash "$ROOT/benches/shared-bench.sh" serve $((ROUNDS * 3 * (DURATION + 5) + 300)) >"$log" 2>&1 &
serve_pid=$!
trap 'kill "$serve_pid" 2>/dev/null; wait "$serve_pid" 2>/dev/null; rm -f "$log"' EXIT
for _ in $(seq 120); do grep -q "serving for" "$log" && break; sleep 1; done
grep -q "serving for" "$log" || { cat "$log" >&2; exit 1; }
pid_of() { sed -n "s/.*pids:.*\b$1=\([0-9]*\).*/\1/p" "$log"; }
declare -A PORT=([nginx]=18443 [haproxy]=18444 [certgate]=18445)
ticks() { local t=0 p; for p in $1 $(pgrep -P "$1"); do t=$((t + $(awk '{print $14+$15}' "/proc/$p/stat"))); done; echo "$t"; }

echo
echo "### Resumed handshakes: one request per connection, session resumption on (wrk + client-cert shim, 64 conns, ${DURATION}s)"
echo
echo "| proxy | round | conns/s | full | resumed | proxy CPU µs/conn | ⇒ per proxy core |"
echo "|---|---:|---:|---:|---:|---:|---:|"
declare -A US
for r in $(seq "$ROUNDS"); do
  for c in nginx haproxy certgate; do
    pid=$(pid_of "$c"); t0=$(ticks "$pid")
    out=$(LD_PRELOAD=$SHIM MTLS_CERT=$W/pki/device-a.pem MTLS_KEY=$W/pki/device-a.key MTLS_STATS=1 \
      WRK_MAX_REQUESTS=5000000 taskset -c 1 timeout -k 5 $((DURATION + 30)) \
      wrk -t1 -c64 -d"${DURATION}s" --latency -s "$SHARED/bench/wrk_report.lua" \
      -H 'Connection: close' "https://127.0.0.1:${PORT[$c]}/small" 2>&1 || true)
    t1=$(ticks "$pid")
    req=$(sed -n 's/^WRKJSON //p' <<<"$out" | jq -r '.requests // 0')
    full=$(grep -o 'handshakes full=[0-9]*' <<<"$out" | tail -1 | cut -d= -f2)
    res=$(grep -o 'resumed=[0-9]*' <<<"$out" | tail -1 | cut -d= -f2)
    us=$(awk -v t=$((t1 - t0)) -v n="$req" -v hz="$(getconf CLK_TCK)" 'BEGIN{printf "%.0f", (n > 0 ? t * 1e6 / hz / n : 0)}')
    US[$c]="${US[$c]:-} $us"
    echo "| $c | $r | $((req / DURATION)) | ${full:-?} | ${res:-?} | $us | $(awk -v u="$us" 'BEGIN{printf "%.0f", (u > 0 ? 1e6 / u : 0)}') |"
  done
done
med() { tr ' ' '\n' | grep . | sort -n | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }
n=$(echo "${US[nginx]}" | med); h=$(echo "${US[haproxy]}" | med); g=$(echo "${US[certgate]}" | med)
best=$(( n < h ? n : h ))
echo
echo "Medians: nginx $n µs, HAProxy $h µs, certgate $g µs per resumed connection; certgate per core vs best peer: $(awk -v b="$best" -v g="$g" 'BEGIN{printf "%.2f", b/g}')×"

echo
echo "### Reconnect storm: $STORM_DEVICES distinct devices connect at once, one request each"
echo
# Every storm connection is a device the proxy has not seen: a full
# handshake with a chain not cached. Its CPU per connection is set beside
# the crypto floor, measured now on the proxies' core.
speed=$(mktemp)
timeout 60 taskset -c 0 openssl speed -seconds 1 ecdsap256 ecdhx25519 > "$speed" 2>/dev/null || true
echo "Crypto floor of a full handshake on the proxy core (no TCP share): $(python3 "$ROOT/benches/handshake_floor.py" --crypto "$speed" 2>&1)."
rm -f "$speed"
pids="nginx=$(pid_of nginx),haproxy=$(pid_of haproxy),certgate=$(pid_of certgate)"
for r in $(seq "$ROUNDS"); do
  echo; echo "Round $r:"
  STORM_TARGETS="nginx=127.0.0.1:18443,haproxy=127.0.0.1:18444,certgate=127.0.0.1:18445" \
  STORM_CLIENT_CA=$W/pki/clientca.pem STORM_CLIENT_CA_KEY=$W/pki/clientca.key STORM_SERVER_CA=$W/pki/ca.pem \
  STORM_DEVICES=$STORM_DEVICES STORM_CN=device-a STORM_O=tlsbench STORM_PIDS=$pids \
    taskset -c 1 timeout -k 5 900 cargo bench --locked --manifest-path "$ROOT/Cargo.toml" --bench storm 2>/dev/null
  sleep 5
done
