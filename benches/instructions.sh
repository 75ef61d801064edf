#!/usr/bin/env bash
# Instructions per request and per handshake, certgate beside nginx, counted
# by valgrind's callgrind (user-space instructions of the proxy process, all
# its threads): a measure that a noisy, shared machine cannot move, so a
# regression shows up as a number. `perf stat -e instructions` would do the
# same, but this machine (a VM) has no hardware counters.
#
#   bash benches/instructions.sh                 # ~5 min
#   REQUESTS=4000 HANDSHAKES=200 CONNS=8 bash benches/instructions.sh
#
# Same policy as the shared bench (../shared/bench: TLS 1.2, ECDSA P-256,
# client certificate required, CN allow-list, upstream keep-alive, access
# log off, one worker), the same PKI and backend. Per phase: the counters
# are zeroed, a fixed workload runs (benches/instructions_client.py), the
# counters are dumped:
#   base      CONNS new connections, one request each
#   requests  CONNS new connections, CONNS + REQUESTS requests
#   hs        HANDSHAKES full handshakes (no resumption), one request each
# per request = (requests - base) / REQUESTS; per handshake + request =
# hs / HANDSHAKES; the handshake alone subtracts one request.
# Needs valgrind (apt-get install valgrind) and the harness's setup
# (../shared/bench/setup.sh, as benches/shared-bench.sh).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SHARED=${SHARED:-$ROOT/../shared}
WORKDIR=${WORKDIR:-/tmp/tlsbench}
REQUESTS=${REQUESTS:-4000}
HANDSHAKES=${HANDSHAKES:-200}
CONNS=${CONNS:-8}
SERVERS=${SERVERS:-certgate,nginx}
CERTGATE_BIN=${CERTGATE_BIN:-$ROOT/target/release/certgate}
PORT=18460
BACKEND_PORT=18080
OUT=${OUT:-$(mktemp -d /tmp/instructions.XXXXXX)}

command -v valgrind >/dev/null || { echo "needs valgrind: apt-get install -y valgrind" >&2; exit 1; }
command -v callgrind_control >/dev/null || { echo "needs callgrind_control (package valgrind)" >&2; exit 1; }
[ -s "$WORKDIR/pki/device-a.pem" ] || { echo "no harness PKI in $WORKDIR: run $SHARED/bench/setup.sh first" >&2; exit 1; }

# shellcheck source=benches/procs.sh
source "$ROOT/benches/procs.sh"

# The harness writes its configs (nginx proxy and backend) when it prepares.
CONTENDERS=direct timeout 120 bash "$SHARED/bench/run.sh" serve 1 > "$OUT/harness.log" 2>&1 || {
  cat "$OUT/harness.log" >&2; exit 1; }
if [[ $SERVERS == *certgate* && -z ${CERTGATE_PREBUILT:-} ]]; then
  (cd "$ROOT" && cargo build --release --locked)
fi

nginx -p "$WORKDIR" -c "$WORKDIR/conf/backend.conf" -g 'daemon off;' > "$OUT/backend.log" 2>&1 &
PIDS+=($!)
wait_port "$BACKEND_PORT" 10 || { echo "backend did not start" >&2; exit 1; }

client() { # mode args...
  timeout 900 python3 "$ROOT/benches/instructions_client.py" "$@" --port "$PORT" \
    --cert "$WORKDIR/pki/device-a.pem" --key "$WORKDIR/pki/device-a.key"
}

# Zeroes the counters of `pid`, runs the client, dumps, prints the total.
phase() { # pid name client-args...
  local pid=$1 name=$2 before after file
  shift 2
  callgrind_control -z "$pid" > /dev/null 2>&1
  local done; done=$(client "$@")
  case $done in "DONE "*" 0") ;; *) echo "$name: the client failed: $done" >&2; exit 1 ;; esac
  before=$(ls "$OUT"/cg."$pid".* 2>/dev/null | wc -l)
  callgrind_control --dump="$name" "$pid" > /dev/null 2>&1
  for ((i = 0; i < 100; i++)); do
    after=$(ls "$OUT"/cg."$pid".* 2>/dev/null | wc -l)
    [ "$after" -gt "$before" ] && break
    sleep 0.1
  done
  file=$(ls -t "$OUT"/cg."$pid".* | head -1)
  awk '/^(summary|totals):/ {print $2; exit}' "$file"
}

measure() { # name
  local name=$1 pid
  case $name in
    certgate)
      BENCH_LISTEN=127.0.0.1:$PORT BENCH_BACKEND=127.0.0.1:$BACKEND_PORT \
        BENCH_SERVER_CERT=$WORKDIR/pki/server.pem BENCH_SERVER_KEY=$WORKDIR/pki/server.key \
        BENCH_CLIENT_CA=$WORKDIR/pki/clientca.pem BENCH_WORKDIR=$OUT CERTGATE_BIN=/bin/true \
        bash "$ROOT/benches/certgate-bench-cmd.sh"
      valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$OUT/cg.%p" \
        "$CERTGATE_BIN" run --config "$OUT/certgate-bench.toml" --threads 1 > "$OUT/$name.log" 2>&1 &
      ;;
    nginx)
      sed -e "s/127.0.0.1:18443/127.0.0.1:$PORT/" -e "s|nginx-proxy.pid|nginx-instr.pid|" \
        "$WORKDIR/conf/nginx-proxy.conf" > "$OUT/nginx.conf"
      valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$OUT/cg.%p" \
        nginx -p "$WORKDIR" -c "$OUT/nginx.conf" -g 'daemon off; master_process off;' > "$OUT/$name.log" 2>&1 &
      ;;
  esac
  pid=$!
  PIDS+=("$pid")
  wait_port "$PORT" 120 || { echo "$name did not start under valgrind" >&2; cat "$OUT/$name.log" >&2; exit 1; }
  # Warm-up, not counted: first-use initialisation, the chain cache.
  client handshakes --handshakes 5 > /dev/null
  client requests --conns "$CONNS" --requests 100 > /dev/null
  callgrind_control --instr=on "$pid" > /dev/null 2>&1
  local base req hs
  base=$(phase "$pid" base requests --conns "$CONNS" --requests "$CONNS")
  req=$(phase "$pid" requests requests --conns "$CONNS" --requests $((CONNS + REQUESTS)))
  hs=$(phase "$pid" hs handshakes --handshakes "$HANDSHAKES")
  kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
  python3 - "$name" "$base" "$req" "$hs" "$REQUESTS" "$HANDSHAKES" <<'PY' >> "$OUT/table.md"
import sys
name, base, req, hs, n, h = sys.argv[1], *map(int, sys.argv[2:])
per_req = (req - base) / n
per_hs = hs / h
print(f"| {name} | {per_req:,.0f} | {per_hs:,.0f} | {per_hs - per_req:,.0f} |")
PY
}

{
  echo "| server | instructions per keep-alive request | per full handshake + 1 request | per handshake alone |"
  echo "|---|---:|---:|---:|"
} > "$OUT/table.md"
IFS=, read -r -a SS <<<"$SERVERS"
for s in "${SS[@]}"; do measure "$s"; done
echo
echo "### Instructions (valgrind callgrind, user space; REQUESTS=$REQUESTS on $CONNS connections, HANDSHAKES=$HANDSHAKES)"
echo
echo "$(cd "$ROOT" && git rev-parse --short HEAD) $(date -u +%Y-%m-%d)"
echo
cat "$OUT/table.md"
echo
echo "(dumps in $OUT)"
